//! The block format: what one tenant's data becomes in the object store, whoever writes it (an
//! ingester flushing its head, later the compactor merging blocks) and whoever reads it (the
//! querier, store-gateways, DuckDB or Spark given nothing but the files).
//!
//! `<tenant>/blocks/<ULID>/` holds five Parquet files, one per [`Table`], and `meta.json`
//! (written last, so a directory without it is an incomplete upload). Schemas and sort orders
//! are documented in `docs/block-format.md`; every column is a plain Parquet type so any
//! Parquet reader works.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::{DataType, Field, Fields, Schema, SchemaRef};
use bytes::Bytes;
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use futures_util::stream::{BoxStream, StreamExt, TryStreamExt};
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ArrowReaderOptions;
use parquet::arrow::async_reader::{AsyncFileReader, ParquetRecordBatchStreamBuilder};
use parquet::basic::{Compression, ZstdLevel};
use parquet::errors::ParquetError;
use parquet::file::metadata::SortingColumn;
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use serde::{Deserialize, Serialize};

/// Version of the layout below; readers refuse versions they do not know.
pub const FORMAT_VERSION: u32 = 1;

pub const META_FILE: &str = "meta.json";

/// The five tables of a block, each one Parquet file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Table {
    /// One row per (profile, stack): the values.
    Samples,
    /// One row per profile.
    Profiles,
    /// One row per series, with its labels.
    Series,
    /// Each stack once, as frame ids.
    Stacks,
    /// Each frame once, with its symbols.
    Frames,
}

impl Table {
    /// Every table, in the order files are written.
    pub const ALL: [Self; 5] = [
        Self::Samples,
        Self::Profiles,
        Self::Series,
        Self::Stacks,
        Self::Frames,
    ];

    /// The table's name in SQL and in plans.
    pub fn name(self) -> &'static str {
        match self {
            Self::Samples => "samples",
            Self::Profiles => "profiles",
            Self::Series => "series",
            Self::Stacks => "stacks",
            Self::Frames => "frames",
        }
    }

    /// The table named `name`, if any.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == name)
    }

    /// The table's file in a block directory.
    pub fn file_name(self) -> &'static str {
        match self {
            Self::Samples => "samples.parquet",
            Self::Profiles => "profiles.parquet",
            Self::Series => "series.parquet",
            Self::Stacks => "stacks.parquet",
            Self::Frames => "frames.parquet",
        }
    }

    /// The schema of the table as written (strings plain; `samples` dictionary-encodes its
    /// repeated strings).
    pub fn schema(self) -> SchemaRef {
        match self {
            Self::Samples => samples_schema(),
            Self::Profiles => profiles_schema(),
            Self::Series => series_schema(),
            Self::Stacks => stacks_schema(),
            Self::Frames => frames_schema(),
        }
    }

    /// The columns the rows are sorted by, most significant first (indexes into the schema).
    pub fn sort_columns(self) -> &'static [usize] {
        match self {
            // service, profile type, series, time, profile id, stack hash
            Self::Samples => &[0, 1, 2, 3, 4, 5],
            // service, profile type, series, time, profile id
            Self::Profiles => &[0, 1, 2, 3, 4],
            // service, profile type, series
            Self::Series => &[1, 2, 0],
            Self::Stacks | Self::Frames => &[0],
        }
    }

    /// Whether the table's rows carry their series' identity (`series_fingerprint`,
    /// `service_name`, `profile_type`), so a scan can be narrowed by them.
    pub fn has_series_columns(self) -> bool {
        matches!(self, Self::Samples | Self::Profiles | Self::Series)
    }

    /// Whether the table's rows carry a profile's time (`time_nanos`) and profile type, so a
    /// scan can be narrowed by them.
    pub fn is_per_profile(self) -> bool {
        matches!(self, Self::Samples | Self::Profiles)
    }
}

impl std::fmt::Display for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Where a block's file lives in the object store: `<tenant>/blocks/<block id>/<file>`. The one
/// place object paths of blocks are made: the tenant id is a path segment in object_store's
/// encoding (characters it reserves, such as `*`, percent-encoded), so every reader and writer
/// must name it through here, and turn it into a URL without decoding it (see the querier).
pub fn block_file_path(tenant: &str, block_id: &str, file: &str) -> object_store::path::Path {
    object_store::path::Path::from_iter([tenant, "blocks", block_id, file])
}

