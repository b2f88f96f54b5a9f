//! The ingester: appends writes to its WAL, keeps them in a per-tenant head, and flushes the
//! head into blocks.
//!
//! Flush protocol, per sealed WAL segment N, each step safe to crash after:
//! 1. seal segment N (new writes go to N+1);
//! 2. per tenant, encode a block whose id is derived from (ingester, N, tenant) and upload its
//!    files, `meta.json` last;
//! 3. register the block in the catalog with `source` and `wal_segment = N`;
//! 4. drop generation N from memory and delete WAL segments up to N.
//!
//! On start, each remaining segment is replayed except for the tenants the catalog already
//! holds a block of that segment for. A crash before step 3 re-flushes to the same block id (an
//! overwrite, not a duplicate); a crash after it finds the segment's tenants registered and
//! skips them.

mod batches;
pub mod head;
pub mod limiter;
mod scan;
pub(crate) mod wal;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use object_store::ObjectStore;
use profusion_catalog::Catalog;
use profusion_proto::ingester::v1::WriteRequest;
use tokio::sync::Notify;

use crate::error::{IngestError, Result};
use crate::frame_text::FrameText;
use crate::metrics::IngestMetrics;
use head::Head;
use limiter::SeriesLimiter;
use profusion_model::block::{self, BlockOrigin, BlockStore};
use profusion_model::labels;
use profusion_model::scan::{GenerationSummary, HeadCut};
use wal::WalHandle;

/// Ingester settings.
#[derive(Debug, Clone)]
pub struct IngesterConfig {
    /// Stable identity; blocks record `ingester-<id>` as their source.
    pub id: String,
    /// The write-ahead log's directory; blocks being flushed are spooled in `flush-spool`
    /// next to it.
    pub wal_dir: PathBuf,
    /// Flush a generation once it has been open this long.
    pub max_block_duration: Duration,
    /// Most bytes the head holds, generations being flushed included: the open generation
    /// is sealed and flushed at half of it, so the next one fills while a block is written,
    /// and writes wait for a flush (up to `head_full_wait`) once the whole is reached.
    pub max_head_bytes: usize,
    /// How long a write waits for a flush to free room in a full head before it is refused.
    pub head_full_wait: Duration,
    /// How often flush triggers are checked.
    pub flush_check_interval: Duration,
    /// Local directory behind the object store, if any: uploaded files are fsynced there.
    pub local_store_root: Option<PathBuf>,
    /// Most active series per tenant on this ingester (0: no limit); see
    /// [`limiter::local_series_limit`].
    pub max_series_per_tenant: usize,
}

impl IngesterConfig {
    /// The open generation's size at which it is sealed and flushed: half the head's limit,
    /// leaving the other half to the next generation while the block is written.
    fn flush_at_bytes(&self) -> usize {
        self.max_head_bytes / 2
    }
}

/// Rows of a sealed generation rows to flush, taken under the head's lock and written
/// outside it.
enum FlushSource {
    /// The block batches a query snapshot already built: written as they are.
    Batches(Arc<profusion_model::block::BlockBatches>),
    /// The head's data: built into rows a chunk at a time while written.
    Head(Arc<head::HeadData>),
}

/// Runs a closure when dropped: on every way out of a scope.
struct Defer<F: FnMut()>(F);

impl<F: FnMut()> Drop for Defer<F> {
    fn drop(&mut self) {
        (self.0)()
    }
}

/// Samples per chunk a flush builds and writes at a time: a few tens of MB of Arrow.
const FLUSH_CHUNK_SAMPLES: usize = 1 << 20;

impl FlushSource {
    /// Writes the block to files under `spool_dir`.
    fn spool(
        &self,
        spool_dir: &std::path::Path,
        tenant: &str,
        id: &str,
        origin: &BlockOrigin,
    ) -> Result<block::SpooledBlock> {
        let spool_err = |e: block::BlockError| IngestError::internal(e.to_string()).with_source(e);
        let mut spool = block::BlockSpool::create(spool_dir, id).map_err(spool_err)?;
        let summary = match self {
            FlushSource::Batches(batches) => {
                for table in block::Table::ALL {
                    spool
                        .write(table, batches.table(table))
                        .map_err(spool_err)?;
                }
                batches.summary()
            }
            FlushSource::Head(data) => batches::spool_block(data, &mut spool, FLUSH_CHUNK_SAMPLES)?,
        };
        spool
            .finish(
                tenant,
                id,
                &summary,
                origin,
                profusion_model::time::now_millis(),
            )
            .map_err(spool_err)
    }
}

