//! Read-path benchmark: `SelectMergeStacktraces` and `SelectSeries` latency over a generated
//! dataset (by default 50 million samples in 1,100 series, five flushed blocks plus head data),
//! cold and warm, next to DuckDB (PyPI) running the same merge-and-symbolize and the same
//! series aggregation over the same Parquet files in the same run.
//!
//! `cargo bench -p profusion-engine --bench read_path [-- --samples N --keep DIR]`
//!
//! DuckDB runs through the Python of the test clients (`PROFUSION_PYTHON`, set by
//! `eval "$(scripts/install-test-clients)"`); without it only Profusion's figures are printed.
//! "Cold" means the first query of a fresh process after the OS page cache was dropped (when
//! the bench may drop it: root on Linux); "warm" is the median of the next three runs.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use object_store::local::LocalFileSystem;
use profusion_catalog::{Catalog, SqliteCatalog};
use profusion_engine::querier::{MergeRequest, Querier, QuerierConfig, SeriesQuery, TimeRange};
use profusion_engine::selector;
use profusion_engine::symbolize::StackFilter;
use profusion_ingest::ingester::{Ingester, IngesterClient, IngesterConfig};
use profusion_ingest::metrics::IngestMetrics;
use profusion_proto::ingester::v1::{Frame, SeriesProfile, Stack, StackSample, WriteRequest};
use profusion_proto::types::v1::LabelPair;

const CPU: &str = "process_cpu:cpu:nanoseconds:cpu:nanoseconds";
const TENANT: &str = "bench";
const SERVICES: usize = 10;
const PODS_PER_SERVICE: usize = 110;
const SAMPLES_PER_PROFILE: usize = 1000;
const FUNCTIONS: u64 = 3000;
const STACK_POOL: usize = 20_000;
const BLOCKS: usize = 5;
/// Share of the profiles left in the head, unflushed.
const HEAD_SHARE: f64 = 0.02;
const HOURS: i64 = 6;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    /// Zipf-like pick in [0, n): small indexes are much more likely.
    fn skewed(&mut self, n: u64) -> u64 {
        let u = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        ((n as f64).powf(u) - 1.0) as u64 % n.max(1)
    }
}

/// Root-first function ids, 10-40 deep, walked through a skewed call graph so stacks share
/// prefixes.
fn stack_pool(rng: &mut Rng) -> Vec<Vec<u64>> {
    (0..STACK_POOL)
        .map(|_| {
            let depth = 10 + rng.below(31);
            let mut current = 1 + rng.skewed(8);
            (0..depth)
                .map(|_| {
                    let f = current;
                    current = 1 + (current + rng.skewed(FUNCTIONS / 4)) % FUNCTIONS;
                    f
                })
                .collect()
        })
        .collect()
}

fn function_name(id: u64) -> String {
    const PACKAGES: &[&str] = &[
        "github.com/acme/shop/internal/cart",
        "github.com/acme/shop/pkg/db",
        "net/http",
        "encoding/json",
        "runtime",
        "google.golang.org/grpc",
    ];
    const VERBS: &[&str] = &["Handle", "Serve", "Encode", "Query", "Scan", "Flush"];
    format!(
        "{}.(*T{}).{}{}",
        PACKAGES[(id % 6) as usize],
        id / 60,
        VERBS[(id / 6 % 6) as usize],
        id
    )
}

