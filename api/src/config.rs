//! Command-line flags, environment variables and the optional YAML file.
//!
//! Precedence: flag, then environment variable (`PROFUSION_*`), then YAML file, then the
//! built-in default. YAML keys nest by the dots of a flag name and use `_` for `-`:
//! `--server.http-listen-port` is `server: {http_listen_port: 4040}`.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{ArgAction, CommandFactory, FromArgMatches, Parser};

/// Profusion: a continuous-profiling database that speaks Grafana Pyroscope's APIs.
#[derive(Debug, Clone, Parser)]
#[command(name = "profusion", version, about, long_about = None)]
pub struct Config {
    /// YAML configuration file; flags and environment variables override its values.
    #[arg(long = "config.file", env = "PROFUSION_CONFIG_FILE")]
    pub config_file: Option<PathBuf>,

    /// Comma-separated roles to run. `all` runs every role in this process (monolithic mode).
    #[arg(
        long = "target",
        env = "PROFUSION_TARGET",
        default_value = "all",
        value_delimiter = ','
    )]
    pub target: Vec<String>,

    /// Address the HTTP server (HTTP/1.1 and h2c: Connect, gRPC, gRPC-Web, plain HTTP) binds.
    #[arg(
        long = "server.http-listen-address",
        env = "PROFUSION_SERVER_HTTP_LISTEN_ADDRESS",
        default_value = "0.0.0.0"
    )]
    pub http_listen_address: String,

    /// Port of the HTTP server; 0 picks a free port (printed in the log and to stdout).
    #[arg(
        long = "server.http-listen-port",
        env = "PROFUSION_SERVER_HTTP_LISTEN_PORT",
        default_value_t = 4040
    )]
    pub http_listen_port: u16,

    /// Longest time a client may take to send a request's headers, counted from its first byte;
    /// a slower client is disconnected (0s: use --server.http-read-timeout).
    #[arg(long = "server.http-read-header-timeout", env = "PROFUSION_SERVER_HTTP_READ_HEADER_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub http_read_header_timeout: Duration,

    /// Longest time a client may take to send a request body once its handler starts reading
    /// it; a body not received in time is answered 408 (0s: no limit).
    #[arg(long = "server.http-read-timeout", env = "PROFUSION_SERVER_HTTP_READ_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub http_read_timeout: Duration,

    /// How long a connection may stay open with no request in flight before it is closed
    /// (0s: never).
    #[arg(long = "server.http-idle-timeout", env = "PROFUSION_SERVER_HTTP_IDLE_TIMEOUT", default_value = "2m", value_parser = parse_duration)]
    pub http_idle_timeout: Duration,

    /// Most connections served at once; past it, idle connections are closed to make room and
    /// new ones wait to be accepted. Unset: three quarters of the process's open-file limit,
    /// so descriptors stay free for the WAL, blocks and the catalog. 0: no limit.
    #[arg(
        long = "server.http-conn-limit",
        env = "PROFUSION_SERVER_HTTP_CONN_LIMIT"
    )]
    pub http_conn_limit: Option<usize>,

    /// How long a graceful shutdown waits for in-flight requests before flushing and exiting.
    #[arg(long = "server.graceful-shutdown-timeout", env = "PROFUSION_SERVER_GRACEFUL_SHUTDOWN_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub graceful_shutdown_timeout: Duration,

    /// Require the `X-Scope-OrgID` header and keep each tenant's data apart. When off, every
    /// request belongs to tenant `anonymous`.
    #[arg(long = "auth.multitenancy-enabled", env = "PROFUSION_AUTH_MULTITENANCY_ENABLED", default_value_t = false, num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set)]
    pub multitenancy_enabled: bool,

    /// Directory for local state: the WAL, the embedded catalog and the default object store.
    #[arg(
        long = "pyroscopedb.data-path",
        env = "PROFUSION_PYROSCOPEDB_DATA_PATH",
        default_value = "./data"
    )]
    pub data_path: PathBuf,

    /// Object store URL for blocks (`s3://bucket/prefix`, `gs://...`, `az://...`,
    /// `file:///dir`). Empty means the directory `objects/` under the data path. Credentials
    /// come from the usual environment variables of each cloud (AWS_*, GOOGLE_*, AZURE_*).
    #[arg(
        long = "storage.url",
        env = "PROFUSION_STORAGE_URL",
        default_value = ""
    )]
    pub storage_url: String,

    /// Catalog URL: `sqlite:<path>` or `postgres://user:pass@host/db`. Empty means
    /// `catalog.db` under the data path.
    #[arg(
        long = "catalog.url",
        env = "PROFUSION_CATALOG_URL",
        default_value = ""
    )]
    pub catalog_url: String,

    /// Identity of this ingester on the ring and in block metadata; keep it stable across
    /// restarts so its WAL is recovered correctly.
    #[arg(
        long = "ingester.id",
        env = "PROFUSION_INGESTER_ID",
        default_value = "local"
    )]
    pub ingester_id: String,

    /// Replicas each series is written to (a majority must succeed).
    #[arg(
        long = "ingester.ring.replication-factor",
        env = "PROFUSION_INGESTER_RING_REPLICATION_FACTOR",
        default_value_t = 1
    )]
    pub replication_factor: usize,

    /// Most active series (written in the last 10 minutes) a tenant may have on this ingester;
    /// a push that would exceed it is refused whole with 429 (0: no limit).
    #[arg(
        long = "ingester.max-local-series-per-tenant",
        env = "PROFUSION_INGESTER_MAX_LOCAL_SERIES_PER_TENANT",
        default_value_t = 0
    )]
    pub max_local_series_per_tenant: usize,

    /// Most active series a tenant may have across the cluster; each ingester enforces its
    /// share (this × replication factor / ingesters). The smaller of the two limits applies
    /// (0: no limit).
    #[arg(
        long = "ingester.max-global-series-per-tenant",
        env = "PROFUSION_INGESTER_MAX_GLOBAL_SERIES_PER_TENANT",
        default_value_t = 5000
    )]
    pub max_global_series_per_tenant: usize,

    /// Flush the head into a block once it has collected data for this long.
    #[arg(long = "pyroscopedb.max-block-duration", env = "PROFUSION_PYROSCOPEDB_MAX_BLOCK_DURATION", default_value = "1h", value_parser = parse_duration)]
    pub max_block_duration: Duration,

    /// Flush the head into a block once it holds this many bytes.
    #[arg(long = "ingester.max-head-bytes", env = "PROFUSION_INGESTER_MAX_HEAD_BYTES", default_value_t = 512 * 1024 * 1024)]
    pub max_head_bytes: usize,

    /// How often the ingester checks whether the head is due for a flush.
    #[arg(long = "ingester.flush-check-interval", env = "PROFUSION_INGESTER_FLUSH_CHECK_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub flush_check_interval: Duration,

    /// Largest request body accepted, in MiB (before decompression).
    #[arg(
        long = "distributor.ingestion-body-limit-mb",
        env = "PROFUSION_DISTRIBUTOR_INGESTION_BODY_LIMIT_MB",
        default_value_t = 256.0
    )]
    pub ingestion_body_limit_mb: f64,

    /// Per-tenant sustained ingest rate, MiB/s of uncompressed profiles (0 disables).
    #[arg(
        long = "distributor.ingestion-rate-limit-mb",
        env = "PROFUSION_DISTRIBUTOR_INGESTION_RATE_LIMIT_MB",
        default_value_t = 4.0
    )]
    pub ingestion_rate_limit_mb: f64,

    /// Per-tenant burst above the sustained rate, MiB.
    #[arg(
        long = "distributor.ingestion-burst-size-mb",
        env = "PROFUSION_DISTRIBUTOR_INGESTION_BURST_SIZE_MB",
        default_value_t = 2.0
    )]
    pub ingestion_burst_size_mb: f64,

    /// Largest profile accepted, in bytes after decompression.
    #[arg(long = "validation.max-profile-size-bytes", env = "PROFUSION_VALIDATION_MAX_PROFILE_SIZE_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_profile_size_bytes: usize,

    /// Most samples in one profile.
    #[arg(
        long = "validation.max-profile-stacktrace-samples",
        env = "PROFUSION_VALIDATION_MAX_PROFILE_STACKTRACE_SAMPLES",
        default_value_t = 16_000
    )]
    pub max_profile_samples: usize,

    /// Most labels on one sample.
    #[arg(
        long = "validation.max-profile-stacktrace-sample-labels",
        env = "PROFUSION_VALIDATION_MAX_PROFILE_STACKTRACE_SAMPLE_LABELS",
        default_value_t = 100
    )]
    pub max_sample_labels: usize,

    /// Deepest stack kept; deeper stacks lose frames on the root side.
    #[arg(
        long = "validation.max-profile-stacktrace-depth",
        env = "PROFUSION_VALIDATION_MAX_PROFILE_STACKTRACE_DEPTH",
        default_value_t = 1000
    )]
    pub max_stack_depth: usize,

    /// Longest symbol kept; longer ones keep their last bytes.
    #[arg(
        long = "validation.max-profile-symbol-value-length",
        env = "PROFUSION_VALIDATION_MAX_PROFILE_SYMBOL_VALUE_LENGTH",
        default_value_t = 65_535
    )]
    pub max_symbol_length: usize,

    /// Most labels per series.
    #[arg(
        long = "validation.max-label-names-per-series",
        env = "PROFUSION_VALIDATION_MAX_LABEL_NAMES_PER_SERIES",
        default_value_t = 30
    )]
    pub max_label_names_per_series: usize,

    /// Longest label name, in bytes.
    #[arg(
        long = "validation.max-length-label-name",
        env = "PROFUSION_VALIDATION_MAX_LENGTH_LABEL_NAME",
        default_value_t = 1024
    )]
    pub max_label_name_length: usize,

    /// Longest label value, in bytes.
    #[arg(
        long = "validation.max-length-label-value",
        env = "PROFUSION_VALIDATION_MAX_LENGTH_LABEL_VALUE",
        default_value_t = 2048
    )]
    pub max_label_value_length: usize,

    /// Refuse profiles older than this (0s disables).
    #[arg(long = "validation.reject-older-than", env = "PROFUSION_VALIDATION_REJECT_OLDER_THAN", default_value = "1h", value_parser = parse_duration)]
    pub reject_older_than: Duration,

    /// Refuse profiles further in the future than this (0s disables).
    #[arg(long = "validation.reject-newer-than", env = "PROFUSION_VALIDATION_REJECT_NEWER_THAN", default_value = "10m", value_parser = parse_duration)]
    pub reject_newer_than: Duration,

    /// Memory budget of one query, in bytes; a query over it fails with `resource_exhausted`
    /// and the server keeps serving others.
    #[arg(long = "querier.max-query-memory", env = "PROFUSION_QUERIER_MAX_QUERY_MEMORY", default_value_t = 1024 * 1024 * 1024)]
    pub query_memory_bytes: usize,

    /// Querier workers running queries at once.
    #[arg(
        long = "querier.max-concurrent",
        env = "PROFUSION_QUERIER_MAX_CONCURRENT",
        default_value_t = 4
    )]
    pub querier_max_concurrent: usize,

    /// Queued queries a tenant may have; more are refused with 429 until the queue drains.
    #[arg(
        long = "query-scheduler.max-outstanding-requests-per-tenant",
        env = "PROFUSION_QUERY_SCHEDULER_MAX_OUTSTANDING_REQUESTS_PER_TENANT",
        default_value_t = 100
    )]
    pub max_outstanding_per_tenant: usize,

    /// Split flame-graph and series queries into parts of this length, run in parallel
    /// (0s never splits).
    #[arg(long = "querier.split-queries-by-interval", env = "PROFUSION_QUERIER_SPLIT_QUERIES_BY_INTERVAL", default_value = "0s", value_parser = parse_duration)]
    pub split_queries_by_interval: Duration,

    /// Longest time range one query may cover (0s disables the limit).
    #[arg(long = "querier.max-query-length", env = "PROFUSION_QUERIER_MAX_QUERY_LENGTH", default_value = "24h", value_parser = parse_duration)]
    pub max_query_length: Duration,

    /// How far back queries may read: older starts are moved up to now minus this, and a range
    /// entirely older answers empty (0s disables the limit).
    #[arg(long = "querier.max-query-lookback", env = "PROFUSION_QUERIER_MAX_QUERY_LOOKBACK", default_value = "7d", value_parser = parse_duration)]
    pub max_query_lookback: Duration,

    /// Flame-graph nodes when a request leaves `max_nodes` at 0.
    #[arg(
        long = "querier.max-flamegraph-nodes-default",
        env = "PROFUSION_QUERIER_MAX_FLAMEGRAPH_NODES_DEFAULT",
        default_value_t = 8192
    )]
    pub max_flamegraph_nodes_default: i64,

    /// Largest `max_nodes` a request may ask for.
    #[arg(
        long = "querier.max-flamegraph-nodes-max",
        env = "PROFUSION_QUERIER_MAX_FLAMEGRAPH_NODES_MAX",
        default_value_t = 1_048_576
    )]
    pub max_flamegraph_nodes_max: i64,

    /// Longest settings name, in bytes (`settings.v1.SettingsService/Set`).
    #[arg(
        long = "settings.max-name-length",
        env = "PROFUSION_SETTINGS_MAX_NAME_LENGTH",
        default_value_t = 256
    )]
    pub settings_max_name_length: usize,

    /// Largest settings value, in bytes.
    #[arg(
        long = "settings.max-value-bytes",
        env = "PROFUSION_SETTINGS_MAX_VALUE_BYTES",
        default_value_t = 64 * 1024
    )]
    pub settings_max_value_bytes: usize,

    /// Most settings a tenant may store.
    #[arg(
        long = "settings.max-per-tenant",
        env = "PROFUSION_SETTINGS_MAX_PER_TENANT",
        default_value_t = 1000
    )]
    pub settings_max_per_tenant: usize,

    /// Log level: error, warn, info, debug or trace (or a tracing filter directive).
    #[arg(
        long = "log.level",
        env = "PROFUSION_LOG_LEVEL",
        default_value = "info"
    )]
    pub log_level: String,

    /// Log format: `logfmt` (human-readable) or `json`.
    #[arg(
        long = "log.format",
        env = "PROFUSION_LOG_FORMAT",
        default_value = "logfmt"
    )]
    pub log_format: String,
}

