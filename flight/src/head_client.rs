//! The querier's view of every ingester's head, over Arrow Flight: a [`HeadSource`] whose
//! snapshot of a tenant is one pinned snapshot per ingester of the ring.

use std::sync::Arc;
use std::time::Duration;

use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::{Action, Ticket};
use async_trait::async_trait;
use futures_util::{StreamExt, TryStreamExt};
use profusion_cluster::{CallDeadline, MemberState, PeerChannels, RingWatcher};
use profusion_model::scan::{
    GenerationSummary, HeadCut, HeadSnapshot, HeadSnapshots, HeadSource, RecordBatchStream,
    ScanError, ScanRequest, ingester_source,
};
use tonic::transport::Channel;

use profusion_cluster::Traffic;

use crate::protocol::{
    PinnedSnapshot, RELEASE, ReleaseBody, SNAPSHOT, SUMMARY, ScanTicket, TenantBody, from_status,
};
use crate::wire_bytes;

/// Every ingester of the ring, read over Flight. A tenant's snapshot asks all of them; with
/// replication factor `rf`, up to `(rf - 1) / 2` may be down or silent (each series is on a
/// majority of its replicas, so the rest still hold every acknowledged profile), more fail the
/// query as unavailable.
#[derive(Debug)]
pub struct RemoteHeads {
    ring: RingWatcher,
    stats: Arc<Traffic>,
    replication_factor: usize,
    channels: PeerChannels,
}

impl RemoteHeads {
    pub fn new(ring: RingWatcher, replication_factor: usize, timeout: Duration) -> Self {
        Self {
            ring,
            stats: Arc::default(),
            replication_factor: replication_factor.max(1),
            channels: PeerChannels::new(timeout, CallDeadline::Bounded),
        }
    }

    /// What this querier received from the ingesters.
    pub fn stats(&self) -> Arc<Traffic> {
        Arc::clone(&self.stats)
    }

    fn client(&self, address: &str) -> Result<FlightServiceClient<Channel>, ScanError> {
        let channel = self
            .channels
            .get(address)
            .map_err(|e| ScanError::Internal(e.to_string()))?;
        Ok(FlightServiceClient::new(channel).max_decoding_message_size(usize::MAX))
    }

    /// Calls `action` on every ingester with `body`; the answers of those that answered, and
    /// an error when more failed than the replication factor tolerates.
    async fn ask_all<T: serde::de::DeserializeOwned>(
        &self,
        action: &str,
        body: Vec<u8>,
    ) -> Result<Vec<(String, T)>, ScanError> {
        let config = self.ring.config();
        let members = self.ring.members();
        let calls = members.iter().map(|m| {
            let body = body.clone();
            async move {
                if m.state != MemberState::Active || !config.is_healthy(m) {
                    return Err(ScanError::Unavailable(format!(
                        "ingester {} is {} on the ring",
                        m.instance,
                        if config.is_healthy(m) {
                            m.state.as_str()
                        } else {
                            "UNHEALTHY"
                        }
                    )));
                }
                let mut client = self.client(&m.address)?;
                let answer = client
                    .do_action(Action {
                        r#type: action.to_owned(),
                        body: body.into(),
                    })
                    .await
                    .map_err(|s| from_status(&m.address, s))?
                    .into_inner()
                    .try_next()
                    .await
                    .map_err(|s| from_status(&m.address, s))?
                    .ok_or_else(|| {
                        ScanError::Internal(format!("ingester {} answered nothing", m.instance))
                    })?;
                let value: T = serde_json::from_slice(&answer.body).map_err(|e| {
                    ScanError::Internal(format!("ingester {} answered {action}: {e}", m.instance))
                })?;
                Ok((m.address.clone(), value))
            }
        });
        let results = futures_util::future::join_all(calls).await;
        let tolerated = (self.replication_factor - 1) / 2;
        let mut answers = Vec::new();
        let mut failures = Vec::new();
        for result in results {
            match result {
                Ok(answer) => answers.push(answer),
                Err(e) => failures.push(e),
            }
        }
        if failures.len() > tolerated {
            let reasons: Vec<String> = failures.iter().map(ToString::to_string).collect();
            return Err(ScanError::Unavailable(format!(
                "{} of {} ingesters cannot be read (at most {tolerated} may be, with \
                 replication factor {}): {}",
                failures.len(),
                members.len(),
                self.replication_factor,
                reasons.join("; ")
            )));
        }
        for e in &failures {
            tracing::debug!(error = %e, "reading the head without an ingester");
        }
        Ok(answers)
    }
}

