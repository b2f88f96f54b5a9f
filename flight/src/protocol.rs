//! The messages of the head protocol, shared by the service and its client.

use profusion_model::scan::{HeadCut, ScanError, ScanRequest};
use serde::{Deserialize, Serialize};

pub(crate) const SNAPSHOT: &str = "head.snapshot";
pub(crate) const SUMMARY: &str = "head.summary";
pub(crate) const RELEASE: &str = "head.release";

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct TenantBody {
    pub(crate) tenant: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct PinnedSnapshot {
    pub(crate) id: u64,
    pub(crate) cut: HeadCut,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ReleaseBody {
    pub(crate) ids: Vec<u64>,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ScanTicket {
    pub(crate) id: u64,
    pub(crate) request: ScanRequest,
}

/// The status a scan failure travels as.
pub(crate) fn to_status(e: ScanError) -> tonic::Status {
    match e {
        ScanError::Unavailable(m) => tonic::Status::unavailable(m),
        other => tonic::Status::internal(other.to_string()),
    }
}

/// The scan failure a status from an ingester means: its own failure kind when it sent one,
/// else (a connection refused or reset, a timeout) unavailable, for the query to be retried.
pub(crate) fn from_status(peer: &str, s: tonic::Status) -> ScanError {
    let message = format!("ingester at {peer}: {}", s.message());
    match s.code() {
        tonic::Code::Internal | tonic::Code::InvalidArgument => ScanError::Internal(message),
        _ => ScanError::Unavailable(message),
    }
}