/// Where the distributor sends writes: an ingester in this process or, later, over the network.
#[async_trait]
pub trait IngesterClient: Send + Sync + std::fmt::Debug {
    /// The instance id used on the ring.
    fn instance_id(&self) -> &str;
    /// Durably stores a write; returns once it is in the WAL and queryable.
    async fn write(&self, request: WriteRequest) -> Result<()>;

    /// [`Self::write`] of a request whose frames may have left their strings in `text`. An
    /// ingester in this process copies out only the strings its head lacks; any other gets
    /// them all.
    async fn write_with_text(&self, mut request: WriteRequest, text: Arc<FrameText>) -> Result<()> {
        text.fill_all(&mut request.frames);
        self.write(request).await
    }

    /// Writes the whole head into registered blocks.
    async fn flush(&self) -> Result<()>;
}

/// The WAL thread's view of the head: appends go to the open segment's generation, so this is
/// where it fills up and where a batch learns which symbols the generation already holds.
struct HeadSink {
    head: Arc<Mutex<Head>>,
    metrics: IngestMetrics,
    wake: Arc<Notify>,
    flush_at_bytes: usize,
}

impl wal::WalSink for HeadSink {
    fn trim(&mut self, seq: u64, requests: &mut [(&mut WriteRequest, &FrameText)]) {
        let h = self.head.lock().expect("head lock");
        let generation = h.generations.get(&seq);
        for (r, text) in requests.iter_mut() {
            match generation.and_then(|g| g.tenants.get(&r.tenant)) {
                Some(tenant) => tenant.trim_known(r, text),
                None => text.fill_all(&mut r.frames),
            }
        }
    }

    fn apply(&mut self, seq: u64, created_millis: i64, requests: Vec<WriteRequest>) {
        let mut h = self.head.lock().expect("head lock");
        let generation = h.generation(seq, created_millis);
        for r in requests {
            self.metrics.head_profiles.inc_by(r.profiles.len() as u64);
            generation.append(r);
        }
        if generation.bytes >= self.flush_at_bytes {
            self.wake.notify_one();
        }
        self.metrics.head_bytes.set(h.bytes() as i64);
    }
}

/// An ingester running in this process.
#[derive(Debug)]
pub struct Ingester {
    config: IngesterConfig,
    source: String,
    wal: WalHandle,
    /// The WAL segment taking writes; every generation below it is sealed.
    open_segment: AtomicU64,
    head: Arc<Mutex<Head>>,
    blocks: BlockStore,
    /// Where a flush writes a block's files before uploading them.
    spool_dir: PathBuf,
    catalog: Arc<dyn Catalog>,
    flush_lock: tokio::sync::Mutex<()>,
    wake: Arc<Notify>,
    /// Signalled when a flush drops a generation, for writes waiting on a full head.
    head_freed: Notify,
    metrics: IngestMetrics,
    series: SeriesLimiter,
    series_expired: Mutex<std::time::Instant>,
}

