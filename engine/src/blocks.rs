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
use datafusion::execution::cache::cache_manager::CachedFileMetadataEntry;
use datafusion::execution::cache::{Cache, CacheEntryInfo};
use object_store::path::Path;
use profusion_model::scan::ParquetMetadataCache;

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
