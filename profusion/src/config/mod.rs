//! Command-line flags, environment variables and the optional YAML file, one struct per
//! component, flattened into one command line.
//!
//! Precedence: flag, then environment variable (`PROFUSION_*`), then YAML file, then the
//! built-in default. YAML keys nest by the dots of a flag name and use `_` for `-`:
//! `--server.http-listen-port` is `server: {http_listen_port: 4040}`.

mod compactor;
mod distributor;
mod export;
mod ingester;
mod querier;
mod ring;
mod server;
mod settings;
mod storage;
mod store_gateway;

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser};

pub(crate) use compactor::CompactorFlags;
pub(crate) use distributor::{DistributorFlags, ValidationFlags};
pub(crate) use export::ExportFlags;
pub(crate) use ingester::IngesterFlags;
pub(crate) use querier::{QuerierFlags, SchedulerFlags};
pub(crate) use ring::RingFlags;
pub(crate) use server::{AuthFlags, LogFlags, ServerFlags};
pub(crate) use settings::SettingsFlags;
pub(crate) use storage::StorageFlags;
pub(crate) use store_gateway::StoreGatewayFlags;

/// Profusion: a continuous-profiling database that speaks Grafana Pyroscope's APIs.
#[derive(Debug, Clone, Parser)]
#[command(name = "profusion", version, about, long_about = None)]
pub(crate) struct Config {
    /// YAML configuration file; flags and environment variables override its values.
    #[arg(long = "config.file", env = "PROFUSION_CONFIG_FILE", global = true)]
    pub(crate) config_file: Option<PathBuf>,

    /// A command to run instead of serving (`profusion export ...`).
    #[command(subcommand)]
    pub(crate) command: Option<Command>,

    /// Comma-separated roles to run. `all` runs every role in this process (monolithic mode).
    #[arg(
        long = "target",
        env = "PROFUSION_TARGET",
        default_value = "all",
        value_delimiter = ','
    )]
    pub(crate) target: Vec<String>,

    #[command(flatten)]
    pub(crate) server: ServerFlags,

    #[command(flatten)]
    pub(crate) auth: AuthFlags,

    #[command(flatten)]
    pub(crate) storage: StorageFlags,

    #[command(flatten)]
    pub(crate) ring: RingFlags,

    #[command(flatten)]
    pub(crate) distributor: DistributorFlags,

    #[command(flatten)]
    pub(crate) validation: ValidationFlags,

    #[command(flatten)]
    pub(crate) ingester: IngesterFlags,

    #[command(flatten)]
    pub(crate) querier: QuerierFlags,

    #[command(flatten)]
    pub(crate) scheduler: SchedulerFlags,

    #[command(flatten)]
    pub(crate) store_gateway: StoreGatewayFlags,

    #[command(flatten)]
    pub(crate) compactor: CompactorFlags,

    #[command(flatten)]
    pub(crate) settings: SettingsFlags,

    #[command(flatten)]
    pub(crate) export: ExportFlags,

    #[command(flatten)]
    pub(crate) log: LogFlags,
}

/// Commands run instead of the server, finding the data through the same flags and
/// configuration file (`--pyroscopedb.data-path`, `--storage.url`, `--catalog.url`,
/// `--config.file`).
#[derive(Debug, Clone, clap::Subcommand)]
pub(crate) enum Command {
    /// Exports a tenant's profiles to a data lake: a Delta Lake table or Hive-partitioned
    /// Parquet, incrementally (a re-run appends what is new) and exactly once
    /// (docs/export.md).
    Export(ExportArgs),
    /// Creates, lists and revokes the access tokens `--auth.enabled` requires, in the catalog
    /// the server uses: servers see a change within `--auth.refresh-interval`.
    #[command(subcommand)]
    Tokens(TokensCommand),
}

/// `profusion tokens`.
#[derive(Debug, Clone, clap::Subcommand)]
pub(crate) enum TokensCommand {
    /// Creates a token and prints it, once: the catalog keeps only its hash.
    Create {
        /// The tenant the token belongs to (`anonymous` when multi-tenancy is off).
        #[arg(long = "tenant")]
        tenant: String,
        /// What it allows, comma-separated: `read` (queries, SQL), `write` (ingest), `admin`
        /// (deleting series, settings, tokens).
        #[arg(long = "scope", value_parser = parse_scopes)]
        scope: profusion_api::auth::Scopes,
        /// What the token is for, shown by `list`.
        #[arg(long = "description", default_value = "")]
        description: String,
    },
    /// Lists tokens (ids, tenants, scopes, when created and revoked), never their secrets.
    List {
        /// Only this tenant's.
        #[arg(long = "tenant")]
        tenant: Option<String>,
    },
    /// Revokes a token by its id: requests presenting it are refused from then on.
    Revoke {
        /// The id `create` and `list` show.
        id: String,
    },
}

