//! The catalog: which tenants exist, which blocks each tenant has and what is in them (time
//! range, services, profile types, counts), and per-tenant settings. Planning reads it instead
//! of listing the object store.
//!
//! One [`Catalog`] trait with two implementations: [`SqliteCatalog`] (the embedded default,
//! a file under `./data`) and [`PostgresCatalog`] (shared by the nodes of a cluster). Both apply
//! the same versioned migrations from [`migrations`].
//!
//! Owns: catalog schema and queries. Must not touch block contents or the object store.

mod error;
pub mod migrations;
mod postgres;
mod sqlite;

use async_trait::async_trait;
use profusion_model::block::BlockMeta;
use serde::{Deserialize, Serialize};

pub use error::{CatalogError, Result};
pub use postgres::PostgresCatalog;
pub use sqlite::SqliteCatalog;

/// One per-tenant setting (the `settings.v1` API).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Setting {
    pub name: String,
    pub value: String,
    /// Unix milliseconds of the last change.
    pub modified_at_millis: i64,
}

/// The catalog interface shared by every backend.
#[async_trait]
pub trait Catalog: Send + Sync + std::fmt::Debug {
    /// The newest migration version applied to this catalog.
    async fn schema_version(&self) -> Result<i64>;

    /// Records a block. Registering the same (tenant, id) again replaces the earlier record, so
    /// a retried flush never yields two entries.
    async fn register_block(&self, block: &BlockMeta) -> Result<()>;

    /// Blocks of `tenant` whose time range overlaps `[min_time_nanos, max_time_nanos]`, ordered
    /// by min time then id.
    async fn blocks(
        &self,
        tenant: &str,
        min_time_nanos: i64,
        max_time_nanos: i64,
    ) -> Result<Vec<BlockMeta>>;

    /// Tenants that registered blocks from `source` for WAL segment `wal_segment`.
    async fn tenants_flushed(&self, source: &str, wal_segment: u64) -> Result<Vec<String>>;

    /// Every tenant with at least one block, sorted.
    async fn tenants(&self) -> Result<Vec<String>>;

    /// Settings of `tenant`, sorted by name.
    async fn settings(&self, tenant: &str) -> Result<Vec<Setting>>;

    /// Creates or replaces a setting. A write older than the stored one is refused with
    /// [`CatalogError::Conflict`], so concurrent editors cannot go back in time; a new name
    /// when the tenant has `max_settings` already, with [`CatalogError::Limit`].
    async fn set_setting(
        &self,
        tenant: &str,
        setting: &Setting,
        max_settings: usize,
    ) -> Result<Setting>;

    /// Removes a setting; removing an absent one is not an error.
    async fn delete_setting(&self, tenant: &str, name: &str) -> Result<()>;
}

/// The error of a new setting past a tenant's limit.
fn limit_reached(count: i64, max_settings: usize) -> CatalogError {
    CatalogError::Limit(format!(
        "tenant already has {count} settings, the limit (--settings.max-per-tenant is \
         {max_settings}); delete one first"
    ))
}

/// Opens the catalog a URL names: `sqlite:<path>` (or a bare path) or `postgres://...`.
pub async fn open(url: &str) -> Result<std::sync::Arc<dyn Catalog>> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(std::sync::Arc::new(PostgresCatalog::connect(url).await?))
    } else {
        let path = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"));
        Ok(std::sync::Arc::new(
            SqliteCatalog::open(path.unwrap_or(url)).await?,
        ))
    }
}

fn strings_to_json(values: &[String]) -> String {
    serde_json::to_string(values).unwrap_or_else(|_| "[]".to_owned())
}

fn strings_from_json(text: &str) -> Result<Vec<String>> {
    serde_json::from_str(text).map_err(|e| CatalogError::Corrupt(format!("string list: {e}")))
}