const MAX_ROW_GROUP_ROWS: usize = 1 << 20;

/// Part size of multipart uploads of spooled block files (S3 wants at least 5 MiB per part).
pub const UPLOAD_PART_BYTES: usize = 16 << 20;

/// `samples.parquet`: one row per (profile, stack), sorted by service, profile type, series,
/// time, profile id, stack hash. The string columns repeat on every row of a profile, so they
/// are dictionary-encoded in memory as well as in the file: a flush holds 4 bytes per row for
/// each, not the string.
pub fn samples_schema() -> SchemaRef {
    let dictionary = |f: Field| match f.data_type() {
        DataType::Utf8 => {
            let (name, nullable) = (f.name().clone(), f.is_nullable());
            Field::new(
                name,
                DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
                nullable,
            )
        }
        _ => f,
    };
    Arc::new(Schema::new(
        [
            profile_key_fields().into_iter().map(dictionary).collect(),
            vec![
                Field::new("stack_hash", DataType::UInt64, false),
                Field::new("value", DataType::Int64, false),
                Field::new("span_id", DataType::UInt64, true),
            ],
        ]
        .concat(),
    ))
}

/// The columns that identify a profile, leading both `samples` and `profiles`.
fn profile_key_fields() -> Vec<Field> {
    vec![
        Field::new("service_name", DataType::Utf8, false),
        Field::new("profile_type", DataType::Utf8, false),
        Field::new("series_fingerprint", DataType::UInt64, false),
        Field::new("time_nanos", DataType::Int64, false),
        Field::new("profile_id", DataType::Utf8, false),
    ]
}

/// `profiles.parquet`: one row per profile of a series, in the samples' order.
pub fn profiles_schema() -> SchemaRef {
    Arc::new(Schema::new(
        [
            profile_key_fields(),
            vec![
                Field::new("duration_nanos", DataType::Int64, false),
                Field::new("period", DataType::Int64, false),
                Field::new("total_value", DataType::Int64, false),
                Field::new("num_samples", DataType::UInt64, false),
            ],
        ]
        .concat(),
    ))
}

/// The fields of one label in `series.labels`: `name` and `value`.
pub fn label_fields() -> Fields {
    Fields::from(vec![
        Field::new("name", DataType::Utf8, false),
        Field::new("value", DataType::Utf8, false),
    ])
}

/// `series.parquet`: one row per series with all its labels.
pub fn series_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("series_fingerprint", DataType::UInt64, false),
        Field::new("service_name", DataType::Utf8, false),
        Field::new("profile_type", DataType::Utf8, false),
        Field::new(
            "labels",
            DataType::List(Arc::new(Field::new(
                "item",
                DataType::Struct(label_fields()),
                true,
            ))),
            false,
        ),
    ]))
}

/// `stacks.parquet`: each stack once, frames root first.
pub fn stacks_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("stack_hash", DataType::UInt64, false),
        Field::new(
            "frame_ids",
            DataType::List(Arc::new(Field::new("item", DataType::UInt64, true))),
            false,
        ),
    ]))
}

/// `frames.parquet`: each frame once.
pub fn frames_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("frame_id", DataType::UInt64, false),
        Field::new("function_name", DataType::Utf8, false),
        Field::new("system_name", DataType::Utf8, false),
        Field::new("filename", DataType::Utf8, false),
        Field::new("line", DataType::Int64, false),
        Field::new("start_line", DataType::Int64, false),
        Field::new("mapping_file", DataType::Utf8, false),
        Field::new("build_id", DataType::Utf8, false),
        Field::new("address", DataType::UInt64, false),
    ]))
}

/// `meta.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BlockFileMeta {
    pub format_version: u32,
    pub id: String,
    pub tenant: String,
    pub min_time_nanos: i64,
    pub max_time_nanos: i64,
    pub num_series: u64,
    pub num_profiles: u64,
    pub num_samples: u64,
    pub services: Vec<String>,
    pub profile_types: Vec<String>,
    pub source: String,
    pub wal_segment: u64,
    /// How a compacted block was made (absent on ingester blocks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compaction: Option<BlockCompaction>,
    pub files: Vec<BlockFile>,
}

/// `meta.json`'s record of a compaction: the output's level and the blocks merged into it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BlockCompaction {
    pub level: u32,
    /// Ids of the blocks merged into this one, sorted.
    pub parents: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BlockFile {
    pub name: String,
    pub size_bytes: u64,
    pub rows: u64,
}

