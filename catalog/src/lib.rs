//! The catalog: which tenants exist, which blocks each tenant has and what is in them (time
//! range, services, profile types, counts), per-tenant settings, and the rings of a cluster's
//! processes (who runs which role, at which address, alive when). Planning reads it instead of
//! listing the object store; processes find each other through it, so a cluster needs no
//! other coordination service.
//!
//! One [`Catalog`] trait with two implementations: [`SqliteCatalog`] (the embedded default,
//! a file under `./data`) and [`PostgresCatalog`] (shared by the nodes of a cluster). Both apply
//! the same versioned migrations from [`migrations`].
//!
//! A block's life: an ingester registers it live. The compactor claims live blocks, adds its
//! outputs as pending (invisible) before uploading them, then in one transaction makes them
//! live and retires their sources; retention retires expired blocks the same way. Retired
//! blocks stay readable by queries planned before the swap until the deletion delay has passed;
//! then they are marked deleting, their files removed, and their rows forgotten. Pending blocks
//! whose claim ran out (a compactor that died) are deleted the same way.
//!
//! Owns: catalog schema and queries. Must not touch block contents or the object store.

mod error;
pub mod migrations;
mod postgres;
mod sqlite;

use async_trait::async_trait;
use profusion_model::block::BlockMeta;
use profusion_model::time::TimeRange;
use profusion_model::tombstone::Tombstone;
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

/// An access token as the catalog keeps it: never the secret, only its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// The public part of the token, shown in lists and logs and used to revoke it.
    pub id: String,
    pub tenant: String,
    /// Comma-separated scopes (`read`, `write`, `admin`).
    pub scopes: String,
    /// The hash of the whole token, hex-encoded, as the server compares it.
    pub secret_hash: String,
    pub description: String,
    pub created_at_millis: i64,
    /// When it was revoked; `None` while it is valid.
    pub revoked_at_millis: Option<i64>,
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

    /// Which tenants' data of WAL segment `wal_segment` of `source` the catalog already holds
    /// in some block (live, or compacted into one), so recovery replays only the others.
    async fn flushed_tenants(&self, source: &str, wal_segment: u64) -> Result<FlushedTenants>;

    /// Every tenant with at least one live block, sorted.
    async fn tenants(&self) -> Result<Vec<String>>;

    /// Claims blocks of `tenant` for `owner` until `expires_at_millis`: all of them or none.
    /// Refused (`false`) when one is not live or another owner holds an unexpired claim on it.
    /// Claiming again extends the owner's own claims.
    async fn claim_blocks(
        &self,
        tenant: &str,
        ids: &[String],
        owner: &str,
        expires_at_millis: i64,
    ) -> Result<bool>;

    /// Records blocks about to be uploaded, pending (listed by no reader) and claimed by
    /// `owner` until `expires_at_millis`, so that if the owner dies their files are found and
    /// deleted.
    async fn add_pending_blocks(
        &self,
        blocks: &[BlockMeta],
        owner: &str,
        expires_at_millis: i64,
    ) -> Result<()>;

    /// In one transaction: makes the pending blocks `added` live and retires `retired`,
    /// releasing `owner`'s claims on both. Refused with [`CatalogError::Conflict`], changing
    /// nothing, unless every added block is still pending and every retired block is live,
    /// both claimed by `owner`.
    async fn replace_blocks(
        &self,
        tenant: &str,
        added: &[String],
        retired: &[String],
        owner: &str,
    ) -> Result<()>;

    /// Drops every claim `owner` holds (a compactor shutting down).
    async fn release_claims(&self, owner: &str) -> Result<()>;

    /// Blocks whose files may be deleted: retired at or before `retired_before_millis`, pending
    /// with no unexpired claim, or already being deleted.
    async fn deletable_blocks(&self, retired_before_millis: i64) -> Result<Vec<BlockMeta>>;

    /// Marks those of `ids` that are still deletable (see [`Self::deletable_blocks`]) as being
    /// deleted, which no claim or replacement can undo; returns the ids marked.
    async fn mark_deleting(
        &self,
        tenant: &str,
        ids: &[String],
        retired_before_millis: i64,
    ) -> Result<Vec<String>>;

    /// Forgets blocks being deleted, once their files are gone.
    async fn forget_blocks(&self, tenant: &str, ids: &[String]) -> Result<()>;

    /// Records a deletion and returns it with its sequence number, greater than that of every
    /// tombstone visible before it.
    async fn add_tombstone(&self, tombstone: &Tombstone) -> Result<Tombstone>;

    /// `tenant`'s tombstones, oldest first.
    async fn tombstones(&self, tenant: &str) -> Result<Vec<Tombstone>>;

    /// Drops `tenant`'s tombstones whose range ends before `before_nanos`: retention has
    /// removed everything they could hide.
    async fn expire_tombstones(&self, tenant: &str, before_nanos: i64) -> Result<()>;

    /// Records a new token. Refused with [`CatalogError::Conflict`] when its id or hash exists.
    async fn create_token(&self, token: &TokenRecord) -> Result<()>;

    /// Tokens, revoked ones included, of `tenant` (or of every tenant), oldest first.
    async fn tokens(&self, tenant: Option<&str>) -> Result<Vec<TokenRecord>>;

    /// Revokes token `id` at `at_millis` if it belongs to `tenant` (any tenant when `None`);
    /// returns the token as it now stands, or `None` when there is no such token. Revoking a
    /// revoked token keeps its first revocation time.
    async fn revoke_token(
        &self,
        id: &str,
        tenant: Option<&str>,
        at_millis: i64,
    ) -> Result<Option<TokenRecord>>;

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

    /// Records that `member` is alive: adds it to its ring, or updates its address, tokens and
    /// state and sets its heartbeat to now, keeping when it first registered.
    async fn heartbeat(&self, member: &RingMember) -> Result<RingMember>;

    /// The members of `ring` by instance id, healthy or not (see [`RingMember::is_healthy`]).
    async fn ring_members(&self, ring: &str) -> Result<Vec<RingMember>>;

    /// Removes a member from its ring (a clean shutdown, or an operator forgetting a dead
    /// one); removing an absent one is not an error.
    async fn forget_member(&self, ring: &str, instance: &str) -> Result<()>;
}

