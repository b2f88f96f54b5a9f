//! Profusion's write path: decoders for every ingest format (pprof, Pyroscope's legacy
//! `/ingest` formats, OTLP profiles), validation and normalization with Pyroscope's label
//! derivation and limits, the distributor (series split, rate limit, ring routing with
//! replication) and the ingester (write-ahead log, per-tenant head, flush to Parquet blocks
//! registered in the catalog).
//!
//! Owns: everything from request bytes to a registered block. Must not serve reads or speak
//! HTTP: the API layer calls in here, the engine reads what this writes.

pub mod distributor;
pub mod error;
pub mod fuzzing;
mod id_index;
pub mod ingester;
pub mod legacy;
pub mod limits;
pub mod metrics;
pub mod otlp;
pub mod pprof;
pub mod ratelimit;
pub mod ring;
pub mod validation;

pub use error::{ErrorKind, IngestError, Result};
