//! The one-command benchmark: starts the release server on a private data directory, then
//!
//! 1. decodes the payloads without ingesting them (gunzip + protobuf parse: the reference of the
//!    ingest phase);
//! 2. pushes at rising concurrency until throughput stops growing, per core of the server;
//! 3. pushes seven days of fleet history, restarts the server so everything is in blocks, and
//!    measures bytes on disk per sample next to the gzipped input;
//! 4. times flame graphs over 1 h, 24 h and 7 d, `SelectSeries`, `LabelValues` and `Series`;
//! 5. has DuckDB run the same flame-graph merge and series over the same block files;
//! 6. after compaction, asks the top-functions and totals-over-time analyses as SQL through
//!    Flight SQL, through the querier API and of DuckDB, and exports a day to Delta Lake and
//!    Parquet with `profusion export` (see `sql.rs`);
//! 7. pushes a real JDK recording as JFR uploads, next to pprof pushes (see `jfr.rs`);
//! 8. loads a day (a week with `--large`) at agent cadence and times flame graphs and series
//!    over it next to DuckDB and ClickHouse (see `cadence.rs`);
//!
//! sampling the server's resident memory throughout, and writes `report.json`, `report.md` and
//! two SVG plots.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use profusion_proto::querier::v1::{
    AnalyzeQueryRequest, AnalyzeQueryResponse, SelectMergeStacktracesRequest,
    SelectMergeStacktracesResponse, SelectSeriesRequest, SelectSeriesResponse, SeriesRequest,
    SeriesResponse,
};
use profusion_proto::types::v1::{LabelValuesRequest, LabelValuesResponse};
use profusion_testing::ConnectClient;
use profusion_tests::TestServer;
use prost::Message;
use serde_json::{Value, json};

use crate::push::{PushStats, percentile, push_all};
use crate::workload::{Fleet, FleetShape, GeneratedProfile, Kind, decode_only};

pub(crate) const CPU: &str = "process_cpu:cpu:nanoseconds:cpu:nanoseconds";
pub(crate) const HOUR_MS: i64 = 3_600_000;

#[derive(Debug, Clone, clap::Args)]
pub(crate) struct RunArgs {
    #[command(flatten)]
    target: ServerArgs,
    /// A larger run: more pods, denser history, longer ingest steps.
    #[arg(long, env = "PROFUSION_BENCH_LARGE")]
    large: bool,
    /// Seconds each ingest concurrency step runs.
    #[arg(long, env = "PROFUSION_BENCH_INGEST_SECONDS")]
    ingest_seconds: Option<u64>,
    /// Minutes between two CPU profiles of a pod in the seven days of history.
    #[arg(long, env = "PROFUSION_BENCH_HISTORY_EVERY_MIN")]
    history_every_min: Option<i64>,
    /// Hours of the history at agent cadence (phase 10): 24 by default, a week with `--large`;
    /// fewer for a quicker run whose other phases are what is being measured.
    #[arg(long, env = "PROFUSION_BENCH_CADENCE_HOURS")]
    cadence_hours: Option<u32>,
    /// Seed of the workload.
    #[arg(long, env = "PROFUSION_BENCH_SEED", default_value_t = 1)]
    seed: u64,
}

/// The server a benchmark starts, and where its output goes.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ServerArgs {
    /// The server binary (a release build).
    #[arg(
        long,
        env = "PROFUSION_BENCH_SERVER",
        default_value = "target/release/profusion"
    )]
    pub(crate) server: PathBuf,
    /// Where reports and the server's data go; each run writes a timestamped directory there.
    #[arg(long, env = "PROFUSION_BENCH_OUT", default_value = "bench-results")]
    pub(crate) out: PathBuf,
}

/// Size of a run.
struct Scale {
    services: usize,
    pods: usize,
    /// Minutes between two CPU profiles of a pod in the history (other kinds: 2× and 4×).
    history_every_min: i64,
    ingest_seconds: u64,
    query_runs: usize,
}

/// The flags every server of the benchmark runs with.
pub(crate) const SERVER_FLAGS: &[&str] = &[
    "--validation.reject-older-than=0s",
    "--validation.reject-newer-than=0s",
    "--distributor.ingestion-rate-limit-mb=0",
    // A fleet of any size: the benchmark measures speed, not the series limit.
    "--ingester.max-global-series-per-tenant=0",
    "--querier.max-query-length=0s",
    "--querier.max-query-lookback=0s",
];

/// [`SERVER_FLAGS`] and `extra`, for a start or a restart.
pub(crate) fn server_flags<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    SERVER_FLAGS.iter().chain(extra).copied().collect()
}

/// The server under test, started as the end-to-end tests start it, with the flags a
/// benchmark needs and `extra`.
pub(crate) fn start_server(binary: &Path, data: &Path, extra: &[&str]) -> TestServer {
    TestServer::configure()
        .binary(binary)
        .data_dir(data)
        .log_level("warn")
        .stop_timeout(Duration::from_secs(600))
        .args(&server_flags(extra))
        .spawn()
}

