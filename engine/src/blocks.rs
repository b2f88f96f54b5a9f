//! The block side of the read path: the catalog lists the blocks a scan may need, the object
//! store holds their files.

use std::sync::Arc;

use async_trait::async_trait;
use object_store::ObjectStore;
use profusion_catalog::Catalog;
use profusion_model::block::BlockMeta;
use profusion_model::scan::{BlockSource, ScanError, ScanRequest};
use profusion_model::tombstone::Tombstone;

/// Blocks as the catalog records them, files in one object store.
#[derive(Debug, Clone)]
pub struct CatalogBlocks {
    catalog: Arc<dyn Catalog>,
    store: Arc<dyn ObjectStore>,
}

impl CatalogBlocks {
    pub fn new(catalog: Arc<dyn Catalog>, store: Arc<dyn ObjectStore>) -> Self {
        Self { catalog, store }
    }
}

#[async_trait]
impl BlockSource for CatalogBlocks {
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
        Arc::clone(&self.store)
    }

    async fn tombstones(&self, tenant: &str) -> Result<Vec<Tombstone>, ScanError> {
        self.catalog
            .tombstones(tenant)
            .await
            .map_err(|e| ScanError::Unavailable(format!("catalog: {e}")))
    }
}
