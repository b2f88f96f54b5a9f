//! The history at agent cadence: every pod sends each profile kind every `--every-s` seconds
//! (15 s, Pyroscope's Go agent's upload interval; the Java agent's is 10 s) for `--hours` (a day),
//! which at real cadence is 40 to 60 times the data of the ten-minute history of `run.rs`.
//! The server compacts it into time-aligned blocks; then flame graphs and `SelectSeries` over
//! an empty range, 1 h, 24 h and (for a week) 7 d are timed, next to DuckDB and ClickHouse
//! (chdb, in process) running the same flame-graph merge and series aggregation over the same
//! block files, and every answer's total is checked against theirs.
//!
//! Generating and gzipping each profile would cost the harness more CPU than ingesting it
//! costs the server, on the same two cores; so each service and kind has a pool of variants,
//! generated once, and each push is a variant with its time appended, sent uncompressed
//! (agents gzip; the server takes both).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use profusion_testing::ConnectClient;
use serde_json::{Value, json};

use crate::push::push_all;
use crate::run::{
    ENGINES_SCRIPT, HOUR_MS, ServerArgs, compact_everything, cpu_by_service, flame_graph, latency,
    run_python, start_server,
};
use crate::workload::{Fleet, FleetShape, GeneratedProfile, Kind, timed};

/// Variants generated per service and kind.
const VARIANTS: u64 = 32;

#[derive(Debug, Clone, clap::Args)]
pub(crate) struct CadenceArgs {
    #[command(flatten)]
    pub(crate) target: ServerArgs,
    /// Hours of history, ending now.
    #[arg(long, env = "PROFUSION_BENCH_CADENCE_HOURS", default_value_t = 24)]
    pub(crate) hours: u32,
    /// Seconds between two profiles of one pod and kind.
    #[arg(long, env = "PROFUSION_BENCH_CADENCE_EVERY_S", default_value_t = 15)]
    pub(crate) every_s: u64,
    /// Timed runs of each query (the first is reported as cold).
    #[arg(long, default_value_t = 7)]
    pub(crate) runs: usize,
    /// A data directory an earlier run loaded and kept (`--keep`): queried again without
    /// loading.
    #[arg(long)]
    pub(crate) data: Option<PathBuf>,
    /// Keep the data directory, to query it again with `--data`.
    #[arg(long)]
    pub(crate) keep: bool,
    /// Pods of each of the fleet's four services. Fewer than the default's 5 load a week at
    /// real cadence in a fraction of the time (the blocks cover the same windows; each holds
    /// fewer profiles).
    #[arg(long, env = "PROFUSION_BENCH_CADENCE_PODS", default_value_t = FleetShape::default().pods)]
    pub(crate) pods_per_service: usize,
    /// Seed of the workload.
    #[arg(long, default_value_t = 1)]
    pub(crate) seed: u64,
    /// Another flag for the server the queries run on (repeatable), e.g.
    /// `--server-arg=--querier.block-cache-size=0` to measure without that cache.
    #[arg(long = "server-arg", allow_hyphen_values = true)]
    pub(crate) server_args: Vec<String>,
}

/// What a loaded history is, kept next to its data so a later run can query it again.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Loaded {
    seed: u64,
    services: usize,
    pods: usize,
    hours: u32,
    every_s: u64,
    /// Unix nanoseconds of the last window.
    end: i64,
    profiles: u64,
    cpu_samples: u64,
    load_s: f64,
    compaction_s: f64,
    blocks: u64,
    block_bytes: u64,
    sample_rows: u64,
}

/// Runs the phase and returns its report.
pub(crate) async fn cadence(args: &CadenceArgs) -> Value {
    let stamp = crate::now_nanos() / 1_000_000_000;
    let out = args.target.out.join(format!("{stamp}-cadence"));
    let data = args.data.clone().unwrap_or_else(|| out.join("data"));
    let manifest = data.join("bench-history.json");
    let loaded = match std::fs::read(&manifest) {
        Ok(bytes) => serde_json::from_slice(&bytes).expect("bench-history.json"),
        Err(_) => {
            let loaded = load(args, &data).await;
            std::fs::write(&manifest, serde_json::to_vec_pretty(&loaded).expect("JSON"))
                .expect("write bench-history.json");
            loaded
        }
    };
    // No compaction while measuring: the other engines read every block file on disk.
    let mut flags = vec!["--compactor.compaction-interval=1000h"];
    flags.extend(args.server_args.iter().map(String::as_str));
    let mut server = start_server(&args.target.server, &data, &flags);
    let queries = measure(&server.url(""), &data.join("objects"), &loaded, args.runs).await;
    server.stop();
    if !args.keep && args.data.is_none() {
        let _ = std::fs::remove_dir_all(&data);
    }
    json!({"history": loaded, "server_args": args.server_args, "queries": queries})
}

