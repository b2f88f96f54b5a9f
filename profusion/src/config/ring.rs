//! Membership: how often a process heartbeats into the catalog's rings, and how long a silent
//! member stays in routing.

use std::time::Duration;

use clap::Args;
use profusion_cluster::RingConfig;

use super::parse_duration;

/// The rings every role of a cluster registers in.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Ring")]
pub(crate) struct RingFlags {
    /// How often each role of this process records in the catalog that it is alive.
    #[arg(long = "ring.heartbeat-period", env = "PROFUSION_RING_HEARTBEAT_PERIOD", default_value = "5s", value_parser = parse_duration)]
    pub(crate) heartbeat_period: Duration,

    /// A member whose last heartbeat is older than this is unhealthy: routed around, and
    /// shown as UNHEALTHY on the ring pages until it returns or is forgotten.
    #[arg(long = "ring.heartbeat-timeout", env = "PROFUSION_RING_HEARTBEAT_TIMEOUT", default_value = "1m", value_parser = parse_duration)]
    pub(crate) heartbeat_timeout: Duration,
}

impl RingFlags {
    pub(crate) fn config(&self) -> RingConfig {
        RingConfig {
            heartbeat_period: self.heartbeat_period,
            heartbeat_timeout: self.heartbeat_timeout,
        }
    }
}