fn parse_scopes(s: &str) -> Result<profusion_api::auth::Scopes, String> {
    profusion_api::auth::Scopes::parse(s)
}

/// `profusion export`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ExportArgs {
    /// The tenant whose profiles are exported.
    #[arg(long = "tenant")]
    pub(crate) tenant: String,

    /// Export profiles from this time on (inclusive): Unix seconds or RFC 3339.
    #[arg(long = "start", value_parser = parse_time)]
    pub(crate) start: i64,

    /// Export profiles before this time (exclusive): Unix seconds or RFC 3339. Capped to what
    /// the ingesters have surely flushed into blocks (older than --pyroscopedb.max-block-duration
    /// and the flush check, and five minutes for agents' upload delay); a later run exports
    /// the rest.
    #[arg(long = "end", value_parser = parse_time)]
    pub(crate) end: i64,

    /// The table format: `delta` (a Delta Lake table) or `parquet` (Hive-partitioned files).
    #[arg(long = "format", default_value = "delta")]
    pub(crate) format: profusion_export::Format,

    /// Where to write: a local directory, or an `s3://`, `az://` or `gs://` URL (credentials
    /// from the usual environment variables of each cloud).
    pub(crate) destination: String,

    /// For crash tests: abort the process at this step (`written`: files written, nothing
    /// committed; `renamed`: a Parquet file renamed into view).
    #[arg(long = "fail-at", hide = true)]
    pub(crate) fail_at: Option<profusion_export::FailPoint>,
}

/// A time flag's value as Unix nanoseconds: Unix seconds (fractions allowed) or RFC 3339.
pub(crate) fn parse_time(s: &str) -> Result<i64, String> {
    if let Ok(seconds) = s.parse::<f64>() {
        let nanos = seconds * 1e9;
        if nanos.is_finite() && nanos.abs() < i64::MAX as f64 {
            return Ok(nanos.round() as i64);
        }
        return Err(format!("{s}: out of range"));
    }
    chrono::DateTime::parse_from_rfc3339(s)
        .map_err(|e| format!("{s}: neither Unix seconds nor RFC 3339 ({e})"))?
        .timestamp_nanos_opt()
        .ok_or_else(|| format!("{s}: out of range"))
}

/// Why the configuration could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConfigError {
    /// A flag or environment variable is unknown or has a bad value (clap's own message).
    #[error("{0}")]
    Flags(String),
    #[error("reading config file {}: {source}", path.display())]
    ReadFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {}: {message}", path.display())]
    File { path: PathBuf, message: String },
}

impl From<clap::Error> for ConfigError {
    /// Help and version requests print and exit successfully; other errors become messages.
    fn from(e: clap::Error) -> Self {
        if matches!(
            e.kind(),
            clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion
        ) {
            e.exit();
        }
        Self::Flags(e.render().to_string())
    }
}

impl Config {
    /// Parses the process arguments, environment and the YAML file they name.
    pub(crate) fn load() -> Result<Self, ConfigError> {
        Self::load_from(std::env::args_os().collect())
    }

    /// Like [`Self::load`] over explicit arguments (the first is the program name).
    pub(crate) fn load_from(args: Vec<OsString>) -> Result<Self, ConfigError> {
        let command = Self::command();
        let matches = command.clone().try_get_matches_from(&args)?;
        let first = Self::from_arg_matches(&matches)?;
        let Some(path) = &first.config_file else {
            return Ok(first);
        };
        let file_error = |message: String| ConfigError::File {
            path: path.clone(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
            path: path.clone(),
            source,
        })?;
        let yaml: serde_yaml::Value =
            serde_yaml::from_str(&text).map_err(|e| file_error(e.to_string()))?;
        let mut flat = Vec::new();
        flatten(&yaml, String::new(), &mut flat).map_err(file_error)?;
        let mut merged = vec![args.first().cloned().unwrap_or_else(|| "profusion".into())];
        for (key, value) in flat {
            let flag = key.replace('_', "-");
            let arg = command
                .get_arguments()
                .find(|a| a.get_long() == Some(flag.as_str()))
                .ok_or_else(|| file_error(format!("unknown setting {key:?}")))?;
            let from_user = matches!(
                matches.value_source(arg.get_id().as_str()),
                Some(ValueSource::CommandLine | ValueSource::EnvVariable)
            );
            if !from_user {
                merged.push(format!("--{flag}={value}").into());
            }
        }
        merged.extend(args.into_iter().skip(1));
        let matches = command.try_get_matches_from(merged)?;
        Ok(Self::from_arg_matches(&matches)?)
    }
}