/// Pushes the history, then lets the compactor merge it into time-aligned blocks.
async fn load(args: &CadenceArgs, data: &Path) -> Loaded {
    let shape = FleetShape {
        seed: args.seed,
        pods: args.pods_per_service.max(1),
        ..FleetShape::default()
    };
    let fleet = Fleet::new(shape.clone());
    eprintln!(
        "  generating {VARIANTS} variants of each profile kind of {} services",
        shape.services
    );
    let variants: Vec<Vec<(Vec<u8>, usize)>> = (0..shape.services * Kind::ALL.len())
        .map(|i| {
            let (service, kind) = (i / Kind::ALL.len(), Kind::ALL[i % Kind::ALL.len()]);
            (0..VARIANTS)
                .map(|v| fleet.variant(service, kind, v))
                .collect()
        })
        .collect();
    let pods: Vec<(usize, usize)> = fleet.pods().collect();
    let step_ns = args.every_s as i64 * 1_000_000_000;
    let windows = i64::from(args.hours) * 3_600 / args.every_s as i64;
    let end = crate::now_nanos() / step_ns * step_ns;
    let per_window = pods.len() * Kind::ALL.len();
    let total = windows as usize * per_window;
    eprintln!(
        "  pushing {total} profiles: {} pods × {} kinds every {} s for {} h",
        pods.len(),
        Kind::ALL.len(),
        args.every_s,
        args.hours
    );
    // Load with the compactor off, as a fleet's history would arrive over days, then compact.
    let mut server = start_server(
        &args.target.server,
        data,
        &["--compactor.compaction-interval=1000h"],
    );
    let cpu_samples = Arc::new(Mutex::new(0u64));
    let counted = Arc::clone(&cpu_samples);
    let mut i = 0usize;
    let next = move || {
        if i == total {
            return None;
        }
        let (window, within) = ((i / per_window) as i64, i % per_window);
        let (service, pod) = pods[within / Kind::ALL.len()];
        let k = within % Kind::ALL.len();
        let kind = Kind::ALL[k];
        i += 1;
        let time = end - (windows - 1 - window) * step_ns;
        // Each pod draws its own sequence of variants.
        let v = (window as u64).wrapping_mul(0x9e37_79b9) ^ (pod as u64 * 7 + service as u64);
        let (raw, samples) = &variants[service * Kind::ALL.len() + k][(v % VARIANTS) as usize];
        if kind == Kind::Cpu {
            *counted.lock().expect("count") += *samples as u64;
        }
        let duration = if kind == Kind::Cpu { step_ns } else { 0 };
        Some(GeneratedProfile {
            service: String::new(),
            pod: String::new(),
            labels: fleet.labels(service, pod, kind),
            body: timed(raw, time, duration),
            raw_bytes: raw.len(),
            samples: *samples,
        })
    };
    let started = Instant::now();
    let stats = push_all(&server.url(""), None, 8, None, None, Some("history"), next).await;
    assert_eq!(stats.failures, 0, "history pushes failed");
    let load_s = started.elapsed().as_secs_f64();
    eprintln!(
        "  {} profiles in {load_s:.0} s; flushing and compacting",
        stats.profiles
    );
    server.stop();
    let compaction_s = compact_everything(&mut server).await;
    let (block_bytes, sample_rows, blocks) = crate::run::block_stats(&data.join("objects"));
    eprintln!("  compacted into {blocks} blocks in {compaction_s:.0} s");
    let cpu_samples = *cpu_samples.lock().expect("count");
    Loaded {
        seed: args.seed,
        services: shape.services,
        pods: shape.pods,
        hours: args.hours,
        every_s: args.every_s,
        end,
        profiles: stats.profiles,
        cpu_samples,
        load_s,
        compaction_s,
        blocks,
        block_bytes,
        sample_rows,
    }
}

/// The windows measured: an empty hour before the history (the fixed cost of a query), then
/// the last hour, day and week, as far as the history reaches.
fn windows(loaded: &Loaded) -> Vec<(&'static str, i64, i64)> {
    let end_ms = loaded.end / 1_000_000;
    let start_ms = end_ms - i64::from(loaded.hours) * HOUR_MS;
    let mut out = vec![("empty", start_ms - 2 * HOUR_MS, start_ms - HOUR_MS)];
    for (label, hours) in [("1h", 1), ("24h", 24), ("7d", 168)] {
        if i64::from(loaded.hours) >= hours {
            out.push((label, end_ms - hours * HOUR_MS, end_ms));
        }
    }
    out
}

