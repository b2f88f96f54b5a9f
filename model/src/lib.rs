//! The block model: the vocabulary every Profusion role shares, whichever process it runs in.
//!
//! - [`block`]: the block format, a public contract (DuckDB and Spark read it): the five
//!   [`block::Table`]s with their schemas, files and sort orders, `meta.json`, the catalog's
//!   [`block::BlockMeta`], the Parquet writer and reader.
//! - [`labels`]: reserved label names, label sets and series fingerprints.
//! - [`symbols`]: content ids of frames and stacks.
//! - [`profile_type`], [`tenant`], [`time`]: the ids and ranges every request carries.
//! - [`tree`]: function-name call trees and their wire encodings (flame graphs, tree bytes).
//! - [`scan`]: scan requests and the head and block sources that answer them.
//! - [`tombstone`]: deletions, as readers and the compactor apply them.
//! - [`status`]: the one classification of failures into status codes.
//! - [`hash`]: maps keyed by values that already are hashes.
//!
//! Owns: these types and formats, and nothing that runs. Must not touch the catalog, the WAL,
//! DataFusion or any protocol: ingesters, the compactor, store-gateways and queriers all
//! depend on this crate, so it stays small and free of their concerns.

pub mod block;
pub mod hash;
pub mod labels;
pub mod profile_type;
pub mod scan;
pub mod status;
pub mod symbols;
pub mod tenant;
pub mod time;
pub mod tombstone;
pub mod tree;
