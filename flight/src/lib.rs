//! Arrow Flight services of Profusion: the ingesters' head data for queriers in other
//! processes ([`HeadFlightService`] on the ingester, [`RemoteHeads`] on the querier). Later,
//! Flight SQL for external clients (issue 12).
//!
//! Owns: Flight wire handling only. What a head holds and how it is scanned belongs to the
//! ingester (`profusion_model::scan::HeadSource`); how plans use it, to the engine.
//!
//! The protocol, all in JSON bodies over Flight's generic calls:
//! - `DoAction("head.snapshot", {"tenant"})` pins the tenant's head and answers
//!   `[{"id", "cut"}]`, one entry per snapshot;
//! - `DoGet({"id", "request"})` streams the rows a `ScanRequest` selects from a pinned snapshot;
//! - `DoAction("head.summary", {"tenant"})` answers the head's generation summaries;
//! - `DoAction("head.release", {"ids"})` unpins snapshots. A querier that dies without
//!   releasing leaves them to expire a few minutes after their last use.

mod head_client;
mod head_service;
mod protocol;

pub use head_client::RemoteHeads;
pub use head_service::HeadFlightService;

use std::sync::atomic::{AtomicU64, Ordering};

/// Rows and bytes (Arrow IPC, as on the wire) of head data a service sent or a client
/// received: what crossed the network for queries.
#[derive(Debug, Default)]
pub struct FlightStats {
    rows: AtomicU64,
    bytes: AtomicU64,
}

impl FlightStats {
    pub fn rows(&self) -> u64 {
        self.rows.load(Ordering::Relaxed)
    }

    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    fn add_rows(&self, rows: usize) {
        self.rows.fetch_add(rows as u64, Ordering::Relaxed);
    }

    fn add_data(&self, data: &arrow_flight::FlightData) {
        self.bytes.fetch_add(
            (data.data_header.len() + data.data_body.len()) as u64,
            Ordering::Relaxed,
        );
    }
}
