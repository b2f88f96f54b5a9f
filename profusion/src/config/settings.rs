//! Per-tenant settings (`settings.v1`).

use clap::Args;
use profusion_api::routes::settings::SettingsLimits;

/// How many settings a tenant may keep, and how large.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Settings")]
pub(crate) struct SettingsFlags {
    /// Longest settings name, in bytes (`settings.v1.SettingsService/Set`).
    #[arg(
        long = "settings.max-name-length",
        env = "PROFUSION_SETTINGS_MAX_NAME_LENGTH",
        default_value_t = 256
    )]
    pub(crate) settings_max_name_length: usize,

    /// Largest settings value, in bytes.
    #[arg(
        long = "settings.max-value-bytes",
        env = "PROFUSION_SETTINGS_MAX_VALUE_BYTES",
        default_value_t = 64 * 1024
    )]
    pub(crate) settings_max_value_bytes: usize,

    /// Most settings a tenant may store.
    #[arg(
        long = "settings.max-per-tenant",
        env = "PROFUSION_SETTINGS_MAX_PER_TENANT",
        default_value_t = 1000
    )]
    pub(crate) settings_max_per_tenant: usize,
}

impl SettingsFlags {
    pub(crate) fn limits(&self) -> SettingsLimits {
        SettingsLimits {
            max_name_length: self.settings_max_name_length,
            max_value_bytes: self.settings_max_value_bytes,
            max_per_tenant: self.settings_max_per_tenant,
        }
    }
}
