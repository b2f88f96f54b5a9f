//! The HTTP server, tenancy and logging.

use std::time::Duration;

use clap::{ArgAction, Args};
use profusion_api::http_server::{ConnectionLimits, default_connection_limit};

use super::parse_duration;

/// The port every API is served on, and what it allows a connection.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Server")]
pub(crate) struct ServerFlags {
    /// Address the HTTP server (HTTP/1.1 and h2c: Connect, gRPC, gRPC-Web, plain HTTP) binds.
    #[arg(
        long = "server.http-listen-address",
        env = "PROFUSION_SERVER_HTTP_LISTEN_ADDRESS",
        default_value = "0.0.0.0"
    )]
    pub(crate) http_listen_address: String,

    /// Port of the HTTP server; 0 picks a free port (printed in the log and to stdout).
    #[arg(
        long = "server.http-listen-port",
        env = "PROFUSION_SERVER_HTTP_LISTEN_PORT",
        default_value_t = 4040
    )]
    pub(crate) http_listen_port: u16,

    /// Address the other processes of a cluster reach this one at, `host` or `host:port`;
    /// by default the listen address and the bound port. Set it when the listen address is
    /// not reachable from them (`0.0.0.0`, a container's address behind a NAT).
    #[arg(
        long = "server.advertise-address",
        env = "PROFUSION_SERVER_ADVERTISE_ADDRESS"
    )]
    pub(crate) advertise_address: Option<String>,

    /// Longest time a client may take to send a request's headers, counted from its first byte;
    /// a slower client is disconnected (0s: use --server.http-read-timeout).
    #[arg(long = "server.http-read-header-timeout", env = "PROFUSION_SERVER_HTTP_READ_HEADER_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub(crate) http_read_header_timeout: Duration,

    /// Longest time a client may take to send a request body once its handler starts reading
    /// it; a body not received in time is answered 408 (0s: no limit).
    #[arg(long = "server.http-read-timeout", env = "PROFUSION_SERVER_HTTP_READ_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub(crate) http_read_timeout: Duration,

    /// How long a connection may stay open with no request in flight before it is closed
    /// (0s: never).
    #[arg(long = "server.http-idle-timeout", env = "PROFUSION_SERVER_HTTP_IDLE_TIMEOUT", default_value = "2m", value_parser = parse_duration)]
    pub(crate) http_idle_timeout: Duration,

    /// Most connections served at once; past it, idle connections are closed to make room and
    /// new ones wait to be accepted. Unset: three quarters of the process's open-file limit,
    /// so descriptors stay free for the WAL, blocks and the catalog. 0: no limit.
    #[arg(
        long = "server.http-conn-limit",
        env = "PROFUSION_SERVER_HTTP_CONN_LIMIT"
    )]
    pub(crate) http_conn_limit: Option<usize>,

    /// How long a graceful shutdown waits for in-flight requests before flushing and exiting.
    #[arg(long = "server.graceful-shutdown-timeout", env = "PROFUSION_SERVER_GRACEFUL_SHUTDOWN_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub(crate) graceful_shutdown_timeout: Duration,
}

impl ServerFlags {
    /// The connection limits of the HTTP server, zeros meaning none.
    pub(crate) fn connection_limits(&self) -> ConnectionLimits {
        let some = |d: Duration| (!d.is_zero()).then_some(d);
        ConnectionLimits {
            header_timeout: some(self.http_read_header_timeout).or(some(self.http_read_timeout)),
            idle_timeout: some(self.http_idle_timeout),
            max_connections: match self.http_conn_limit {
                None => Some(default_connection_limit()),
                Some(0) => None,
                Some(n) => Some(n),
            },
        }
    }

    /// Deadline for receiving a request body (`None`: no deadline).
    pub(crate) fn body_timeout(&self) -> Option<Duration> {
        (!self.http_read_timeout.is_zero()).then_some(self.http_read_timeout)
    }
}

/// Who a request belongs to, and whether it may do what it asks.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Tenancy and access control")]
pub(crate) struct AuthFlags {
    /// Require the `X-Scope-OrgID` header and keep each tenant's data apart. When off, every
    /// request belongs to tenant `anonymous`. With --auth.enabled, the header may be left out:
    /// the token's tenant is the request's.
    #[arg(long = "auth.multitenancy-enabled", env = "PROFUSION_AUTH_MULTITENANCY_ENABLED", default_value_t = false, num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set)]
    pub(crate) multitenancy_enabled: bool,

    /// Require a token on every API (push, OTLP, /ingest, querier, render, SQL, Flight SQL,
    /// settings, admin, the web UI): `Authorization: Bearer <token>`, or HTTP Basic with the
    /// tenant as user and the token as password. Tokens belong to one tenant and carry scopes
    /// (read, write, admin); make them with `profusion tokens create`. `/ready`, `/metrics` and
    /// the cluster's own calls stay open: keep the port of a cluster's internal traffic private.
    #[arg(long = "auth.enabled", env = "PROFUSION_AUTH_ENABLED", default_value_t = false, num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set)]
    pub(crate) enabled: bool,

    /// How often the tokens are reloaded from the catalog: a token created or revoked by
    /// another process (or `profusion tokens`) takes effect here within this interval.
    #[arg(long = "auth.refresh-interval", env = "PROFUSION_AUTH_REFRESH_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub(crate) refresh_interval: Duration,
}

/// What the process logs, and how.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Logging")]
pub(crate) struct LogFlags {
    /// Log level: error, warn, info, debug or trace (or a tracing filter directive).
    #[arg(
        long = "log.level",
        env = "PROFUSION_LOG_LEVEL",
        default_value = "info"
    )]
    pub(crate) log_level: String,

    /// Log format: `logfmt` (human-readable) or `json`.
    #[arg(
        long = "log.format",
        env = "PROFUSION_LOG_FORMAT",
        default_value = "logfmt"
    )]
    pub(crate) log_format: String,
}
