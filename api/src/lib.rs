//! Profusion's public surface as a library: Connect, gRPC and gRPC-Web RPCs, Pyroscope's plain
//! HTTP endpoints and OTLP on one port, with tenancy and the status-code mapping.
//!
//! Owns: the protocol adapters (`rpc`), one handler module per API family (`routes`), the
//! router built from the services a process runs (`router`), the one mapping from status codes
//! to Connect, gRPC and HTTP (`error`), tenant resolution and access control (`tenant`,
//! `auth`: every request's tenant and token decided in one place), the web UI's assets
//! (`ui/`, served by `routes::ui`) and the HTTP server's connection protections
//! (`http_server`). Must not hold ingest or query logic, nor build the services it
//! serves: handlers decode requests and call a `PushService`, a `ReadService` or the catalog,
//! which the `profusion` binary wires per role.

pub mod auth;
pub mod error;
pub mod flight_sql;
pub mod http_server;
pub mod request;
pub mod router;
pub mod routes;
pub mod rpc;
pub mod tenant;

pub use request::RequestRules;
pub use router::ApiRouter;
