//! Profusion's write path: decoders for every ingest format (pprof, Pyroscope's legacy
//! `/ingest` formats, OTLP profiles), validation and normalization with Pyroscope's label
//! derivation and limits, the distributor (series split, rate limit, ring routing with
//! replication) and the ingester (write-ahead log, per-tenant head, flush to Parquet blocks
//! registered in the catalog).
//!
//! Owns: everything from request bytes to a registered block. Must not serve reads or speak
//! HTTP: the API layer calls in here, the engine reads what this writes.

pub mod block;
pub mod distributor;
pub mod error;
pub mod fuzzing;
pub mod hash;
pub mod ingester;
pub mod labels;
pub mod legacy;
pub mod limits;
pub mod metrics;
pub mod otlp;
pub mod pprof;
pub mod ratelimit;
pub mod ring;

pub use error::{ErrorKind, IngestError, Result};

/// Unix time now, in milliseconds.
pub fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Unix time now, in nanoseconds.
pub fn now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}