fn stack_hash(frames: &[u64]) -> u64 {
    // FNV-1a over the frame ids: any stable 64-bit id works for generated data.
    frames.iter().fold(0xcbf2_9ce4_8422_2325, |h, f| {
        (h ^ f).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

struct Dataset {
    dir: PathBuf,
    ingester: Arc<Ingester>,
    querier: Querier,
    range: TimeRange,
    samples: u64,
    head_samples: u64,
}

fn label(name: &str, value: &str) -> LabelPair {
    LabelPair {
        name: name.into(),
        value: value.into(),
    }
}

async fn open(dir: &Path) -> (Arc<Ingester>, Querier) {
    let objects = dir.join("objects");
    std::fs::create_dir_all(&objects).unwrap();
    let store = Arc::new(LocalFileSystem::new_with_prefix(&objects).unwrap());
    let catalog: Arc<dyn Catalog> =
        Arc::new(SqliteCatalog::open(dir.join("catalog.db")).await.unwrap());
    let ingester = Ingester::open(
        IngesterConfig {
            id: "bench".into(),
            wal_dir: dir.join("wal"),
            max_block_duration: Duration::from_secs(24 * 3600),
            max_head_bytes: usize::MAX,
            head_full_wait: std::time::Duration::from_secs(30),
            flush_check_interval: Duration::from_secs(24 * 3600),
            local_store_root: Some(objects),
            max_series_per_tenant: 0,
        },
        Arc::clone(&store) as _,
        Arc::clone(&catalog),
        IngestMetrics::default(),
    )
    .await
    .unwrap();
    let querier = Querier::new(
        Arc::clone(&ingester) as _,
        Arc::new(profusion_store_gateway::StoreGateway::uncached(
            catalog, store,
        )),
        QuerierConfig {
            query_memory_bytes: 8 << 30,
            target_partitions: 2,
            distribution: None,
            ..QuerierConfig::default()
        },
    );
    (ingester, querier)
}

/// Writes `total_samples` samples through the real ingester: `BLOCKS` flushed blocks, then
/// the head share left unflushed.
async fn generate(dir: &Path, total_samples: u64) -> Dataset {
    let (ingester, querier) = open(dir).await;
    let mut rng = Rng(0x5eed_cafe);
    let pool = stack_pool(&mut rng);
    let hashes: Vec<u64> = pool.iter().map(|s| stack_hash(s)).collect();
    let series = SERVICES * PODS_PER_SERVICE;
    let now = profusion_model::time::now_nanos();
    let start = now - HOURS * 3_600_000_000_000;
    // Profiles are spread evenly over the range; duplicates drawn within a profile merge, so
    // a profile holds somewhat fewer than SAMPLES_PER_PROFILE samples.
    let expected_profiles = (total_samples as f64 / (SAMPLES_PER_PROFILE as f64 * 0.6)) as i64;
    let step = (now - start) / expected_profiles.max(1);
    let block_samples = (total_samples as f64 * (1.0 - HEAD_SHARE) / BLOCKS as f64) as u64;
    let mut defined: HashSet<u64> = HashSet::new();
    let mut batch = Vec::new();
    let started = Instant::now();
    let (mut written, mut head_samples, mut blocks, mut p) = (0u64, 0u64, 0usize, 0usize);
    while written < total_samples {
        let s = p % series;
        let (service, pod) = (s / PODS_PER_SERVICE, s % PODS_PER_SERVICE);
        let service_name = format!("shop-{service}");
        let mut used: Vec<usize> = (0..SAMPLES_PER_PROFILE)
            .map(|_| rng.skewed(STACK_POOL as u64) as usize)
            .collect();
        used.sort_unstable();
        used.dedup();
        let mut stacks = Vec::new();
        let mut frames = Vec::new();
        for &i in &used {
            if defined.insert(hashes[i]) {
                let base = frames.len() as u32;
                frames.extend(pool[i].iter().map(|&f| Frame {
                    id: f,
                    function_name: function_name(f),
                    ..Frame::default()
                }));
                stacks.push(Stack {
                    hash: hashes[i],
                    frame_refs: (base..base + pool[i].len() as u32).collect(),
                });
            }
        }
        written += used.len() as u64;
        if blocks == BLOCKS {
            head_samples += used.len() as u64;
        }
        batch.push(WriteRequest {
            tenant: TENANT.into(),
            profiles: vec![SeriesProfile {
                labels: vec![
                    label("__name__", "process_cpu"),
                    label("__profile_type__", CPU),
                    label("pod", &format!("{service_name}-{pod:03}")),
                    label("service_name", &service_name),
                ],
                fingerprint: 1 + s as u64,
                time_nanos: (start + p as i64 * step).min(now),
                duration_nanos: 10_000_000_000,
                period: 10_000_000,
                profile_id: format!("00000000-0000-0000-0000-{p:012}"),
                samples: used
                    .iter()
                    .map(|&i| StackSample {
                        stack_hash: hashes[i],
                        value: (1 + rng.below(20) as i64) * 10_000_000,
                        span_id: 0,
                    })
                    .collect(),
            }],
            stacks,
            frames,
        });
        let block_done = blocks < BLOCKS && written >= block_samples * (blocks as u64 + 1);
        if batch.len() == 20 || block_done || written >= total_samples {
            for req in batch.drain(..) {
                ingester.write(req).await.unwrap();
            }
        }
        if block_done {
            ingester.flush().await.unwrap();
            blocks += 1;
            // Each block must hold the symbols of its own stacks.
            defined.clear();
            eprintln!(
                "  block {blocks} flushed after {written} samples ({:.0}s)",
                started.elapsed().as_secs_f64()
            );
        }
        p += 1;
    }
    Dataset {
        dir: dir.to_owned(),
        ingester,
        querier,
        range: TimeRange { start, end: now },
        samples: written,
        head_samples,
    }
}

fn drop_page_cache() -> bool {
    std::fs::write("/proc/sys/vm/drop_caches", "3").is_ok()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Cold (first) and warm (median of three) seconds of `f`.
async fn time<F, Fut, T>(mut f: F) -> (f64, f64, T)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let t = Instant::now();
    let first = f().await;
    let cold = t.elapsed().as_secs_f64();
    let mut warm = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        f().await;
        warm.push(t.elapsed().as_secs_f64());
    }
    (cold, median(warm), first)
}

const DUCKDB_SCRIPT: &str = r#"
import json, sys, time, duckdb
blocks, pt, start, end = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
flame = f"""
WITH m AS (SELECT stack_hash, sum(value) AS v FROM read_parquet('{blocks}/*/samples.parquet')
           WHERE profile_type = '{pt}' AND time_nanos BETWEEN {start} AND {end} GROUP BY 1),
     st AS (SELECT DISTINCT stack_hash, frame_ids FROM read_parquet('{blocks}/*/stacks.parquet')
            WHERE stack_hash IN (SELECT stack_hash FROM m)),
     fr AS (SELECT DISTINCT frame_id, function_name FROM read_parquet('{blocks}/*/frames.parquet')),
     named AS (SELECT st.stack_hash, string_agg(fr.function_name, ';' ORDER BY u.pos) AS stack
               FROM st, unnest(st.frame_ids) WITH ORDINALITY AS u(frame_id, pos)
               JOIN fr ON fr.frame_id = u.frame_id GROUP BY 1)
SELECT count(*), sum(v)::BIGINT FROM m JOIN named USING (stack_hash)
"""
series = f"""
SELECT count(*), sum(v)::DOUBLE FROM (
  SELECT service_name, time_nanos // 60000000000 AS step, sum(total_value) AS v
  FROM read_parquet('{blocks}/*/profiles.parquet')
  WHERE profile_type = '{pt}' AND time_nanos BETWEEN {start} AND {end} GROUP BY ALL)
"""
out = {}
for name, q in [("flame", flame), ("series", series)]:
    con = duckdb.connect()
    t = time.perf_counter(); first = con.execute(q).fetchall(); cold = time.perf_counter() - t
    warm = []
    for _ in range(3):
        t = time.perf_counter(); con.execute(q).fetchall(); warm.append(time.perf_counter() - t)
    warm.sort()
    out[name] = {"cold_s": cold, "warm_s": warm[1], "rows": first[0][0], "total": first[0][1]}
print(json.dumps(out))
"#;

fn duckdb(dir: &Path, range: TimeRange) -> Option<serde_json::Value> {
    let python = std::env::var_os("PROFUSION_PYTHON")?;
    let blocks = dir.join("objects").join(TENANT).join("blocks");
    drop_page_cache();
    let out = std::process::Command::new(python)
        .args(["-c", DUCKDB_SCRIPT])
        .arg(&blocks)
        .arg(CPU)
        .arg(range.start.to_string())
        .arg(range.end.to_string())
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "duckdb: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(serde_json::from_slice(&out.stdout).expect("duckdb JSON"))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let samples: u64 = arg("--samples").map_or(50_000_000, |s| s.parse().expect("--samples"));
    let keep = arg("--keep").map(PathBuf::from);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let temp = tempfile::tempdir().unwrap();
    let dir = keep.unwrap_or_else(|| temp.path().to_owned());
    runtime.block_on(async {
        eprintln!(
            "generating {samples} samples in {} series…",
            SERVICES * PODS_PER_SERVICE
        );
        let t = Instant::now();
        let data = generate(&dir, samples).await;
        eprintln!("generated in {:.0}s", t.elapsed().as_secs_f64());
        let tenants = [TENANT.to_owned()];
        // A fresh process state: the same files, a new ingester replaying the same WAL.
        drop(data.querier);
        drop(data.ingester);
        let page_cache_dropped = drop_page_cache();
        let (_ingester, querier) = open(&data.dir).await;
        let all = MergeRequest {
            profile_type: CPU.into(),
            selector: selector::parse("{}").unwrap(),
            range: data.range,
            profile_ids: Vec::new(),
            span_ids: Vec::new(),
            stacks: StackFilter::default(),
        };
        // The whole RPC's work: merge, symbolize, and the flame-graph encoding at Grafana's
        // default of 8,192 nodes.
        let flame = |req: MergeRequest| {
            let (querier, tenants) = (&querier, &tenants);
            async move {
                let tree = querier
                    .merge_tree(&querier.budget(), tenants, &req, 8192)
                    .await
                    .unwrap()
                    .value;
                let graph = tree.flame_graph(8192);
                (tree.total(), graph.levels.len())
            }
        };
        let (flame_cold, flame_warm, (total, _)) = time(|| flame(all.clone())).await;
        let one_service = MergeRequest {
            selector: selector::parse(r#"{service_name="shop-3"}"#).unwrap(),
            ..all.clone()
        };
        let (svc_cold, svc_warm, _) = time(|| flame(one_service.clone())).await;
        let series_query = SeriesQuery {
            profile_type: CPU.into(),
            selector: selector::parse("{}").unwrap(),
            range: data.range,
            step_millis: 60_000,
            group_by: vec!["service_name".into()],
            average: false,
            limit: None,
        };
        let (series_cold, series_warm, series) = time(|| async {
            querier
                .select_series(&querier.budget(), &tenants, &series_query)
                .await
                .unwrap()
        })
        .await;
        // Where the time goes: the flame-graph plan with per-operator metrics.
        let plan = querier
            .merge_plan(
                &querier.budget(),
                &tenants,
                &all,
                profusion_engine::symbolize::SymbolizeOutput::Tree { max_nodes: 8192 },
            )
            .await
            .unwrap()
            .unwrap();
        let task = plan.task_ctx();
        let physical = plan.create_physical_plan().await.unwrap();
        datafusion::physical_plan::collect(Arc::clone(&physical), Arc::new(task))
            .await
            .unwrap();
        eprintln!(
            "{}",
            datafusion::physical_plan::display::DisplayableExecutionPlan::with_metrics(
                physical.as_ref()
            )
            .indent(false)
        );
        let duck = duckdb(&data.dir, data.range);
        let ratio = |ours: f64, key: &str, which: &str| {
            duck.as_ref()
                .and_then(|d| d[key][which].as_f64())
                .map(|theirs| ours / theirs)
        };
        let report = serde_json::json!({
            "samples": data.samples,
            "head_samples": data.head_samples,
            "series": SERVICES * PODS_PER_SERVICE,
            "blocks": BLOCKS,
            "page_cache_dropped": page_cache_dropped,
            "flame_graph_all": {"cold_s": flame_cold, "warm_s": flame_warm, "total": total,
                "ratio_to_duckdb_cold": ratio(flame_cold, "flame", "cold_s"),
                "ratio_to_duckdb_warm": ratio(flame_warm, "flame", "warm_s")},
            "flame_graph_one_service": {"cold_s": svc_cold, "warm_s": svc_warm},
            "select_series": {"cold_s": series_cold, "warm_s": series_warm, "series": series.len(),
                "ratio_to_duckdb_cold": ratio(series_cold, "series", "cold_s"),
                "ratio_to_duckdb_warm": ratio(series_warm, "series", "warm_s")},
            "duckdb": duck,
        });
        println!("{}", serde_json::to_string_pretty(&report).unwrap());
    });
}
