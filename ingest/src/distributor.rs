//! The distributor: decodes, validates and normalizes incoming profiles, splits them into
//! series, applies the tenant's rate limit, and routes each series to its ingesters on the ring,
//! acknowledging once a quorum of replicas has it durably.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::join_all;
use profusion_proto::google::v1::Profile;
use profusion_proto::ingester::v1::WriteRequest;

use crate::error::{IngestError, Result};
use crate::limits::Limits;
use crate::metrics::IngestMetrics;
use crate::pprof::{self, ConvertOptions, Converted, SharedSymbols};
use crate::ratelimit::TenantRateLimiter;
use crate::ring::{Ring, SharedRing};
use profusion_model::labels::{self, Labels};
use profusion_model::status::StatusCode;

/// The profile bytes of an incoming profile, or a profile another decoder already built.
#[derive(Debug, Clone)]
pub enum ProfileBody {
    /// pprof, gzip-compressed or plain.
    Raw(Bytes),
    Decoded(Box<Profile>),
    /// Samples, sample types, period and times in `profile`; symbol tables in `symbols`, which
    /// the request's other profiles share (see [`pprof::convert_shared`]).
    Shared {
        profile: Box<Profile>,
        symbols: Arc<SharedSymbols>,
    },
}

/// One profile as an ingest endpoint received it.
#[derive(Debug, Clone)]
pub struct IncomingProfile {
    /// Series labels sent with it (`__name__`, `service_name`, user labels, ...).
    pub labels: Labels,
    pub body: ProfileBody,
    /// The client's profile UUID; empty to have one assigned.
    pub id: String,
    pub options: ConvertOptions,
}

/// What the write API needs from the write path, so its handlers hold a service, not the
/// distributor: the limits a request is decoded under, the CPU part of a push (validation and
/// conversion, which callers run on a blocking thread) and the storing part.
#[async_trait::async_trait]
pub trait PushService: Send + Sync + std::fmt::Debug {
    fn limits(&self) -> &Limits;

    /// Validates and converts profiles without storing them.
    fn prepare(&self, profiles: Vec<IncomingProfile>, now_nanos: i64) -> Result<Converted>;

    /// Stores converted profiles for `tenant`, answering once they are durable.
    async fn write(&self, tenant: &str, converted: Converted) -> Result<()>;
}

#[derive(Debug)]
pub struct Distributor {
    ring: Arc<SharedRing>,
    limits: Limits,
    rate: TenantRateLimiter,
    metrics: IngestMetrics,
}

