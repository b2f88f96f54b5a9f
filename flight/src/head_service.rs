//! The ingester's Flight service: its head, pinned and scanned for queriers of other processes.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaResult, Ticket,
};
use futures_util::{Stream, TryStreamExt};
use profusion_model::scan::{
    GenerationSummary, HeadCut, HeadSnapshot, HeadSnapshots, HeadSource, ScanError,
};
use tonic::{Request, Response, Status, Streaming};

use profusion_cluster::Traffic;

use crate::protocol::{
    PinnedSnapshot, RELEASE, ReleaseBody, SNAPSHOT, SUMMARY, ScanTicket, TenantBody, to_status,
};
use crate::wire_bytes;

/// How long a pinned snapshot outlives its last use when its querier never releases it (a
/// querier that died mid-query).
const SNAPSHOT_IDLE_EXPIRY: Duration = Duration::from_secs(120);

/// Pinned snapshots by id, with when each was last used.
type Pinned = HashMap<u64, (Arc<dyn HeadSnapshot>, Instant)>;

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// Snapshots this ingester holds pinned for queries of other processes, by id.
#[derive(Debug)]
struct Pins {
    next_id: AtomicU64,
    pinned: Mutex<Pinned>,
}

impl Pins {
    fn new() -> Self {
        Self {
            // Ids from the clock, so a restarted ingester never honours a ticket of its
            // previous life.
            next_id: AtomicU64::new(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64),
            ),
            pinned: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pinned> {
        let mut pinned = self.pinned.lock().expect("pinned lock");
        pinned.retain(|_, (_, used)| used.elapsed() < SNAPSHOT_IDLE_EXPIRY);
        pinned
    }

    fn pin(&self, heads: HeadSnapshots) -> Vec<PinnedSnapshot> {
        let mut pinned = self.lock();
        heads
            .into_iter()
            .map(|head| {
                let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                let cut = head.cut().clone();
                pinned.insert(id, (head, Instant::now()));
                PinnedSnapshot { id, cut }
            })
            .collect()
    }

    /// The snapshot pinned under `id`, its last use now.
    fn get(&self, id: u64) -> Result<Arc<dyn HeadSnapshot>, ScanError> {
        let mut pinned = self.lock();
        let entry = pinned.get_mut(&id).ok_or_else(|| {
            ScanError::Unavailable(format!(
                "head snapshot {id} is not pinned here (released, expired, or the ingester \
                 restarted); retry the query"
            ))
        })?;
        entry.1 = Instant::now();
        Ok(Arc::clone(&entry.0))
    }

    fn release(&self, ids: &[u64]) {
        let mut pinned = self.lock();
        for id in ids {
            pinned.remove(id);
        }
    }
}

/// Serves a [`HeadSource`] (the ingester of this process) over Arrow Flight.
#[derive(Debug)]
pub struct HeadFlightService {
    head: Arc<dyn HeadSource>,
    stats: Arc<Traffic>,
    pins: Arc<Pins>,
}

impl HeadFlightService {
    pub fn new(head: Arc<dyn HeadSource>) -> Self {
        Self {
            head,
            stats: Arc::default(),
            pins: Arc::new(Pins::new()),
        }
    }

    /// The tonic service, to mount on the process's port.
    pub fn into_server(self) -> FlightServiceServer<Self> {
        FlightServiceServer::new(self)
            .max_decoding_message_size(16 << 20)
            .max_encoding_message_size(usize::MAX)
    }

    /// What this service sent.
    pub fn stats(&self) -> Arc<Traffic> {
        Arc::clone(&self.stats)
    }

    /// Snapshots pinned now (for tests and metrics).
    pub fn pinned(&self) -> usize {
        self.pins.lock().len()
    }

    /// The head as plan fragments running in this process read it: the snapshots queriers
    /// pinned here through this service, by their pins, and the ingester's own head.
    pub fn local_heads(&self) -> Arc<dyn HeadSource> {
        Arc::new(PinnedHeads {
            head: Arc::clone(&self.head),
            pins: Arc::clone(&self.pins),
        })
    }
}

/// See [`HeadFlightService::local_heads`].
#[derive(Debug)]
struct PinnedHeads {
    head: Arc<dyn HeadSource>,
    pins: Arc<Pins>,
}

#[async_trait::async_trait]
impl HeadSource for PinnedHeads {
    async fn snapshot(&self, tenant: &str) -> Result<HeadSnapshots, ScanError> {
        self.head.snapshot(tenant).await
    }

    async fn summary(&self, tenant: &str) -> Result<Vec<GenerationSummary>, ScanError> {
        self.head.summary(tenant).await
    }

