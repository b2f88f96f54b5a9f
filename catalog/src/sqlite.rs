use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};

use crate::migrations::{MIGRATIONS, latest_version};
use profusion_model::block::BlockMeta;

use crate::{
    BlockState, Catalog, CatalogError, FlushedTenants, MEMBER_COLUMNS, MemberRow, Result,
    RingMember, Setting, TOKEN_COLUMNS, TokenRecord, duplicate_token, fingerprints_to_json,
    limit_reached, lineage_from_json, lineage_to_json, member_from_columns, not_replaceable,
    strings_from_json, strings_to_json, tokens_to_json, tombstone_from_columns,
};
use profusion_model::tombstone::Tombstone;

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
        for batch in m.sqlite {
            tx.execute_batch(batch)?;
        }
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

/// The columns of a [`BlockMeta`], in [`block_from_row`]'s order.
const BLOCK_COLUMNS: &str = "tenant, id, min_time_nanos, max_time_nanos, num_series, num_profiles,
    num_samples, size_bytes, services, profile_types, source, wal_segment, compaction_level,
    created_at_millis, lineage, tombstone_seq";

fn block_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<BlockRow> {
    Ok(BlockRow {
        meta: BlockMeta {
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
            lineage: Default::default(),
            tombstone_seq: row.get(15)?,
        },
        services: row.get(8)?,
        profile_types: row.get(9)?,
        lineage: row.get(14)?,
    })
}

/// A block row with its JSON columns still text: rusqlite's row closures cannot return our
/// error, so they are parsed after.
struct BlockRow {
    meta: BlockMeta,
    services: String,
    profile_types: String,
    lineage: String,
}

impl BlockRow {
    fn parse(self) -> Result<BlockMeta> {
        let mut block = self.meta;
        block.services = strings_from_json(&self.services)?;
        block.profile_types = strings_from_json(&self.profile_types)?;
        block.lineage = lineage_from_json(&self.lineage)?;
        Ok(block)
    }
}

fn query_blocks(
    c: &Connection,
    condition: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<BlockMeta>> {
    let sql = format!("SELECT {BLOCK_COLUMNS} FROM blocks b WHERE {condition}");
    let mut stmt = c.prepare_cached(&sql)?;
    let rows = stmt.query_map(params, block_from_row)?;
    let mut out = Vec::new();
    for row in rows {
        out.push(row?.parse()?);
    }
    Ok(out)
}

/// Inserts (or, for a live block, replaces) a block row in `state`, and its lineage.
fn insert_block(c: &Connection, b: &BlockMeta, state: BlockState) -> Result<()> {
    if b.compaction_level == 0 {
        let superseded: bool = c.query_row(
            "SELECT EXISTS (SELECT 1 FROM block_lineage WHERE tenant = ?1 AND source = ?2
                AND newest_segment >= ?3 AND block_id <> ?4)
                AND NOT EXISTS (SELECT 1 FROM blocks WHERE tenant = ?1 AND id = ?4)",
            params![b.tenant, b.source, b.wal_segment as i64, b.id],
            |r| r.get(0),
        )?;
        if superseded {
            // A flush retried after its block was compacted and deleted: another block
            // already holds this segment's data.
            return Ok(());
        }
    }
    let sql = format!(
        "INSERT INTO blocks ({BLOCK_COLUMNS}, state, state_changed_at_millis)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)
         ON CONFLICT (tenant, id) DO UPDATE SET
           min_time_nanos = excluded.min_time_nanos, max_time_nanos = excluded.max_time_nanos,
           num_series = excluded.num_series, num_profiles = excluded.num_profiles,
           num_samples = excluded.num_samples, size_bytes = excluded.size_bytes,
           services = excluded.services, profile_types = excluded.profile_types,
           source = excluded.source, wal_segment = excluded.wal_segment,
           compaction_level = excluded.compaction_level,
           created_at_millis = excluded.created_at_millis, lineage = excluded.lineage,
           tombstone_seq = excluded.tombstone_seq
         WHERE blocks.state = 'live' AND excluded.state = 'live'"
    );
    let changed = c.execute(
        &sql,
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
            lineage_to_json(&b.lineage),
            b.tombstone_seq,
            state.as_str(),
            now_millis(),
        ],
    )?;
    if changed == 0 {
        // A retired or compacted block registered again (a flush retried after its block was
        // compacted): its data is already served by the block that replaced it.
        return Ok(());
    }
    for (source, segment) in &b.lineage {
        c.execute(
            "INSERT OR REPLACE INTO block_lineage (tenant, block_id, source, newest_segment)
             VALUES (?1, ?2, ?3, ?4)",
            params![b.tenant, b.id, source, *segment as i64],
        )?;
    }
    Ok(())
}

