//! The DataFusion layer of Profusion's read path: table providers over head chunks and block
//! chunks, the custom physical plans (head scans, symbolization, flame-graph building), and the
//! query frontend, scheduler and querier logic.
//!
//! Owns: planning and executing reads, and the encodings of their answers (flame graphs, tree
//! bytes, diffs). Must not write data: blocks and the catalog are written only by
//! `profusion-ingest`, whose `block` module defines the format read here
//! (`docs/block-format.md`).

pub mod blocks;
pub mod budget;
pub mod codec;
pub mod dot;
pub mod error;
pub mod frontend;
pub mod functions;
pub mod querier;
pub mod selector;
pub mod service;
pub mod symbolize;
pub mod table;