fn flatten(
    value: &serde_yaml::Value,
    prefix: String,
    out: &mut Vec<(String, String)>,
) -> Result<(), String> {
    use serde_yaml::Value;
    match value {
        Value::Mapping(map) => {
            for (k, v) in map {
                let k = k
                    .as_str()
                    .ok_or_else(|| format!("non-string key under {prefix:?}"))?;
                let key = if prefix.is_empty() {
                    k.to_owned()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(v, key, out)?;
            }
        }
        Value::Sequence(items) => {
            let parts: Result<Vec<String>, String> =
                items.iter().map(|i| scalar(i, &prefix)).collect();
            out.push((prefix, parts?.join(",")));
        }
        Value::Null => {}
        other => out.push((prefix.clone(), scalar(other, &prefix)?)),
    }
    Ok(())
}

fn scalar(v: &serde_yaml::Value, key: &str) -> Result<String, String> {
    use serde_yaml::Value;
    Ok(match v {
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        _ => return Err(format!("{key:?} must be a scalar value")),
    })
}

/// Parses durations such as `500ms`, `30s`, `10m`, `1h30m`, `7d`.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    if rest.is_empty() {
        return Err("empty duration".into());
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!("invalid duration {s:?}: expected a number"));
        }
        let n: f64 = rest[..digits]
            .parse()
            .map_err(|_| format!("invalid duration {s:?}"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "d" => 86_400.0,
            "w" => 604_800.0,
            u => {
                return Err(format!(
                    "invalid duration {s:?}: unknown unit {u:?} (use ns, us, ms, s, m, h, d, w)"
                ));
            }
        };
        total += Duration::from_secs_f64(n * seconds);
        rest = &rest[unit_len..];
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every flag of every component keeps the contract users configure by: its environment
    /// variable is `PROFUSION_` and the flag's name upper-cased with `.` and `-` as `_` (the YAML
    /// key is the same name nested at its dots), and it has a doc for `--help`.
    #[test]
    fn every_flag_has_its_env_variable_and_a_doc() {
        let command = Config::command();
        let mut flags = 0;
        for arg in command.get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            if matches!(long, "help" | "version") {
                continue;
            }
            flags += 1;
            let expected = format!("PROFUSION_{}", long.replace(['.', '-'], "_")).to_uppercase();
            assert_eq!(
                arg.get_env().and_then(|e| e.to_str()),
                Some(expected.as_str()),
                "--{long}"
            );
            assert!(
                arg.get_help()
                    .is_some_and(|h| !h.to_string().trim().is_empty()),
                "--{long} has no doc"
            );
        }
        // The flags of every component are there, flattened into one command line.
        for long in [
            "target",
            "server.http-listen-port",
            "auth.multitenancy-enabled",
            "pyroscopedb.data-path",
            "distributor.ingestion-rate-limit-mb",
            "validation.max-profile-size-bytes",
            "ingester.id",
            "querier.max-concurrent",
            "query-scheduler.max-outstanding-requests-per-tenant",
            "settings.max-per-tenant",
            "compactor.block-ranges",
            "compactor.compaction-interval",
            "compactor.deletion-delay",
            "compactor.blocks-retention-period",
            "log.level",
            "auth.enabled",
            "auth.refresh-interval",
        ] {
            assert!(
                command.get_arguments().any(|a| a.get_long() == Some(long)),
                "--{long} is missing"
            );
        }
        assert_eq!(
            flags, 72,
            "a flag was added or lost: update this count knowingly"
        );
    }

    #[test]
    fn tokens_read_their_arguments_and_the_servers_catalog_flags() {
        let parse = |args: &[&str]| {
            let args: Vec<OsString> = std::iter::once("profusion")
                .chain(args.iter().copied())
                .map(Into::into)
                .collect();
            Config::load_from(args)
        };
        // The catalog's flags before the command or after it.
        for args in [
            &[
                "--catalog.url=postgres://h/db",
                "tokens",
                "create",
                "--tenant=t",
                "--scope=read,admin",
            ][..],
            &[
                "tokens",
                "create",
                "--tenant=t",
                "--scope=read,admin",
                "--catalog.url=postgres://h/db",
            ],
        ] {
            let c = parse(args).unwrap();
            let Some(Command::Tokens(TokensCommand::Create { tenant, scope, .. })) = &c.command
            else {
                panic!("no tokens create: {:?}", c.command);
            };
            assert_eq!(
                (tenant.as_str(), scope.to_string().as_str()),
                ("t", "read,admin")
            );
            assert_eq!(c.storage.catalog_url, "postgres://h/db");
        }
        let c = parse(&["tokens", "revoke", "abc123"]).unwrap();
        assert!(
            matches!(&c.command, Some(Command::Tokens(TokensCommand::Revoke { id })) if id == "abc123")
        );
        let err = parse(&["tokens", "create", "--tenant=t", "--scope=read,root"]).unwrap_err();
        assert!(err.to_string().contains("unknown scope \"root\""), "{err}");
    }

    #[test]
    fn export_reads_its_arguments_and_the_servers_storage_flags() {
        let args: Vec<OsString> = [
            "profusion",
            "export",
            "--tenant=t",
            "--start=1700000000",
            "--end=2023-11-14T22:13:21.5Z",
            "--format=parquet",
            "--pyroscopedb.data-path=/srv/profusion",
            "out",
        ]
        .into_iter()
        .map(Into::into)
        .collect();
        let c = Config::load_from(args).unwrap();
        let Some(Command::Export(export)) = &c.command else {
            panic!("no export command: {:?}", c.command);
        };
        assert_eq!(
            (export.start, export.end),
            (1_700_000_000_000_000_000, 1_700_000_001_500_000_000)
        );
        assert_eq!(export.format, profusion_export::Format::Parquet);
        assert_eq!(export.destination, "out");
        assert_eq!(c.storage.data_path, PathBuf::from("/srv/profusion"));
        assert!(parse_time("yesterday").is_err());
    }

    #[test]
    fn each_component_reads_its_own_flags() {
        let c = Config::load_from(
            [
                "profusion",
                "--ingester.id=i-7",
                "--querier.max-concurrent=3",
                "--settings.max-per-tenant=9",
                "--distributor.ingestion-body-limit-mb=1",
                "--compactor.block-ranges=2h,4h",
                "--compactor.blocks-retention-period-overrides=a=7d,b|c=0s",
                "--compactor.fail-after-step=swap",
            ]
            .map(OsString::from)
            .to_vec(),
        )
        .unwrap();
        assert_eq!(
            c.compactor.block_ranges,
            [Duration::from_secs(7200), Duration::from_secs(14400)]
        );
        assert_eq!(
            c.compactor.retention_overrides(),
            [
                ("a".to_owned(), Duration::from_secs(7 * 86400)),
                ("b|c".to_owned(), Duration::ZERO)
            ]
            .into()
        );
        assert_eq!(
            c.compactor.fail_after_step,
            Some(profusion_compactor::CompactionStep::Swap)
        );
        assert_eq!(
            c.compactor.blocks_retention_period,
            Duration::ZERO,
            "kept forever by default"
        );
        assert_eq!(c.ingester.ingester_id, "i-7");
        assert_eq!(c.querier.querier_max_concurrent, 3);
        assert_eq!(c.settings.limits().max_per_tenant, 9);
        assert_eq!(c.distributor.body_limit_bytes(), 1024 * 1024);
        assert_eq!(c.target, ["all"]);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert!(parse_duration("10x").is_err());
        assert!(parse_duration("h").is_err());
    }

    #[test]
    fn yaml_is_below_flags_and_env() {
        let dir = tempfile_dir();
        let path = dir.join("c.yaml");
        std::fs::write(
            &path,
            "server:\n  http_listen_port: 5050\n  http_listen_address: 127.0.0.1\nauth:\n  multitenancy_enabled: true\n",
        )
        .unwrap();
        let args = |extra: &[&str]| {
            let mut v: Vec<OsString> = vec![
                "profusion".into(),
                format!("--config.file={}", path.display()).into(),
            ];
            v.extend(extra.iter().map(OsString::from));
            v
        };
        let c = Config::load_from(args(&[])).unwrap();
        assert_eq!(c.server.http_listen_port, 5050);
        assert_eq!(c.server.http_listen_address, "127.0.0.1");
        assert!(c.auth.multitenancy_enabled);
        let c = Config::load_from(args(&["--server.http-listen-port=6060"])).unwrap();
        assert_eq!(c.server.http_listen_port, 6060);
        std::fs::write(&path, "server:\n  no_such_flag: 1\n").unwrap();
        let err = Config::load_from(args(&[])).unwrap_err().to_string();
        assert!(err.contains("server.no_such_flag"), "{err}");
    }

    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("profusion-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
