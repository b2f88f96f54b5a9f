use async_trait::async_trait;
use tokio_postgres::{Client, NoTls, Row};

use crate::migrations::{MIGRATIONS, latest_version};
use crate::sqlite::now_millis;
use profusion_model::block::BlockMeta;

use crate::{
    Catalog, CatalogError, Result, Setting, limit_reached, strings_from_json, strings_to_json,
};

/// A catalog shared by several nodes, in PostgreSQL. Migrations run under an advisory lock so
/// that nodes starting together apply each version exactly once.
#[derive(Debug)]
pub struct PostgresCatalog {
    client: Client,
}

/// Arbitrary, fixed key of the advisory lock that serializes migrations.
const MIGRATION_LOCK: i64 = 0x7072_6f66_7573_696f;

const BLOCK_COLUMNS: &str = "tenant, id, min_time_nanos, max_time_nanos, num_series, num_profiles,
    num_samples, size_bytes, services, profile_types, source, wal_segment, compaction_level,
    created_at_millis";

impl PostgresCatalog {
    /// Connects to `url` (a libpq-style `postgres://` URL) and applies pending migrations.
    pub async fn connect(url: &str) -> Result<Self> {
        let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::error!(error = %e, "postgres catalog connection ended");
            }
        });
        let catalog = Self { client };
        catalog.migrate().await?;
        Ok(catalog)
    }

    async fn migrate(&self) -> Result<()> {
        let c = &self.client;
        c.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
            .await?;
        let result = async {
            c.batch_execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (
                    version BIGINT PRIMARY KEY, description TEXT NOT NULL, applied_at_millis BIGINT NOT NULL)",
            )
            .await?;
            let current: i64 = c
                .query_one("SELECT COALESCE(MAX(version), 0)::BIGINT FROM schema_migrations", &[])
                .await?
                .get(0);
            if current > latest_version() {
                return Err(CatalogError::TooNew {
                    found: current,
                    supported: latest_version(),
                });
            }
            for m in MIGRATIONS.iter().filter(|m| m.version > current) {
                c.batch_execute("BEGIN").await?;
                let applied = async {
                    c.batch_execute(m.postgres).await?;
                    c.execute(
                        "INSERT INTO schema_migrations (version, description, applied_at_millis) VALUES ($1, $2, $3)",
                        &[&m.version, &m.description, &now_millis()],
                    )
                    .await?;
                    Ok::<_, CatalogError>(())
                }
                .await;
                match applied {
                    Ok(()) => c.batch_execute("COMMIT").await?,
                    Err(e) => {
                        c.batch_execute("ROLLBACK").await.ok();
                        return Err(e);
                    }
                }
                tracing::info!(version = m.version, description = m.description, "applied postgres catalog migration");
            }
            Ok(())
        }
        .await;
        c.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
            .await?;
        result
    }
}

fn block_from_row(row: &Row) -> Result<BlockMeta> {
    Ok(BlockMeta {
        tenant: row.get(0),
        id: row.get(1),
        min_time_nanos: row.get(2),
        max_time_nanos: row.get(3),
        num_series: row.get::<_, i64>(4) as u64,
        num_profiles: row.get::<_, i64>(5) as u64,
        num_samples: row.get::<_, i64>(6) as u64,
        size_bytes: row.get::<_, i64>(7) as u64,
        services: strings_from_json(row.get(8))?,
        profile_types: strings_from_json(row.get(9))?,
        source: row.get(10),
        wal_segment: row.get::<_, i64>(11) as u64,
        compaction_level: row.get::<_, i32>(12) as u32,
        created_at_millis: row.get(13),
    })
}

#[async_trait]
impl Catalog for PostgresCatalog {
    async fn schema_version(&self) -> Result<i64> {
        Ok(self
            .client
            .query_one("SELECT MAX(version)::BIGINT FROM schema_migrations", &[])
            .await?
            .get(0))
    }

    async fn register_block(&self, b: &BlockMeta) -> Result<()> {
        let sql = format!(
            "INSERT INTO blocks ({BLOCK_COLUMNS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14)
             ON CONFLICT (tenant, id) DO UPDATE SET
               min_time_nanos = EXCLUDED.min_time_nanos, max_time_nanos = EXCLUDED.max_time_nanos,
               num_series = EXCLUDED.num_series, num_profiles = EXCLUDED.num_profiles,
               num_samples = EXCLUDED.num_samples, size_bytes = EXCLUDED.size_bytes,
               services = EXCLUDED.services, profile_types = EXCLUDED.profile_types,
               source = EXCLUDED.source, wal_segment = EXCLUDED.wal_segment,
               compaction_level = EXCLUDED.compaction_level, created_at_millis = EXCLUDED.created_at_millis"
        );
        self.client
            .execute(
                &sql,
                &[
                    &b.tenant,
                    &b.id,
                    &b.min_time_nanos,
                    &b.max_time_nanos,
                    &(b.num_series as i64),
                    &(b.num_profiles as i64),
                    &(b.num_samples as i64),
                    &(b.size_bytes as i64),
                    &strings_to_json(&b.services),
                    &strings_to_json(&b.profile_types),
                    &b.source,
                    &(b.wal_segment as i64),
                    &(b.compaction_level as i32),
                    &b.created_at_millis,
                ],
            )
            .await?;
        Ok(())
    }