/// What the catalog records about one block: everything planning needs without opening it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockMeta {
    pub tenant: String,
    /// ULID of the block; its files live under `<tenant>/blocks/<id>/`.
    pub id: String,
    /// Earliest profile time in the block, Unix nanoseconds, inclusive.
    pub min_time_nanos: i64,
    /// Latest profile time in the block, Unix nanoseconds, inclusive.
    pub max_time_nanos: i64,
    pub num_series: u64,
    pub num_profiles: u64,
    pub num_samples: u64,
    /// Total bytes of the block's files in the object store.
    pub size_bytes: u64,
    /// Distinct `service_name` values, sorted.
    pub services: Vec<String>,
    /// Distinct `__profile_type__` values, sorted.
    pub profile_types: Vec<String>,
    /// The component that wrote the block, e.g. `ingester-<id>` or `compactor`.
    pub source: String,
    /// The write-ahead-log segment whose data the block holds (ingester blocks); used on
    /// recovery so that a segment already flushed is never replayed into a second block.
    pub wal_segment: u64,
    pub compaction_level: u32,
    /// Unix milliseconds when the block was registered.
    pub created_at_millis: i64,
    /// For each ingester whose data the block holds (`ingester-<id>`), the newest of its WAL
    /// segments merged in. An ingester block holds exactly its own segment; a compacted block
    /// inherits the newest of its parents'. Readers of a head snapshot use it to notice a
    /// compacted block that already holds data their snapshot also holds (see
    /// [`crate::scan::HeadCut::conflicts`]).
    #[serde(default)]
    pub lineage: BTreeMap<String, u64>,
    /// The newest tombstone ([`crate::tombstone::Tombstone::seq`]) already applied to the
    /// block's rows when it was written (0: none, as for every ingester block).
    #[serde(default)]
    pub tombstone_seq: i64,
}

/// Who wrote a block and from what, recorded in `meta.json` and the catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockOrigin {
    /// `ingester-<id>`, or [`COMPACTOR_SOURCE`].
    pub source: String,
    /// The WAL segment an ingester block holds (0 for compacted blocks).
    pub wal_segment: u64,
    /// 0 for ingester blocks; the level the compactor gave a compacted one.
    pub compaction_level: u32,
    /// Blocks merged into a compacted block, sorted (empty for ingester blocks).
    pub parents: Vec<String>,
    /// See [`BlockMeta::lineage`].
    pub lineage: BTreeMap<String, u64>,
    /// See [`BlockMeta::tombstone_seq`].
    pub tombstone_seq: i64,
}

/// The `source` of every compacted block.
pub const COMPACTOR_SOURCE: &str = "compactor";

impl BlockOrigin {
    /// A block an ingester flushed from one WAL segment.
    pub fn ingester(source: impl Into<String>, wal_segment: u64) -> Self {
        let source = source.into();
        Self {
            lineage: BTreeMap::from([(source.clone(), wal_segment)]),
            source,
            wal_segment,
            compaction_level: 0,
            parents: Vec::new(),
            tombstone_seq: 0,
        }
    }

    /// A block the compactor merged from `parents`, at `level`, leaving out what the
    /// tombstones up to `tombstone_seq` delete.
    pub fn compacted(level: u32, parents: &[BlockMeta], tombstone_seq: i64) -> Self {
        let mut lineage = BTreeMap::new();
        for parent in parents {
            for (source, &segment) in &parent.lineage {
                let newest = lineage.entry(source.clone()).or_insert(segment);
                *newest = (*newest).max(segment);
            }
        }
        let mut ids: Vec<String> = parents.iter().map(|p| p.id.clone()).collect();
        ids.sort();
        Self {
            source: COMPACTOR_SOURCE.to_owned(),
            wal_segment: 0,
            compaction_level: level,
            parents: ids,
            lineage,
            tombstone_seq,
        }
    }
}

