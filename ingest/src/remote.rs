//! Ingesters in other processes: the distributor's gRPC client of `ingester.v1.IngesterService`,
//! and the write ring built from the ingester ring's members.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use profusion_cluster::{CallDeadline, peer_channel};
use profusion_model::status::StatusCode;
use profusion_proto::ingester::v1::{FlushRequest, FlushResponse, WriteRequest, WriteResponse};

use crate::error::{IngestError, Result};
use crate::ingester::IngesterClient;
use crate::ring::Ring;

const WRITE_PATH: &str = "/ingester.v1.IngesterService/Write";
const FLUSH_PATH: &str = "/ingester.v1.IngesterService/Flush";

/// An ingester reached over gRPC at its advertised address.
#[derive(Debug, Clone)]
pub struct RemoteIngester {
    instance: String,
    address: String,
    channel: tonic::transport::Channel,
}

impl RemoteIngester {
    /// A client of the ingester `instance` at `address` (`host:port`). It connects on first
    /// use; every write is bounded by `timeout`, connecting included, so a dead or stalled
    /// ingester fails a write instead of holding it.
    pub fn new(instance: &str, address: &str, timeout: Duration) -> Result<Self> {
        let channel = peer_channel(address, timeout, CallDeadline::Bounded)
            .map_err(|e| IngestError::internal(format!("ingester {instance:?}: {e}")))?;
        Ok(Self {
            instance: instance.to_owned(),
            address: address.to_owned(),
            channel,
        })
    }
}

#[async_trait]
impl IngesterClient for RemoteIngester {
    fn instance_id(&self) -> &str {
        &self.instance
    }

    async fn write(&self, request: WriteRequest) -> Result<()> {
        self.call::<WriteRequest, WriteResponse>(WRITE_PATH, request)
            .await
    }

    async fn flush(&self) -> Result<()> {
        self.call::<FlushRequest, FlushResponse>(FLUSH_PATH, FlushRequest {})
            .await
    }
}

impl RemoteIngester {
    /// One unary call of the ingester's service.
    async fn call<Req, Resp>(&self, path: &'static str, request: Req) -> Result<()>
    where
        Req: prost::Message + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        let failed = |status: StatusCode, message: String| {
            IngestError::new(
                status,
                format!("ingester {} at {}: {message}", self.instance, self.address),
            )
        };
        let mut grpc = tonic::client::Grpc::new(self.channel.clone());
        grpc.ready()
            .await
            .map_err(|e| failed(StatusCode::Unavailable, format!("not reachable: {e}")))?;
        grpc.unary::<Req, Resp, _>(
            tonic::Request::new(request),
            http::uri::PathAndQuery::from_static(path),
            tonic_prost::ProstCodec::<Req, Resp>::default(),
        )
        .await
        .map_err(|s| {
            failed(
                StatusCode::from_grpc(s.code() as i32),
                s.message().to_owned(),
            )
        })?;
        Ok(())
    }
}

/// An ingester of the ring whose heartbeats stopped: its writes fail at once, counted against
/// the quorum like any failed replica, instead of waiting for a timeout each time.
#[derive(Debug)]
struct SilentIngester {
    instance: String,
}

#[async_trait]
impl IngesterClient for SilentIngester {
    fn instance_id(&self) -> &str {
        &self.instance
    }

    async fn write(&self, _request: WriteRequest) -> Result<()> {
        Err(self.silent())
    }

    async fn flush(&self) -> Result<()> {
        Err(self.silent())
    }
}

impl SilentIngester {
    fn silent(&self) -> IngestError {
        IngestError::unavailable(format!(
            "ingester {} missed its ring heartbeats",
            self.instance
        ))
    }
}

/// One ingester of the ring, as its membership describes it.
#[derive(Debug, Clone)]
pub struct IngesterMember {
    pub instance: String,
    pub address: String,
    pub tokens: Vec<u32>,
    /// It heartbeats within the timeout and has not left.
    pub healthy: bool,
}

/// Builds write rings from ingester memberships, keeping one client (and its connection) per
/// ingester address across rebuilds.
#[derive(Debug)]
pub struct RemoteRingBuilder {
    replication_factor: usize,
    timeout: Duration,
    clients: Mutex<HashMap<(String, String), Arc<RemoteIngester>>>,
}

impl RemoteRingBuilder {
    pub fn new(replication_factor: usize, timeout: Duration) -> Self {
        Self {
            replication_factor,
            timeout,
            clients: Mutex::default(),
        }
    }

    /// The ring of `members`. Unhealthy members keep their tokens, so their series do not
    /// move to other ingesters while they are down; their writes fail at once.
    pub fn build(&self, members: &[IngesterMember]) -> Ring {
        let mut clients = self.clients.lock().expect("client cache lock");
        clients.retain(|(instance, address), _| {
            members
                .iter()
                .any(|m| &m.instance == instance && &m.address == address)
        });
        let mut instances: Vec<(Arc<dyn IngesterClient>, Vec<u32>)> = Vec::new();
        for m in members {
            let client: Arc<dyn IngesterClient> = if !m.healthy {
                Arc::new(SilentIngester {
                    instance: m.instance.clone(),
                })
            } else {
                let key = (m.instance.clone(), m.address.clone());
                match clients.get(&key) {
                    Some(c) => Arc::clone(c) as _,
                    None => match RemoteIngester::new(&m.instance, &m.address, self.timeout) {
                        Ok(c) => {
                            let c = Arc::new(c);
                            clients.insert(key, Arc::clone(&c));
                            c
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "skipping an ingester of the ring");
                            Arc::new(SilentIngester {
                                instance: m.instance.clone(),
                            })
                        }
                    },
                }
            };
            instances.push((client, m.tokens.clone()));
        }
        Ring::with_tokens(instances, self.replication_factor)
    }
}
