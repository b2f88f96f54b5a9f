//! The tables of one tenant scope as a DataFusion schema, and the head snapshots they share.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::SchemaProvider;
use datafusion::datasource::TableProvider;
use datafusion::error::{DataFusionError, Result};
use profusion_model::block::Table;
use profusion_model::scan::{BlockSource, HeadSnapshots, HeadSource};
use profusion_model::tenant::TenantScope;
use profusion_model::tombstone::Tombstone;

use super::replicas::ReplicaChoice;
use super::{ProfileTable, ScanWindow};

/// The pinned head snapshots of each tenant (one per ingester), taken when a query first reads
/// the tenant and shared by every table of the query, so all of them see the same heads.
#[derive(Debug)]
pub struct PinnedHeads {
    source: Arc<dyn HeadSource>,
    pinned: tokio::sync::Mutex<HashMap<String, Arc<HeadSnapshots>>>,
    /// The replica choice of each scan window made so far (see [`super::replicas`]), so the
    /// tables of a query count the same copies; made again when the snapshots are renewed.
    choices: tokio::sync::Mutex<HashMap<String, Arc<ReplicaChoice>>>,
}

impl PinnedHeads {
    pub fn new(source: Arc<dyn HeadSource>) -> Self {
        Self {
            source,
            pinned: tokio::sync::Mutex::new(HashMap::new()),
            choices: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    /// The replica choice made for `key` (a tenant's scan window), or `make`'s.
    pub async fn choice<F>(&self, key: String, make: F) -> Result<Arc<ReplicaChoice>>
    where
        F: std::future::Future<Output = Result<ReplicaChoice>>,
    {
        let mut choices = self.choices.lock().await;
        if let Some(choice) = choices.get(&key) {
            return Ok(Arc::clone(choice));
        }
        let choice = Arc::new(make.await?);
        choices.insert(key, Arc::clone(&choice));
        Ok(choice)
    }

    /// The tenant's snapshots, taken now if this query has none yet.
    pub async fn get(&self, tenant: &str) -> Result<Arc<HeadSnapshots>> {
        let mut pinned = self.pinned.lock().await;
        if let Some(head) = pinned.get(tenant) {
            return Ok(Arc::clone(head));
        }
        let head = Arc::new(
            self.source
                .snapshot(tenant)
                .await
                .map_err(|e| DataFusionError::External(Box::new(e)))?,
        );
        pinned.insert(tenant.to_owned(), Arc::clone(&head));
        Ok(head)
    }

    /// Replaces the tenant's snapshots `stale` with new ones (unless another table of the query
    /// already did), for a listing that found a compacted block overlapping it (see
    /// [`profusion_model::scan::HeadCut::conflicts`]). Tables scanned after this see the new
    /// snapshot; the per-profile tables, which must count every profile once, are the ones
    /// that check.
    pub async fn renew(
        &self,
        tenant: &str,
        stale: &Arc<HeadSnapshots>,
    ) -> Result<Arc<HeadSnapshots>> {
        let mut pinned = self.pinned.lock().await;
        if let Some(current) = pinned.get(tenant).filter(|h| !Arc::ptr_eq(h, stale)) {
            return Ok(Arc::clone(current));
        }
        self.choices.lock().await.clear();
        let head = Arc::new(
            self.source
                .snapshot(tenant)
                .await
                .map_err(|e| DataFusionError::External(Box::new(e)))?,
        );
        pinned.insert(tenant.to_owned(), Arc::clone(&head));
        Ok(head)
    }
}

/// One tenant's tombstones per query, read when a query first lists the tenant's blocks (and
/// before it does, so that a block the compactor rewrote after the read has applied every
/// tombstone the query applies), shared by every table of the query.
#[derive(Debug)]
pub struct PinnedTombstones {
    source: Arc<dyn BlockSource>,
    pinned: tokio::sync::Mutex<HashMap<String, Arc<Vec<Tombstone>>>>,
}

impl PinnedTombstones {
    pub fn new(source: Arc<dyn BlockSource>) -> Self {
        Self {
            source,
            pinned: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    /// The tenant's tombstones, read now if this query has not read them yet.
    pub async fn get(&self, tenant: &str) -> Result<Arc<Vec<Tombstone>>> {
        let mut pinned = self.pinned.lock().await;
        if let Some(t) = pinned.get(tenant) {
            return Ok(Arc::clone(t));
        }
        let tombstones = Arc::new(
            self.source
                .tombstones(tenant)
                .await
                .map_err(|e| DataFusionError::External(Box::new(e)))?,
        );
        pinned.insert(tenant.to_owned(), Arc::clone(&tombstones));
        Ok(tombstones)
    }
}

/// The five block tables of a tenant scope, within a window.
#[derive(Debug)]
pub struct TenantSchema {
    tables: HashMap<&'static str, Arc<ProfileTable>>,
    scope: TenantScope,
    tombstones: Arc<PinnedTombstones>,
}

impl TenantSchema {
    pub fn new(
        scope: TenantScope,
        window: ScanWindow,
        head: Arc<dyn HeadSource>,
        blocks: Arc<dyn BlockSource>,
        partitions: usize,
    ) -> Self {
        let heads = Arc::new(PinnedHeads::new(head));
        let tombstones = Arc::new(PinnedTombstones::new(Arc::clone(&blocks)));
        let tables = Table::ALL
            .into_iter()
            .map(|table| {
                let provider = ProfileTable::new(
                    table,
                    scope.clone(),
                    window.clone(),
                    Arc::clone(&heads),
                    Arc::clone(&tombstones),
                    Arc::clone(&blocks),
                    partitions,
                );
                (table.name(), Arc::new(provider))
            })
            .collect();
        Self {
            tables,
            scope,
            tombstones,
        }
    }

    /// Series some tombstone of the scope's tenants names: whether they still have data in a
    /// window takes a look at their profiles.
    pub async fn deleted_series(&self) -> Result<std::collections::HashSet<u64>> {
        let mut out = std::collections::HashSet::new();
        for tenant in self.scope.tenants() {
            for t in self.tombstones.get(tenant.as_str()).await?.iter() {
                out.extend(t.fingerprints.iter().copied());
            }
        }
        Ok(out)
    }

    /// The provider of one table.
    pub fn table(&self, table: Table) -> Arc<ProfileTable> {
        Arc::clone(&self.tables[table.name()])
    }
}

#[async_trait]
impl SchemaProvider for TenantSchema {
    fn table_names(&self) -> Vec<String> {
        Table::ALL.iter().map(|t| t.name().to_owned()).collect()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        Ok(self
            .tables
            .get(name)
            .map(|t| Arc::clone(t) as Arc<dyn TableProvider>))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.tables.contains_key(name)
    }
}
