use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};

use crate::migrations::{MIGRATIONS, latest_version};
use profusion_model::block::BlockMeta;

use crate::{
    Catalog, CatalogError, Result, Setting, limit_reached, strings_from_json, strings_to_json,
};

/// The embedded catalog: one SQLite file, written with full fsync so a registered block
/// survives a crash of the process or the machine.
#[derive(Debug, Clone)]
pub struct SqliteCatalog {
    conn: Arc<Mutex<Connection>>,
}

impl SqliteCatalog {
    /// Opens (creating if needed) the catalog at `path` and applies pending migrations.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_owned();
        tokio::task::spawn_blocking(move || {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            let conn = Connection::open(&path)?;
            conn.busy_timeout(std::time::Duration::from_secs(10))?;
            conn.pragma_update(None, "journal_mode", "WAL")?;
            conn.pragma_update(None, "synchronous", "FULL")?;
            migrate(&conn)?;
            Ok(Self {
                conn: Arc::new(Mutex::new(conn)),
            })
        })
        .await
        .map_err(|e| CatalogError::Task(e.to_string()))?
    }

    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || {
            let mut guard = conn
                .lock()
                .map_err(|_| CatalogError::Task("sqlite connection poisoned".into()))?;
            f(&mut guard)
        })
        .await
        .map_err(|e| CatalogError::Task(e.to_string()))?
    }
}

fn migrate(conn: &Connection) -> Result<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version BIGINT PRIMARY KEY, description TEXT NOT NULL, applied_at_millis BIGINT NOT NULL)",
    )?;
    let current: i64 = conn.query_row(
        "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
        [],
        |r| r.get(0),
    )?;
    if current > latest_version() {
        return Err(CatalogError::TooNew {
            found: current,
            supported: latest_version(),
        });
    }
    for m in MIGRATIONS.iter().filter(|m| m.version > current) {
        let tx = conn.unchecked_transaction()?;
        tx.execute_batch(m.sqlite)?;
        tx.execute(
            "INSERT INTO schema_migrations (version, description, applied_at_millis) VALUES (?1, ?2, ?3)",
            params![m.version, m.description, now_millis()],
        )?;
        tx.commit()?;
        tracing::info!(
            version = m.version,
            description = m.description,
            "applied sqlite catalog migration"
        );
    }
    Ok(())
}

pub(crate) fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn block_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<(BlockMeta, String, String)> {
    Ok((
        BlockMeta {
            tenant: row.get(0)?,
            id: row.get(1)?,
            min_time_nanos: row.get(2)?,
            max_time_nanos: row.get(3)?,
            num_series: row.get::<_, i64>(4)? as u64,
            num_profiles: row.get::<_, i64>(5)? as u64,
            num_samples: row.get::<_, i64>(6)? as u64,
            size_bytes: row.get::<_, i64>(7)? as u64,
            services: Vec::new(),
            profile_types: Vec::new(),
            source: row.get(10)?,
            wal_segment: row.get::<_, i64>(11)? as u64,
            compaction_level: row.get::<_, i64>(12)? as u32,
            created_at_millis: row.get(13)?,
        },
        row.get(8)?,
        row.get(9)?,
    ))
}

#[async_trait]
impl Catalog for SqliteCatalog {
    async fn schema_version(&self) -> Result<i64> {
        self.with(|c| {
            Ok(
                c.query_row("SELECT MAX(version) FROM schema_migrations", [], |r| {
                    r.get(0)
                })?,
            )
        })
        .await
    }