/// Whether every one of `ids` is in `state` and claimed by `owner`.
fn all_held(
    c: &Connection,
    tenant: &str,
    ids: &[String],
    state: BlockState,
    owner: &str,
) -> Result<bool> {
    let mut stmt = c.prepare_cached(
        "SELECT count(*) FROM blocks b JOIN block_claims c ON c.tenant = b.tenant AND c.block_id = b.id
         WHERE b.tenant = ?1 AND b.id = ?2 AND b.state = ?3 AND c.owner = ?4",
    )?;
    for id in ids {
        let n: i64 = stmt.query_row(params![tenant, id, state.as_str(), owner], |r| r.get(0))?;
        if n != 1 {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The condition of a deletable block (`?1`: retired before, `?2`: now), on `blocks b`.
const DELETABLE: &str = "(b.state = 'retired' AND b.state_changed_at_millis <= ?1)
    OR b.state = 'deleting'
    OR (b.state = 'pending' AND NOT EXISTS (SELECT 1 FROM block_claims c
        WHERE c.tenant = b.tenant AND c.block_id = b.id AND c.expires_at_millis > ?2))";

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
            let tx = c.transaction()?;
            insert_block(&tx, &b, BlockState::Live)?;
            tx.commit()?;
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
            query_blocks(
                c,
                "tenant = ?1 AND state = 'live' AND max_time_nanos >= ?2 AND min_time_nanos <= ?3
                 ORDER BY min_time_nanos, id",
                params![tenant, min_time_nanos, max_time_nanos],
            )
        })
        .await
    }

    async fn flushed_tenants(&self, source: &str, wal_segment: u64) -> Result<FlushedTenants> {
        let source = source.to_owned();
        self.with(move |c| {
            let newer: bool = c.query_row(
                "SELECT EXISTS (SELECT 1 FROM block_lineage WHERE source = ?1 AND newest_segment > ?2)",
                params![source, wal_segment as i64],
                |r| r.get(0),
            )?;
            if newer {
                return Ok(FlushedTenants::All);
            }
            let mut stmt = c.prepare_cached(
                "SELECT DISTINCT tenant FROM block_lineage WHERE source = ?1 AND newest_segment = ?2
                 ORDER BY tenant",
            )?;
            let rows = stmt.query_map(params![source, wal_segment as i64], |r| r.get(0))?;
            Ok(FlushedTenants::Some(
                rows.collect::<rusqlite::Result<Vec<String>>>()?,
            ))
        })
        .await
    }

    async fn tenants(&self) -> Result<Vec<String>> {
        self.with(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT DISTINCT tenant FROM blocks WHERE state = 'live' ORDER BY tenant",
            )?;
            let rows = stmt.query_map([], |r| r.get(0))?;
            Ok(rows.collect::<rusqlite::Result<Vec<String>>>()?)
        })
        .await
    }

    async fn claim_blocks(
        &self,
        tenant: &str,
        ids: &[String],
        owner: &str,
        expires_at_millis: i64,
    ) -> Result<bool> {
        let (tenant, ids, owner) = (tenant.to_owned(), ids.to_vec(), owner.to_owned());
        self.with(move |c| {
            let tx = c.transaction()?;
            let now = now_millis();
            for id in &ids {
                let free: bool = tx.query_row(
                    "SELECT EXISTS (SELECT 1 FROM blocks WHERE tenant = ?1 AND id = ?2 AND state = 'live')
                        AND NOT EXISTS (SELECT 1 FROM block_claims WHERE tenant = ?1 AND block_id = ?2
                            AND owner <> ?3 AND expires_at_millis > ?4)",
                    params![tenant, id, owner, now],
                    |r| r.get(0),
                )?;
                if !free {
                    return Ok(false);
                }
                tx.execute(
                    "INSERT OR REPLACE INTO block_claims (tenant, block_id, owner, expires_at_millis)
                     VALUES (?1, ?2, ?3, ?4)",
                    params![tenant, id, owner, expires_at_millis],
                )?;
            }
            tx.commit()?;
            Ok(true)
        })
        .await
    }

    async fn add_pending_blocks(
        &self,
        blocks: &[BlockMeta],
        owner: &str,
        expires_at_millis: i64,
    ) -> Result<()> {
        let (blocks, owner) = (blocks.to_vec(), owner.to_owned());
        self.with(move |c| {
            let tx = c.transaction()?;
            for b in &blocks {
                insert_block(&tx, b, BlockState::Pending)?;
                tx.execute(
                    "INSERT OR REPLACE INTO block_claims (tenant, block_id, owner, expires_at_millis)
                     VALUES (?1, ?2, ?3, ?4)",
                    params![b.tenant, b.id, owner, expires_at_millis],
                )?;
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn replace_blocks(
        &self,
        tenant: &str,
        added: &[String],
        retired: &[String],
        owner: &str,
    ) -> Result<()> {
        let (tenant, added, retired, owner) = (
            tenant.to_owned(),
            added.to_vec(),
            retired.to_vec(),
            owner.to_owned(),
        );
        self.with(move |c| {
            let tx = c.transaction()?;
            if !all_held(&tx, &tenant, &added, BlockState::Pending, &owner)? {
                return Err(not_replaceable(&tenant, "pending under this claim", &added));
            }
            if !all_held(&tx, &tenant, &retired, BlockState::Live, &owner)? {
                return Err(not_replaceable(&tenant, "live under this claim", &retired));
            }
            let now = now_millis();
            for (ids, state) in [(&added, BlockState::Live), (&retired, BlockState::Retired)] {
                for id in ids {
                    tx.execute(
                        "UPDATE blocks SET state = ?3, state_changed_at_millis = ?4
                         WHERE tenant = ?1 AND id = ?2",
                        params![tenant, id, state.as_str(), now],
                    )?;
                    tx.execute(
                        "DELETE FROM block_claims WHERE tenant = ?1 AND block_id = ?2",
                        params![tenant, id],
                    )?;
                }
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn release_claims(&self, owner: &str) -> Result<()> {
        let owner = owner.to_owned();
        self.with(move |c| {
            // Claims on pending blocks stay: they keep the uploads from being deleted until
            // they expire.
            c.execute(
                "DELETE FROM block_claims WHERE owner = ?1 AND EXISTS (SELECT 1 FROM blocks b
                    WHERE b.tenant = block_claims.tenant AND b.id = block_claims.block_id
                    AND b.state = 'live')",
                params![owner],
            )?;
            Ok(())
        })
        .await
    }

    async fn deletable_blocks(&self, retired_before_millis: i64) -> Result<Vec<BlockMeta>> {
        self.with(move |c| {
            query_blocks(
                c,
                &format!("{DELETABLE} ORDER BY tenant, id"),
                params![retired_before_millis, now_millis()],
            )
        })
        .await
    }

    async fn mark_deleting(
        &self,
        tenant: &str,
        ids: &[String],
        retired_before_millis: i64,
    ) -> Result<Vec<String>> {
        let (tenant, ids) = (tenant.to_owned(), ids.to_vec());
        self.with(move |c| {
            let tx = c.transaction()?;
            let now = now_millis();
            let mut marked = Vec::new();
            for id in ids {
                let changed = tx.execute(
                    &format!(
                        "UPDATE blocks SET state = 'deleting', state_changed_at_millis = ?2
                         WHERE tenant = ?3 AND id = ?4 AND EXISTS (SELECT 1 FROM blocks b
                            WHERE b.tenant = ?3 AND b.id = ?4 AND ({DELETABLE}))"
                    ),
                    params![retired_before_millis, now, tenant, id],
                )?;
                if changed == 1 {
                    tx.execute(
                        "DELETE FROM block_claims WHERE tenant = ?1 AND block_id = ?2",
                        params![tenant, id],
                    )?;
                    marked.push(id);
                }
            }
            tx.commit()?;
            Ok(marked)
        })
        .await
    }

    async fn forget_blocks(&self, tenant: &str, ids: &[String]) -> Result<()> {
        let (tenant, ids) = (tenant.to_owned(), ids.to_vec());
        self.with(move |c| {
            let tx = c.transaction()?;
            for id in &ids {
                let forgotten = tx.execute(
                    "DELETE FROM blocks WHERE tenant = ?1 AND id = ?2 AND state = 'deleting'",
                    params![tenant, id],
                )?;
                if forgotten == 1 {
                    tx.execute(
                        "DELETE FROM block_lineage WHERE tenant = ?1 AND block_id = ?2",
                        params![tenant, id],
                    )?;
                }
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn add_tombstone(&self, tombstone: &Tombstone) -> Result<Tombstone> {
        let mut t = tombstone.clone();
        self.with(move |c| {
            c.execute(
                "INSERT INTO tombstones (tenant, start_nanos, end_nanos, selectors, fingerprints,
                    services, created_at_millis) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    t.tenant,
                    t.range.start,
                    t.range.end,
                    strings_to_json(&t.selectors),
                    fingerprints_to_json(&t.fingerprints),
                    strings_to_json(&t.services),
                    t.created_at_millis,
                ],
            )?;
            t.seq = c.last_insert_rowid();
            Ok(t)
        })
        .await
    }

    async fn tombstones(&self, tenant: &str) -> Result<Vec<Tombstone>> {
        let tenant = tenant.to_owned();
        self.with(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT seq, tenant, start_nanos, end_nanos, selectors, fingerprints, services,
                    created_at_millis FROM tombstones WHERE tenant = ?1 ORDER BY seq",
            )?;
            let rows = stmt.query_map(params![tenant], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, String>(5)?,
                    r.get::<_, String>(6)?,
                    r.get::<_, i64>(7)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (seq, tenant, start, end, selectors, fps, services, created) = row?;
                out.push(tombstone_from_columns(
                    seq, tenant, start, end, &selectors, &fps, &services, created,
                )?);
            }
            Ok(out)
        })
        .await
    }

    async fn expire_tombstones(&self, tenant: &str, before_nanos: i64) -> Result<()> {
        let tenant = tenant.to_owned();
        self.with(move |c| {
            c.execute(
                "DELETE FROM tombstones WHERE tenant = ?1 AND end_nanos < ?2",
                params![tenant, before_nanos],
            )?;
            Ok(())
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

    async fn create_token(&self, token: &TokenRecord) -> Result<()> {
        let t = token.clone();
        self.with(move |c| {
            let inserted = c.execute(
                &format!(
                    "INSERT INTO api_tokens ({TOKEN_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                     ON CONFLICT DO NOTHING"
                ),
                params![
                    t.id,
                    t.tenant,
                    t.scopes,
                    t.secret_hash,
                    t.description,
                    t.created_at_millis,
                    t.revoked_at_millis
                ],
            )?;
            if inserted == 0 {
                return Err(duplicate_token(&t));
            }
            Ok(())
        })
        .await
    }

    async fn tokens(&self, tenant: Option<&str>) -> Result<Vec<TokenRecord>> {
        let tenant = tenant.map(str::to_owned);
        self.with(move |c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE ?1 IS NULL OR tenant = ?1
                 ORDER BY created_at_millis, id"
            ))?;
            let rows = stmt.query_map(params![tenant], token_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn revoke_token(
        &self,
        id: &str,
        tenant: Option<&str>,
        at_millis: i64,
    ) -> Result<Option<TokenRecord>> {
        let (id, tenant) = (id.to_owned(), tenant.map(str::to_owned));
        self.with(move |c| {
            Ok(c.query_row(
                &format!(
                    "UPDATE api_tokens SET revoked_at_millis = coalesce(revoked_at_millis, ?3)
                     WHERE id = ?1 AND (?2 IS NULL OR tenant = ?2) RETURNING {TOKEN_COLUMNS}"
                ),
                params![id, tenant, at_millis],
                token_row,
            )
            .optional()?)
        })
        .await
    }

    async fn heartbeat(&self, member: &RingMember) -> Result<RingMember> {
        let m = member.clone();
        self.with(move |c| {
            let now = now_millis();
            let row = c.query_row(
                &format!(
                    "INSERT INTO ring_members ({MEMBER_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)
                     ON CONFLICT (ring, instance) DO UPDATE SET address = excluded.address,
                         tokens = excluded.tokens, state = excluded.state,
                         heartbeat_at_millis = excluded.heartbeat_at_millis
                     RETURNING {MEMBER_COLUMNS}"
                ),
                params![
                    m.ring,
                    m.instance,
                    m.address,
                    tokens_to_json(&m.tokens),
                    m.state.as_str(),
                    now
                ],
                member_row,
            )?;
            member_from_columns(row)
        })
        .await
    }

    async fn ring_members(&self, ring: &str) -> Result<Vec<RingMember>> {
        let ring = ring.to_owned();
        self.with(move |c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {MEMBER_COLUMNS} FROM ring_members WHERE ring = ?1 ORDER BY instance"
            ))?;
            let rows = stmt
                .query_map(params![ring], member_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            rows.into_iter().map(member_from_columns).collect()
        })
        .await
    }

    async fn forget_member(&self, ring: &str, instance: &str) -> Result<()> {
        let (ring, instance) = (ring.to_owned(), instance.to_owned());
        self.with(move |c| {
            c.execute(
                "DELETE FROM ring_members WHERE ring = ?1 AND instance = ?2",
                params![ring, instance],
            )?;
            Ok(())
        })
        .await
    }
}

fn token_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<TokenRecord> {
    Ok(TokenRecord {
        id: r.get(0)?,
        tenant: r.get(1)?,
        scopes: r.get(2)?,
        secret_hash: r.get(3)?,
        description: r.get(4)?,
        created_at_millis: r.get(5)?,
        revoked_at_millis: r.get(6)?,
    })
}

fn member_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<MemberRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
    ))
}
