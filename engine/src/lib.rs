//! The read path of Profusion, on DataFusion: the five block tables as table providers over
//! ingester heads and catalog-listed blocks ([`table`], [`blocks`]), the custom plan nodes and
//! their codec ([`symbolize`], [`codec`]), the querier, the query frontend and scheduler, and
//! the read service every read surface calls ([`service`]), the read roles' protocol between
//! processes ([`remote`]), with the answers' encodings
//! ([`dot`]; flame graphs and trees are `profusion_model::tree`).
//!
//! Owns: planning and executing reads, their limits and fairness, and the encodings of their
//! answers. Must not write data or depend on the write path: heads are reached only through
//! `profusion_model::scan::HeadSource`, blocks through the catalog and the object store, in
//! the block format `profusion_model::block` defines (`docs/block-format.md`).

pub mod block_aggregates;
pub mod blocks;
pub mod budget;
pub mod codec;
pub mod distributed;
pub mod dot;
pub mod error;
pub mod frontend;
pub mod functions;
mod generations;
pub mod querier;
pub mod remote;
pub mod selector;
pub mod service;
pub mod sql;
pub mod symbolize;
pub mod table;