    async fn pinned(&self, cut: &HeadCut, pin: u64) -> Result<Arc<dyn HeadSnapshot>, ScanError> {
        let head = self.pins.get(pin)?;
        if head.cut() != cut {
            return Err(ScanError::Internal(format!(
                "head snapshot {pin} here is of {}, a plan asked for it as one of {}",
                head.cut().source,
                cut.source
            )));
        }
        Ok(head)
    }
}

fn parse<T: serde::de::DeserializeOwned>(what: &str, body: &[u8]) -> Result<T, Status> {
    serde_json::from_slice(body)
        .map_err(|e| Status::invalid_argument(format!("malformed {what}: {e}")))
}

fn json_result<T: serde::Serialize>(
    value: &T,
) -> Result<Response<BoxStream<arrow_flight::Result>>, Status> {
    let body = serde_json::to_vec(value).map_err(|e| Status::internal(e.to_string()))?;
    Ok(Response::new(Box::pin(futures_util::stream::once(
        async move { Ok(arrow_flight::Result { body: body.into() }) },
    ))))
}

#[async_trait::async_trait]
impl FlightService for HeadFlightService {
    type HandshakeStream = BoxStream<HandshakeResponse>;
    type ListFlightsStream = BoxStream<FlightInfo>;
    type DoGetStream = BoxStream<FlightData>;
    type DoPutStream = BoxStream<PutResult>;
    type DoExchangeStream = BoxStream<FlightData>;
    type DoActionStream = BoxStream<arrow_flight::Result>;
    type ListActionsStream = BoxStream<ActionType>;

    async fn do_get(
        &self,
        request: Request<Ticket>,
    ) -> Result<Response<Self::DoGetStream>, Status> {
        let ticket: ScanTicket = parse("head scan ticket", &request.get_ref().ticket)?;
        let head = self.pins.get(ticket.id).map_err(to_status)?;
        let batches = head.scan(&ticket.request).await.map_err(to_status)?;
        let (rows, sent) = (Arc::clone(&self.stats), Arc::clone(&self.stats));
        let batches = batches
            .inspect_ok(move |b| rows.add(b.num_rows() as u64, 0))
            .map_err(|e| FlightError::Tonic(Box::new(to_status(e))));
        let data = FlightDataEncoderBuilder::new()
            .build(batches)
            .inspect_ok(move |d| sent.add(0, wire_bytes(d)))
            .map_err(|e| match e {
                FlightError::Tonic(status) => *status,
                other => Status::internal(other.to_string()),
            });
        Ok(Response::new(Box::pin(data)))
    }

    async fn do_action(
        &self,
        request: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        let action = request.into_inner();
        match action.r#type.as_str() {
            SNAPSHOT => {
                let body: TenantBody = parse("head.snapshot body", &action.body)?;
                let heads = self.head.snapshot(&body.tenant).await.map_err(to_status)?;
                json_result(&self.pins.pin(heads))
            }
            SUMMARY => {
                let body: TenantBody = parse("head.summary body", &action.body)?;
                let summary = self.head.summary(&body.tenant).await.map_err(to_status)?;
                json_result(&summary)
            }
            RELEASE => {
                let body: ReleaseBody = parse("head.release body", &action.body)?;
                self.pins.release(&body.ids);
                json_result(&())
            }
            other => Err(Status::unimplemented(format!(
                "no action {other:?}; this service has {SNAPSHOT}, {SUMMARY} and {RELEASE}"
            ))),
        }
    }

    async fn list_actions(
        &self,
        _request: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        let actions = [
            (SNAPSHOT, "pin a tenant's head: {tenant} -> [{id, cut}]"),
            (
                SUMMARY,
                "a tenant's head generations: {tenant} -> [summary]",
            ),
            (RELEASE, "unpin snapshots: {ids}"),
        ]
        .map(|(r#type, description)| {
            Ok(ActionType {
                r#type: r#type.to_owned(),
                description: description.to_owned(),
            })
        });
        Ok(Response::new(Box::pin(futures_util::stream::iter(actions))))
    }

    async fn handshake(
        &self,
        _request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        Err(Status::unimplemented(
            "no handshake: the head service is internal",
        ))
    }

    async fn list_flights(
        &self,
        _request: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        Err(Status::unimplemented("the head service lists no flights"))
    }

    async fn get_flight_info(
        &self,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        Err(Status::unimplemented("use head.snapshot, then DoGet"))
    }

    async fn poll_flight_info(
        &self,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        Err(Status::unimplemented("use head.snapshot, then DoGet"))
    }

    async fn get_schema(
        &self,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        Err(Status::unimplemented(
            "schemas travel with the DoGet stream",
        ))
    }

    async fn do_put(
        &self,
        _request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        Err(Status::unimplemented("writes go through the distributor"))
    }

    async fn do_exchange(
        &self,
        _request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        Err(Status::unimplemented("the head service has no exchange"))
    }
}
