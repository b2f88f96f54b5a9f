//! Versioned schema migrations. Each version is applied once, in order, inside a transaction,
//! and recorded in `schema_migrations`; a binary refuses a catalog newer than it knows.

/// One schema step, with the statements for each backend.
#[derive(Debug)]
pub struct Migration {
    pub version: i64,
    pub description: &'static str,
    /// Statement batches, run in order in one transaction.
    pub sqlite: &'static [&'static str],
    pub postgres: &'static [&'static str],
}

const V1_COMMON: &str = "
CREATE TABLE blocks (
    tenant TEXT NOT NULL,
    id TEXT NOT NULL,
    min_time_nanos BIGINT NOT NULL,
    max_time_nanos BIGINT NOT NULL,
    num_series BIGINT NOT NULL,
    num_profiles BIGINT NOT NULL,
    num_samples BIGINT NOT NULL,
    size_bytes BIGINT NOT NULL,
    services TEXT NOT NULL,
    profile_types TEXT NOT NULL,
    source TEXT NOT NULL,
    wal_segment BIGINT NOT NULL,
    compaction_level INTEGER NOT NULL,
    created_at_millis BIGINT NOT NULL,
    PRIMARY KEY (tenant, id)
);
CREATE INDEX blocks_by_time ON blocks (tenant, max_time_nanos, min_time_nanos);
CREATE INDEX blocks_by_source ON blocks (source, wal_segment);
CREATE TABLE tenant_settings (
    tenant TEXT NOT NULL,
    name TEXT NOT NULL,
    value TEXT NOT NULL,
    modified_at_millis BIGINT NOT NULL,
    PRIMARY KEY (tenant, name)
);
";

/// Block lifecycle (pending, live, retired, deleting), the compactor's claims, and each
/// block's WAL lineage; existing blocks are live ingester blocks of their own segment.
const V2_COMMON: &str = "
ALTER TABLE blocks ADD COLUMN state TEXT NOT NULL DEFAULT 'live';
ALTER TABLE blocks ADD COLUMN state_changed_at_millis BIGINT NOT NULL DEFAULT 0;
ALTER TABLE blocks ADD COLUMN lineage TEXT NOT NULL DEFAULT '{}';
CREATE INDEX blocks_by_state ON blocks (state, state_changed_at_millis);
CREATE TABLE block_claims (
    tenant TEXT NOT NULL,
    block_id TEXT NOT NULL,
    owner TEXT NOT NULL,
    expires_at_millis BIGINT NOT NULL,
    PRIMARY KEY (tenant, block_id)
);
CREATE TABLE block_lineage (
    tenant TEXT NOT NULL,
    block_id TEXT NOT NULL,
    source TEXT NOT NULL,
    newest_segment BIGINT NOT NULL,
    PRIMARY KEY (tenant, block_id, source)
);
CREATE INDEX block_lineage_by_source ON block_lineage (source, newest_segment);
INSERT INTO block_lineage (tenant, block_id, source, newest_segment)
    SELECT tenant, id, source, wal_segment FROM blocks WHERE compaction_level = 0;
";

const V2_SQLITE: &str =
    "UPDATE blocks SET lineage = json_object(source, wal_segment) WHERE compaction_level = 0;";
const V2_POSTGRES: &str = "UPDATE blocks SET lineage = json_build_object(source, wal_segment)::text WHERE compaction_level = 0;";

/// Deletions: tombstones in the order they became visible, and the newest each block applied.
const V3_COMMON: &str = "
ALTER TABLE blocks ADD COLUMN tombstone_seq BIGINT NOT NULL DEFAULT 0;
";
const V3_SQLITE: &str = "
CREATE TABLE tombstones (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant TEXT NOT NULL,
    start_nanos BIGINT NOT NULL,
    end_nanos BIGINT NOT NULL,
    selectors TEXT NOT NULL,
    fingerprints TEXT NOT NULL,
    services TEXT NOT NULL,
    created_at_millis BIGINT NOT NULL
);
CREATE INDEX tombstones_by_tenant ON tombstones (tenant, seq);
";
const V3_POSTGRES: &str = "
CREATE TABLE tombstones (
    seq BIGSERIAL PRIMARY KEY,
    tenant TEXT NOT NULL,
    start_nanos BIGINT NOT NULL,
    end_nanos BIGINT NOT NULL,
    selectors TEXT NOT NULL,
    fingerprints TEXT NOT NULL,
    services TEXT NOT NULL,
    created_at_millis BIGINT NOT NULL
);
CREATE INDEX tombstones_by_tenant ON tombstones (tenant, seq);
";

/// Ring membership: the processes of a cluster, each in the rings of its roles, with the
/// address others reach it at, its tokens and its last heartbeat.
const V4_COMMON: &str = "
CREATE TABLE ring_members (
    ring TEXT NOT NULL,
    instance TEXT NOT NULL,
    address TEXT NOT NULL,
    tokens TEXT NOT NULL,
    state TEXT NOT NULL,
    registered_at_millis BIGINT NOT NULL,
    heartbeat_at_millis BIGINT NOT NULL,
    PRIMARY KEY (ring, instance)
);
";

/// Access tokens (`--auth.enabled`): only a hash of each secret, its tenant and scopes; a
/// revoked token stays, so a request presenting it is told it was revoked.
const V5_COMMON: &str = "
CREATE TABLE api_tokens (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    scopes TEXT NOT NULL,
    secret_hash TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL,
    created_at_millis BIGINT NOT NULL,
    revoked_at_millis BIGINT
);
CREATE INDEX api_tokens_by_tenant ON api_tokens (tenant, created_at_millis);
";

/// All migrations, oldest first.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "blocks and tenant settings",
        sqlite: &[V1_COMMON],
        postgres: &[V1_COMMON],
    },
    Migration {
        version: 2,
        description: "block lifecycle, compaction claims and WAL lineage",
        sqlite: &[V2_COMMON, V2_SQLITE],
        postgres: &[V2_COMMON, V2_POSTGRES],
    },
    Migration {
        version: 3,
        description: "tombstones of deleted series",
        sqlite: &[V3_COMMON, V3_SQLITE],
        postgres: &[V3_COMMON, V3_POSTGRES],
    },
    Migration {
        version: 4,
        description: "ring membership",
        sqlite: &[V4_COMMON],
        postgres: &[V4_COMMON],
    },
    Migration {
        version: 5,
        description: "access tokens",
        sqlite: &[V5_COMMON],
        postgres: &[V5_COMMON],
    },
];

/// The newest version this binary knows.
pub fn latest_version() -> i64 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}