impl Config {
    /// Parses the process arguments, environment and the YAML file they name.
    pub fn load() -> Result<Self, String> {
        Self::load_from(std::env::args_os().collect())
    }

    /// Like [`Self::load`] over explicit arguments (the first is the program name).
    pub fn load_from(args: Vec<OsString>) -> Result<Self, String> {
        let command = Self::command();
        let matches = command
            .clone()
            .try_get_matches_from(&args)
            .map_err(render)?;
        let first = Self::from_arg_matches(&matches).map_err(|e| e.to_string())?;
        let Some(path) = &first.config_file else {
            return Ok(first);
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("reading config file {}: {e}", path.display()))?;
        let yaml: serde_yaml::Value = serde_yaml::from_str(&text)
            .map_err(|e| format!("config file {}: {e}", path.display()))?;
        let mut flat = Vec::new();
        flatten(&yaml, String::new(), &mut flat)
            .map_err(|e| format!("config file {}: {e}", path.display()))?;
        let mut merged = vec![args.first().cloned().unwrap_or_else(|| "profusion".into())];
        for (key, value) in flat {
            let flag = key.replace('_', "-");
            let arg = command
                .get_arguments()
                .find(|a| a.get_long() == Some(flag.as_str()))
                .ok_or_else(|| {
                    format!("config file {}: unknown setting {key:?}", path.display())
                })?;
            let from_user = matches!(
                matches.value_source(arg.get_id().as_str()),
                Some(ValueSource::CommandLine | ValueSource::EnvVariable)
            );
            if !from_user {
                merged.push(format!("--{flag}={value}").into());
            }
        }
        merged.extend(args.into_iter().skip(1));
        let matches = command.try_get_matches_from(merged).map_err(render)?;
        Self::from_arg_matches(&matches).map_err(|e| e.to_string())
    }

