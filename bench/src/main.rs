//! `profusion-bench`: Profusion's workload generator and benchmark harness.
//!
//! Owns: generating realistic, seeded profile workloads, pushing them to a server, and the
//! one-command benchmark (`scripts/bench`) with its JSON, Markdown and SVG reports. Must not
//! reach into the server's internals: it drives the real binary over HTTP like any client, and
//! reads only what a user could (its `/proc` entry, its data directory, the block files).

mod cadence;
mod cluster;
mod jfr;
mod push;
mod report;
mod run;
mod sql;
mod workload;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};

use crate::workload::{Fleet, FleetShape, Kind};

#[derive(Debug, Parser)]
#[command(
    name = "profusion-bench",
    about = "Profusion workload generator and benchmark"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The fleet to simulate.
#[derive(Debug, Clone, clap::Args)]
struct FleetArgs {
    /// Seed of everything generated; the same seed gives the same bytes.
    #[arg(long, env = "PROFUSION_BENCH_SEED", default_value_t = 1)]
    seed: u64,
    /// Services in the fleet.
    #[arg(long, env = "PROFUSION_BENCH_SERVICES", default_value_t = 4)]
    services: usize,
    /// Pods per service.
    #[arg(long, env = "PROFUSION_BENCH_PODS", default_value_t = 5)]
    pods: usize,
    /// Samples in one CPU profile (other profile kinds scale from it).
    #[arg(long, env = "PROFUSION_BENCH_SAMPLES", default_value_t = 1000)]
    samples: usize,
}

