//! Arrow Flight services of Profusion: the ingesters' head data for queriers in other
//! processes ([`HeadFlightService`] on the ingester, [`RemoteHeads`] on the querier), and the
//! one Flight service of a port ([`FlightRouter`]), which routes each call to the head service
//! or to Flight SQL (served by `profusion-api` for external clients).
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
mod router;

pub use head_client::RemoteHeads;
pub use head_service::HeadFlightService;
pub use router::FlightRouter;

/// The Arrow IPC bytes (as on the wire) of one Flight message.
fn wire_bytes(data: &arrow_flight::FlightData) -> u64 {
    (data.data_header.len() + data.data_body.len()) as u64
}
