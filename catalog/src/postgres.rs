use async_trait::async_trait;
use tokio_postgres::{Client, GenericClient, NoTls, Row};

use crate::migrations::{MIGRATIONS, latest_version};
use crate::sqlite::now_millis;
use profusion_model::block::BlockMeta;

use crate::{
    BlockState, Catalog, CatalogError, FlushedTenants, MEMBER_COLUMNS, MemberRow, Result,
    RingMember, Setting, TOKEN_COLUMNS, TokenRecord, duplicate_token, fingerprints_to_json,
    limit_reached, lineage_from_json, lineage_to_json, member_from_columns, not_replaceable,
    strings_from_json, strings_to_json, tokens_to_json, tombstone_from_columns,
};
use profusion_model::tombstone::Tombstone;

/// A catalog shared by several nodes, in PostgreSQL. Migrations run under an advisory lock so
/// that nodes starting together apply each version exactly once.
#[derive(Debug)]
pub struct PostgresCatalog {
    client: Client,
    /// A second connection for multi-statement transactions: statements of other callers
    /// pipelined on `client` would otherwise land inside them.
    transactions: tokio::sync::Mutex<Client>,
}

/// Arbitrary, fixed key of the advisory lock that serializes migrations.
const MIGRATION_LOCK: i64 = 0x7072_6f66_7573_696f;

const BLOCK_COLUMNS: &str = "tenant, id, min_time_nanos, max_time_nanos, num_series, num_profiles,
    num_samples, size_bytes, services, profile_types, source, wal_segment, compaction_level,
    created_at_millis, lineage, tombstone_seq";

impl PostgresCatalog {
    /// Connects to `url` (a libpq-style `postgres://` URL) and applies pending migrations.
    pub async fn connect(url: &str) -> Result<Self> {
        let catalog = Self {
            client: Self::connection(url).await?,
            transactions: tokio::sync::Mutex::new(Self::connection(url).await?),
        };
        catalog.migrate().await?;
        Ok(catalog)
    }

    async fn connection(url: &str) -> Result<Client> {
        let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::error!(error = %e, "postgres catalog connection ended");
            }
        });
        Ok(client)
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
                    for batch in m.postgres {
                        c.batch_execute(batch).await?;
                    }
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
        lineage: lineage_from_json(row.get(14))?,
        tombstone_seq: row.get(15),
    })
}

/// Inserts (or, for a live block, replaces) a block row in `state`, and its lineage.
async fn insert_block(c: &impl GenericClient, b: &BlockMeta, state: BlockState) -> Result<()> {
    if b.compaction_level == 0 {
        let superseded: bool = c
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM block_lineage WHERE tenant = $1 AND source = $2
                    AND newest_segment >= $3 AND block_id <> $4)
                AND NOT EXISTS (SELECT 1 FROM blocks WHERE tenant = $1 AND id = $4)",
                &[&b.tenant, &b.source, &(b.wal_segment as i64), &b.id],
            )
            .await?
            .get(0);
        if superseded {
            // A flush retried after its block was compacted and deleted: another block
            // already holds this segment's data.
            return Ok(());
        }
    }
    let sql = format!(
        "INSERT INTO blocks ({BLOCK_COLUMNS}, state, state_changed_at_millis)
         VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18)
         ON CONFLICT (tenant, id) DO UPDATE SET
           min_time_nanos = EXCLUDED.min_time_nanos, max_time_nanos = EXCLUDED.max_time_nanos,
           num_series = EXCLUDED.num_series, num_profiles = EXCLUDED.num_profiles,
           num_samples = EXCLUDED.num_samples, size_bytes = EXCLUDED.size_bytes,
           services = EXCLUDED.services, profile_types = EXCLUDED.profile_types,
           source = EXCLUDED.source, wal_segment = EXCLUDED.wal_segment,
           compaction_level = EXCLUDED.compaction_level,
           created_at_millis = EXCLUDED.created_at_millis, lineage = EXCLUDED.lineage,
           tombstone_seq = EXCLUDED.tombstone_seq
         WHERE blocks.state = 'live' AND EXCLUDED.state = 'live'"
    );
    let changed = c
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
                &lineage_to_json(&b.lineage),
                &b.tombstone_seq,
                &state.as_str(),
                &now_millis(),
            ],
        )
        .await?;
    if changed == 0 {
        // A retired or compacted block registered again: its data is already served by the
        // block that replaced it.
        return Ok(());
    }
    for (source, segment) in &b.lineage {
        c.execute(
            "INSERT INTO block_lineage (tenant, block_id, source, newest_segment) VALUES ($1, $2, $3, $4)
             ON CONFLICT (tenant, block_id, source) DO UPDATE SET newest_segment = EXCLUDED.newest_segment",
            &[&b.tenant, &b.id, source, &(*segment as i64)],
        )
        .await?;
    }
    Ok(())
}