#[async_trait]
impl HeadSource for RemoteHeads {
    async fn snapshot(&self, tenant: &str) -> Result<HeadSnapshots, ScanError> {
        let body = serde_json::to_vec(&TenantBody {
            tenant: tenant.to_owned(),
        })
        .map_err(|e| ScanError::Internal(e.to_string()))?;
        let answers: Vec<(String, Vec<PinnedSnapshot>)> = self.ask_all(SNAPSHOT, body).await?;
        let mut snapshots: HeadSnapshots = Vec::new();
        for (address, pinned) in answers {
            for p in pinned {
                snapshots.push(Arc::new(RemoteSnapshot {
                    client: self.client(&address)?,
                    stats: Arc::clone(&self.stats),
                    address: address.clone(),
                    id: p.id,
                    cut: p.cut,
                    owned: true,
                }));
            }
        }
        // In the order of their sources, so plans and choices are the same on every run.
        snapshots.sort_by(|a, b| a.cut().source.cmp(&b.cut().source));
        Ok(snapshots)
    }

    async fn summary(&self, tenant: &str) -> Result<Vec<GenerationSummary>, ScanError> {
        let body = serde_json::to_vec(&TenantBody {
            tenant: tenant.to_owned(),
        })
        .map_err(|e| ScanError::Internal(e.to_string()))?;
        let answers: Vec<(String, Vec<GenerationSummary>)> = self.ask_all(SUMMARY, body).await?;
        Ok(answers.into_iter().flat_map(|(_, s)| s).collect())
    }

    async fn pinned(&self, cut: &HeadCut, pin: u64) -> Result<Arc<dyn HeadSnapshot>, ScanError> {
        let member = self
            .ring
            .members()
            .iter()
            .find(|m| ingester_source(&m.instance) == cut.source)
            .cloned()
            .ok_or_else(|| {
                ScanError::Unavailable(format!(
                    "{} is not in the ring; retry the query",
                    cut.source
                ))
            })?;
        Ok(Arc::new(RemoteSnapshot {
            client: self.client(&member.address)?,
            stats: Arc::clone(&self.stats),
            address: member.address,
            id: pin,
            cut: cut.clone(),
            // The process that pinned it releases it.
            owned: false,
        }))
    }
}

/// One ingester's pinned snapshot, released when the query that pinned it (`owned`) drops it.
#[derive(Debug)]
struct RemoteSnapshot {
    client: FlightServiceClient<Channel>,
    stats: Arc<Traffic>,
    address: String,
    id: u64,
    cut: HeadCut,
    owned: bool,
}

#[async_trait]
impl HeadSnapshot for RemoteSnapshot {
    fn cut(&self) -> &HeadCut {
        &self.cut
    }

    fn pin(&self) -> Option<u64> {
        Some(self.id)
    }

    async fn scan(&self, request: &ScanRequest) -> Result<RecordBatchStream, ScanError> {
        let ticket = serde_json::to_vec(&ScanTicket {
            id: self.id,
            request: request.clone(),
        })
        .map_err(|e| ScanError::Internal(e.to_string()))?;
        let address = self.address.clone();
        let (received, rows) = (Arc::clone(&self.stats), Arc::clone(&self.stats));
        let data = self
            .client
            .clone()
            .do_get(Ticket {
                ticket: ticket.into(),
            })
            .await
            .map_err(|s| from_status(&address, s))?
            .into_inner()
            .inspect_ok(move |d| received.add(0, wire_bytes(d)))
            .map_err(|s| arrow_flight::error::FlightError::Tonic(Box::new(s)));
        let batches =
            FlightRecordBatchStream::new_from_flight_data(data).map_err(move |e| match e {
                arrow_flight::error::FlightError::Tonic(status) => from_status(&address, *status),
                other => ScanError::Unavailable(format!("reading the head at {address}: {other}")),
            });
        Ok(batches
            .inspect_ok(move |b| rows.add(b.num_rows() as u64, 0))
            .boxed())
    }
}

impl Drop for RemoteSnapshot {
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let mut client = self.client.clone();
        let Ok(body) = serde_json::to_vec(&ReleaseBody { ids: vec![self.id] }) else {
            return;
        };
        // Best effort: an unreleased snapshot expires on the ingester on its own.
        runtime.spawn(async move {
            let _ = client
                .do_action(Action {
                    r#type: RELEASE.to_owned(),
                    body: body.into(),
                })
                .await;
        });
    }
}