    async fn blocks(
        &self,
        tenant: &str,
        min_time_nanos: i64,
        max_time_nanos: i64,
    ) -> Result<Vec<BlockMeta>> {
        let sql = format!(
            "SELECT {BLOCK_COLUMNS} FROM blocks
             WHERE tenant = $1 AND max_time_nanos >= $2 AND min_time_nanos <= $3
             ORDER BY min_time_nanos, id"
        );
        self.client
            .query(&sql, &[&tenant, &min_time_nanos, &max_time_nanos])
            .await?
            .iter()
            .map(block_from_row)
            .collect()
    }

    async fn tenants_flushed(&self, source: &str, wal_segment: u64) -> Result<Vec<String>> {
        Ok(self
            .client
            .query(
                "SELECT DISTINCT tenant FROM blocks WHERE source = $1 AND wal_segment = $2 ORDER BY tenant",
                &[&source, &(wal_segment as i64)],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect())
    }

    async fn tenants(&self) -> Result<Vec<String>> {
        Ok(self
            .client
            .query("SELECT DISTINCT tenant FROM blocks ORDER BY tenant", &[])
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect())
    }

    async fn settings(&self, tenant: &str) -> Result<Vec<Setting>> {
        Ok(self
            .client
            .query(
                "SELECT name, value, modified_at_millis FROM tenant_settings WHERE tenant = $1 ORDER BY name",
                &[&tenant],
            )
            .await?
            .iter()
            .map(|r| Setting {
                name: r.get(0),
                value: r.get(1),
                modified_at_millis: r.get(2),
            })
            .collect())
    }

    async fn set_setting(
        &self,
        tenant: &str,
        setting: &Setting,
        max_settings: usize,
    ) -> Result<Setting> {
        let mut s = setting.clone();
        if s.modified_at_millis == 0 {
            s.modified_at_millis = now_millis();
        }
        // The conditional upsert writes a new name only while the tenant is under its limit,
        // and an existing one only when not older than the stored value; no row back means one
        // of the two refused it. (Concurrent first writes of new names may pass the limit by
        // as many as race; it bounds growth, not an exact count.)
        let max = i64::try_from(max_settings).unwrap_or(i64::MAX);
        let rows = self
            .client
            .query(
                "INSERT INTO tenant_settings (tenant, name, value, modified_at_millis)
                 SELECT $1, $2, $3, $4
                 WHERE EXISTS (SELECT 1 FROM tenant_settings WHERE tenant = $1 AND name = $2)
                    OR (SELECT count(*) FROM tenant_settings WHERE tenant = $1) < $5
                 ON CONFLICT (tenant, name) DO UPDATE SET value = EXCLUDED.value,
                     modified_at_millis = EXCLUDED.modified_at_millis
                 WHERE tenant_settings.modified_at_millis <= EXCLUDED.modified_at_millis
                 RETURNING modified_at_millis",
                &[&tenant, &s.name, &s.value, &s.modified_at_millis, &max],
            )
            .await?;
        if rows.is_empty() {
            let exists = self
                .client
                .query_opt(
                    "SELECT 1 FROM tenant_settings WHERE tenant = $1 AND name = $2",
                    &[&tenant, &s.name],
                )
                .await?
                .is_some();
            if !exists {
                let count: i64 = self
                    .client
                    .query_one(
                        "SELECT count(*) FROM tenant_settings WHERE tenant = $1",
                        &[&tenant],
                    )
                    .await?
                    .get(0);
                return Err(limit_reached(count, max_settings));
            }
            return Err(CatalogError::Conflict(format!(
                "setting {:?} was modified after {}",
                s.name, s.modified_at_millis
            )));
        }
        Ok(s)
    }

    async fn delete_setting(&self, tenant: &str, name: &str) -> Result<()> {
        self.client
            .execute(
                "DELETE FROM tenant_settings WHERE tenant = $1 AND name = $2",
                &[&tenant, &name],
            )
            .await?;
        Ok(())
    }
}