/// An encoded block, ready to upload.
#[derive(Debug)]
pub struct EncodedBlock {
    /// Parquet files then `meta.json`, in upload order.
    pub files: Vec<(&'static str, Bytes)>,
    pub catalog: BlockMeta,
}

/// One block's tables as Arrow batches in block order and schema: what a block holds before
/// it becomes Parquet, and what queries read from an ingester's head.
#[derive(Debug, Clone)]
pub struct BlockBatches {
    pub samples: RecordBatch,
    pub profiles: RecordBatch,
    pub series: RecordBatch,
    pub stacks: RecordBatch,
    pub frames: RecordBatch,
    pub min_time_nanos: i64,
    pub max_time_nanos: i64,
    /// Distinct `service_name` values, sorted.
    pub services: Vec<String>,
    /// Distinct `__profile_type__` values, sorted.
    pub profile_types: Vec<String>,
}

impl BlockBatches {
    /// Bytes the batches' buffers hold.
    pub fn memory_bytes(&self) -> usize {
        [
            &self.samples,
            &self.profiles,
            &self.series,
            &self.stacks,
            &self.frames,
        ]
        .iter()
        .map(|b| b.get_array_memory_size())
        .sum()
    }

    /// What the block's metadata says of these rows.
    pub fn summary(&self) -> BlockSummary {
        BlockSummary {
            min_time_nanos: self.min_time_nanos,
            max_time_nanos: self.max_time_nanos,
            num_series: self.series.num_rows() as u64,
            num_profiles: self.profiles.num_rows() as u64,
            num_samples: self.samples.num_rows() as u64,
            services: self.services.clone(),
            profile_types: self.profile_types.clone(),
        }
    }

