//! How readers reach data: scans of one table of one tenant, over an ingester's head and over
//! the blocks the catalog lists.
//!
//! A [`ScanRequest`] is plain data (it serializes), so the same request is served in-process
//! today and over Arrow Flight once the roles run apart. The head side is a [`HeadSource`]: a
//! cheap [`HeadSource::summary`] for planning, and a [`HeadSource::snapshot`] that pins what
//! the head holds at one moment, so every table a query reads sees the same head, and the
//! snapshot's [`HeadCut`] says which blocks must be skipped to count every profile once. The
//! block side is a [`BlockSource`]: the blocks that may hold what a request selects.

use std::sync::Arc;

use arrow_array::RecordBatch;
use async_trait::async_trait;
use futures_util::stream::BoxStream;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore};
use parquet::file::metadata::ParquetMetaData;
use serde::{Deserialize, Serialize};

use crate::block::{BlockMeta, Table};
use crate::time::TimeRange;
use crate::tombstone::Tombstone;

/// What one scan of one table of one tenant selects. Every narrowing is optional and applies
/// only to the tables that carry its column: `range` and `profile_type` to the per-profile
/// tables (`samples`, `profiles`; `profile_type` to `series` too), `services` and `series` to
/// those and `series`. A source may return more rows than a request selects (a block is read
/// whole when its statistics cannot rule rows out); readers filter again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanRequest {
    pub tenant: String,
    pub table: Table,
    /// Profile times, both ends inclusive; [`TimeRange::ALL`] for no bound.
    pub range: TimeRange,
    /// Only this `__profile_type__`.
    pub profile_type: Option<String>,
    /// Only these `service_name`s.
    pub services: Option<Vec<String>>,
    /// Only these series fingerprints.
    pub series: Option<Vec<u64>>,
    /// Only these columns, in this order (all when `None`).
    pub projection: Option<Vec<String>>,
    /// Head scans: only the generations of these WAL segments, the ones a snapshot's
    /// [`HeadCut`] listed when the query was planned (all when `None`).
    pub segments: Option<Vec<u64>>,
    /// Only this part of the rows, for scans split over partitions (all when `None`).
    pub part: Option<ScanPart>,
}

/// Part `index` of `count` equal shares of a scan's batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanPart {
    pub index: u32,
    pub count: u32,
}

impl ScanPart {
    /// Whether the `n`th batch of a scan belongs to this part.
    pub fn owns(&self, n: usize) -> bool {
        n % self.count.max(1) as usize == self.index as usize
    }
}

impl ScanRequest {
    /// Everything of `table` for `tenant`.
    pub fn all(tenant: impl Into<String>, table: Table) -> Self {
        Self {
            tenant: tenant.into(),
            table,
            range: TimeRange::ALL,
            profile_type: None,
            services: None,
            series: None,
            projection: None,
            segments: None,
            part: None,
        }
    }

    /// Whether a block's catalog statistics allow rows this request selects: its time range
    /// overlaps, and it lists the profile type and one of the services when those are given.
    pub fn may_match(&self, block: &BlockMeta) -> bool {
        self.range
            .overlaps(block.min_time_nanos, block.max_time_nanos)
            && self
                .profile_type
                .as_ref()
                .is_none_or(|pt| block.profile_types.iter().any(|t| t == pt))
            && self.services.as_ref().is_none_or(|services| {
                block
                    .services
                    .iter()
                    .any(|s| services.iter().any(|x| x == s))
            })
    }
}

/// Why a scan failed.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// The source cannot be reached or is shutting down; retrying may work.
    #[error("{0}")]
    Unavailable(String),
    /// The source's data is inconsistent, or a bug.
    #[error("{0}")]
    Internal(String),
    #[error(transparent)]
    Arrow(#[from] arrow_schema::ArrowError),
}

/// Record batches of one scan, in the table's schema (or its projection).
pub type RecordBatchStream = BoxStream<'static, Result<RecordBatch, ScanError>>;

/// What one head generation (one WAL segment's data) holds for a tenant, without its samples.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenerationSummary {
    pub min_time_nanos: i64,
    pub max_time_nanos: i64,
    /// Distinct `__profile_type__` values, sorted.
    pub profile_types: Vec<String>,
    pub num_series: u64,
    pub num_profiles: u64,
    pub num_samples: u64,
    /// Approximate memory held, in bytes.
    pub bytes: u64,
}

/// The block source name of ingester `id`: its head snapshots' [`HeadCut::source`] and its
/// blocks' `source`.
pub fn ingester_source(id: &str) -> String {
    format!("ingester-{id}")
}

/// Where a head snapshot was cut: which blocks of the same ingester hold data the snapshot
/// already has. A generation leaves the head only after its block is registered, so a reader
/// that takes the snapshot first and skips the blocks it covers reads each profile once,
/// before, during and after a flush.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeadCut {
    /// The ingester's block source name (`ingester-<id>`).
    pub source: String,
    /// WAL segments whose generations were in the head.
    pub segments: Vec<u64>,
}