    /// The read service's query limits.
    pub fn query_limits(&self) -> profusion_engine::service::QueryLimits {
        profusion_engine::service::QueryLimits {
            max_query_lookback_millis: self.max_query_lookback.as_millis() as i64,
            max_query_length_millis: self.max_query_length.as_millis() as i64,
            max_nodes_default: self.max_flamegraph_nodes_default,
            max_nodes_max: self.max_flamegraph_nodes_max,
        }
    }

    pub fn limits(&self) -> profusion_ingest::limits::Limits {
        const MIB: f64 = 1024.0 * 1024.0;
        profusion_ingest::limits::Limits {
            max_profile_size_bytes: self.max_profile_size_bytes,
            max_profile_samples: self.max_profile_samples,
            max_sample_labels: self.max_sample_labels,
            max_stack_depth: self.max_stack_depth,
            max_symbol_length: self.max_symbol_length,
            max_label_names_per_series: self.max_label_names_per_series,
            max_label_name_length: self.max_label_name_length,
            max_label_value_length: self.max_label_value_length,
            reject_older_than: self.reject_older_than,
            reject_newer_than: self.reject_newer_than,
            ingestion_rate_bytes: self.ingestion_rate_limit_mb * MIB,
            ingestion_burst_bytes: self.ingestion_burst_size_mb * MIB,
        }
    }