    pub fn table(&self, table: Table) -> &RecordBatch {
        match table {
            Table::Samples => &self.samples,
            Table::Profiles => &self.profiles,
            Table::Series => &self.series,
            Table::Stacks => &self.stacks,
            Table::Frames => &self.frames,
        }
    }
}

/// A block that could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    #[error("encoding the {table} table of a block: {source}")]
    Encode {
        table: Table,
        #[source]
        source: parquet::errors::ParquetError,
    },
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: parquet::errors::ParquetError,
    },
    #[error("object store: {0}")]
    Store(#[from] object_store::Error),
    #[error("block metadata {path}: {message}")]
    Meta { path: String, message: String },
    #[error("syncing {path}: {source}")]
    Sync {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The local spool a block is written to before its upload.
    #[error("spooling block to {path}: {source}")]
    Spool {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Encodes a block of `tenant` with id `id` from its tables.
pub fn encode(
    tenant: &str,
    id: &str,
    batches: &BlockBatches,
    origin: &BlockOrigin,
    created_at_millis: i64,
) -> Result<EncodedBlock, BlockError> {
    let mut files = Vec::new();
    let mut listed = Vec::new();
    for table in Table::ALL {
        let batch = batches.table(table);
        let bytes =
            write_parquet(table, batch).map_err(|source| BlockError::Encode { table, source })?;
        listed.push(BlockFile {
            name: table.file_name().to_owned(),
            size_bytes: bytes.len() as u64,
            rows: batch.num_rows() as u64,
        });
        files.push((table.file_name(), bytes));
    }
    let (meta_bytes, catalog) = describe(
        tenant,
        id,
        &batches.summary(),
        origin,
        listed,
        created_at_millis,
    )?;
    files.push((META_FILE, meta_bytes));
    Ok(EncodedBlock { files, catalog })
}

/// What a block's `meta.json` and catalog row say of its rows, besides its files.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlockSummary {
    pub min_time_nanos: i64,
    pub max_time_nanos: i64,
    pub num_series: u64,
    pub num_profiles: u64,
    pub num_samples: u64,
    /// Distinct `service_name` values, sorted.
    pub services: Vec<String>,
    /// Distinct `__profile_type__` values, sorted.
    pub profile_types: Vec<String>,
}

/// The `meta.json` bytes and the catalog row of a block whose files are `files`.
fn describe(
    tenant: &str,
    id: &str,
    summary: &BlockSummary,
    origin: &BlockOrigin,
    files: Vec<BlockFile>,
    created_at_millis: i64,
) -> Result<(Bytes, BlockMeta), BlockError> {
    let files_bytes: u64 = files.iter().map(|f| f.size_bytes).sum();
    let meta = BlockFileMeta {
        format_version: FORMAT_VERSION,
        id: id.to_owned(),
        tenant: tenant.to_owned(),
        min_time_nanos: summary.min_time_nanos,
        max_time_nanos: summary.max_time_nanos,
        num_series: summary.num_series,
        num_profiles: summary.num_profiles,
        num_samples: summary.num_samples,
        services: summary.services.clone(),
        profile_types: summary.profile_types.clone(),
        source: origin.source.clone(),
        wal_segment: origin.wal_segment,
        compaction: (origin.compaction_level > 0).then(|| BlockCompaction {
            level: origin.compaction_level,
            parents: origin.parents.clone(),
        }),
        files,
    };
    let meta_bytes =
        Bytes::from(
            serde_json::to_vec_pretty(&meta).map_err(|e| BlockError::Meta {
                path: block_file_path(tenant, id, META_FILE).to_string(),
                message: e.to_string(),
            })?,
        );
    let catalog = BlockMeta {
        tenant: tenant.to_owned(),
        id: id.to_owned(),
        min_time_nanos: meta.min_time_nanos,
        max_time_nanos: meta.max_time_nanos,
        num_series: meta.num_series,
        num_profiles: meta.num_profiles,
        num_samples: meta.num_samples,
        size_bytes: files_bytes + meta_bytes.len() as u64,
        services: meta.services,
        profile_types: meta.profile_types,
        source: meta.source,
        wal_segment: meta.wal_segment,
        compaction_level: origin.compaction_level,
        created_at_millis,
        lineage: origin.lineage.clone(),
        tombstone_seq: origin.tombstone_seq,
    };
    Ok((meta_bytes, catalog))
}

/// A block being written to local files a batch at a time, for blocks too large to hold
/// encoded in memory: each table's writer keeps at most one row group, so memory stays near
/// one batch and one row group however many rows the block has. Tables may be written in any
/// order and in several batches each, each table's batches in block order.
#[derive(Debug)]
pub struct BlockSpool {
    dir: std::path::PathBuf,
    writers: Vec<(Table, ArrowWriter<std::fs::File>)>,
}

/// A block written to local files, ready for [`BlockStore::upload_spooled`].
#[derive(Debug)]
pub struct SpooledBlock {
    dir: std::path::PathBuf,
    /// Parquet files in upload order.
    files: Vec<(&'static str, std::path::PathBuf)>,
    meta: Bytes,
    pub catalog: BlockMeta,
}

impl BlockSpool {
    /// Starts block `id` in a directory of its own under `root` (anything left there by an
    /// earlier attempt is replaced).
    pub fn create(root: &std::path::Path, id: &str) -> Result<Self, BlockError> {
        let dir = root.join(id);
        let spool_err = |source| BlockError::Spool {
            path: dir.display().to_string(),
            source,
        };
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(spool_err)?;
        }
        std::fs::create_dir_all(&dir).map_err(spool_err)?;
        let mut writers = Vec::new();
        for table in Table::ALL {
            let path = dir.join(table.file_name());
            let file = std::fs::File::create(&path).map_err(|source| BlockError::Spool {
                path: path.display().to_string(),
                source,
            })?;
            let writer = ArrowWriter::try_new(file, table.schema(), Some(writer_properties(table)))
                .map_err(|source| BlockError::Encode { table, source })?;
            writers.push((table, writer));
        }
        Ok(Self { dir, writers })
    }

    /// Appends rows to `table` (in the table's schema).
    pub fn write(&mut self, table: Table, batch: &RecordBatch) -> Result<(), BlockError> {
        let (_, writer) = self
            .writers
            .iter_mut()
            .find(|(t, _)| *t == table)
            .expect("a writer per table");
        writer
            .write(batch)
            .map_err(|source| BlockError::Encode { table, source })
    }

    /// Closes every table's file and describes the block.
    pub fn finish(
        self,
        tenant: &str,
        id: &str,
        summary: &BlockSummary,
        origin: &BlockOrigin,
        created_at_millis: i64,
    ) -> Result<SpooledBlock, BlockError> {
        let mut files = Vec::new();
        let mut listed = Vec::new();
        for (table, writer) in self.writers {
            let written = writer
                .close()
                .map_err(|source| BlockError::Encode { table, source })?;
            let path = self.dir.join(table.file_name());
            let size = std::fs::metadata(&path)
                .map_err(|source| BlockError::Spool {
                    path: path.display().to_string(),
                    source,
                })?
                .len();
            listed.push(BlockFile {
                name: table.file_name().to_owned(),
                size_bytes: size,
                rows: written.file_metadata().num_rows() as u64,
            });
            files.push((table.file_name(), path));
        }
        let (meta, catalog) = describe(tenant, id, summary, origin, listed, created_at_millis)?;
        Ok(SpooledBlock {
            dir: self.dir,
            files,
            meta,
            catalog,
        })
    }
}

impl SpooledBlock {
    /// Removes the local files (after the upload, or when giving up on it).
    pub fn discard(&self) {
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            tracing::warn!(dir = %self.dir.display(), error = %e, "could not remove a spooled block");
        }
    }
}

/// Where blocks are written: the object store, and the local directory behind it when it is
/// a local file system, whose files are fsynced so an upload survives a machine crash.
#[derive(Debug, Clone)]
pub struct BlockStore {
    pub store: Arc<dyn ObjectStore>,
    pub local_root: Option<std::path::PathBuf>,
}

impl BlockStore {
    /// Uploads an encoded block, `meta.json` last (a directory without it is an incomplete
    /// upload); returns the bytes written.
    pub async fn upload(&self, tenant: &str, block: &EncodedBlock) -> Result<u64, BlockError> {
        let mut written = 0;
        for (name, bytes) in &block.files {
            let path = block_file_path(tenant, &block.catalog.id, name);
            self.store.put(&path, bytes.clone().into()).await?;
            self.sync_local(&path)?;
            written += bytes.len() as u64;
        }
        Ok(written)
    }

    /// Uploads a spooled block, each file streamed from its local copy in parts (never whole
    /// in memory), `meta.json` last; returns the bytes written.
    pub async fn upload_spooled(
        &self,
        tenant: &str,
        block: &SpooledBlock,
    ) -> Result<u64, BlockError> {
        let mut written = 0;
        for (name, local) in &block.files {
            let path = block_file_path(tenant, &block.catalog.id, name);
            written += self.stream_file(&path, local).await?;
            self.sync_local(&path)?;
        }
        let meta = block_file_path(tenant, &block.catalog.id, META_FILE);
        self.store.put(&meta, block.meta.clone().into()).await?;
        self.sync_local(&meta)?;
        Ok(written + block.meta.len() as u64)
    }

    /// Copies the local file `local` to `path` in the store: one request when it is small, a
    /// multipart upload of [`UPLOAD_PART_BYTES`] parts otherwise.
    async fn stream_file(
        &self,
        path: &object_store::path::Path,
        local: &std::path::Path,
    ) -> Result<u64, BlockError> {
        use tokio::io::AsyncReadExt;
        let spool_err = |source| BlockError::Spool {
            path: local.display().to_string(),
            source,
        };
        let mut file = tokio::fs::File::open(local).await.map_err(spool_err)?;
        let size = file.metadata().await.map_err(spool_err)?.len();
        if size <= UPLOAD_PART_BYTES as u64 {
            let mut data = Vec::with_capacity(size as usize);
            file.read_to_end(&mut data).await.map_err(spool_err)?;
            self.store.put(path, Bytes::from(data).into()).await?;
            return Ok(size);
        }
        let upload = self.store.put_multipart(path).await?;
        let mut parts =
            object_store::WriteMultipart::new_with_chunk_size(upload, UPLOAD_PART_BYTES);
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let read = match file.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => {
                    parts.abort().await.ok();
                    return Err(spool_err(e));
                }
            };
            // At most two parts in flight: memory stays a few parts whatever the file's size.
            parts.wait_for_capacity(2).await?;
            parts.write(&buf[..read]);
        }
        parts.finish().await?;
        Ok(size)
    }

    /// Deletes a block's files, `meta.json` first so that a deletion cut short leaves an
    /// incomplete directory rather than a block missing tables.
    pub async fn delete(&self, tenant: &str, block_id: &str) -> Result<(), BlockError> {
        let names = std::iter::once(META_FILE).chain(Table::ALL.iter().map(|t| t.file_name()));
        for name in names {
            match self
                .store
                .delete(&block_file_path(tenant, block_id, name))
                .await
            {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        if let Some(root) = &self.local_root {
            // A local file system keeps the emptied directory; a missing one is already gone.
            let mut dir = root.clone();
            for part in block_file_path(tenant, block_id, META_FILE).parts() {
                dir.push(part.as_ref());
            }
            if let Some(dir) = dir.parent() {
                std::fs::remove_dir(dir).ok();
            }
        }
        Ok(())
    }

    fn sync_local(&self, path: &object_store::path::Path) -> Result<(), BlockError> {
        let Some(root) = &self.local_root else {
            return Ok(());
        };
        let mut file = root.clone();
        for part in path.parts() {
            file.push(part.as_ref());
        }
        let sync = |p: &std::path::Path| std::fs::File::open(p).and_then(|f| f.sync_all());
        sync(&file)
            .and_then(|()| file.parent().map_or(Ok(()), sync))
            .map_err(|e| BlockError::Sync {
                path: file.display().to_string(),
                source: e,
            })
    }
}

/// A block's `meta.json`, refused when its format version is one this build does not know.
pub async fn read_meta(
    store: &dyn ObjectStore,
    tenant: &str,
    block_id: &str,
) -> Result<BlockFileMeta, BlockError> {
    let path = block_file_path(tenant, block_id, META_FILE);
    let bytes = store.get(&path).await?.bytes().await?;
    let meta: BlockFileMeta = serde_json::from_slice(&bytes).map_err(|e| BlockError::Meta {
        path: path.to_string(),
        message: e.to_string(),
    })?;
    if meta.format_version != FORMAT_VERSION {
        return Err(BlockError::Meta {
            path: path.to_string(),
            message: format!(
                "format version {} is not {FORMAT_VERSION}, the one this build reads",
                meta.format_version
            ),
        });
    }
    Ok(meta)
}

/// Streams one table of a block, `rows_per_batch` rows at a time, in file order (the table's
/// sort order).
pub async fn read_table(
    store: Arc<dyn ObjectStore>,
    tenant: &str,
    block_id: &str,
    table: Table,
    rows_per_batch: usize,
) -> Result<BoxStream<'static, Result<RecordBatch, BlockError>>, BlockError> {
    let path = block_file_path(tenant, block_id, table.file_name());
    let name = path.to_string();
    let read_error = |source| BlockError::Read {
        path: name.clone(),
        source,
    };
    let size = store.head(&path).await?.size;
    let reader = BlockFileReader {
        store,
        path: path.clone(),
        size,
    };
    let stream = ParquetRecordBatchStreamBuilder::new(reader)
        .await
        .map_err(read_error)?
        .with_batch_size(rows_per_batch.max(1))
        .build()
        .map_err(read_error)?;
    let name = path.to_string();
    Ok(stream
        .map_err(move |source| BlockError::Read {
            path: name.clone(),
            source,
        })
        .boxed())
}

