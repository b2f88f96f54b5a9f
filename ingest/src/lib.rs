//! Profusion's write path: decoders for every ingest format (pprof, Pyroscope's legacy
//! `/ingest` formats, OTLP profiles), validation and normalization with Pyroscope's label
//! derivation and limits, the distributor (series split, rate limit, ring routing with
//! replication) and the ingester (write-ahead log, per-tenant head, flush to Parquet blocks
//! registered in the catalog).
//!
//! Owns: everything from request bytes to a registered block, and the ingester's head as a
//! `profusion_model::scan::HeadSource` (pinned snapshots scanned by request). Must not plan or
//! answer queries or speak HTTP: the API layer calls in here, the engine reads the head through
//! that trait and the blocks in the format `profusion_model::block` defines.

pub mod distributor;
pub mod error;
pub mod frame_text;
pub mod fuzzing;
mod id_index;
pub mod ingester;
pub mod legacy;
pub mod limits;
pub mod metrics;
pub mod otlp;
pub mod pprof;
pub mod ratelimit;
pub mod remote;
pub mod ring;
pub mod validation;

pub use error::{IngestError, Result};
