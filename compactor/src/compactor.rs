use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use profusion_catalog::{Catalog, CatalogError};
use profusion_model::block::{self, BlockMeta, BlockOrigin, BlockStore};
use profusion_model::time::now_millis;
use profusion_model::tombstone::{Deletions, Tombstone};

use crate::merge::{self, MergeError, SourceTables};
use crate::metrics::CompactorMetrics;
use crate::plan::{self, Job, PlanRules};

/// Compactor settings.
#[derive(Debug, Clone)]
pub struct CompactorConfig {
    /// Window sizes of the compaction levels, smallest first (see [`crate::plan`]).
    pub block_ranges: Vec<Duration>,
    /// Time between the start of one cycle and the next.
    pub compaction_interval: Duration,
    /// How long a retired block's files stay readable by queries planned before it was retired.
    pub deletion_delay: Duration,
    /// How long data is kept, by the time of its newest profile; zero keeps it forever.
    pub retention_period: Duration,
    /// Per-tenant retention periods, overriding `retention_period`.
    pub retention_overrides: BTreeMap<String, Duration>,
    /// Ingester blocks younger than this wait for a later cycle.
    pub first_level_wait: Duration,
    /// How long a claim holds blocks; a compactor that dies releases them when it runs out.
    pub claim_lease: Duration,
    /// This compactor's name in claims; unique per process.
    pub owner: String,
    /// Crash tests only: abort the process right after this step.
    pub fail_after: Option<CompactionStep>,
}

impl CompactorConfig {
    /// The retention period of `tenant` (zero: keep forever).
    pub fn retention_of(&self, tenant: &str) -> Duration {
        self.retention_overrides
            .get(tenant)
            .copied()
            .unwrap_or(self.retention_period)
    }
}

/// The steps of compaction and deletion that change shared state, in order (see the crate doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompactionStep {
    Claim,
    Pending,
    Upload,
    Swap,
    Mark,
    Delete,
}

impl CompactionStep {
    pub const ALL: [Self; 6] = [
        Self::Claim,
        Self::Pending,
        Self::Upload,
        Self::Swap,
        Self::Mark,
        Self::Delete,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Claim => "claim",
            Self::Pending => "pending",
            Self::Upload => "upload",
            Self::Swap => "swap",
            Self::Mark => "mark",
            Self::Delete => "delete",
        }
    }
}

impl std::str::FromStr for CompactionStep {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|step| step.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|s| s.name()).collect();
                format!("unknown compaction step {s:?}; one of {}", names.join(", "))
            })
    }
}