/// Ranges of one block file, fetched from the object store as the Parquet reader asks.
struct BlockFileReader {
    store: Arc<dyn ObjectStore>,
    path: object_store::path::Path,
    size: u64,
}

impl AsyncFileReader for BlockFileReader {
    fn get_bytes(
        &mut self,
        range: std::ops::Range<u64>,
    ) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        async move {
            self.store
                .get_range(&self.path, range)
                .await
                .map_err(|e| ParquetError::External(Box::new(e)))
        }
        .boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        _options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        async move {
            let size = self.size;
            let metadata = ParquetMetaDataReader::new()
                .load_and_finish(&mut *self, size)
                .await?;
            Ok(Arc::new(metadata))
        }
        .boxed()
    }
}

/// How every block file is written: zstd, page statistics (for pruning), row groups of at
/// most [`MAX_ROW_GROUP_ROWS`], and the table's sort order recorded.
fn writer_properties(table: Table) -> WriterProperties {
    let sorting = table
        .sort_columns()
        .iter()
        .map(|&c| SortingColumn {
            column_idx: c as i32,
            descending: false,
            nulls_first: false,
        })
        .collect();
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(3).expect("valid level"),
        ))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(MAX_ROW_GROUP_ROWS))
        .set_sorting_columns(Some(sorting))
        .set_created_by(format!("profusion {}", env!("CARGO_PKG_VERSION")))
        .build()
}