/// The server's `/metrics` exposition ("" when it does not answer), without blocking the
/// runtime.
async fn exposition(url: &str) -> String {
    match reqwest::get(format!("{url}/metrics")).await {
        Ok(reply) => reply.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// One sample of the server's `/metrics` (0 when absent).
pub(crate) async fn metric(url: &str, sample: &str) -> f64 {
    profusion_tests::metric_sample(&exposition(url).await, sample)
}

/// Object-store requests the store-gateway has sent, every operation.
async fn store_requests(url: &str) -> f64 {
    profusion_tests::metric_sum(
        &exposition(url).await,
        "profusion_store_gateway_object_store_requests_total",
        "operation",
        &["get", "head", "list", "other"],
    )
}

/// User plus system CPU seconds the server has used.
pub(crate) fn cpu_seconds(server: &TestServer) -> f64 {
    proc_cpu_seconds(server.pid())
}

fn proc_cpu_seconds(pid: u32) -> f64 {
    stat_cpu_seconds(&format!("/proc/{pid}/stat"), 11)
}

/// CPU seconds from a `/proc/<pid>/stat` file: the sum of the two clock-tick fields at
/// `first` and `first + 1` after the process name (11: its own user and system time; 13:
/// those of its children that have ended and been waited for).
pub(crate) fn stat_cpu_seconds(path: &str, first: usize) -> f64 {
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks: f64 = fields
        .get(first)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
        + fields
            .get(first + 1)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
    ticks / 100.0
}

fn proc_rss_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Peak resident memory of the server per phase, sampled every 50 ms.
#[derive(Clone)]
pub(crate) struct RssSampler {
    pid: Arc<AtomicU64>,
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl RssSampler {
    pub(crate) fn start() -> Self {
        let s = Self {
            pid: Arc::new(AtomicU64::new(0)),
            peak: Arc::new(AtomicU64::new(0)),
            stop: Arc::new(AtomicBool::new(false)),
        };
        let t = s.clone();
        std::thread::spawn(move || {
            while !t.stop.load(Ordering::Relaxed) {
                let pid = t.pid.load(Ordering::Relaxed) as u32;
                if pid != 0 {
                    t.peak.fetch_max(proc_rss_bytes(pid), Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        s
    }

    pub(crate) fn watch(&self, pid: u32) {
        self.pid.store(u64::from(pid), Ordering::Relaxed);
    }

    /// The peak since the last call.
    pub(crate) fn take_peak(&self) -> u64 {
        self.peak.swap(0, Ordering::Relaxed)
    }
}

fn mb(bytes: f64) -> f64 {
    bytes / 1e6
}

/// A querier-API call the benchmark cannot go on without.
pub(crate) async fn rpc<Req: Message, Resp: Message + Default>(
    client: &ConnectClient,
    method: &str,
    req: &Req,
) -> Resp {
    client
        .querier(method, req)
        .await
        .unwrap_or_else(|e| panic!("{method}: {e}"))
}

/// p50 and p95 seconds of `runs` timed calls (the first one cold).
pub(crate) async fn latency<F, Fut>(runs: usize, mut f: F) -> (f64, f64, f64)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs.max(1) {
        let t = Instant::now();
        f().await;
        times.push(t.elapsed().as_secs_f64());
    }
    let cold = times[0];
    times.sort_by(f64::total_cmp);
    let pick = |p: f64| times[((times.len() as f64 - 1.0) * p).round() as usize];
    (pick(0.5), pick(0.95), cold)
}

pub(crate) async fn run(args: RunArgs) {
    let scale = if args.large {
        Scale {
            services: 10,
            pods: 20,
            history_every_min: args.history_every_min.unwrap_or(5),
            ingest_seconds: args.ingest_seconds.unwrap_or(15),
            query_runs: 11,
        }
    } else {
        Scale {
            services: 4,
            pods: 5,
            history_every_min: args.history_every_min.unwrap_or(10),
            ingest_seconds: args.ingest_seconds.unwrap_or(5),
            query_runs: 7,
        }
    };
    let stamp = crate::now_nanos() / 1_000_000_000;
    let out = args.target.out.join(stamp.to_string());
    std::fs::create_dir_all(&out).expect("report directory");
    let data = out.join("data");
    let fleet = Fleet::new(FleetShape {
        seed: args.seed,
        services: scale.services,
        pods: scale.pods,
        ..FleetShape::default()
    });
    let rss = RssSampler::start();
    let mut report = serde_json::Map::new();
    report.insert("machine".into(), machine());
    report.insert(
        "workload".into(),
        json!({"seed": args.seed, "services": scale.services, "pods": scale.pods,
               "cpu_samples_per_profile": fleet.shape().samples,
               "history_days": 7, "history_cpu_every_min": scale.history_every_min}),
    );

    // 1–2. The decode-only reference, then ingest at rising concurrency.
    let payloads = cpu_payloads(&fleet, 200);
    let (decode, ingest) = measure_ingest(
        &args.target.server,
        &out,
        &payloads,
        scale.ingest_seconds,
        &rss,
    )
    .await;
    report.insert("decode_only".into(), decode);
    report.insert("ingest".into(), ingest);

    // 3. Push latency while the head flushes, against pushes while it does not.
    eprintln!("[3/10] push latency while flushes write blocks");
    let flush_report = push_latency_during_flushes(
        &args.target.server,
        &out,
        &payloads,
        scale.ingest_seconds * 4,
    )
    .await;
    report.insert("push_during_flush".into(), flush_report);

    // 4. Seven days of history, then everything into blocks.
    eprintln!("[4/10] seven days of fleet history");
    let mut server = start_server(&args.target.server, &data, &[]);
    rss.watch(server.pid());
    let loaded = load_history(&server, &fleet, scale.history_every_min).await;
    let (end, history, cpu_pushed) = (loaded.end, loaded.pushes, loaded.cpu_pushed);
    assert_eq!(history.failures, 0, "history pushes failed");
    eprintln!(
        "  {} profiles pushed; restarting so the head flushes into blocks",
        history.profiles
    );
    let history_peak = rss.take_peak();
    server.stop();
    server.restart();
    let url = server.url("");
    rss.watch(server.pid());
    rss.take_peak();
    let (block_bytes, block_samples, blocks) = block_stats(&data.join("objects"));
    let pprof_samples = history.samples.max(1);
    report.insert(
        "storage".into(),
        json!({
            "profiles": history.profiles,
            "pprof_samples": history.samples,
            "gzipped_input_bytes": history.body_bytes,
            "gzipped_input_bytes_per_pprof_sample": history.body_bytes as f64 / pprof_samples as f64,
            "blocks": blocks,
            "block_bytes": block_bytes,
            "stored_sample_rows": block_samples,
            "block_bytes_per_stored_sample": block_bytes as f64 / block_samples.max(1) as f64,
            "block_bytes_per_pprof_sample": block_bytes as f64 / pprof_samples as f64,
            "ratio_block_bytes_to_gzipped_input": block_bytes as f64 / history.body_bytes.max(1) as f64,
            "peak_rss_bytes_while_loading": history_peak,
            "peak_head_bytes_while_loading": loaded.peak_head_bytes,
            // The server's default --ingester.max-head-bytes, which the history runs with.
            "max_head_bytes": 512u64 << 20,
        }),
    );

    // 5. Queries.
    eprintln!("[5/10] queries over 1 h, 24 h and 7 d");
    let end_ms = end / 1_000_000;
    let mut queries = measure_queries(&url, end_ms, &cpu_pushed, &scale).await;
    let query_peak = rss.take_peak();
    server.stop();

    // 6. DuckDB over the same block files.
    eprintln!("[6/10] DuckDB over the same block files");
    let duck_ran = compare_with_duckdb(&data.join("objects"), &mut queries);
    report.insert("queries".into(), Value::Array(queries));

    // 7. The compactor merges the history; the same queries and DuckDB again.
    eprintln!("[7/10] compaction, then the same queries");
    let compaction_s = compact_everything(&mut server).await;
    // Restarted with the usual flags: a cold cache, and a compactor with nothing left to do.
    server.restart_with(&server_flags(&[]));
    let url = server.url("");
    let (compacted_bytes, compacted_rows, compacted_blocks) = block_stats(&data.join("objects"));
    eprintln!("  {blocks} blocks became {compacted_blocks} in {compaction_s:.0} s");
    let mut compacted = measure_queries(&url, end_ms, &cpu_pushed, &scale).await;

    // 8. SQL analyses against their references, and the export, on the compacted blocks.
    eprintln!("[8/10] SQL analyses by Flight SQL, the querier API and DuckDB; export");
    let objects = data.join("objects");
    let analyses = crate::sql::analyses(&url, &objects, end_ms, scale.query_runs).await;
    server.stop();
    let block_bytes_per_row = compacted_bytes as f64 / compacted_rows.max(1) as f64;
    let export = crate::sql::export(&args.target.server, &data, &out, end, block_bytes_per_row);
    report.insert(
        "sql".into(),
        json!({"analyses": analyses, "export": export}),
    );

    // 9. JFR uploads of a real JDK recording, next to pprof pushes, on a fresh server.
    eprintln!("[9/10] JFR ingest next to pprof");
    let jfr = crate::jfr::jfr_ingest(&args.target.server, &out, scale.ingest_seconds * 4, 10).await;
    report.insert("jfr".into(), jfr);

    // 10. A history at agent cadence: a day, or a week with --large, of the default fleet.
    eprintln!("[10/10] a history at agent cadence, next to DuckDB and ClickHouse");
    let cadence = crate::cadence::cadence(&crate::cadence::CadenceArgs {
        target: args.target.clone(),
        hours: args
            .cadence_hours
            .unwrap_or(if args.large { 168 } else { 24 }),
        every_s: 15,
        runs: scale.query_runs,
        data: None,
        keep: false,
        pods_per_service: crate::workload::FleetShape::default().pods,
        seed: args.seed,
        server_args: Vec::new(),
    })
    .await;
    report.insert("cadence".into(), cadence);
    compare_with_duckdb(&data.join("objects"), &mut compacted);
    report.insert(
        "after_compaction".into(),
        json!({"blocks": compacted_blocks, "block_bytes": compacted_bytes,
               "compaction_s": compaction_s, "queries": compacted}),
    );
    report.insert(
        "peak_rss_bytes".into(),
        json!({"ingest": report["ingest"]["peak_rss_bytes"], "loading_history": history_peak, "queries": query_peak}),
    );
    if !duck_ran {
        report.insert(
            "duckdb".into(),
            json!("not run: set PROFUSION_PYTHON (eval \"$(scripts/install-test-clients)\")"),
        );
    }
    let report = Value::Object(report);
    std::fs::write(
        out.join("report.json"),
        serde_json::to_string_pretty(&report).expect("JSON"),
    )
    .expect("write report.json");
    crate::report::write(&out, &report);
    let _ = std::fs::remove_dir_all(&data);
    eprintln!("report: {}", out.join("report.md").display());
    println!("{}", out.display());
}

/// Phases 1 and 2: decodes `payloads` without ingesting them (the reference), then pushes them
/// to a server of its own at rising concurrency until throughput stops growing. Returns the
/// reference's and the sweep's reports; `profusion-bench ingest` runs only this.
pub(crate) async fn measure_ingest(
    server_binary: &Path,
    out: &Path,
    payloads: &[GeneratedProfile],
    step_seconds: u64,
    rss: &RssSampler,
) -> (Value, Value) {
    // 1. The reference: decode only.
    eprintln!("[1/10] decode-only baseline");
    let raw: usize = payloads.iter().map(|p| p.raw_bytes).sum();
    let gz: usize = payloads.iter().map(|p| p.body.len()).sum();
    let profile_mb = mb(raw as f64 / payloads.len() as f64);
    // Profiles per second of one core doing nothing but gunzip and parse, for `seconds`.
    let reference = |seconds: f64| {
        let t = Instant::now();
        let mut rounds = 0;
        while t.elapsed().as_secs_f64() < seconds || rounds == 0 {
            for p in payloads {
                std::hint::black_box(decode_only(&p.body));
            }
            rounds += 1;
        }
        (payloads.len() * rounds) as f64 / t.elapsed().as_secs_f64()
    };
    // The best of three 2 s runs: the sweep below reports its best step, so the reference is
    // a best too, and one slow run on a noisy machine does not flatter the ratio.
    let decode_profiles = (0..3).map(|_| reference(2.0)).fold(0.0, f64::max);
    let decode_mb = profile_mb * decode_profiles;
    let decode = json!({"profiles_per_s_per_core": decode_profiles, "mb_per_s_per_core": decode_mb,
               "avg_pprof_bytes": raw / payloads.len(), "avg_gzipped_bytes": gz / payloads.len()});
    eprintln!("  {decode_profiles:.0} profiles/s, {decode_mb:.1} MB/s per core");

    // 2. Ingest at rising concurrency.
    eprintln!("[2/10] ingest over loopback at rising concurrency");
    // Its own data directory, so the storage figures below hold only the history.
    let sweep_data = out.join("data-ingest");
    let mut server = start_server(server_binary, &sweep_data, &[]);
    let url = server.url("");
    rss.watch(server.pid());
    rss.take_peak();
    let mut steps = Vec::new();
    let mut best = 0.0f64;
    let mut flat = 0;
    for concurrency in [1usize, 2, 4, 8, 16, 32, 64] {
        // The reference again, just before the step with the server idle: this VM's speed
        // drifts by a third within minutes, so each step is compared with its neighbour.
        let step_reference_mb = profile_mb * reference(1.0);
        let cpu_before = cpu_seconds(&server);
        let payloads = payloads.to_vec();
        let mut i = 0usize;
        let stats: PushStats = push_all(
            &url,
            None,
            concurrency,
            None,
            Some(Instant::now() + Duration::from_secs(step_seconds)),
            None,
            move || {
                i += 1;
                Some(payloads[i % payloads.len()].clone())
            },
        )
        .await;
        let cpu = (cpu_seconds(&server) - cpu_before).max(0.01);
        let wall = stats.wall.as_secs_f64();
        let per_s = stats.profiles as f64 / wall;
        let step = json!({
            "concurrency": concurrency,
            "profiles_per_s": per_s,
            "profiles_per_s_per_core": stats.profiles as f64 / cpu,
            "mb_per_s_per_core": mb(stats.raw_bytes as f64) / cpu,
            "reference_mb_per_s_per_core": step_reference_mb,
            "ratio_to_reference": mb(stats.raw_bytes as f64) / cpu / step_reference_mb,
            "gzipped_mb_per_s": mb(stats.body_bytes as f64) / wall,
            "server_cores_busy": cpu / wall,
            "p50_ms": stats.percentile(0.5).as_secs_f64() * 1e3,
            "p99_ms": stats.percentile(0.99).as_secs_f64() * 1e3,
            "failures": stats.failures,
        });
        eprintln!(
            "  concurrency {concurrency:>2}: {per_s:.0} profiles/s, {:.0} per core ({:.2} × the reference run just before), p50 {:.1} ms, p99 {:.1} ms",
            stats.profiles as f64 / cpu,
            mb(stats.raw_bytes as f64) / cpu / step_reference_mb,
            stats.percentile(0.5).as_secs_f64() * 1e3,
            stats.percentile(0.99).as_secs_f64() * 1e3
        );
        steps.push(step);
        // Saturated once two steps in a row add less than 5 %.
        if per_s < best * 1.05 {
            flat += 1;
            if flat == 2 {
                break;
            }
        } else {
            flat = 0;
        }
        best = best.max(per_s);
    }
    let ingest_peak = rss.take_peak();
    let best_step = |key: &str| {
        steps
            .iter()
            .max_by(|a, b| {
                a[key]
                    .as_f64()
                    .unwrap_or(0.0)
                    .total_cmp(&b[key].as_f64().unwrap_or(0.0))
            })
            .cloned()
            .unwrap_or(Value::Null)
    };
    let best = best_step("profiles_per_s_per_core");
    let ingest = json!({"steps": steps,
               "ratio_mb_per_core_to_decode_only":
                   best["mb_per_s_per_core"].as_f64().unwrap_or(0.0) / decode_mb,
               "best": best,
               "best_ratio_to_step_reference": best_step("ratio_to_reference")["ratio_to_reference"],
               "peak_rss_bytes": ingest_peak});

    server.stop();
    let _ = std::fs::remove_dir_all(&sweep_data);
    (decode, ingest)
}

/// Latencies of every query kind over 1 h, 24 h and 7 d before `end_ms`, with the blocks each
/// window reads and the object-store requests of a flame graph cold and warm.
async fn measure_queries(
    url: &str,
    end_ms: i64,
    cpu_pushed: &[(i64, usize)],
    scale: &Scale,
) -> Vec<Value> {
    let client = ConnectClient::new(url);
    let mut queries = Vec::new();
    for (label, hours) in [("1h", 1), ("24h", 24), ("7d", 168)] {
        let start_ms = end_ms - hours * HOUR_MS;
        let samples: usize = cpu_pushed
            .iter()
            .filter(|(t, _)| *t / 1_000_000 >= start_ms && *t / 1_000_000 <= end_ms)
            .map(|(_, n)| n)
            .sum();
        let flame = |selector: &'static str| {
            let client = &client;
            move || async move {
                let r = flame_graph(client, selector, start_ms, end_ms).await;
                std::hint::black_box(r.flamegraph.map(|f| f.total));
            }
        };
        // What the catalog lists for the window, and what the store-gateway fetches the first
        // time (cold, as far as earlier windows did not warm it) and the second time.
        let analysis: AnalyzeQueryResponse = rpc(
            &client,
            "AnalyzeQuery",
            &AnalyzeQueryRequest {
                start: start_ms,
                end: end_ms,
                query: format!("{CPU}{{}}"),
            },
        )
        .await;
        let stored = analysis
            .query_scopes
            .iter()
            .filter(|s| s.component_type == "Object storage");
        let (blocks, block_bytes) = stored.fold((0, 0), |(n, b), s| {
            (
                n + s.block_count,
                b + s.index_bytes + s.profile_bytes + s.symbol_bytes,
            )
        });
        let before = store_requests(url).await;
        flame("{}")().await;
        let after_cold = store_requests(url).await;
        flame("{}")().await;
        let after_warm = store_requests(url).await;
        let (all50, all95, all_cold) = latency(scale.query_runs, flame("{}")).await;
        let (one50, one95, _) =
            latency(scale.query_runs, flame(r#"{service_name="shop-1"}"#)).await;
        let step = ((hours * 3600) as f64 / 300.0).max(15.0);
        let (ser50, ser95, _) = latency(scale.query_runs, || async {
            let r = cpu_by_service(&client, start_ms, end_ms, step).await;
            std::hint::black_box(r.series.len());
        })
        .await;
        let (lv50, lv95, _) = latency(scale.query_runs, || async {
            let _: LabelValuesResponse = rpc(
                &client,
                "LabelValues",
                &LabelValuesRequest {
                    name: "pod".into(),
                    matchers: vec![],
                    start: start_ms,
                    end: end_ms,
                },
            )
            .await;
        })
        .await;
        let (se50, se95, _) = latency(scale.query_runs, || async {
            let _: SeriesResponse = rpc(
                &client,
                "Series",
                &SeriesRequest {
                    matchers: vec![],
                    label_names: vec!["service_name".into(), "__profile_type__".into()],
                    start: start_ms,
                    end: end_ms,
                },
            )
            .await;
        })
        .await;
        eprintln!(
            "  {label}: {samples} CPU samples; flame graph p50 {:.0} ms, one service {:.0} ms, series {:.0} ms",
            all50 * 1e3,
            one50 * 1e3,
            ser50 * 1e3
        );
        queries.push(json!({
            "window": label, "hours": hours, "start_ms": start_ms, "end_ms": end_ms,
            "cpu_samples": samples,
            "blocks": blocks, "block_bytes": block_bytes,
            "object_store_requests": {"cold": after_cold - before, "warm": after_warm - after_cold},
            "flame_graph": {"p50_s": all50, "p95_s": all95, "cold_s": all_cold},
            "flame_graph_one_service": {"p50_s": one50, "p95_s": one95},
            "select_series": {"p50_s": ser50, "p95_s": ser95, "step_s": step},
            "label_values": {"p50_s": lv50, "p95_s": lv95},
            "series": {"p50_s": se50, "p95_s": se95},
        }));
    }
    queries
}

/// Runs the same queries in DuckDB and ClickHouse (chdb) over the block files in `objects` and
/// records each window's times and Profusion's ratios to them; false when DuckDB could not run.
fn compare_with_duckdb(objects: &Path, queries: &mut [Value]) -> bool {
    let mut duck_ran = false;
    for engine in ["duckdb", "chdb"] {
        let Some(theirs) = other_engine(engine, objects, queries) else {
            continue;
        };
        duck_ran |= engine == "duckdb";
        for q in queries.iter_mut() {
            let window = q["window"].as_str().unwrap_or_default().to_owned();
            let Some(t) = theirs.get(&window) else {
                continue;
            };
            let ratio = |ours: &Value, theirs: &Value| {
                ours.as_f64().zip(theirs.as_f64()).map(|(a, b)| a / b)
            };
            let ratios: Vec<(String, Value)> = [
                ("flame_graph", &q["flame_graph"], "flame"),
                ("series", &q["select_series"], "series"),
                ("label_values", &q["label_values"], "label_values"),
                ("series_sets", &q["series"], "series_sets"),
            ]
            .into_iter()
            .map(|(name, ours, theirs)| {
                let r = ratio(&ours["p50_s"], &t[format!("{theirs}_p50_s")]);
                (format!("ratio_{name}_to_{engine}"), json!(r))
            })
            .collect();
            q[engine] = t.clone();
            for (key, r) in ratios {
                q[key] = r;
            }
        }
    }
    duck_ran
}

/// Restarts the stopped `server` with a compactor that merges at once and deletes sources at
/// once, waits until it has compacted everything, stops it; the seconds that took.
pub(crate) async fn compact_everything(server: &mut TestServer) -> f64 {
    server.restart_with(&server_flags(&[
        "--compactor.compaction-interval=1s",
        "--compactor.first-level-compaction-wait-period=0s",
        "--compactor.deletion-delay=0s",
    ]));
    let started = Instant::now();
    wait_until_compacted(&server.url("")).await;
    let seconds = started.elapsed().as_secs_f64();
    server.stop();
    seconds
}

/// Waits until the compactor has merged everything it can and deleted every source block's
/// files (the deletion delay is zero), so the files on disk are exactly the compacted blocks.
async fn wait_until_compacted(url: &str) {
    use profusion_tests::{metric_sample, metric_sum};
    // Cycles and jobs of every outcome, from one reading of the metrics.
    let progress = |text: &str| {
        (
            metric_sample(text, "profusion_compactor_cycles_total"),
            metric_sum(
                text,
                "profusion_compactor_jobs_total",
                "outcome",
                &["done", "skipped", "conflict", "failed"],
            ),
        )
    };
    let (mut since_cycle, mut since_jobs) = progress(&exposition(url).await);
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let text = exposition(url).await;
        let (c, j) = progress(&text);
        let compacted = metric_sample(&text, "profusion_compactor_blocks_compacted_total");
        let deleted = metric_sample(&text, "profusion_compactor_blocks_deleted_total");
        if j != since_jobs {
            (since_cycle, since_jobs) = (c, j);
        } else if c >= since_cycle + 3.0 && deleted >= compacted {
            return;
        }
    }
}

/// `n` CPU profiles of the fleet's pods in turn, timed now: the pushes of the ingest phases.
pub(crate) fn cpu_payloads(fleet: &Fleet, n: usize) -> Vec<GeneratedProfile> {
    let now = crate::now_nanos();
    let pods: Vec<(usize, usize)> = fleet.pods().collect();
    (0..n)
        .map(|i| {
            let (s, p) = pods[i % pods.len()];
            fleet.profile(s, p, Kind::Cpu, now + i as i64)
        })
        .collect()
}

/// What loading the history gave: the end of its time range, the push statistics, the
/// (time, samples) of every CPU profile pushed, and the head's largest size on the way.
pub(crate) struct LoadedHistory {
    pub(crate) end: i64,
    pub(crate) pushes: PushStats,
    pub(crate) cpu_pushed: Vec<(i64, usize)>,
    pub(crate) peak_head_bytes: f64,
}

/// Pushes seven days of the fleet's history into `server` as fast as it takes them: each
/// `every_min` window a CPU profile from every pod, memory every 2nd window, goroutine and
/// mutex every 4th.
pub(crate) async fn load_history(
    server: &TestServer,
    fleet: &Fleet,
    every_min: i64,
) -> LoadedHistory {
    let url = server.url("");
    let end = crate::now_nanos();
    let step_ns = every_min * 60_000_000_000;
    let windows = (7 * 24 * 60 / every_min) as usize;
    let pods: Vec<(usize, usize)> = fleet.pods().collect();
    let mut plan: Vec<(usize, usize, Kind, i64)> = Vec::new();
    for w in 0..windows {
        let time = end - (windows - w) as i64 * step_ns;
        for &(s, p) in &pods {
            plan.push((s, p, Kind::Cpu, time));
            if w % 2 == 0 {
                plan.push((s, p, Kind::Memory, time));
            }
            if w % 4 == 0 {
                plan.push((s, p, Kind::Goroutine, time));
                plan.push((s, p, Kind::Mutex, time));
            }
        }
    }
    let history_fleet = fleet.clone();
    let mut next = plan.into_iter();
    let cpu_pushed: Arc<std::sync::Mutex<Vec<(i64, usize)>>> = Arc::default();
    let record = Arc::clone(&cpu_pushed);
    // The head's size, polled while the pushes run.
    let stop = Arc::new(AtomicBool::new(false));
    let head_watch = {
        let (stop, url) = (Arc::clone(&stop), url.clone());
        tokio::spawn(async move {
            let mut peak = 0f64;
            while !stop.load(Ordering::Relaxed) {
                peak = peak.max(metric(&url, "profusion_head_bytes").await);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            peak
        })
    };
    let pushes = push_all(&url, None, 8, None, None, Some("history"), move || {
        let (s, p, kind, time) = next.next()?;
        let profile = history_fleet.profile(s, p, kind, time);
        if kind == Kind::Cpu {
            record
                .lock()
                .expect("record lock")
                .push((time, profile.samples));
        }
        Some(profile)
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let peak_head_bytes = head_watch.await.unwrap_or(0.0);
    let cpu_pushed = cpu_pushed.lock().expect("record lock").clone();
    LoadedHistory {
        end,
        pushes,
        cpu_pushed,
        peak_head_bytes,
    }
}

/// The SQL phase alone (`profusion-bench sql`): seven days of history in blocks, the SQL
/// analyses next to the querier API and DuckDB, then the export.
pub(crate) async fn sql_and_export(
    target: &ServerArgs,
    every_min: i64,
    runs: usize,
    reuse: Option<&Path>,
) -> Value {
    let stamp = crate::now_nanos() / 1_000_000_000;
    let out = target.out.join(format!("{stamp}-sql"));
    let data = reuse.map_or_else(|| out.join("data"), Path::to_path_buf);
    let objects = data.join("objects");
    // No compaction during the run: DuckDB reads every block file, and a compacted block's
    // sources stay on disk for the deletion delay, so it would count their rows twice.
    let mut server = start_server(
        &target.server,
        &data,
        &["--compactor.compaction-interval=1000h"],
    );
    let end = match reuse {
        // A history loaded by an earlier run: it ends with its newest profile.
        Some(_) => newest_profile_nanos(&objects),
        None => {
            let loaded = load_history(&server, &Fleet::new(FleetShape::default()), every_min).await;
            assert_eq!(loaded.pushes.failures, 0, "history pushes failed");
            eprintln!("restarting so the head flushes into blocks");
            server.stop();
            server.restart();
            loaded.end
        }
    };
    let (block_bytes, rows, blocks) = block_stats(&objects);
    let analyses = crate::sql::analyses(&server.url(""), &objects, end / 1_000_000, runs).await;
    server.stop();
    let export = crate::sql::export(
        &target.server,
        &data,
        &out,
        end,
        block_bytes as f64 / rows.max(1) as f64,
    );
    let _ = std::fs::remove_dir_all(&out);
    json!({"blocks": blocks, "block_bytes": block_bytes, "stored_sample_rows": rows,
           "analyses": analyses, "export": export})
}

/// The newest profile time of the blocks under `objects` (their `meta.json`).
fn newest_profile_nanos(objects: &Path) -> i64 {
    let mut newest = 0i64;
    for tenant in std::fs::read_dir(objects).into_iter().flatten().flatten() {
        for block in std::fs::read_dir(tenant.path().join("blocks"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let meta: Value = std::fs::read(block.path().join("meta.json"))
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or(Value::Null);
            newest = newest.max(meta["max_time_nanos"].as_i64().unwrap_or(0));
        }
    }
    newest
}

/// Memory while loading the history alone (`profusion-bench load-history`): the server's
/// peak resident memory and the head's largest size next to its limit, with how the pushes
/// fared.
pub(crate) async fn history_memory(target: &ServerArgs, every_min: i64) -> Value {
    let stamp = crate::now_nanos() / 1_000_000_000;
    let data = target.out.join(format!("{stamp}-history"));
    let rss = RssSampler::start();
    let mut server = start_server(&target.server, &data, &[]);
    // What the process holds before any data: the floor under the head.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_rss = proc_rss_bytes(server.pid());
    rss.watch(server.pid());
    let loaded = load_history(&server, &Fleet::new(FleetShape::default()), every_min).await;
    let peak_rss = rss.take_peak();
    let url = server.url("");
    let waits = metric(&url, "profusion_ingester_head_full_waits_total").await;
    let flushes = metric(&url, "profusion_ingester_flushes_total").await;
    server.stop();
    let _ = std::fs::remove_dir_all(&data);
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let max_head_bytes = 512u64 << 20;
    json!({
        "profiles": loaded.pushes.profiles,
        "failures": loaded.pushes.failures,
        "seconds": loaded.pushes.wall.as_secs_f64(),
        "push_p50_ms": ms(loaded.pushes.percentile(0.5)),
        "push_p99_ms": ms(loaded.pushes.percentile(0.99)),
        "flushes": flushes,
        "head_full_waits": waits,
        "max_head_bytes": max_head_bytes,
        "peak_head_bytes": loaded.peak_head_bytes,
        "idle_rss_bytes": idle_rss,
        "peak_rss_bytes": peak_rss,
        "ratio_peak_rss_to_max_head_bytes": peak_rss as f64 / max_head_bytes as f64,
    })
}

/// Head size of the flush phase: small, so that a flush (at half of it) starts every second or
/// so while it pushes, and about as much time is spent flushing as not.
const FLUSH_PHASE_HEAD_BYTES: u64 = 16 << 20;

/// Pushes at a steady concurrency to a server whose head flushes every few seconds, watching
/// its `profusion_ingester_flush_in_progress` gauge, and compares the latency of pushes that
/// overlapped a flush with the others'.
pub(crate) async fn push_latency_during_flushes(
    binary: &Path,
    out: &Path,
    payloads: &[GeneratedProfile],
    seconds: u64,
) -> Value {
    let data = out.join("data-flush");
    let head = format!("--ingester.max-head-bytes={FLUSH_PHASE_HEAD_BYTES}");
    let mut server = start_server(
        binary,
        &data,
        &[&head, "--ingester.flush-check-interval=50ms"],
    );
    let url = server.url("");
    // When the gauge was seen at 1: a flush ran then.
    let seen: Arc<std::sync::Mutex<Vec<(Instant, bool)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (seen, stop, url) = (Arc::clone(&seen), Arc::clone(&stop), url.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let at = Instant::now();
                let on = metric(&url, "profusion_ingester_flush_in_progress").await > 0.0;
                seen.lock().expect("flush watch").push((at, on));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let payloads = payloads.to_vec();
    let mut i = 0usize;
    let stats = push_all(
        &url,
        None,
        4,
        None,
        Some(Instant::now() + Duration::from_secs(seconds)),
        Some("pushing"),
        move || {
            i += 1;
            Some(payloads[i % payloads.len()].clone())
        },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    let _ = watcher.await;
    let flushes = metric(&url, "profusion_ingester_flushes_total").await;
    server.stop();
    let _ = std::fs::remove_dir_all(&data);
    // Intervals between a poll that saw a flush and the next poll that did not.
    let seen = seen.lock().expect("flush watch").clone();
    let mut flushing: Vec<(Instant, Instant)> = Vec::new();
    for pair in seen.windows(2) {
        if pair[0].1 {
            match flushing.last_mut() {
                Some(last) if last.1 >= pair[0].0 => last.1 = pair[1].0,
                _ => flushing.push((pair[0].0, pair[1].0)),
            }
        }
    }
    let (mut during, mut outside): (Vec<Duration>, Vec<Duration>) = (Vec::new(), Vec::new());
    for &(start, took) in &stats.pushes {
        let end = start + took;
        if flushing.iter().any(|&(a, b)| start < b && a < end) {
            during.push(took);
        } else {
            outside.push(took);
        }
    }
    during.sort_unstable();
    outside.sort_unstable();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    eprintln!(
        "  {flushes} flushes; p99 {:.1} ms during a flush ({} pushes), {:.1} ms otherwise ({} pushes)",
        ms(percentile(&during, 0.99)),
        during.len(),
        ms(percentile(&outside, 0.99)),
        outside.len()
    );
    json!({
        "flushes": flushes,
        "max_head_bytes": FLUSH_PHASE_HEAD_BYTES,
        "pushes_during_flush": during.len(),
        "pushes_otherwise": outside.len(),
        "p50_ms_during_flush": ms(percentile(&during, 0.5)),
        "p99_ms_during_flush": ms(percentile(&during, 0.99)),
        "p50_ms_otherwise": ms(percentile(&outside, 0.5)),
        "p99_ms_otherwise": ms(percentile(&outside, 0.99)),
        "ratio_p99_during_flush_to_otherwise":
            ms(percentile(&during, 0.99)) / ms(percentile(&outside, 0.99)).max(1e-9),
        "failures": stats.failures,
    })
}

/// Total bytes of the block files, stored sample rows (from each block's `meta.json`) and
/// block count.
pub(crate) fn block_stats(objects: &Path) -> (u64, u64, u64) {
    let (mut bytes, mut samples, mut blocks) = (0u64, 0u64, 0u64);
    let Ok(tenants) = std::fs::read_dir(objects) else {
        return (0, 0, 0);
    };
    for tenant in tenants.flatten() {
        let Ok(dirs) = std::fs::read_dir(tenant.path().join("blocks")) else {
            continue;
        };
        for block in dirs.flatten() {
            blocks += 1;
            for file in std::fs::read_dir(block.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                bytes += file.metadata().map_or(0, |m| m.len());
            }
            let meta: Value = std::fs::read(block.path().join("meta.json"))
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or(Value::Null);
            samples += meta["num_samples"].as_u64().unwrap_or(0);
        }
    }
    (bytes, samples, blocks)
}

/// The flame-graph merge (every merged stack named by its functions, as a flame graph needs),
/// the per-service series of CPU totals, the values of `pod` and the (service, profile type)
/// series sets, in DuckDB or ClickHouse (chdb) over the block files; prints per window each
/// query's cold, p50 and p95 times and its answer's size and total. A window may name the
/// queries it wants (`queries`); else all four run.
pub(crate) const ENGINES_SCRIPT: &str = r#"
import json, sys, time
engine, blocks, windows = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
pt = "process_cpu:cpu:nanoseconds:cpu:nanoseconds"
files = lambda table: f"{blocks}/*/blocks/*/{table}.parquet"
if engine == "duckdb":
    import duckdb
    con = duckdb.connect()
    # No progress bar: DuckDB draws it on stdout, where the answer is read as JSON.
    con.execute("SET enable_progress_bar = false")
    run = lambda q: con.execute(q).fetchall()
    def flame(start, end):
        return f"""
        WITH m AS (SELECT stack_hash, sum(value) AS v FROM read_parquet('{files("samples")}')
                   WHERE profile_type = '{pt}' AND time_nanos BETWEEN {start} AND {end} GROUP BY 1),
             st AS (SELECT DISTINCT stack_hash, frame_ids FROM read_parquet('{files("stacks")}')
                    WHERE stack_hash IN (SELECT stack_hash FROM m)),
             fr AS (SELECT DISTINCT frame_id, function_name FROM read_parquet('{files("frames")}')),
             named AS (SELECT st.stack_hash, string_agg(fr.function_name, ';' ORDER BY u.pos) AS stack
                       FROM st, unnest(st.frame_ids) WITH ORDINALITY AS u(frame_id, pos)
                       JOIN fr ON fr.frame_id = u.frame_id GROUP BY 1)
        SELECT count(*), coalesce(sum(v), 0)::BIGINT FROM m JOIN named USING (stack_hash)"""
    def series(start, end, step):
        return f"""
        SELECT count(*), coalesce(sum(t), 0)::BIGINT FROM (
          SELECT service_name, time_nanos // {step} AS s, sum(total_value) AS t
          FROM read_parquet('{files("profiles")}')
          WHERE profile_type = '{pt}' AND time_nanos BETWEEN {start} AND {end} GROUP BY ALL)"""
else:
    import chdb
    run = lambda q: json.loads(chdb.query(q, "JSONCompact").bytes())["data"]
    def flame(start, end):
        return f"""
        WITH m AS (SELECT stack_hash, sum(value) AS v FROM file('{files("samples")}', Parquet)
                   WHERE profile_type = '{pt}' AND time_nanos BETWEEN {start} AND {end}
                   GROUP BY stack_hash),
             st AS (SELECT DISTINCT stack_hash, frame_ids FROM file('{files("stacks")}', Parquet)
                    WHERE stack_hash IN (SELECT stack_hash FROM m)),
             fr AS (SELECT DISTINCT frame_id, function_name FROM file('{files("frames")}', Parquet)),
             u AS (SELECT stack_hash, fid, pos FROM st
                   ARRAY JOIN frame_ids AS fid, arrayEnumerate(frame_ids) AS pos),
             named AS (SELECT u.stack_hash AS stack_hash,
                              arrayStringConcat(arrayMap(x -> x.2, arraySort(x -> x.1,
                                  groupArray((u.pos, fr.function_name)))), ';') AS stack
                       FROM u JOIN fr ON fr.frame_id = u.fid GROUP BY u.stack_hash)
        SELECT count(), toInt64(sum(v)) FROM m JOIN named USING (stack_hash)"""
    def series(start, end, step):
        return f"""
        SELECT count(), toInt64(sum(t)) FROM (
          SELECT service_name, intDiv(time_nanos, {step}) AS s, sum(total_value) AS t
          FROM file('{files("profiles")}', Parquet)
          WHERE profile_type = '{pt}' AND time_nanos BETWEEN {start} AND {end}
          GROUP BY service_name, s)"""
if engine == "duckdb":
    labels = f"""SELECT count(*), 0 FROM (SELECT DISTINCT l.value FROM read_parquet('{files("series")}') s,
                 unnest(s.labels) AS u(l) WHERE l.name = 'pod')"""
    series_sets = f"""SELECT count(*), 0 FROM (SELECT DISTINCT service_name, profile_type
                      FROM read_parquet('{files("series")}'))"""
else:
    labels = f"""SELECT count(), 0 FROM (SELECT DISTINCT l.value FROM file('{files("series")}', Parquet)
                 ARRAY JOIN labels AS l WHERE l.name = 'pod')"""
    series_sets = f"""SELECT count(), 0 FROM (SELECT DISTINCT service_name, profile_type
                      FROM file('{files("series")}', Parquet))"""
out = {}
for w in windows:
    start, end, step = w["start_ms"] * 1000000, w["end_ms"] * 1000000 + 999999, int(w["step_s"] * 1e9)
    res = {}
    wanted = w.get("queries", ["flame", "series", "label_values", "series_sets"])
    queries = [("flame", flame(start, end)), ("series", series(start, end, step)),
               ("label_values", labels), ("series_sets", series_sets)]
    for name, q in [(n, q) for n, q in queries if n in wanted]:
        times = []
        for _ in range(w["runs"]):
            t = time.perf_counter(); rows = run(q); times.append(time.perf_counter() - t)
        res[name + "_cold_s"] = times[0]
        times.sort()
        res[name + "_p50_s"] = times[len(times) // 2]
        res[name + "_p95_s"] = times[min(len(times) - 1, round((len(times) - 1) * 0.95))]
        res[name + "_rows"] = int(rows[0][0])
        res[name + "_total"] = int(rows[0][1] or 0)
    out[w["window"]] = res
print(json.dumps(out))
"#;

/// The other engine's (`duckdb` or `chdb`) times of the same queries over the block files.
fn other_engine(engine: &str, objects: &Path, queries: &[Value]) -> Option<Value> {
    let windows: Vec<Value> = queries
        .iter()
        .map(|q| {
            json!({"window": q["window"], "start_ms": q["start_ms"], "end_ms": q["end_ms"],
                   "step_s": q["select_series"]["step_s"], "runs": 5})
        })
        .collect();
    run_python(ENGINES_SCRIPT, &[engine], objects, &windows)
}

/// Runs a DuckDB `script` with the pinned Python (`PROFUSION_PYTHON`) over the block files
/// under `objects` for `windows`, and reads the JSON it prints; None without that Python or
/// when the script fails (which it reports).
pub(crate) fn run_duckdb(script: &str, objects: &Path, windows: &[Value]) -> Option<Value> {
    run_python(script, &[], objects, windows)
}

/// Runs a Python `script` (DuckDB's or chdb's, installed with the test clients) with the
/// arguments `args`, the block files' directory `objects` and the JSON of `windows`, and reads
/// the JSON it prints; None without `PROFUSION_PYTHON` or when the script fails (reported).
pub(crate) fn run_python(
    script: &str,
    args: &[&str],
    objects: &Path,
    windows: &[Value],
) -> Option<Value> {
    let python = std::env::var_os("PROFUSION_PYTHON")?;
    let out = Command::new(python)
        .args(["-c", script])
        .args(args)
        .arg(objects)
        .arg(Value::Array(windows.to_vec()).to_string())
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!(
            "  {args:?}: the script failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_default();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .map(|v| v.trim().to_owned())
        .unwrap_or_default();
    json!({
        "cpu": cpu,
        "cores": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "memory": mem,
        "os": std::env::consts::OS,
        "date_unix": crate::now_nanos() / 1_000_000_000,
    })
}

/// The CPU time series of every service over `[start_ms, end_ms]` at `step` seconds, as
/// Grafana's timeline asks for it.
pub(crate) async fn cpu_by_service(
    client: &ConnectClient,
    start_ms: i64,
    end_ms: i64,
    step: f64,
) -> SelectSeriesResponse {
    rpc(
        client,
        "SelectSeries",
        &SelectSeriesRequest {
            profile_type_id: CPU.into(),
            label_selector: "{}".into(),
            start: start_ms,
            end: end_ms,
            group_by: vec!["service_name".into()],
            step,
            ..Default::default()
        },
    )
    .await
}

/// The CPU flame graph of `selector` over `[start_ms, end_ms]`, at most 8,192 nodes, as Grafana
/// asks for it.
pub(crate) async fn flame_graph(
    client: &ConnectClient,
    selector: &str,
    start_ms: i64,
    end_ms: i64,
) -> SelectMergeStacktracesResponse {
    rpc(
        client,
        "SelectMergeStacktraces",
        &SelectMergeStacktracesRequest {
            profile_type_id: CPU.into(),
            label_selector: selector.into(),
            start: start_ms,
            end: end_ms,
            max_nodes: Some(8192),
            ..Default::default()
        },
    )
    .await
}