/// Whether every one of `ids` is in `state` and claimed by `owner`.
async fn all_held(
    c: &impl GenericClient,
    tenant: &str,
    ids: &[String],
    state: BlockState,
    owner: &str,
) -> Result<bool> {
    let held: i64 = c
        .query_one(
            "SELECT count(*) FROM blocks b JOIN block_claims c ON c.tenant = b.tenant AND c.block_id = b.id
             WHERE b.tenant = $1 AND b.id = ANY($2) AND b.state = $3 AND c.owner = $4",
            &[&tenant, &ids, &state.as_str(), &owner],
        )
        .await?
        .get(0);
    Ok(held as usize == ids.len())
}

/// The condition of a deletable block (`$1`: retired before, `$2`: now), on `blocks b`.
const DELETABLE: &str = "((b.state = 'retired' AND b.state_changed_at_millis <= $1)
    OR b.state = 'deleting'
    OR (b.state = 'pending' AND NOT EXISTS (SELECT 1 FROM block_claims c
        WHERE c.tenant = b.tenant AND c.block_id = b.id AND c.expires_at_millis > $2)))";

impl PostgresCatalog {
    /// Runs `f` in a transaction on the transaction connection, committing on success.
    async fn transaction<T>(
        &self,
        f: impl AsyncFnOnce(&tokio_postgres::Transaction<'_>) -> Result<T>,
    ) -> Result<T> {
        let mut client = self.transactions.lock().await;
        let tx = client.transaction().await?;
        let out = f(&tx).await?;
        tx.commit().await?;
        Ok(out)
    }
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
        self.transaction(async |tx| insert_block(tx, b, BlockState::Live).await)
            .await
    }

    async fn blocks(
        &self,
        tenant: &str,
        min_time_nanos: i64,
        max_time_nanos: i64,
    ) -> Result<Vec<BlockMeta>> {
        let sql = format!(
            "SELECT {BLOCK_COLUMNS} FROM blocks
             WHERE tenant = $1 AND state = 'live' AND max_time_nanos >= $2 AND min_time_nanos <= $3
             ORDER BY min_time_nanos, id"
        );
        self.client
            .query(&sql, &[&tenant, &min_time_nanos, &max_time_nanos])
            .await?
            .iter()
            .map(block_from_row)
            .collect()
    }