fn write_parquet(
    table: Table,
    batch: &RecordBatch,
) -> Result<Bytes, parquet::errors::ParquetError> {
    let mut out = Vec::new();
    let mut writer =
        ArrowWriter::try_new(&mut out, batch.schema(), Some(writer_properties(table)))?;
    writer.write(batch)?;
    writer.close()?;
    Ok(Bytes::from(out))
}

/// A ULID string for a 48-bit millisecond time and 80 bits of entropy.
pub fn ulid(millis: i64, entropy: u128) -> String {
    const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    let value = ((millis as u128 & 0xFFFF_FFFF_FFFF) << 80) | (entropy & ((1u128 << 80) - 1));
    (0..26)
        .map(|i| ALPHABET[((value >> (125 - i * 5)) & 0x1f) as usize] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::builder::{ListBuilder, StringDictionaryBuilder, UInt64Builder};
    use arrow_array::types::Int32Type;
    use arrow_array::{ArrayRef, Int64Array, StringArray, UInt64Array};
    use object_store::memory::InMemory;

    /// Two profiles of one series: a block small enough to write by hand.
    fn batches() -> BlockBatches {
        let dictionary = |values: &[&str]| -> ArrayRef {
            let mut b = StringDictionaryBuilder::<Int32Type>::new();
            values.iter().for_each(|v| b.append_value(v));
            Arc::new(b.finish())
        };
        let strings =
            |values: &[&str]| -> ArrayRef { Arc::new(StringArray::from(values.to_vec())) };
        let u64s = |values: &[u64]| -> ArrayRef { Arc::new(UInt64Array::from(values.to_vec())) };
        let i64s = |values: &[i64]| -> ArrayRef { Arc::new(Int64Array::from(values.to_vec())) };
        let cpu = "process_cpu:cpu:nanoseconds:cpu:nanoseconds";
        let samples = RecordBatch::try_new(
            Table::Samples.schema(),
            vec![
                dictionary(&["api", "api", "api"]),
                dictionary(&[cpu, cpu, cpu]),
                u64s(&[7, 7, 7]),
                i64s(&[10, 10, 20]),
                dictionary(&["p1", "p1", "p2"]),
                u64s(&[1, 2, 1]),
                i64s(&[5, 6, 7]),
                Arc::new(UInt64Array::from(vec![None, Some(9), None])),
            ],
        )
        .unwrap();
        let profiles = RecordBatch::try_new(
            Table::Profiles.schema(),
            vec![
                strings(&["api", "api"]),
                strings(&[cpu, cpu]),
                u64s(&[7, 7]),
                i64s(&[10, 20]),
                strings(&["p1", "p2"]),
                i64s(&[1, 1]),
                i64s(&[100, 100]),
                i64s(&[11, 7]),
                u64s(&[2, 1]),
            ],
        )
        .unwrap();
        let mut frames = ListBuilder::new(UInt64Builder::new());
        frames.values().append_slice(&[3, 4]);
        frames.append(true);
        frames.values().append_slice(&[3]);
        frames.append(true);
        let stacks = RecordBatch::try_new(
            Table::Stacks.schema(),
            vec![u64s(&[1, 2]), Arc::new(frames.finish())],
        )
        .unwrap();
        BlockBatches {
            samples,
            profiles,
            series: RecordBatch::new_empty(Table::Series.schema()),
            stacks,
            frames: RecordBatch::new_empty(Table::Frames.schema()),
            min_time_nanos: 10,
            max_time_nanos: 20,
            services: vec!["api".into()],
            profile_types: vec![cpu.into()],
        }
    }

    #[tokio::test]
    async fn a_block_reads_back_as_written() {
        let batches = batches();
        let origin = BlockOrigin::ingester("ingester-a", 3);
        let block = encode("t*", "B1", &batches, &origin, 1234).unwrap();
        assert_eq!(
            (
                block.catalog.num_profiles,
                block.catalog.num_samples,
                block.catalog.wal_segment
            ),
            (2, 3, 3)
        );
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        for (name, bytes) in &block.files {
            store
                .put(&block_file_path("t*", "B1", name), bytes.clone().into())
                .await
                .unwrap();
        }
        let meta = read_meta(store.as_ref(), "t*", "B1").await.unwrap();
        assert_eq!((meta.min_time_nanos, meta.max_time_nanos), (10, 20));
        assert_eq!(meta.files.len(), 5);
        for table in Table::ALL {
            let mut rows = read_table(Arc::clone(&store), "t*", "B1", table, 2)
                .await
                .unwrap();
            let mut read = Vec::new();
            while let Some(batch) = rows.next().await {
                read.push(batch.unwrap());
            }
            let written = batches.table(table);
            let read = arrow_select::concat::concat_batches(&written.schema(), &read).unwrap();
            assert_eq!(&read, written, "{table}");
        }
        let missing = read_table(Arc::clone(&store), "t*", "B2", Table::Samples, 2).await;
        assert!(matches!(missing, Err(BlockError::Store(_))));
    }

    #[test]
    fn ulid_is_26_crockford_chars_and_time_ordered() {
        let a = ulid(1_700_000_000_000, 42);
        let b = ulid(1_700_000_000_001, 0);
        assert_eq!(a.len(), 26);
        assert!(a < b);
        assert_eq!(ulid(0, 0), "00000000000000000000000000");
    }
}
