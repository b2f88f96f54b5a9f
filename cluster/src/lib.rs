//! Membership without new infrastructure: every process of a cluster registers each role it
//! runs as a member of that role's ring in the shared catalog, with the address the others
//! reach it at and (for ingesters) its tokens, and heartbeats; every process watches the rings
//! it needs. A member whose heartbeats stop is unhealthy after `heartbeat_timeout` and routed
//! around; a clean shutdown leaves its ring at once.
//!
//! Owns: the lifecycle of this process's ring memberships ([`Lifecycler`]), the cached view
//! of a ring ([`RingWatcher`]) and how processes open channels to each other ([`PeerChannels`]). It does not decide what a ring is used for: the distributor
//! builds its write ring from the ingester members, queriers find ingesters and store-gateways
//! from theirs.

mod lifecycler;
mod peer;
mod watcher;

pub use lifecycler::Lifecycler;
pub use peer::{CallDeadline, PeerAddressError, PeerChannels, Traffic, peer_channel};
pub use profusion_catalog::{MemberState, RingMember};
pub use watcher::RingWatcher;

use std::time::Duration;

/// How often members heartbeat, and how long a silent one stays healthy.
#[derive(Debug, Clone, Copy)]
pub struct RingConfig {
    pub heartbeat_period: Duration,
    pub heartbeat_timeout: Duration,
}

impl RingConfig {
    /// Whether `member` heartbeat within the timeout as of now.
    pub fn is_healthy(&self, member: &RingMember) -> bool {
        member.is_healthy(
            profusion_model::time::now_millis(),
            self.heartbeat_timeout.as_millis() as i64,
        )
    }
}