/// One process in one ring (a role's set of instances), as Pyroscope's ring describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RingMember {
    /// The ring: the role's name (`ingester`, `store-gateway`, `querier`, ...).
    pub ring: String,
    /// Stable instance id (`--ingester.id` for ingesters).
    pub instance: String,
    /// `host:port` the other processes reach it at.
    pub address: String,
    /// Its ring tokens, sorted: it owns the hashes from each token's predecessor to the token.
    pub tokens: Vec<u32>,
    pub state: MemberState,
    /// Unix milliseconds of its first heartbeat.
    pub registered_at_millis: i64,
    /// Unix milliseconds of its last heartbeat.
    pub heartbeat_at_millis: i64,
}

impl RingMember {
    /// Whether its last heartbeat is within `timeout_millis` of `now_millis`: a member whose
    /// heartbeat stopped is left out of the ring's routing.
    pub fn is_healthy(&self, now_millis: i64, timeout_millis: i64) -> bool {
        now_millis - self.heartbeat_at_millis <= timeout_millis
    }
}

/// A member's state, with Pyroscope's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemberState {
    /// Starting: not yet serving (an ingester replaying its WAL).
    #[serde(rename = "JOINING")]
    Joining,
    /// Serving its role.
    #[serde(rename = "ACTIVE")]
    Active,
    /// Shutting down: takes no new work.
    #[serde(rename = "LEAVING")]
    Leaving,
}

impl MemberState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Joining => "JOINING",
            Self::Active => "ACTIVE",
            Self::Leaving => "LEAVING",
        }
    }

    fn parse(text: &str) -> Result<Self> {
        match text {
            "JOINING" => Ok(Self::Joining),
            "ACTIVE" => Ok(Self::Active),
            "LEAVING" => Ok(Self::Leaving),
            other => Err(CatalogError::Corrupt(format!(
                "ring member state {other:?} is not JOINING, ACTIVE or LEAVING"
            ))),
        }
    }
}

