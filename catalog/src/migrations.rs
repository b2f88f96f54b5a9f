//! Versioned schema migrations. Each version is applied once, in order, inside a transaction,
//! and recorded in `schema_migrations`; a binary refuses a catalog newer than it knows.

/// One schema step, with the statements for each backend.
#[derive(Debug)]
pub struct Migration {
    pub version: i64,
    pub description: &'static str,
    pub sqlite: &'static str,
    pub postgres: &'static str,
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

/// All migrations, oldest first.
pub const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    description: "blocks and tenant settings",
    sqlite: V1_COMMON,
    postgres: V1_COMMON,
}];

/// The newest version this binary knows.
pub fn latest_version() -> i64 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}