impl HeadCut {
    /// Whether `block` must be skipped by a reader of this snapshot.
    pub fn covers(&self, block: &BlockMeta) -> bool {
        block.source == self.source && self.segments.contains(&block.wal_segment)
    }

    /// Whether `block` is a compacted block that may hold data of a segment this snapshot also
    /// holds: it can be neither read (that data would count twice) nor skipped (the rest of it
    /// would be missed), so the reader must take a newer snapshot. This happens only when a
    /// flush, its generation's drop and a compaction of the new block all fall between a
    /// reader's snapshot and its block listing; the newer snapshot no longer has the segment.
    ///
    /// Flushes go oldest segment first and a generation stays in the head until its block is
    /// registered, so a registered segment at or above the snapshot's oldest one was in it.
    pub fn conflicts(&self, block: &BlockMeta) -> bool {
        let Some(oldest) = self.segments.iter().min() else {
            return false;
        };
        block.source != self.source
            && block
                .lineage
                .get(&self.source)
                .is_some_and(|newest| newest >= oldest)
    }
}

/// One tenant's head data at one moment.
#[async_trait]
pub trait HeadSnapshot: Send + Sync + std::fmt::Debug {
    /// Which blocks the snapshot's data stands in for.
    fn cut(&self) -> &HeadCut;

    /// Rows of the snapshot a request selects, in scan-sized batches.
    async fn scan(&self, request: &ScanRequest) -> Result<RecordBatchStream, ScanError>;

    /// The id its ingester holds it pinned under for other processes (a snapshot taken over
    /// Arrow Flight), so a plan fragment run elsewhere reads this very snapshot
    /// ([`HeadSource::pinned`]); `None` for a snapshot only this process holds.
    fn pin(&self) -> Option<u64> {
        None
    }
}

/// Head data of ingesters: the ingester of this process (monolithic mode), or every ingester of
/// the ring over Arrow Flight (microservices mode).
#[async_trait]
pub trait HeadSource: Send + Sync + std::fmt::Debug {
    /// Pins `tenant`'s head as it is now: one snapshot per ingester, each with its own cut.
    /// With replicas, several snapshots may hold the same profile; readers count it once.
    async fn snapshot(&self, tenant: &str) -> Result<HeadSnapshots, ScanError>;

    /// Time bounds, profile types and sizes of `tenant`'s head per generation, read from the
    /// heads' metadata: for questions that need no samples (replicas are listed each).
    async fn summary(&self, tenant: &str) -> Result<Vec<GenerationSummary>, ScanError>;

    /// The snapshot of `cut`'s ingester pinned under `pin` by the process that planned a query
    /// ([`HeadSnapshot::pin`]): the data that plan's block listing was made against, which a
    /// fresh snapshot may no longer hold after a flush. Unavailable (the query is retried) when
    /// it was released, expired or its ingester restarted, or this source cannot reach it.
    async fn pinned(&self, cut: &HeadCut, pin: u64) -> Result<Arc<dyn HeadSnapshot>, ScanError> {
        Err(ScanError::Unavailable(format!(
            "head snapshot {pin} of {} cannot be read in this process; retry the query",
            cut.source
        )))
    }
}

/// The snapshots of one tenant's head on each ingester, in the order of their sources.
pub type HeadSnapshots = Vec<Arc<dyn HeadSnapshot>>;

/// Blocks in the object store, as the catalog lists them.
#[async_trait]
pub trait BlockSource: Send + Sync + std::fmt::Debug {
    /// Blocks of the request's tenant whose catalog statistics allow rows it selects, ordered
    /// by min time then id.
    async fn blocks(&self, request: &ScanRequest) -> Result<Vec<BlockMeta>, ScanError>;

    /// The store holding the blocks' files (paths from [`crate::block::block_file_path`]).
    fn store(&self) -> Arc<dyn ObjectStore>;

    /// `tenant`'s deletions, which every reader of its data applies (blocks and head alike).
    async fn tombstones(&self, tenant: &str) -> Result<Vec<Tombstone>, ScanError>;

    /// Decoded Parquet metadata of block files that this source keeps across queries, for
    /// readers to look footers up in before fetching them; `None` when it keeps none.
    fn metadata_cache(&self) -> Option<Arc<dyn ParquetMetadataCache>> {
        None
    }
}

/// Decoded Parquet metadata (footers with their page indexes) of block files, by path. Block
/// files never change once written, so an entry stays good for as long as the file exists;
/// `meta` is the object's metadata when the entry was read, which readers compare with what
/// they see now.
pub trait ParquetMetadataCache: Send + Sync + std::fmt::Debug {
    fn get(&self, path: &Path) -> Option<(ObjectMeta, Arc<ParquetMetaData>)>;
    fn put(&self, path: &Path, meta: ObjectMeta, metadata: Arc<ParquetMetaData>);
    fn remove(&self, path: &Path) -> bool;
    /// Whether `path` has an entry, without counting as a use of it.
    fn contains(&self, path: &Path) -> bool;
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn clear(&self);
    /// The most bytes of decoded metadata it keeps.
    fn limit_bytes(&self) -> usize;
}