fn tokens_to_json(tokens: &[u32]) -> String {
    serde_json::to_string(tokens).expect("numbers serialize")
}

/// A ring member's row as read: ring, instance, address, tokens (JSON), state, registered at,
/// heartbeat at ([`MEMBER_COLUMNS`]).
type MemberRow = (String, String, String, String, String, i64, i64);

/// A ring member from its row.
fn member_from_columns(
    (ring, instance, address, tokens, state, registered_at_millis, heartbeat_at_millis): MemberRow,
) -> Result<RingMember> {
    Ok(RingMember {
        tokens: serde_json::from_str(&tokens).map_err(|e| {
            CatalogError::Corrupt(format!("tokens of ring member {instance:?}: {e}"))
        })?,
        state: MemberState::parse(&state)?,
        ring,
        instance,
        address,
        registered_at_millis,
        heartbeat_at_millis,
    })
}

/// The columns of a ring member row, in [`member_from_columns`]'s order.
const MEMBER_COLUMNS: &str =
    "ring, instance, address, tokens, state, registered_at_millis, heartbeat_at_millis";

/// What recovery may skip of one WAL segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlushedTenants {
    /// A newer segment of the same source is in the catalog: flushes go oldest segment first
    /// and finish every tenant of one before the next, so this one was flushed whole.
    All,
    /// These tenants' blocks of the segment are in the catalog, sorted.
    Some(Vec<String>),
}

impl FlushedTenants {
    /// Whether `tenant`'s data of the segment is in the catalog.
    pub fn contains(&self, tenant: &str) -> bool {
        match self {
            Self::All => true,
            Self::Some(tenants) => tenants.iter().any(|t| t == tenant),
        }
    }
}

/// A block's place in its life (see the crate doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockState {
    Pending,
    Live,
    Retired,
    Deleting,
}

impl BlockState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Live => "live",
            Self::Retired => "retired",
            Self::Deleting => "deleting",
        }
    }
}

/// The error of a new setting past a tenant's limit.
/// The columns of a token, in the order both backends read them.
const TOKEN_COLUMNS: &str =
    "id, tenant, scopes, secret_hash, description, created_at_millis, revoked_at_millis";

fn duplicate_token(token: &TokenRecord) -> CatalogError {
    CatalogError::Conflict(format!("a token with id {:?} or its hash exists", token.id))
}

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

fn fingerprints_to_json(fps: &[u64]) -> String {
    serde_json::to_string(fps).unwrap_or_else(|_| "[]".to_owned())
}

/// A tombstone from its stored columns.
#[allow(clippy::too_many_arguments)]
fn tombstone_from_columns(
    seq: i64,
    tenant: String,
    start_nanos: i64,
    end_nanos: i64,
    selectors: &str,
    fingerprints: &str,
    services: &str,
    created_at_millis: i64,
) -> Result<Tombstone> {
    Ok(Tombstone {
        tenant,
        seq,
        range: TimeRange {
            start: start_nanos,
            end: end_nanos,
        },
        selectors: strings_from_json(selectors)?,
        fingerprints: serde_json::from_str(fingerprints)
            .map_err(|e| CatalogError::Corrupt(format!("tombstone {seq} fingerprints: {e}")))?,
        services: strings_from_json(services)?,
        created_at_millis,
    })
}

fn lineage_to_json(lineage: &std::collections::BTreeMap<String, u64>) -> String {
    serde_json::to_string(lineage).unwrap_or_else(|_| "{}".to_owned())
}

fn lineage_from_json(text: &str) -> Result<std::collections::BTreeMap<String, u64>> {
    serde_json::from_str(text).map_err(|e| CatalogError::Corrupt(format!("block lineage: {e}")))
}

/// The refusal of a replacement whose blocks are not in the state it needs.
fn not_replaceable(tenant: &str, what: &str, ids: &[String]) -> CatalogError {
    CatalogError::Conflict(format!(
        "tenant {tenant:?}: blocks {ids:?} are not {what}; another compactor or retention took them"
    ))
}
