//! Client channels to the other processes of a cluster, set up one way everywhere: connecting
//! is bounded, and a peer that stops answering (killed, stopped, partitioned) is noticed by
//! HTTP/2 keepalive within about the timeout, however long a legitimate stream runs.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

/// How often an idle connection to a peer is probed.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);

/// A peer advertised an address no channel can be opened to.
#[derive(Debug, thiserror::Error)]
#[error("peer address {address:?} is unusable: {reason}")]
pub struct PeerAddressError {
    pub address: String,
    pub reason: String,
}

/// Whether each call on a channel is bounded by the timeout too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallDeadline {
    /// Unary calls, which answer within the timeout or fail.
    Bounded,
    /// Streams and long calls, bounded only by the peer's liveness.
    Unbounded,
}

/// A lazily connecting channel to the peer at `address` (`host:port`).
pub fn peer_channel(
    address: &str,
    timeout: Duration,
    deadline: CallDeadline,
) -> Result<Channel, PeerAddressError> {
    let endpoint =
        Endpoint::from_shared(format!("http://{address}")).map_err(|e| PeerAddressError {
            address: address.to_owned(),
            reason: e.to_string(),
        })?;
    let endpoint = endpoint
        .connect_timeout(timeout)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(timeout)
        .keep_alive_while_idle(true)
        .tcp_nodelay(true);
    let endpoint = match deadline {
        CallDeadline::Bounded => endpoint.timeout(timeout),
        CallDeadline::Unbounded => endpoint,
    };
    Ok(endpoint.connect_lazy())
}

/// One channel per peer address, reused by every call to it (channels multiplex calls).
#[derive(Debug)]
pub struct PeerChannels {
    timeout: Duration,
    deadline: CallDeadline,
    channels: Mutex<HashMap<String, Channel>>,
}

impl PeerChannels {
    pub fn new(timeout: Duration, deadline: CallDeadline) -> Self {
        Self {
            timeout,
            deadline,
            channels: Mutex::new(HashMap::new()),
        }
    }

    /// The channel to `address`, opened on first use.
    pub fn get(&self, address: &str) -> Result<Channel, PeerAddressError> {
        let mut channels = self.channels.lock().expect("channel lock");
        if let Some(channel) = channels.get(address) {
            return Ok(channel.clone());
        }
        let channel = peer_channel(address, self.timeout, self.deadline)?;
        channels.insert(address.to_owned(), channel.clone());
        Ok(channel)
    }
}

/// Rows and bytes of query data that crossed the network between processes, as one side
/// counted them (what a service sent, or a client received), for the metrics.
#[derive(Debug, Default)]
pub struct Traffic {
    rows: AtomicU64,
    bytes: AtomicU64,
}

impl Traffic {
    pub fn rows(&self) -> u64 {
        self.rows.load(Ordering::Relaxed)
    }

    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    pub fn add(&self, rows: u64, bytes: u64) {
        self.rows.fetch_add(rows, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }
}