    async fn flushed_tenants(&self, source: &str, wal_segment: u64) -> Result<FlushedTenants> {
        let segment = wal_segment as i64;
        let newer: bool = self
            .client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM block_lineage WHERE source = $1 AND newest_segment > $2)",
                &[&source, &segment],
            )
            .await?
            .get(0);
        if newer {
            return Ok(FlushedTenants::All);
        }
        Ok(FlushedTenants::Some(
            self.client
                .query(
                    "SELECT DISTINCT tenant FROM block_lineage WHERE source = $1 AND newest_segment = $2
                     ORDER BY tenant",
                    &[&source, &segment],
                )
                .await?
                .iter()
                .map(|r| r.get(0))
                .collect(),
        ))
    }

    async fn tenants(&self) -> Result<Vec<String>> {
        Ok(self
            .client
            .query(
                "SELECT DISTINCT tenant FROM blocks WHERE state = 'live' ORDER BY tenant",
                &[],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect())
    }

    async fn claim_blocks(
        &self,
        tenant: &str,
        ids: &[String],
        owner: &str,
        expires_at_millis: i64,
    ) -> Result<bool> {
        self.transaction(async |tx| {
            // Row locks on the blocks serialize claimers of the same blocks.
            let live = tx
                .query(
                    "SELECT id FROM blocks WHERE tenant = $1 AND id = ANY($2) AND state = 'live'
                     FOR UPDATE",
                    &[&tenant, &ids],
                )
                .await?
                .len();
            let taken: i64 = tx
                .query_one(
                    "SELECT count(*) FROM block_claims WHERE tenant = $1 AND block_id = ANY($2)
                        AND owner <> $3 AND expires_at_millis > $4",
                    &[&tenant, &ids, &owner, &now_millis()],
                )
                .await?
                .get(0);
            if live != ids.len() || taken > 0 {
                return Ok(false);
            }
            tx.execute(
                "INSERT INTO block_claims (tenant, block_id, owner, expires_at_millis)
                 SELECT $1, id, $3, $4 FROM unnest($2::text[]) AS id
                 ON CONFLICT (tenant, block_id) DO UPDATE SET owner = EXCLUDED.owner,
                    expires_at_millis = EXCLUDED.expires_at_millis",
                &[&tenant, &ids, &owner, &expires_at_millis],
            )
            .await?;
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
        self.transaction(async |tx| {
            for b in blocks {
                insert_block(tx, b, BlockState::Pending).await?;
                tx.execute(
                    "INSERT INTO block_claims (tenant, block_id, owner, expires_at_millis)
                     VALUES ($1, $2, $3, $4)
                     ON CONFLICT (tenant, block_id) DO UPDATE SET owner = EXCLUDED.owner,
                        expires_at_millis = EXCLUDED.expires_at_millis",
                    &[&b.tenant, &b.id, &owner, &expires_at_millis],
                )
                .await?;
            }
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
        self.transaction(async |tx| {
            // Lock the rows first, so a concurrent mark or claim waits for this swap.
            tx.execute(
                "SELECT 1 FROM blocks WHERE tenant = $1 AND (id = ANY($2) OR id = ANY($3)) FOR UPDATE",
                &[&tenant, &added, &retired],
            )
            .await?;
            if !all_held(tx, tenant, added, BlockState::Pending, owner).await? {
                return Err(not_replaceable(tenant, "pending under this claim", added));
            }
            if !all_held(tx, tenant, retired, BlockState::Live, owner).await? {
                return Err(not_replaceable(tenant, "live under this claim", retired));
            }
            let now = now_millis();
            for (ids, state) in [(added, BlockState::Live), (retired, BlockState::Retired)] {
                tx.execute(
                    "UPDATE blocks SET state = $3, state_changed_at_millis = $4
                     WHERE tenant = $1 AND id = ANY($2)",
                    &[&tenant, &ids, &state.as_str(), &now],
                )
                .await?;
                tx.execute(
                    "DELETE FROM block_claims WHERE tenant = $1 AND block_id = ANY($2)",
                    &[&tenant, &ids],
                )
                .await?;
            }
            Ok(())
        })
        .await
    }

    async fn release_claims(&self, owner: &str) -> Result<()> {
        // Claims on pending blocks stay: they keep the uploads from being deleted until they
        // expire.
        self.client
            .execute(
                "DELETE FROM block_claims c WHERE owner = $1 AND EXISTS (SELECT 1 FROM blocks b
                    WHERE b.tenant = c.tenant AND b.id = c.block_id AND b.state = 'live')",
                &[&owner],
            )
            .await?;
        Ok(())
    }

    async fn deletable_blocks(&self, retired_before_millis: i64) -> Result<Vec<BlockMeta>> {
        let sql =
            format!("SELECT {BLOCK_COLUMNS} FROM blocks b WHERE {DELETABLE} ORDER BY tenant, id");
        self.client
            .query(&sql, &[&retired_before_millis, &now_millis()])
            .await?
            .iter()
            .map(block_from_row)
            .collect()
    }

    async fn mark_deleting(
        &self,
        tenant: &str,
        ids: &[String],
        retired_before_millis: i64,
    ) -> Result<Vec<String>> {
        self.transaction(async |tx| {
            let marked: Vec<String> = tx
                .query(
                    &format!(
                        "UPDATE blocks b SET state = 'deleting', state_changed_at_millis = $2
                         WHERE b.tenant = $3 AND b.id = ANY($4) AND {DELETABLE}
                         RETURNING b.id"
                    ),
                    &[&retired_before_millis, &now_millis(), &tenant, &ids],
                )
                .await?
                .iter()
                .map(|r| r.get(0))
                .collect();
            tx.execute(
                "DELETE FROM block_claims WHERE tenant = $1 AND block_id = ANY($2)",
                &[&tenant, &marked],
            )
            .await?;
            Ok(marked)
        })
        .await
    }

    async fn forget_blocks(&self, tenant: &str, ids: &[String]) -> Result<()> {
        self.transaction(async |tx| {
            let forgotten: Vec<String> = tx
                .query(
                    "DELETE FROM blocks WHERE tenant = $1 AND id = ANY($2) AND state = 'deleting'
                     RETURNING id",
                    &[&tenant, &ids],
                )
                .await?
                .iter()
                .map(|r| r.get(0))
                .collect();
            tx.execute(
                "DELETE FROM block_lineage WHERE tenant = $1 AND block_id = ANY($2)",
                &[&tenant, &forgotten],
            )
            .await?;
            Ok(())
        })
        .await
    }

    async fn add_tombstone(&self, tombstone: &Tombstone) -> Result<Tombstone> {
        self.transaction(async |tx| {
            // One writer at a time, so sequence numbers become visible in order: a reader that
            // sees tombstone n has seen every one below it.
            tx.batch_execute("LOCK TABLE tombstones IN EXCLUSIVE MODE")
                .await?;
            let seq: i64 = tx
                .query_one(
                    "INSERT INTO tombstones (tenant, start_nanos, end_nanos, selectors,
                        fingerprints, services, created_at_millis)
                     VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING seq",
                    &[
                        &tombstone.tenant,
                        &tombstone.range.start,
                        &tombstone.range.end,
                        &strings_to_json(&tombstone.selectors),
                        &fingerprints_to_json(&tombstone.fingerprints),
                        &strings_to_json(&tombstone.services),
                        &tombstone.created_at_millis,
                    ],
                )
                .await?
                .get(0);
            Ok(Tombstone {
                seq,
                ..tombstone.clone()
            })
        })
        .await
    }

    async fn tombstones(&self, tenant: &str) -> Result<Vec<Tombstone>> {
        self.client
            .query(
                "SELECT seq, tenant, start_nanos, end_nanos, selectors, fingerprints, services,
                    created_at_millis FROM tombstones WHERE tenant = $1 ORDER BY seq",
                &[&tenant],
            )
            .await?
            .iter()
            .map(|r| {
                tombstone_from_columns(
                    r.get(0),
                    r.get(1),
                    r.get(2),
                    r.get(3),
                    r.get(4),
                    r.get(5),
                    r.get(6),
                    r.get(7),
                )
            })
            .collect()
    }

    async fn expire_tombstones(&self, tenant: &str, before_nanos: i64) -> Result<()> {
        self.client
            .execute(
                "DELETE FROM tombstones WHERE tenant = $1 AND end_nanos < $2",
                &[&tenant, &before_nanos],
            )
            .await?;
        Ok(())
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

    async fn create_token(&self, token: &TokenRecord) -> Result<()> {
        let t = token;
        let inserted = self
            .client
            .execute(
                &format!(
                    "INSERT INTO api_tokens ({TOKEN_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)
                     ON CONFLICT DO NOTHING"
                ),
                &[
                    &t.id,
                    &t.tenant,
                    &t.scopes,
                    &t.secret_hash,
                    &t.description,
                    &t.created_at_millis,
                    &t.revoked_at_millis,
                ],
            )
            .await?;
        if inserted == 0 {
            return Err(duplicate_token(t));
        }
        Ok(())
    }

    async fn tokens(&self, tenant: Option<&str>) -> Result<Vec<TokenRecord>> {
        Ok(self
            .client
            .query(
                &format!(
                    "SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE $1::text IS NULL OR tenant = $1
                     ORDER BY created_at_millis, id"
                ),
                &[&tenant],
            )
            .await?
            .iter()
            .map(token_from_row)
            .collect())
    }

    async fn revoke_token(
        &self,
        id: &str,
        tenant: Option<&str>,
        at_millis: i64,
    ) -> Result<Option<TokenRecord>> {
        Ok(self
            .client
            .query_opt(
                &format!(
                    "UPDATE api_tokens SET revoked_at_millis = coalesce(revoked_at_millis, $3)
                     WHERE id = $1 AND ($2::text IS NULL OR tenant = $2) RETURNING {TOKEN_COLUMNS}"
                ),
                &[&id, &tenant, &at_millis],
            )
            .await?
            .as_ref()
            .map(token_from_row))
    }

    async fn heartbeat(&self, member: &RingMember) -> Result<RingMember> {
        let row = self
            .client
            .query_one(
                &format!(
                    "INSERT INTO ring_members ({MEMBER_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $6)
                     ON CONFLICT (ring, instance) DO UPDATE SET address = excluded.address,
                         tokens = excluded.tokens, state = excluded.state,
                         heartbeat_at_millis = excluded.heartbeat_at_millis
                     RETURNING {MEMBER_COLUMNS}"
                ),
                &[
                    &member.ring,
                    &member.instance,
                    &member.address,
                    &tokens_to_json(&member.tokens),
                    &member.state.as_str(),
                    &now_millis(),
                ],
            )
            .await?;
        member_from_columns(member_row(&row))
    }

    async fn ring_members(&self, ring: &str) -> Result<Vec<RingMember>> {
        self.client
            .query(
                &format!(
                    "SELECT {MEMBER_COLUMNS} FROM ring_members WHERE ring = $1 ORDER BY instance"
                ),
                &[&ring],
            )
            .await?
            .iter()
            .map(|r| member_from_columns(member_row(r)))
            .collect()
    }

    async fn forget_member(&self, ring: &str, instance: &str) -> Result<()> {
        self.client
            .execute(
                "DELETE FROM ring_members WHERE ring = $1 AND instance = $2",
                &[&ring, &instance],
            )
            .await?;
        Ok(())
    }
}

fn token_from_row(r: &Row) -> TokenRecord {
    TokenRecord {
        id: r.get(0),
        tenant: r.get(1),
        scopes: r.get(2),
        secret_hash: r.get(3),
        description: r.get(4),
        created_at_millis: r.get(5),
        revoked_at_millis: r.get(6),
    }
}

fn member_row(r: &Row) -> MemberRow {
    (
        r.get(0),
        r.get(1),
        r.get(2),
        r.get(3),
        r.get(4),
        r.get(5),
        r.get(6),
    )
}