impl FleetArgs {
    fn fleet(&self) -> Fleet {
        Fleet::new(FleetShape {
            seed: self.seed,
            services: self.services,
            pods: self.pods,
            samples: self.samples,
            ..FleetShape::default()
        })
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Writes the workload as gzipped pprof files, one per pod, kind and 10 s window.
    Generate {
        #[command(flatten)]
        fleet: FleetArgs,
        /// Directory to write into.
        #[arg(long, env = "PROFUSION_BENCH_OUT")]
        out: PathBuf,
        /// Minutes of profiles to write, ending now.
        #[arg(long, env = "PROFUSION_BENCH_MINUTES", default_value_t = 1)]
        minutes: u64,
    },
    /// Pushes the workload to a running server, every pod every 10 s of simulated time.
    Push {
        #[command(flatten)]
        fleet: FleetArgs,
        /// The server's base URL.
        #[arg(
            long,
            env = "PROFUSION_BENCH_URL",
            default_value = "http://127.0.0.1:4040"
        )]
        url: String,
        /// Tenant (`X-Scope-OrgID`), when the server requires one.
        #[arg(long, env = "PROFUSION_BENCH_TENANT")]
        tenant: Option<String>,
        /// Largest number of profiles pushed per second.
        #[arg(long, env = "PROFUSION_BENCH_RATE", default_value_t = 50.0)]
        rate: f64,
        /// How long to push, in seconds.
        #[arg(long, env = "PROFUSION_BENCH_DURATION", default_value_t = 60)]
        duration: u64,
        /// Concurrent connections.
        #[arg(long, env = "PROFUSION_BENCH_CONCURRENCY", default_value_t = 4)]
        concurrency: usize,
    },
    /// The whole benchmark against a server binary it starts itself (what `scripts/bench` runs).
    Run(run::RunArgs),
    /// Only its ingest phases: the decode-only reference, then pushes at rising concurrency
    /// (per core of the server, and the ratio to the reference).
    Ingest {
        #[command(flatten)]
        target: run::ServerArgs,
        /// Seconds each concurrency step runs.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
    },
    /// Only its push-latency-during-flushes phase: prints that part of the report.
    FlushLatency {
        #[command(flatten)]
        target: run::ServerArgs,
        /// Seconds of pushing.
        #[arg(long, default_value_t = 20)]
        seconds: u64,
    },
    /// The price of the network: the same workload on a monolith and on a cluster of one
    /// process per role; latency ratios, bytes over the network, the work split between
    /// queriers.
    Cluster(cluster::ClusterArgs),
    /// Only its SQL phase, on a history of its own: top functions and totals over time through
    /// Flight SQL, the querier API and DuckDB, then `profusion export` to Delta Lake and Parquet.
    Sql {
        #[command(flatten)]
        target: run::ServerArgs,
        /// Minutes between two CPU profiles of a pod in the seven days of history.
        #[arg(long, default_value_t = 10)]
        every_min: i64,
        /// Timed runs of each query.
        #[arg(long, default_value_t = 7)]
        runs: usize,
        /// A data directory an earlier run loaded (kept when it failed): reused as it is,
        /// without loading the history again.
        #[arg(long)]
        data: Option<PathBuf>,
    },
    /// JFR ingest throughput per core on a real JDK recording, next to the pprof path's in
    /// the same run.
    Jfr {
        #[command(flatten)]
        target: run::ServerArgs,
        /// Seconds of pushing, for each of JFR and pprof.
        #[arg(long, default_value_t = 20)]
        seconds: u64,
        /// Seconds the Java workload is recorded for.
        #[arg(long, default_value_t = 10)]
        record_seconds: u32,
    },
    /// Only its history at agent cadence: every pod sends each kind every 15 s for a day (or
    /// `--hours`); flame graphs and series over it next to DuckDB and ClickHouse (chdb).
    Cadence(cadence::CadenceArgs),
    /// Only its loading of seven days of history into a server with the default head size:
    /// peak resident memory and head size next to the head's limit.
    LoadHistory {
        #[command(flatten)]
        target: run::ServerArgs,
        /// Minutes between two CPU profiles of a pod.
        #[arg(long, default_value_t = 10)]
        every_min: i64,
    },
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    match cli.command {
        Command::Generate {
            fleet,
            out,
            minutes,
        } => {
            let fleet = fleet.fleet();
            let now = now_nanos();
            let steps = minutes * 6;
            let mut written = 0usize;
            for step in 0..steps {
                let time = now - (steps - step) as i64 * 10_000_000_000;
                for (s, p) in fleet.pods() {
                    for kind in Kind::ALL {
                        let profile = fleet.profile(s, p, kind, time);
                        let dir = out.join(&profile.service).join(&profile.pod);
                        std::fs::create_dir_all(&dir).expect("create output directory");
                        let file = dir.join(format!("{}-{}.pb.gz", kind.metric(), time));
                        std::fs::write(&file, &profile.body).expect("write profile");
                        written += 1;
                    }
                }
                eprint!(
                    "\r  {written} profiles written ({}/{steps} windows)",
                    step + 1
                );
            }
            eprintln!();
        }
        Command::Push {
            fleet,
            url,
            tenant,
            rate,
            duration,
            concurrency,
        } => {
            let fleet = fleet.fleet();
            let pods: Vec<(usize, usize)> = fleet.pods().collect();
            let start = now_nanos();
            let mut i = 0usize;
            let next = move || {
                // Every pod sends each kind once per 10 s window of simulated time.
                let per_window = pods.len() * Kind::ALL.len();
                let window = (i / per_window) as i64;
                let (s, p) = pods[i % pods.len()];
                let kind = Kind::ALL[(i / pods.len()) % Kind::ALL.len()];
                i += 1;
                Some(fleet.profile(s, p, kind, start + window * 10_000_000_000))
            };
            let stats = push::push_all(
                &url,
                tenant.as_deref(),
                concurrency,
                Some(rate),
                Some(Instant::now() + Duration::from_secs(duration)),
                Some("push"),
                next,
            )
            .await;
            println!(
                "{}",
                serde_json::json!({
                    "profiles": stats.profiles,
                    "failures": stats.failures,
                    "gzipped_bytes": stats.body_bytes,
                    "p50_ms": stats.percentile(0.5).as_secs_f64() * 1e3,
                    "p99_ms": stats.percentile(0.99).as_secs_f64() * 1e3,
                })
            );
        }
        Command::Run(args) => run::run(args).await,
        Command::Cluster(args) => {
            let report = cluster::cluster(args).await;
            println!("{}", serde_json::to_string_pretty(&report).expect("JSON"));
        }
        Command::Ingest { target, seconds } => {
            let stamp = now_nanos() / 1_000_000_000;
            let out = target.out.join(format!("{stamp}-ingest"));
            let payloads = run::cpu_payloads(&Fleet::new(FleetShape::default()), 200);
            let rss = run::RssSampler::start();
            let (decode, ingest) =
                run::measure_ingest(&target.server, &out, &payloads, seconds, &rss).await;
            let _ = std::fs::remove_dir_all(&out);
            let report = serde_json::json!({"decode_only": decode, "ingest": ingest});
            let mut md = String::new();
            report::ingest_section(&mut md, &report);
            eprintln!("{md}");
            println!("{}", serde_json::to_string_pretty(&report).expect("JSON"));
        }
        Command::FlushLatency { target, seconds } => {
            let report = run::push_latency_during_flushes(
                &target.server,
                &target.out,
                &run::cpu_payloads(&Fleet::new(FleetShape::default()), 200),
                seconds,
            )
            .await;
            println!("{}", serde_json::to_string_pretty(&report).expect("JSON"));
        }
        Command::Sql {
            target,
            every_min,
            runs,
            data,
        } => {
            let report = run::sql_and_export(&target, every_min, runs, data.as_deref()).await;
            let mut md = String::new();
            report::sql_section(&mut md, &report);
            eprintln!("{md}");
            println!("{}", serde_json::to_string_pretty(&report).expect("JSON"));
        }
        Command::Jfr {
            target,
            seconds,
            record_seconds,
        } => {
            let stamp = now_nanos() / 1_000_000_000;
            let out = target.out.join(format!("{stamp}-jfr"));
            let report = jfr::jfr_ingest(&target.server, &out, seconds, record_seconds).await;
            let _ = std::fs::remove_dir_all(&out);
            let mut md = String::new();
            report::jfr_section(&mut md, &report);
            eprintln!("{md}");
            println!("{}", serde_json::to_string_pretty(&report).expect("JSON"));
        }
        Command::Cadence(args) => {
            let report = cadence::cadence(&args).await;
            let mut md = String::new();
            report::cadence_section(&mut md, &report);
            eprintln!("{md}");
            println!("{}", serde_json::to_string_pretty(&report).expect("JSON"));
        }
        Command::LoadHistory { target, every_min } => {
            let report = run::history_memory(&target, every_min).await;
            println!("{}", serde_json::to_string_pretty(&report).expect("JSON"));
        }
    }
}

pub(crate) fn now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}