impl Distributor {
    pub fn new(ring: Ring, limits: Limits, metrics: IngestMetrics) -> Self {
        Self {
            ring: Arc::new(SharedRing::new(ring)),
            limits,
            rate: TenantRateLimiter::default(),
            metrics,
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The ring writes are routed over, for membership to replace as ingesters come and go.
    pub fn ring(&self) -> &Arc<SharedRing> {
        &self.ring
    }

    /// Validates and converts profiles without storing them (the CPU part of a push).
    pub fn prepare(&self, profiles: Vec<IncomingProfile>, now_nanos: i64) -> Result<Converted> {
        let mut out = Converted::default();
        // Symbol tables shared by several profiles are charged once, not once per profile.
        let mut shared: HashSet<usize> = HashSet::new();
        for (i, incoming) in profiles.into_iter().enumerate() {
            if let ProfileBody::Shared { symbols, .. } = &incoming.body
                && shared.insert(Arc::as_ptr(symbols) as usize)
            {
                out.bytes += symbols.encoded_len;
            }
            let converted = self.prepare_one(incoming, now_nanos).map_err(|e| {
                self.metrics.reject(reason(&e));
                e.at(format!("profile {i}"))
            })?;
            out.append(converted);
        }
        Ok(out)
    }

    fn prepare_one(&self, incoming: IncomingProfile, now_nanos: i64) -> Result<Converted> {
        let IncomingProfile {
            mut labels,
            body,
            id,
            mut options,
        } = incoming;
        labels.set_default(labels::SERVICE_NAME, labels::UNKNOWN_SERVICE);
        let id = if id.is_empty() {
            uuid::Uuid::new_v4().to_string()
        } else {
            uuid::Uuid::parse_str(&id)
                .map_err(|e| IngestError::invalid(format!("profile ID {id:?} is not a UUID: {e}")))?
                .to_string()
        };
        if options.fallback_time_nanos == 0 {
            options.fallback_time_nanos = now_nanos;
        }
        let max_size = self.limits.max_profile_size_bytes;
        let (profile, size) = match &body {
            ProfileBody::Raw(raw) => {
                // Read in place: the hot path allocates per profile, not per sample, and the
                // frames' strings stay in the pprof until an ingester needs them.
                let bytes = match pprof::maybe_gunzip(raw, max_size)? {
                    Cow::Borrowed(_) => raw.clone(),
                    Cow::Owned(gunzipped) => Bytes::from(gunzipped),
                };
                return pprof::convert_in_place(
                    bytes,
                    &labels,
                    &id,
                    &options,
                    &self.limits,
                    now_nanos,
                );
            }
            ProfileBody::Decoded(p) => (p.as_ref(), prost::Message::encoded_len(p.as_ref())),
            ProfileBody::Shared { profile, symbols } => {
                let own = prost::Message::encoded_len(profile.as_ref());
                // As Pyroscope sees it, each profile is a pprof holding the whole dictionary;
                // the rate limit charges the dictionary once per request (`prepare`).
                let size = own + symbols.encoded_len;
                if size > max_size {
                    return Err(pprof::too_big(size, max_size));
                }
                return pprof::convert_shared(
                    profile.as_ref(),
                    symbols,
                    &labels,
                    &id,
                    &options,
                    &self.limits,
                    now_nanos,
                    own,
                );
            }
        };
        if size > max_size {
            return Err(pprof::too_big(size, max_size));
        }
        pprof::convert(
            profile,
            &labels,
            &id,
            &options,
            &self.limits,
            now_nanos,
            size,
        )
    }

    /// Stores converted profiles for `tenant`: rate limit, route, quorum write.
    pub async fn write(&self, tenant: &str, converted: Converted) -> Result<()> {
        if converted.profiles.is_empty() {
            return Ok(());
        }
        if !self.rate.allow(
            tenant,
            converted.bytes as f64,
            self.limits.ingestion_rate_bytes,
            self.limits.ingestion_burst_bytes,
        ) {
            self.metrics.reject("rate_limited");
            return Err(IngestError::exhausted(format!(
                "tenant {tenant:?} is over its ingestion rate limit of {} bytes/s (burst {} bytes); \
                 this push of {} bytes was refused",
                self.limits.ingestion_rate_bytes,
                self.limits.ingestion_burst_bytes,
                converted.bytes
            )));
        }
        let n_profiles = converted.profiles.len();
        let bytes = converted.bytes;
        let ring_now = self.ring.load();
        let ring = &*ring_now;
        if ring.is_empty() {
            self.metrics.reject("ingester_failure");
            return Err(IngestError::unavailable(
                "no ingester is in the ring to store the profiles; retry once one has joined",
            ));
        }

        // Replica set per series profile, and the profiles per instance.
        let mut per_instance: HashMap<usize, Vec<usize>> = HashMap::new();
        let mut replicas_of = Vec::with_capacity(n_profiles);
        for (pi, p) in converted.profiles.iter().enumerate() {
            let rendered =
                Labels::from_pairs(p.labels.iter().map(|l| (l.name.as_str(), l.value.as_str())))
                    .render();
            let replicas = ring.replicas(Ring::token_for(tenant, &rendered));
            for &r in &replicas {
                per_instance.entry(r).or_default().push(pi);
            }
            replicas_of.push(replicas);
        }
        let single = per_instance.len() == 1;
        let mut requests = Vec::with_capacity(per_instance.len());
        let Converted {
            profiles,
            stacks,
            frames,
            text,
            ..
        } = converted;
        let text = Arc::new(text);
        if single {
            let (&instance, _) = per_instance.iter().next().expect("one instance");
            requests.push((
                instance,
                WriteRequest {
                    tenant: tenant.to_owned(),
                    profiles,
                    stacks,
                    frames,
                },
            ));
        } else {
            for (&instance, indexes) in &per_instance {
                let ps: Vec<_> = indexes.iter().map(|&i| profiles[i].clone()).collect();
                let used: HashSet<u64> = ps
                    .iter()
                    .flat_map(|p| p.samples.iter().map(|s| s.stack_hash))
                    .collect();
                let st: Vec<_> = stacks
                    .iter()
                    .filter(|s| used.contains(&s.hash))
                    .cloned()
                    .collect();
                // Stacks refer to frames by position, so every instance gets the full list.
                let fr = frames.clone();
                requests.push((
                    instance,
                    WriteRequest {
                        tenant: tenant.to_owned(),
                        profiles: ps,
                        stacks: st,
                        frames: fr,
                    },
                ));
            }
        }
        let results = join_all(requests.into_iter().map(|(instance, req)| {
            let text = Arc::clone(&text);
            async move {
                (
                    instance,
                    ring.instance(instance).write_with_text(req, text).await,
                )
            }
        }))
        .await;
        let mut failed = HashMap::new();
        for (instance, result) in results {
            if let Err(e) = result {
                tracing::warn!(instance = ring.instance(instance).instance_id(), error = %e, "ingester write failed");
                failed.insert(instance, e);
            }
        }
        let quorum = ring.quorum();
        for replicas in &replicas_of {
            let ok = replicas.iter().filter(|r| !failed.contains_key(r)).count();
            if ok < quorum.min(replicas.len()) {
                let (_, first) = failed.into_iter().next().expect("a failure");
                if first.status != StatusCode::ResourceExhausted {
                    // A series limit is counted by the ingester that refused it.
                    self.metrics.reject("ingester_failure");
                }
                let message = format!(
                    "only {ok} of {} replicas stored the profile: {}",
                    replicas.len(),
                    first.message
                );
                return Err(IngestError::new(first.status, message).with_source(first));
            }
        }
        self.metrics.profiles_received.inc_by(n_profiles as u64);
        self.metrics.bytes_received.inc_by(bytes as u64);
        Ok(())
    }

    /// [`Self::prepare`] then [`Self::write`].
    pub async fn push(&self, tenant: &str, profiles: Vec<IncomingProfile>) -> Result<()> {
        let converted = self.prepare(profiles, profusion_model::time::now_nanos())?;
        self.write(tenant, converted).await
    }
}

#[async_trait::async_trait]
impl PushService for Distributor {
    fn limits(&self) -> &Limits {
        Distributor::limits(self)
    }

    fn prepare(&self, profiles: Vec<IncomingProfile>, now_nanos: i64) -> Result<Converted> {
        Distributor::prepare(self, profiles, now_nanos)
    }

    async fn write(&self, tenant: &str, converted: Converted) -> Result<()> {
        Distributor::write(self, tenant, converted).await
    }
}

fn reason(e: &IngestError) -> &'static str {
    match e.status {
        StatusCode::InvalidArgument | StatusCode::Unprocessable => "invalid",
        StatusCode::ResourceExhausted | StatusCode::PayloadTooLarge => "too_large",
        StatusCode::UnsupportedMediaType => "unsupported",
        _ => "internal",
    }
}