    /// The connection limits of the HTTP server, zeros meaning none.
    pub fn connection_limits(&self) -> crate::http_server::ConnectionLimits {
        let some = |d: Duration| (!d.is_zero()).then_some(d);
        crate::http_server::ConnectionLimits {
            header_timeout: some(self.http_read_header_timeout).or(some(self.http_read_timeout)),
            idle_timeout: some(self.http_idle_timeout),
            max_connections: match self.http_conn_limit {
                None => Some(crate::http_server::default_connection_limit()),
                Some(0) => None,
                Some(n) => Some(n),
            },
        }
    }

    /// Deadline for receiving a request body (`None`: no deadline).
    pub fn body_timeout(&self) -> Option<Duration> {
        (!self.http_read_timeout.is_zero()).then_some(self.http_read_timeout)
    }

    pub fn body_limit_bytes(&self) -> usize {
        (self.ingestion_body_limit_mb * 1024.0 * 1024.0) as usize
    }
}

/// Help and version requests print and exit successfully; other errors become messages.
fn render(e: clap::Error) -> String {
    if matches!(
        e.kind(),
        clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion
    ) {
        e.exit();
    }
    e.render().to_string()
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
pub fn parse_duration(s: &str) -> Result<Duration, String> {
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
        assert_eq!(c.http_listen_port, 5050);
        assert_eq!(c.http_listen_address, "127.0.0.1");
        assert!(c.multitenancy_enabled);
        let c = Config::load_from(args(&["--server.http-listen-port=6060"])).unwrap();
        assert_eq!(c.http_listen_port, 6060);
        std::fs::write(&path, "server:\n  no_such_flag: 1\n").unwrap();
        let err = Config::load_from(args(&[])).unwrap_err();
        assert!(err.contains("server.no_such_flag"), "{err}");
    }

    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("profusion-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