impl Ingester {
    /// Recovers the WAL into the head, starts the WAL thread and the flush loop.
    pub async fn open(
        config: IngesterConfig,
        store: Arc<dyn ObjectStore>,
        catalog: Arc<dyn Catalog>,
        metrics: IngestMetrics,
    ) -> Result<Arc<Self>> {
        std::fs::create_dir_all(&config.wal_dir).map_err(|e| {
            IngestError::internal(format!("creating {}: {e}", config.wal_dir.display()))
        })?;
        // A flush cut short left its spooled files behind; the block is flushed again from
        // the WAL.
        let spool_dir = config.wal_dir.with_file_name("flush-spool");
        if spool_dir.exists() {
            std::fs::remove_dir_all(&spool_dir).map_err(|e| {
                IngestError::internal(format!("clearing {}: {e}", spool_dir.display()))
            })?;
        }
        let source = profusion_model::scan::ingester_source(&config.id);
        let head = Arc::new(Mutex::new(Head::default()));
        let series = SeriesLimiter::new(config.max_series_per_tenant);
        let segments = wal::list_segments(&config.wal_dir)?;
        let mut replayed = 0usize;
        for &seq in &segments {
            let path = wal::segment_path(&config.wal_dir, seq);
            let contents = wal::read_segment(&path)?;
            if let Some(damage) = &contents.damage {
                metrics.wal_corruptions.inc();
                tracing::warn!(segment = %path.display(), %damage, records = contents.records.len(),
                    "write-ahead log segment is damaged; the intact records before the damage are recovered");
            }
            let done = catalog
                .flushed_tenants(&source, seq)
                .await
                .map_err(|e| IngestError::unavailable(format!("catalog: {e}")).with_source(e))?;
            let mut h = head.lock().expect("head lock");
            let generation = h.generation(seq, contents.created_millis);
            for record in contents.records {
                if !done.contains(&record.tenant) {
                    replayed += record.profiles.len();
                    // Replayed series were admitted before the restart: they count, unchecked.
                    series.restore(
                        &record.tenant,
                        record.profiles.iter().map(|p| p.fingerprint),
                    );
                    generation.append(record);
                }
            }
            if generation.tenants.is_empty() {
                h.generations.remove(&seq);
            }
        }
        if !segments.is_empty() {
            tracing::info!(
                segments = segments.len(),
                profiles = replayed,
                "replayed write-ahead log"
            );
        }
        let next = segments.last().map_or(1, |s| s + 1);
        let wake = Arc::new(Notify::new());
        let wal = WalHandle::start(
            config.wal_dir.clone(),
            next,
            Box::new(HeadSink {
                head: Arc::clone(&head),
                metrics: metrics.clone(),
                wake: Arc::clone(&wake),
                flush_at_bytes: config.flush_at_bytes(),
            }),
        )?;
        let blocks = BlockStore {
            store,
            local_root: config.local_store_root.clone(),
        };
        let ingester = Arc::new(Self {
            config,
            source,
            wal,
            open_segment: AtomicU64::new(next),
            head,
            blocks,
            spool_dir,
            catalog,
            flush_lock: tokio::sync::Mutex::new(()),
            wake,
            head_freed: Notify::new(),
            metrics,
            series,
            series_expired: Mutex::new(std::time::Instant::now()),
        });
        let weak = Arc::downgrade(&ingester);
        let wake = Arc::clone(&ingester.wake);
        let interval = ingester.config.flush_check_interval;
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = tokio::time::sleep(interval) => {}
                    () = wake.notified() => {}
                }
                let Some(ingester) = weak.upgrade() else {
                    break;
                };
                ingester.expire_series();
                if let Err(e) = ingester.flush_if_due().await {
                    tracing::error!(error = %e, "flush failed; the head is kept and the flush retried");
                }
            }
        });
        Ok(ingester)
    }

    /// The head, for readers and statistics.
    pub fn head(&self) -> &Arc<Mutex<Head>> {
        &self.head
    }

    /// Time bounds and profile types of `tenant`'s head data, per generation, read from the
    /// head's metadata: for questions that need no samples.
    fn summary(&self, tenant: &str) -> Vec<GenerationSummary> {
        let h = self.head.lock().expect("head lock");
        h.generations
            .values()
            .filter_map(|g| g.tenants.get(tenant))
            .filter_map(|th| {
                let min = th.profiles.iter().map(|p| p.time_nanos).min()?;
                let max = th.profiles.iter().map(|p| p.time_nanos).max()?;
                let mut profile_types: Vec<String> = th
                    .series
                    .values()
                    .filter_map(|labels| labels.iter().find(|l| l.name == labels::PROFILE_TYPE))
                    .map(|l| l.value.clone())
                    .collect();
                profile_types.sort();
                profile_types.dedup();
                Some(GenerationSummary {
                    min_time_nanos: min,
                    max_time_nanos: max,
                    profile_types,
                    num_series: th.series.len() as u64,
                    num_profiles: th.profiles.len() as u64,
                    num_samples: th.num_samples as u64,
                    bytes: th.bytes as u64,
                })
            })
            .collect()
    }

    /// `tenant`'s head data as block batches, one per generation with the WAL segment it came
    /// from, and the cut of the snapshot: every segment in the head. A reader takes this before
    /// listing catalog blocks and skips blocks of these segments: a generation is dropped only
    /// after its block is registered, so every profile is seen exactly once, before, during and
    /// after a flush. Each generation's batches are built once and reused until it changes.
    fn pin(&self, tenant: &str) -> Result<scan::PinnedHead> {
        let mut h = self.head.lock().expect("head lock");
        let mut pinned = scan::PinnedHead {
            cut: HeadCut {
                source: self.source.clone(),
                segments: h.generations.keys().copied().collect(),
            },
            generations: Vec::new(),
        };
        for (&segment, generation) in h.generations.iter_mut() {
            let Some(th) = generation
                .tenants
                .get_mut(tenant)
                .filter(|t| !t.profiles.is_empty())
            else {
                continue;
            };
            let batches = match &th.snapshot {
                Some((profiles, batches)) if *profiles == th.profiles.len() => Arc::clone(batches),
                _ => {
                    let batches = Arc::new(batches::block_batches(th)?);
                    let (held, replaced) = th.set_snapshot(Arc::clone(&batches));
                    generation.bytes = generation.bytes + held - replaced;
                    batches
                }
            };
            pinned.generations.push((segment, batches));
        }
        self.metrics.head_bytes.set(h.bytes() as i64);
        Ok(pinned)
    }

    async fn flush_if_due(&self) -> Result<()> {
        let (due, sealed_pending) = {
            let open = self.open_segment.load(Ordering::Acquire);
            let h = self.head.lock().expect("head lock");
            let open_generation = h.generations.get(&open);
            let over_size =
                open_generation.is_some_and(|g| g.bytes >= self.config.flush_at_bytes());
            let over_age = open_generation.is_some_and(|g| {
                !g.tenants.is_empty() && g.opened.elapsed() >= self.config.max_block_duration
            });
            // Generations recovered from older segments are flushed right away.
            let pending = h.generations.keys().next().is_some_and(|s| *s < open);
            (over_size || over_age, pending)
        };
        if due {
            self.flush().await
        } else if sealed_pending {
            self.flush_sealed().await
        } else {
            Ok(())
        }
    }

    /// Seals the open WAL segment and flushes every sealed generation into blocks.
    pub async fn flush(&self) -> Result<()> {
        let _guard = self.flush_lock.lock().await;
        let sealed = self.wal.rotate().await?;
        self.open_segment.store(sealed + 1, Ordering::Release);
        self.flush_sealed_locked().await
    }

    async fn flush_sealed(&self) -> Result<()> {
        let _guard = self.flush_lock.lock().await;
        self.flush_sealed_locked().await
    }

    async fn flush_sealed_locked(&self) -> Result<()> {
        loop {
            let open = self.open_segment.load(Ordering::Acquire);
            let target = {
                let h = self.head.lock().expect("head lock");
                h.generations.keys().next().copied().filter(|s| *s < open)
            };
            let Some(seq) = target else { return Ok(()) };
            self.flush_generation(seq).await?;
        }
    }

    async fn flush_generation(&self, seq: u64) -> Result<()> {
        let started = std::time::Instant::now();
        self.metrics.flushing.set(1);
        let flushing = &self.metrics.flushing;
        let _done = Defer(move || {
            flushing.set(0);
        });
        let (created, tenants) = {
            let h = self.head.lock().expect("head lock");
            let g = &h.generations[&seq];
            let mut tenants: Vec<String> = g.tenants.keys().cloned().collect();
            tenants.sort();
            (g.created_millis, tenants)
        };
        let mut blocks = 0;
        for tenant in tenants {
            let id = block_id(&self.source, seq, &tenant, created);
            // Under the head lock only long enough to take the generation's data (or the
            // block batches a query already built from it): appends to the open generation
            // wait on this lock, so the block is built and written outside it. A sealed
            // generation takes no appends, so what is taken stays its whole data.
            let source = {
                let h = self.head.lock().expect("head lock");
                let Some(th) = h
                    .generations
                    .get(&seq)
                    .and_then(|g| g.tenants.get(&tenant))
                    .filter(|th| !th.profiles.is_empty())
                else {
                    continue;
                };
                match &th.snapshot {
                    Some((profiles, batches)) if *profiles == th.profiles.len() => {
                        FlushSource::Batches(Arc::clone(batches))
                    }
                    _ => FlushSource::Head(Arc::clone(&th.data)),
                }
            };
            let origin = BlockOrigin::ingester(self.source.clone(), seq);
            let (spool_dir, block_tenant, block_id) =
                (self.spool_dir.clone(), tenant.clone(), id.clone());
            let spooled = tokio::task::spawn_blocking(move || {
                source.spool(&spool_dir, &block_tenant, &block_id, &origin)
            })
            .await
            .map_err(|e| IngestError::internal(format!("writing block {id}: {e}")))??;
            let uploaded = self.blocks.upload_spooled(&tenant, &spooled).await;
            spooled.discard();
            let written = uploaded.map_err(|e| {
                IngestError::unavailable(format!("uploading block {id}: {e}")).with_source(e)
            })?;
            self.metrics.block_bytes.inc_by(written);
            self.catalog
                .register_block(&spooled.catalog)
                .await
                .map_err(|e| {
                    IngestError::unavailable(format!("registering block {id}: {e}")).with_source(e)
                })?;
            blocks += 1;
            tracing::info!(tenant = %tenant, block = %id, segment = seq,
                profiles = spooled.catalog.num_profiles, samples = spooled.catalog.num_samples,
                bytes = spooled.catalog.size_bytes, "flushed block");
        }
        {
            let mut h = self.head.lock().expect("head lock");
            h.generations.remove(&seq);
            self.metrics.head_bytes.set(h.bytes() as i64);
        }
        self.head_freed.notify_waiters();
        wal::remove_segments_through(&self.config.wal_dir, seq)?;
        self.metrics.flushes.inc();
        tracing::debug!(
            segment = seq,
            blocks,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "flushed WAL segment"
        );
        Ok(())
    }

    /// Flushes everything; called on graceful shutdown.
    pub async fn shutdown(&self) -> Result<()> {
        let has_data = self.head.lock().expect("head lock").num_profiles() > 0;
        if has_data {
            self.flush().await?;
        }
        Ok(())
    }

    /// Forgets series inactive for [`limiter::ACTIVE_SERIES_TIMEOUT`], at most once a minute.
    fn expire_series(&self) {
        let mut last = self.series_expired.lock().expect("expiry lock");
        if last.elapsed() < std::time::Duration::from_secs(60) {
            return;
        }
        *last = std::time::Instant::now();
        self.metrics.active_series.clear();
        for (tenant, n) in self.series.expire() {
            self.metrics
                .active_series
                .get_or_create(&vec![("tenant".to_owned(), tenant)])
                .set(n as i64);
        }
    }

    /// Returns once the head is below its limit, waiting for a flush to free room when it is
    /// not (writes outrunning flushes, or flushes failing): memory stays bounded, and the
    /// write is refused as unavailable, for the client to retry, if no room comes in time.
    async fn wait_for_head_room(&self) -> Result<()> {
        let deadline = tokio::time::Instant::now() + self.config.head_full_wait;
        let mut waited = false;
        loop {
            // Registered before the check, so a flush finishing in between still wakes us.
            let freed = self.head_freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            let held = self.head.lock().expect("head lock").bytes();
            if held < self.config.max_head_bytes {
                return Ok(());
            }
            if !waited {
                waited = true;
                self.metrics.head_full_waits.inc();
                self.nudge();
            }
            if tokio::time::timeout_at(deadline, freed).await.is_err() {
                self.metrics.reject("head_full");
                return Err(IngestError::unavailable(format!(
                    "the ingester's head is full ({held} bytes held, limit {} set by \
                     --ingester.max-head-bytes) and no flush freed room within {:?}; \
                     retry later",
                    self.config.max_head_bytes, self.config.head_full_wait
                )));
            }
        }
    }

    /// Asks the flush loop to check its triggers now.
    pub fn nudge(&self) {
        self.wake.notify_one();
    }
}

