//! The scheduled export the compactor role runs (`profusion export` is the one-off command).

use std::time::Duration;

use clap::Args;

use super::parse_duration;

/// Exports of every tenant's profiles to a data lake, run by the compactor role.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Export")]
pub(crate) struct ExportFlags {
    /// Where the scheduled export writes, one table per tenant under it
    /// (`<destination>/<tenant>`): a local directory, or an `s3://`, `az://` or `gs://` URL.
    /// Empty: no scheduled export.
    #[arg(
        long = "export.destination",
        env = "PROFUSION_EXPORT_DESTINATION",
        default_value = ""
    )]
    pub(crate) destination: String,

    /// The scheduled export's table format: `delta` or `parquet`.
    #[arg(
        long = "export.format",
        env = "PROFUSION_EXPORT_FORMAT",
        default_value = "delta"
    )]
    pub(crate) format: profusion_export::Format,

    /// Comma-separated tenants the scheduled export writes; empty means every tenant the
    /// catalog knows.
    #[arg(
        long = "export.tenants",
        env = "PROFUSION_EXPORT_TENANTS",
        default_value = "",
        value_delimiter = ','
    )]
    pub(crate) tenants: Vec<String>,

    /// How often the scheduled export runs; each run appends what is new since the last.
    #[arg(long = "export.interval", env = "PROFUSION_EXPORT_INTERVAL", default_value = "1h", value_parser = parse_duration)]
    pub(crate) interval: Duration,
}
