//! Profusion's public surface on one port: Connect, gRPC and gRPC-Web RPCs, Pyroscope's plain
//! HTTP endpoints and OTLP, with tenancy, configuration and the wiring of every role.
//!
//! Owns: protocols, status-code mapping (`error`), tenant resolution, configuration and the
//! `profusion` binary. Must not hold ingest or query logic: it decodes requests and calls
//! `profusion-ingest` for writes and `profusion_engine::service::ReadService` for reads.

pub mod config;
pub mod error;
pub mod http_server;
mod ingest_routes;
mod query_routes;
mod render_routes;
pub mod rpc;
pub mod server;
mod service_routes;
pub mod tenant;
