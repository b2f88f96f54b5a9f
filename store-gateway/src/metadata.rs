//! Decoded Parquet footers and page indexes of block files, kept across queries so a repeated
//! query neither fetches nor decodes them again.

use std::sync::{Arc, Mutex};

use object_store::ObjectMeta;
use object_store::path::Path;
use parquet::file::metadata::ParquetMetaData;
use profusion_model::scan::ParquetMetadataCache;

use crate::lru::Lru;
use crate::metrics::StoreGatewayMetrics;

type Entry = (ObjectMeta, Arc<ParquetMetaData>);

/// Decoded metadata by file path, bounded by its decoded size.
#[derive(Debug)]
pub struct MetadataCache {
    entries: Mutex<Lru<Path, Entry>>,
    metrics: StoreGatewayMetrics,
}

impl MetadataCache {
    pub fn new(limit_bytes: usize, metrics: StoreGatewayMetrics) -> Self {
        Self {
            entries: Mutex::new(Lru::new(limit_bytes)),
            metrics,
        }
    }

    fn held(&self, entries: &Lru<Path, Entry>) {
        self.metrics.metadata_bytes.set(entries.bytes() as i64);
    }
}

impl ParquetMetadataCache for MetadataCache {
    fn get(&self, path: &Path) -> Option<Entry> {
        let hit = self.entries.lock().expect("metadata cache").get(path);
        self.metrics.metadata_lookup(hit.is_some());
        hit
    }

    fn put(&self, path: &Path, meta: ObjectMeta, metadata: Arc<ParquetMetaData>) {
        let size = metadata.memory_size() + path.as_ref().len();
        let mut entries = self.entries.lock().expect("metadata cache");
        entries.insert(path.clone(), (meta, metadata), size);
        self.held(&entries);
    }

    fn remove(&self, path: &Path) -> bool {
        let mut entries = self.entries.lock().expect("metadata cache");
        let removed = entries.remove(path).is_some();
        self.held(&entries);
        removed
    }

    fn contains(&self, path: &Path) -> bool {
        self.entries.lock().expect("metadata cache").contains(path)
    }

    fn len(&self) -> usize {
        self.entries.lock().expect("metadata cache").len()
    }

    fn clear(&self) {
        let mut entries = self.entries.lock().expect("metadata cache");
        entries.clear();
        self.held(&entries);
    }

    fn limit_bytes(&self) -> usize {
        self.entries.lock().expect("metadata cache").limit()
    }
}