/// Times each window's queries, and the other engines' over the same files.
async fn measure(url: &str, objects: &Path, loaded: &Loaded, runs: usize) -> Vec<Value> {
    let client = ConnectClient::new(url);
    let mut out = Vec::new();
    for (label, start_ms, end_ms) in windows(loaded) {
        let hours = (end_ms - start_ms) / HOUR_MS;
        let step = ((hours * 3600) as f64 / 300.0).max(15.0);
        let flame = |selector: &'static str| {
            let client = &client;
            move || async move {
                let r = flame_graph(client, selector, start_ms, end_ms).await;
                std::hint::black_box(r.flamegraph.map(|f| f.total));
            }
        };
        // The first run of each query is cold for the server's caches (the files are in the
        // OS page cache: they were just written).
        let started = Instant::now();
        let total = flame_graph(&client, "{}", start_ms, end_ms)
            .await
            .flamegraph
            .map_or(0, |f| f.total);
        let flame_cold = started.elapsed().as_secs_f64();
        let (flame50, flame95, _) = latency(runs, flame("{}")).await;
        let (one50, one95, one_cold) = latency(runs, flame(r#"{service_name="shop-1"}"#)).await;
        let series = || cpu_by_service(&client, start_ms, end_ms, step);
        let started = Instant::now();
        let series_total: f64 = series()
            .await
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.value))
            .sum();
        let series_cold = started.elapsed().as_secs_f64();
        let (series50, series95, _) = latency(runs, || async {
            std::hint::black_box(series().await.series.len());
        })
        .await;
        eprintln!(
            "  {label}: flame graph p50 {:.0} ms (cold {:.0} ms), one service {:.0} ms, series {:.1} ms",
            flame50 * 1e3,
            flame_cold * 1e3,
            one50 * 1e3,
            series50 * 1e3
        );
        out.push(json!({
            "window": label, "hours": hours, "start_ms": start_ms, "end_ms": end_ms,
            "flame_graph": {"p50_s": flame50, "p95_s": flame95, "cold_s": flame_cold, "total": total},
            "flame_graph_one_service": {"p50_s": one50, "p95_s": one95, "cold_s": one_cold},
            "select_series": {"p50_s": series50, "p95_s": series95, "cold_s": series_cold,
                              "step_s": step, "total": series_total},
        }));
    }
    let engines: Vec<Value> = out
        .iter()
        .map(|q| {
            json!({"window": q["window"], "start_ms": q["start_ms"], "end_ms": q["end_ms"],
                   "step_s": q["select_series"]["step_s"], "runs": runs.min(5),
                   "queries": ["flame", "series"]})
        })
        .collect();
    for engine in ["duckdb", "chdb"] {
        eprintln!("  {engine} over the same block files");
        let Some(theirs) = run_python(ENGINES_SCRIPT, &[engine], objects, &engines) else {
            continue;
        };
        for q in &mut out {
            let Some(t) = theirs.get(q["window"].as_str().unwrap_or_default()) else {
                continue;
            };
            let ratio = |ours: &Value, theirs: &Value| {
                ours.as_f64().zip(theirs.as_f64()).map(|(a, b)| a / b)
            };
            // Series points are floats: past 2^53 their sum is exact only to a relative 1e-12.
            let close = |a: Option<f64>, b: Option<f64>| {
                a.zip(b)
                    .is_some_and(|(a, b)| (a - b).abs() <= 1e-12 * a.abs().max(b.abs()))
            };
            let agrees = t["flame_total"].as_i64() == q["flame_graph"]["total"].as_i64()
                && close(
                    t["series_total"].as_f64(),
                    q["select_series"]["total"].as_f64(),
                );
            q[engine] = t.clone();
            q[format!("ratio_flame_graph_to_{engine}")] =
                json!(ratio(&q["flame_graph"]["p50_s"], &t["flame_p50_s"]));
            q[format!("ratio_series_to_{engine}")] =
                json!(ratio(&q["select_series"]["p50_s"], &t["series_p50_s"]));
            q[format!("agrees_with_{engine}")] = json!(agrees);
            if !agrees {
                eprintln!(
                    "  {}: {engine} disagrees: flame total {} against ours {}, series total {} against ours {}",
                    q["window"],
                    t["flame_total"],
                    q["flame_graph"]["total"],
                    t["series_total"],
                    q["select_series"]["total"]
                );
            }
        }
    }
    out
}