#[async_trait]
impl IngesterClient for Ingester {
    fn instance_id(&self) -> &str {
        &self.config.id
    }

    async fn write(&self, request: WriteRequest) -> Result<()> {
        self.write_with_text(request, Arc::default()).await
    }

    async fn write_with_text(&self, request: WriteRequest, text: Arc<FrameText>) -> Result<()> {
        check_write(&request)?;
        self.wait_for_head_room().await?;
        self.series.admit(&request).inspect_err(|_| {
            self.metrics.reject("series_limit");
        })?;
        // Applying the write nudges the flush loop once the open generation is due.
        self.wal.append(request, text).await
    }

    async fn flush(&self) -> Result<()> {
        Ingester::flush(self).await
    }
}

/// Refuses a write whose stacks refer to frames it does not carry, before it reaches the WAL.
fn check_write(request: &WriteRequest) -> Result<()> {
    let frames = request.frames.len();
    for (i, stack) in request.stacks.iter().enumerate() {
        if let Some(r) = stack.frame_refs.iter().find(|&&r| r as usize >= frames) {
            return Err(IngestError::invalid(format!(
                "stacks[{i}] refers to frame {r}, but the write carries {frames} frames"
            )));
        }
    }
    Ok(())
}

/// Deterministic block id: a retried flush of the same segment writes the same block.
pub fn block_id(source: &str, segment: u64, tenant: &str, created_millis: i64) -> String {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(source.as_bytes());
    h.update(&[0]);
    h.update(&segment.to_le_bytes());
    h.update(tenant.as_bytes());
    block::ulid(created_millis, h.digest128())
}
