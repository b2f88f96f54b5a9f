//! The compactor: block ranges, how often it runs, retention, and when retired files go.

use std::collections::BTreeMap;
use std::time::Duration;

use clap::Args;
use profusion_compactor::CompactionStep;

use super::parse_duration;

/// The compactor role.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Compactor")]
pub(crate) struct CompactorFlags {
    /// Time windows of the compaction levels, smallest first, each a multiple of the one
    /// before; windows are aligned to the Unix epoch.
    #[arg(long = "compactor.block-ranges", env = "PROFUSION_COMPACTOR_BLOCK_RANGES", default_value = "1h,2h,8h", value_delimiter = ',', value_parser = parse_duration)]
    pub(crate) block_ranges: Vec<Duration>,

    /// How often the compactor merges blocks, applies retention and deletes retired files.
    #[arg(long = "compactor.compaction-interval", env = "PROFUSION_COMPACTOR_COMPACTION_INTERVAL", default_value = "30m", value_parser = parse_duration)]
    pub(crate) compaction_interval: Duration,

    /// How long the files of a block replaced by compaction or expired by retention are kept,
    /// so queries planned before the change still read them.
    #[arg(long = "compactor.deletion-delay", env = "PROFUSION_COMPACTOR_DELETION_DELAY", default_value = "12h", value_parser = parse_duration)]
    pub(crate) deletion_delay: Duration,

    /// Delete data older than this (by the newest profile of a block); 0 keeps everything
    /// forever.
    #[arg(long = "compactor.blocks-retention-period", env = "PROFUSION_COMPACTOR_BLOCKS_RETENTION_PERIOD", default_value = "0s", value_parser = parse_duration)]
    pub(crate) blocks_retention_period: Duration,

    /// Per-tenant retention periods overriding --compactor.blocks-retention-period, as
    /// `tenant=period` pairs separated by commas (e.g. `team-a=30d,team-b=0s`).
    #[arg(long = "compactor.blocks-retention-period-overrides", env = "PROFUSION_COMPACTOR_BLOCKS_RETENTION_PERIOD_OVERRIDES", value_delimiter = ',', value_parser = parse_override)]
    pub(crate) retention_overrides: Vec<(String, Duration)>,

    /// Ingester blocks younger than this are left for a later run, so that replicas and late
    /// flushes of the same hour are merged together.
    #[arg(long = "compactor.first-level-compaction-wait-period", env = "PROFUSION_COMPACTOR_FIRST_LEVEL_COMPACTION_WAIT_PERIOD", default_value = "25m", value_parser = parse_duration)]
    pub(crate) first_level_wait: Duration,

    /// How long blocks claimed by a compactor stay claimed if it dies mid-job; another
    /// compactor takes them over after that.
    #[arg(long = "compactor.claim-lease", env = "PROFUSION_COMPACTOR_CLAIM_LEASE", default_value = "1h", value_parser = parse_duration)]
    pub(crate) claim_lease: Duration,

    /// For crash tests: abort the process right after this compaction step (claim, pending,
    /// upload, swap, mark or delete).
    #[arg(
        long = "compactor.fail-after-step",
        env = "PROFUSION_COMPACTOR_FAIL_AFTER_STEP",
        hide = true
    )]
    pub(crate) fail_after_step: Option<CompactionStep>,
}

impl CompactorFlags {
    /// The retention period overrides by tenant.
    pub(crate) fn retention_overrides(&self) -> BTreeMap<String, Duration> {
        self.retention_overrides.iter().cloned().collect()
    }
}

fn parse_override(s: &str) -> Result<(String, Duration), String> {
    let (tenant, period) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not tenant=period"))?;
    if tenant.is_empty() {
        return Err(format!("{s:?} names no tenant"));
    }
    Ok((tenant.to_owned(), parse_duration(period)?))
}
