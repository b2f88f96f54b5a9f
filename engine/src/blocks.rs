//! The block side of the read path as DataFusion sees it: the block source's decoded Parquet
//! metadata offered to DataFusion's Parquet reader, which looks footers up there before it
//! fetches them and puts back what it decoded.

use std::sync::Arc;
use std::time::Duration;

use datafusion::common::HashMap;
// The metadata module's type, which the Parquet reader puts and looks for (the crate root
// re-exports another of the same name).
use datafusion::common::TableReference;
use datafusion::datasource::physical_plan::parquet::metadata::CachedParquetMetaData;
use datafusion::execution::cache::cache_manager::{
    CacheManagerConfig, CachedFileMetadataEntry, FileMetadataCache, FileStatisticsCache,
};
use datafusion::execution::cache::{Cache, CacheEntryInfo};
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use object_store::path::Path;
use profusion_model::scan::{BlockSource, ParquetMetadataCache};

/// A runtime from `builder` that reads `blocks`' files: their store registered at
/// [`crate::table::STORE_URL`], their decoded metadata kept in the block source's cache, and
/// the statistics DataFusion derives from it kept in `statistics` (every query gets a runtime
/// of its own, for its memory budget; a block file never changes, so what was derived from it
/// once holds for every later query).
pub fn block_runtime(
    builder: RuntimeEnvBuilder,
    blocks: &dyn BlockSource,
    statistics: Option<Arc<FileStatisticsCache>>,
) -> datafusion::error::Result<Arc<RuntimeEnv>> {
    let caches = CacheManagerConfig::default()
        .with_file_statistics_cache(statistics)
        .with_file_metadata_cache(
            blocks
                .metadata_cache()
                .map(|cache| Arc::new(BlockMetadataCache(cache)) as Arc<FileMetadataCache>),
        );
    let builder = builder.with_cache_manager(caches);
    let runtime = builder.build_arc()?;
    let url = url::Url::parse(crate::table::STORE_URL)
        .map_err(|e| datafusion::error::DataFusionError::Internal(e.to_string()))?;
    runtime.register_object_store(&url, blocks.store());
    Ok(runtime)
}

/// DataFusion's file-metadata cache over a block source's [`ParquetMetadataCache`]. Every
/// query gets a runtime of its own (for its memory budget), so this is what lets metadata
/// outlive a query.
#[derive(Debug)]
pub struct BlockMetadataCache(pub Arc<dyn ParquetMetadataCache>);

impl Cache<Path, CachedFileMetadataEntry> for BlockMetadataCache {
    fn get(&self, key: &Path) -> Option<CachedFileMetadataEntry> {
        let (meta, metadata) = self.0.get(key)?;
        Some(CachedFileMetadataEntry::new(
            meta,
            Arc::new(CachedParquetMetaData::new(metadata)),
        ))
    }

    fn put(&self, key: &Path, value: CachedFileMetadataEntry) -> Option<CachedFileMetadataEntry> {
        // Only Parquet metadata is ever put here: block files are all Parquet.
        if let Some(parquet) = value
            .file_metadata
            .as_any()
            .downcast_ref::<CachedParquetMetaData>()
        {
            self.0.put(
                key,
                value.meta.clone(),
                Arc::clone(parquet.parquet_metadata()),
            );
        }
        None
    }

    fn remove(&self, key: &Path) -> Option<CachedFileMetadataEntry> {
        self.0.remove(key);
        None
    }

    fn contains_key(&self, key: &Path) -> bool {
        self.0.contains(key)
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    fn clear(&self) {
        self.0.clear()
    }

    fn name(&self) -> String {
        "profusion block metadata".to_owned()
    }

    fn cache_limit(&self) -> usize {
        self.0.limit_bytes()
    }

    /// The limit is the block source's (its configuration), not the session's.
    fn update_cache_limit(&self, _limit: usize) {}

    fn cache_ttl(&self) -> Option<Duration> {
        None
    }

    fn update_cache_ttl(&self, _ttl: Option<Duration>) {}

    fn drop_table_entries(&self, _table_ref: &TableReference) -> datafusion::common::Result<()> {
        Ok(())
    }

    fn list_entries(&self) -> HashMap<Path, CacheEntryInfo<CachedFileMetadataEntry>> {
        HashMap::new()
    }
}