/// Why a compaction job or cycle failed.
#[derive(Debug, thiserror::Error)]
pub enum CompactorError {
    #[error("catalog: {0}")]
    Catalog(#[from] CatalogError),
    #[error("merging blocks: {0}")]
    Merge(#[from] MergeError),
    #[error(transparent)]
    Block(#[from] block::BlockError),
}

/// What one cycle did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CycleReport {
    pub jobs: usize,
    pub blocks_compacted: usize,
    pub blocks_written: usize,
    pub duplicate_profiles: u64,
    /// Profiles left out because a tombstone deletes them.
    pub deleted_profiles: u64,
    pub blocks_expired: usize,
    pub blocks_deleted: usize,
    pub failed_jobs: usize,
}

/// The compactor of one process.
#[derive(Debug)]
pub struct Compactor {
    config: CompactorConfig,
    catalog: Arc<dyn Catalog>,
    blocks: BlockStore,
    metrics: CompactorMetrics,
}

impl Compactor {
    pub fn new(
        config: CompactorConfig,
        catalog: Arc<dyn Catalog>,
        blocks: BlockStore,
        metrics: CompactorMetrics,
    ) -> Self {
        Self {
            config,
            catalog,
            blocks,
            metrics,
        }
    }

    /// Runs a cycle every `compaction_interval` until the compactor is dropped.
    pub fn start(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        let interval = self.config.compaction_interval;
        tokio::spawn(async move {
            loop {
                let Some(compactor) = weak.upgrade() else {
                    break;
                };
                match compactor.run_cycle().await {
                    Ok(report) if report != CycleReport::default() => {
                        tracing::info!(?report, "compaction cycle");
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::error!(error = %e, "compaction cycle failed; retried next interval")
                    }
                }
                drop(compactor);
                tokio::time::sleep(interval).await;
            }
        });
    }

    /// Releases this compactor's claims on live blocks, for a clean shutdown.
    pub async fn shutdown(&self) -> Result<(), CompactorError> {
        Ok(self.catalog.release_claims(&self.config.owner).await?)
    }

    /// One pass over every tenant: retention, compaction, then deletion of retired files.
    pub async fn run_cycle(&self) -> Result<CycleReport, CompactorError> {
        self.metrics.cycles.inc();
        let mut report = CycleReport::default();
        for tenant in self.catalog.tenants().await? {
            self.compact_tenant(&tenant, self.config.first_level_wait, &mut report)
                .await?;
        }
        report.blocks_deleted = self.delete_retired(now_millis()).await?;
        if report.failed_jobs == 0 {
            self.metrics.last_success.set(now_millis() / 1000);
        }
        Ok(report)
    }

    /// Applies `tenant`'s deletions to its blocks now (`clean_tombstones`): every block that
    /// may hold deleted profiles is rewritten without them, ingester blocks included however
    /// young. Data still in ingester heads is written without them at its first compaction.
    pub async fn clean_tombstones(&self, tenant: &str) -> Result<CycleReport, CompactorError> {
        let mut report = CycleReport::default();
        self.compact_tenant(tenant, Duration::ZERO, &mut report)
            .await?;
        Ok(report)
    }

    /// Retention, then the planned jobs, for one tenant.
    async fn compact_tenant(
        &self,
        tenant: &str,
        first_level_wait: Duration,
        report: &mut CycleReport,
    ) -> Result<(), CompactorError> {
        let rules = PlanRules {
            block_ranges: self.config.block_ranges.clone(),
            first_level_wait,
        };
        let now = now_millis();
        report.blocks_expired += self.apply_retention(tenant, now).await?;
        let tombstones = self.catalog.tombstones(tenant).await?;
        let live = self.catalog.blocks(tenant, i64::MIN, i64::MAX).await?;
        for job in plan::plan(tenant, &live, &tombstones, &rules, now) {
            report.jobs += 1;
            match self.run_job(&job, &tombstones).await {
                Ok(Some(done)) => {
                    self.metrics.job("done");
                    report.blocks_compacted += job.sources.len();
                    report.blocks_written += done.written;
                    report.duplicate_profiles += done.duplicates;
                    report.deleted_profiles += done.deleted;
                }
                Ok(None) => self.metrics.job("skipped"),
                Err(CompactorError::Catalog(CatalogError::Conflict(reason))) => {
                    self.metrics.job("conflict");
                    tracing::info!(tenant, %reason, "compaction job lost its blocks; skipped");
                }
                Err(e) => {
                    self.metrics.job("failed");
                    report.failed_jobs += 1;
                    tracing::error!(tenant, level = job.level, error = %e,
                        "compaction job failed; its sources stay live and it is retried next cycle");
                    self.catalog.release_claims(&self.config.owner).await?;
                }
            }
        }
        Ok(())
    }

    /// Retires `tenant`'s blocks whose newest profile is older than its retention period.
    async fn apply_retention(&self, tenant: &str, now: i64) -> Result<usize, CompactorError> {
        let period = self.config.retention_of(tenant);
        if period.is_zero() {
            return Ok(0);
        }
        let cutoff_nanos = now
            .saturating_sub(i64::try_from(period.as_millis()).unwrap_or(i64::MAX))
            .saturating_mul(1_000_000);
        // Tombstones whose whole range is older than anything kept have nothing left to hide.
        self.catalog.expire_tombstones(tenant, cutoff_nanos).await?;
        let expired: Vec<String> = self
            .catalog
            .blocks(tenant, i64::MIN, cutoff_nanos)
            .await?
            .into_iter()
            .filter(|b| b.max_time_nanos < cutoff_nanos)
            .map(|b| b.id)
            .collect();
        if expired.is_empty() || !self.claim(tenant, &expired).await? {
            return Ok(0);
        }
        self.catalog
            .replace_blocks(tenant, &[], &expired, &self.config.owner)
            .await?;
        self.metrics.blocks_expired.inc_by(expired.len() as u64);
        tracing::info!(tenant, blocks = expired.len(), retention = ?period, "retired expired blocks");
        Ok(expired.len())
    }

    async fn claim(&self, tenant: &str, ids: &[String]) -> Result<bool, CompactorError> {
        let lease = i64::try_from(self.config.claim_lease.as_millis()).unwrap_or(i64::MAX);
        let claimed = self
            .catalog
            .claim_blocks(
                tenant,
                ids,
                &self.config.owner,
                now_millis().saturating_add(lease),
            )
            .await?;
        if claimed {
            self.fail_point(CompactionStep::Claim);
        }
        Ok(claimed)
    }

    /// Runs one job through the swap; `None` when another compactor holds its blocks.
    async fn run_job(
        &self,
        job: &Job,
        tombstones: &[Tombstone],
    ) -> Result<Option<JobDone>, CompactorError> {
        let ids: Vec<String> = job.sources.iter().map(|b| b.id.clone()).collect();
        if !self.claim(&job.tenant, &ids).await? {
            return Ok(None);
        }
        let started = std::time::Instant::now();
        let store = Arc::clone(&self.blocks.store);
        let mut sources = Vec::with_capacity(job.sources.len());
        for meta in &job.sources {
            sources.push(SourceTables::read(&store, meta).await?);
        }
        let deletions = Deletions::new(tombstones);
        let merged = merge::merge(&sources, job.window_nanos, &|fp, time| {
            !deletions.hides(fp, time)
        })?;
        drop(sources);

        let now = now_millis();
        let applied = tombstones.iter().map(|t| t.seq).max().unwrap_or(0);
        let origin = BlockOrigin::compacted(job.level, &job.sources, applied);
        let mut encoded = Vec::with_capacity(merged.windows.len());
        for window in &merged.windows {
            let id = self.output_id(job, window.window_start, now);
            encoded.push(block::encode(
                &job.tenant,
                &id,
                &window.batches,
                &origin,
                now,
            )?);
        }
        drop(merged.windows);
        let lease = i64::try_from(self.config.claim_lease.as_millis()).unwrap_or(i64::MAX);
        let outputs: Vec<BlockMeta> = encoded.iter().map(|e| e.catalog.clone()).collect();
        self.catalog
            .add_pending_blocks(&outputs, &self.config.owner, now.saturating_add(lease))
            .await?;
        self.fail_point(CompactionStep::Pending);
        let mut bytes = 0;
        for block in &encoded {
            bytes += self.blocks.upload(&job.tenant, block).await?;
        }
        self.fail_point(CompactionStep::Upload);
        let added: Vec<String> = outputs.iter().map(|b| b.id.clone()).collect();
        self.catalog
            .replace_blocks(&job.tenant, &added, &ids, &self.config.owner)
            .await?;
        self.fail_point(CompactionStep::Swap);

        self.metrics.blocks_compacted.inc_by(ids.len() as u64);
        self.metrics.blocks_written.inc_by(added.len() as u64);
        self.metrics.bytes_written.inc_by(bytes);
        self.metrics.duplicate_profiles.inc_by(merged.duplicates);
        self.metrics.deleted_profiles.inc_by(merged.removed);
        tracing::info!(tenant = %job.tenant, level = job.level, sources = ids.len(),
            outputs = added.len(), duplicates = merged.duplicates, deleted = merged.removed, bytes,
            elapsed_ms = started.elapsed().as_millis() as u64, "compacted blocks");
        Ok(Some(JobDone {
            written: added.len(),
            duplicates: merged.duplicates,
            deleted: merged.removed,
        }))
    }

    /// A new block id: the time now and a hash of what makes this output unique.
    fn output_id(&self, job: &Job, window_start: i64, now: i64) -> String {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        h.update(self.config.owner.as_bytes());
        for b in &job.sources {
            h.update(b.id.as_bytes());
        }
        h.update(&window_start.to_le_bytes());
        h.update(
            &std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
                .to_le_bytes(),
        );
        block::ulid(now, h.digest128())
    }

    /// Deletes the files of blocks retired before the deletion delay, and of abandoned
    /// pending outputs; returns how many blocks went.
    async fn delete_retired(&self, now: i64) -> Result<usize, CompactorError> {
        let delay = i64::try_from(self.config.deletion_delay.as_millis()).unwrap_or(i64::MAX);
        let before = now.saturating_sub(delay);
        let mut by_tenant: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for b in self.catalog.deletable_blocks(before).await? {
            by_tenant.entry(b.tenant).or_default().push(b.id);
        }
        let mut deleted = 0;
        for (tenant, ids) in by_tenant {
            let marked = self.catalog.mark_deleting(&tenant, &ids, before).await?;
            self.fail_point(CompactionStep::Mark);
            for id in &marked {
                self.blocks.delete(&tenant, id).await?;
            }
            self.fail_point(CompactionStep::Delete);
            self.catalog.forget_blocks(&tenant, &marked).await?;
            self.metrics.blocks_deleted.inc_by(marked.len() as u64);
            tracing::info!(tenant = %tenant, blocks = marked.len(), "deleted retired blocks");
            deleted += marked.len();
        }
        Ok(deleted)
    }

    /// Crash tests: dies here, as a process killed right after `step`.
    fn fail_point(&self, step: CompactionStep) {
        if self.config.fail_after == Some(step) {
            tracing::error!(
                step = step.name(),
                "failing on purpose after this compaction step"
            );
            std::process::abort();
        }
    }
}

struct JobDone {
    written: usize,
    duplicates: u64,
    deleted: u64,
}