    async fn register_block(&self, block: &BlockMeta) -> Result<()> {
        let b = block.clone();
        self.with(move |c| {
            c.execute(
                "INSERT OR REPLACE INTO blocks (tenant, id, min_time_nanos, max_time_nanos, num_series,
                    num_profiles, num_samples, size_bytes, services, profile_types, source, wal_segment,
                    compaction_level, created_at_millis)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
                params![
                    b.tenant,
                    b.id,
                    b.min_time_nanos,
                    b.max_time_nanos,
                    b.num_series as i64,
                    b.num_profiles as i64,
                    b.num_samples as i64,
                    b.size_bytes as i64,
                    strings_to_json(&b.services),
                    strings_to_json(&b.profile_types),
                    b.source,
                    b.wal_segment as i64,
                    i64::from(b.compaction_level),
                    b.created_at_millis,
                ],
            )?;
            Ok(())
        })
        .await
    }

    async fn blocks(
        &self,
        tenant: &str,
        min_time_nanos: i64,
        max_time_nanos: i64,
    ) -> Result<Vec<BlockMeta>> {
        let tenant = tenant.to_owned();
        self.with(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT tenant, id, min_time_nanos, max_time_nanos, num_series, num_profiles, num_samples,
                        size_bytes, services, profile_types, source, wal_segment, compaction_level,
                        created_at_millis
                 FROM blocks WHERE tenant = ?1 AND max_time_nanos >= ?2 AND min_time_nanos <= ?3
                 ORDER BY min_time_nanos, id",
            )?;
            let rows = stmt.query_map(params![tenant, min_time_nanos, max_time_nanos], block_from_row)?;
            let mut out = Vec::new();
            for row in rows {
                let (mut block, services, types) = row?;
                block.services = strings_from_json(&services)?;
                block.profile_types = strings_from_json(&types)?;
                out.push(block);
            }
            Ok(out)
        })
        .await
    }

    async fn tenants_flushed(&self, source: &str, wal_segment: u64) -> Result<Vec<String>> {
        let source = source.to_owned();
        self.with(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT DISTINCT tenant FROM blocks WHERE source = ?1 AND wal_segment = ?2 ORDER BY tenant",
            )?;
            let rows = stmt.query_map(params![source, wal_segment as i64], |r| r.get(0))?;
            Ok(rows.collect::<rusqlite::Result<Vec<String>>>()?)
        })
        .await
    }

    async fn tenants(&self) -> Result<Vec<String>> {
        self.with(|c| {
            let mut stmt =
                c.prepare_cached("SELECT DISTINCT tenant FROM blocks ORDER BY tenant")?;
            let rows = stmt.query_map([], |r| r.get(0))?;
            Ok(rows.collect::<rusqlite::Result<Vec<String>>>()?)
        })
        .await
    }

    async fn settings(&self, tenant: &str) -> Result<Vec<Setting>> {
        let tenant = tenant.to_owned();
        self.with(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT name, value, modified_at_millis FROM tenant_settings WHERE tenant = ?1 ORDER BY name",
            )?;
            let rows = stmt.query_map(params![tenant], |r| {
                Ok(Setting {
                    name: r.get(0)?,
                    value: r.get(1)?,
                    modified_at_millis: r.get(2)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn set_setting(
        &self,
        tenant: &str,
        setting: &Setting,
        max_settings: usize,
    ) -> Result<Setting> {
        let tenant = tenant.to_owned();
        let mut s = setting.clone();
        if s.modified_at_millis == 0 {
            s.modified_at_millis = now_millis();
        }
        self.with(move |c| {
            let tx = c.transaction()?;
            let stored: Option<i64> = tx
                .query_row(
                    "SELECT modified_at_millis FROM tenant_settings WHERE tenant = ?1 AND name = ?2",
                    params![tenant, s.name],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(stored) = stored.filter(|t| *t > s.modified_at_millis) {
                return Err(CatalogError::Conflict(format!(
                    "setting {:?} was modified at {stored}, after {}",
                    s.name, s.modified_at_millis
                )));
            }
            if stored.is_none() {
                let count: i64 = tx.query_row(
                    "SELECT count(*) FROM tenant_settings WHERE tenant = ?1",
                    params![tenant],
                    |r| r.get(0),
                )?;
                if count as usize >= max_settings {
                    return Err(limit_reached(count, max_settings));
                }
            }
            tx.execute(
                "INSERT OR REPLACE INTO tenant_settings (tenant, name, value, modified_at_millis) VALUES (?1, ?2, ?3, ?4)",
                params![tenant, s.name, s.value, s.modified_at_millis],
            )?;
            tx.commit()?;
            Ok(s)
        })
        .await
    }

    async fn delete_setting(&self, tenant: &str, name: &str) -> Result<()> {
        let (tenant, name) = (tenant.to_owned(), name.to_owned());
        self.with(move |c| {
            c.execute(
                "DELETE FROM tenant_settings WHERE tenant = ?1 AND name = ?2",
                params![tenant, name],
            )?;
            Ok(())
        })
        .await
    }
}
