//! The store-gateway: the one reader of block files for queries. It lists the blocks a scan
//! may need from the catalog and serves their files through two caches: decoded Parquet
//! metadata (footers and page indexes, [`MetadataCache`]) and object-store byte ranges, in
//! memory and optionally on local disk ([`CachingStore`]). Block files never change once
//! written, so neither cache ever has to be invalidated; both are bounded by size.
//!
//! Queriers call it in process through [`profusion_model::scan::BlockSource`]; in
//! microservices mode a store-gateway process also runs the block stages of queriers' plans
//! (datafusion-distributed workers, `profusion_engine::distributed`), reading through it.
//!
//! Owns: reading block files for queries and the caches of what it read. Must not write or
//! delete blocks (the ingester and the compactor do), nor plan queries (the engine does).

mod chunks;
mod disk;
mod lru;
mod metadata;
mod metrics;

use std::sync::Arc;

use async_trait::async_trait;
use object_store::ObjectStore;
use profusion_catalog::Catalog;
use profusion_model::block::BlockMeta;
use profusion_model::scan::{BlockSource, ParquetMetadataCache, ScanError, ScanRequest};
use profusion_model::tombstone::Tombstone;

pub use chunks::{CachingStore, DEFAULT_CHUNK_BYTES, RangeCacheConfig};
pub use metadata::MetadataCache;
pub use metrics::StoreGatewayMetrics;

/// How the store-gateway's caches are sized.
#[derive(Debug, Clone)]
pub struct StoreGatewayConfig {
    pub ranges: RangeCacheConfig,
    /// Most bytes of decoded Parquet metadata kept; 0 keeps none.
    pub metadata_bytes: usize,
}

impl StoreGatewayConfig {
    /// No caches: every read goes to the object store as the reader asks.
    pub fn uncached() -> Self {
        Self {
            ranges: RangeCacheConfig::disabled(),
            metadata_bytes: 0,
        }
    }
}

/// Blocks as the catalog records them, their files read through the caches.
#[derive(Debug, Clone)]
pub struct StoreGateway {
    catalog: Arc<dyn Catalog>,
    store: Arc<CachingStore>,
    metadata: Option<Arc<MetadataCache>>,
}

impl StoreGateway {
    /// A store-gateway over `store` (where the blocks' files are). Fails only when the disk
    /// tier's directory cannot be opened.
    pub fn new(
        catalog: Arc<dyn Catalog>,
        store: Arc<dyn ObjectStore>,
        config: &StoreGatewayConfig,
        metrics: StoreGatewayMetrics,
    ) -> std::io::Result<Self> {
        Ok(Self {
            catalog,
            store: Arc::new(CachingStore::new(store, &config.ranges, metrics.clone())?),
            metadata: (config.metadata_bytes > 0)
                .then(|| Arc::new(MetadataCache::new(config.metadata_bytes, metrics))),
        })
    }

    /// A store-gateway that caches nothing (for tests and tools reading blocks directly).
    pub fn uncached(catalog: Arc<dyn Catalog>, store: Arc<dyn ObjectStore>) -> Self {
        Self::new(
            catalog,
            store,
            &StoreGatewayConfig::uncached(),
            StoreGatewayMetrics::default(),
        )
        .expect("no disk tier to open")
    }
}

#[async_trait]
impl BlockSource for StoreGateway {
    async fn blocks(&self, request: &ScanRequest) -> Result<Vec<BlockMeta>, ScanError> {
        if request.range.is_empty() {
            return Ok(Vec::new());
        }
        let blocks = self
            .catalog
            .blocks(&request.tenant, request.range.start, request.range.end)
            .await
            .map_err(|e| ScanError::Unavailable(format!("catalog: {e}")))?;
        Ok(blocks
            .into_iter()
            .filter(|b| request.may_match(b))
            .collect())
    }

    fn store(&self) -> Arc<dyn ObjectStore> {
        Arc::clone(&self.store) as _
    }

    async fn tombstones(&self, tenant: &str) -> Result<Vec<Tombstone>, ScanError> {
        self.catalog
            .tombstones(tenant)
            .await
            .map_err(|e| ScanError::Unavailable(format!("catalog: {e}")))
    }

    fn metadata_cache(&self) -> Option<Arc<dyn ParquetMetadataCache>> {
        self.metadata
            .as_ref()
            .map(|m| Arc::clone(m) as Arc<dyn ParquetMetadataCache>)
    }
}
