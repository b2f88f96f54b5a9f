//! The read roles in separate processes: query frontends queue jobs on a query scheduler
//! (`scheduler.v1.SchedulerService/Run`), querier workers pull them over one stream each
//! (`QuerierLoop`), all over gRPC. The scheduler keeps the same per-tenant fair queues as in one
//! process, so one tenant flooding queries waits behind itself whichever frontend it came
//! through.
//!
//! Failure: a querier that dies (its stream breaks) or stalls (HTTP/2 keepalive) while running a
//! job has the job retried once on another worker, then failed as `unavailable`; a frontend whose
//! caller went away cancels its job on the querier; no answer is ever partial.

mod scheduler_service;
pub(crate) mod wire;
mod workers;

pub use scheduler_service::SchedulerService;
pub use workers::{RemoteScheduler, WorkerStats, start_remote_querier_workers};

use profusion_model::status::StatusCode;

use crate::error::QueryError;

const RUN_PATH: &str = "/scheduler.v1.SchedulerService/Run";
const LOOP_PATH: &str = "/scheduler.v1.SchedulerService/QuerierLoop";

/// The status a query failure travels as.
fn to_status(e: &QueryError) -> tonic::Status {
    tonic::Status::new(
        tonic::Code::from_i32(i32::from(e.status.grpc())),
        e.message.clone(),
    )
}

/// The query failure a peer's status means, with who answered it.
fn from_status(peer: &str, s: &tonic::Status) -> QueryError {
    QueryError {
        source: None,
        status: StatusCode::from_grpc(s.code() as i32),
        message: if s.code() == tonic::Code::Unavailable || s.code() == tonic::Code::Unknown {
            format!("{peer}: {}", s.message())
        } else {
            s.message().to_owned()
        },
    }
}
