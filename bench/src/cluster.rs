//! `profusion-bench cluster`: the price of the network. The same workload goes to a monolith
//! and to a cluster of one process per role (three ingesters with replication factor 3, a
//! distributor, a query-scheduler, queriers each with a store-gateway in its process, a
//! query-frontend) sharing a SQLite catalog and a local object store, so only the processes
//! differ. It reports, in one run:
//! - flame-graph and series latency of the cluster against the monolith (a ratio);
//! - the bytes that crossed the network per query (head rows read over Arrow Flight, partial
//!   aggregates from the plan stages on ingesters and store-gateways, the answer) next to the
//!   block bytes the query scanned;
//! - how the work of a batch of queries splits between one and then two queriers.
//!
//! This machine has two cores: every process shares them, so wall-clock scaling with more
//! queriers cannot show here; the split of the work can.

use std::path::{Path, PathBuf};
use std::time::Duration;

use profusion_proto::querier::v1::{SelectSeriesRequest, SelectSeriesResponse};
use profusion_testing::ConnectClient;
use profusion_tests::TestServer;
use serde_json::{Value, json};

use crate::push::push_all;
use crate::run::{SERVER_FLAGS, ServerArgs, flame_graph, latency, metric, rpc};
use crate::workload::{Fleet, FleetShape, Kind};

const CPU: &str = "process_cpu:cpu:nanoseconds:cpu:nanoseconds";

/// What `cluster` measures with.
#[derive(Debug, clap::Args)]
pub(crate) struct ClusterArgs {
    #[command(flatten)]
    pub(crate) target: ServerArgs,
    /// Minutes of fleet history (every pod's CPU profile every 10 s) pushed to both.
    #[arg(long, default_value_t = 30)]
    pub(crate) minutes: i64,
    /// Timed runs of each query.
    #[arg(long, default_value_t = 15)]
    pub(crate) runs: usize,
}

/// One process of the benchmark, from the binary under test.
fn start(binary: &Path, data: PathBuf, args: &[String]) -> TestServer {
    TestServer::configure()
        .binary(binary)
        .data_dir(data)
        .log_level("warn")
        .stop_timeout(Duration::from_secs(600))
        .args(SERVER_FLAGS)
        .args(&args.iter().map(String::as_str).collect::<Vec<_>>())
        .spawn()
}

/// The processes of the cluster, by name.
struct Cluster {
    nodes: Vec<(String, TestServer)>,
    dir: PathBuf,
    binary: PathBuf,
    shared: Vec<String>,
}

impl Cluster {
    fn start(binary: &Path, dir: &Path) -> Self {
        let shared = vec![
            format!("--catalog.url=sqlite:{}", dir.join("catalog.db").display()),
            format!("--storage.url=file://{}", dir.join("objects").display()),
            "--ingester.ring.replication-factor=3".to_owned(),
            "--ring.heartbeat-period=500ms".to_owned(),
        ];
        let mut cluster = Self {
            nodes: Vec::new(),
            dir: dir.to_owned(),
            binary: binary.to_owned(),
            shared,
        };
        for i in 1..=3 {
            cluster.add(
                &format!("ingester-{i}"),
                &["--target=ingester", &format!("--ingester.id=ingester-{i}")],
            );
        }
        cluster.add("distributor", &["--target=distributor"]);
        cluster.add("query-scheduler", &["--target=query-scheduler"]);
        cluster.add("querier-1", &["--target=querier,store-gateway"]);
        cluster.add("query-frontend", &["--target=query-frontend"]);
        cluster
    }

    fn add(&mut self, name: &str, args: &[&str]) {
        let mut all = self.shared.clone();
        all.extend(args.iter().map(|a| (*a).to_owned()));
        let server = start(&self.binary, self.dir.join(name), &all);
        self.nodes.push((name.to_owned(), server));
    }

    fn url(&self, name: &str) -> String {
        self.nodes
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, s)| s.url(""))
            .unwrap_or_else(|| panic!("no node {name}"))
    }

    fn urls(&self, prefix: &str) -> Vec<(String, String)> {
        self.nodes
            .iter()
            .filter(|(n, _)| n.starts_with(prefix))
            .map(|(n, s)| (n.clone(), s.url("")))
            .collect()
    }
}

/// The sum of one sample over the nodes at `urls`.
async fn total(urls: &[(String, String)], sample: &str) -> f64 {
    let mut sum = 0.0;
    for (_, url) in urls {
        sum += metric(url, sample).await;
    }
    sum
}

/// Pushes `minutes` of every pod's CPU profiles, every 10 s, ending at `end`.
async fn load(url: &str, fleet: &Fleet, end: i64, minutes: i64) {
    let pods: Vec<(usize, usize)> = fleet.pods().collect();
    let windows = minutes * 6;
    let fleet = fleet.clone();
    let mut plan = (0..windows).flat_map(move |w| {
        let time = end - (windows - w) * 10_000_000_000;
        pods.clone().into_iter().map(move |(s, p)| (s, p, time))
    });
    let stats = push_all(url, None, 8, None, None, Some("history"), move || {
        let (s, p, time) = plan.next()?;
        Some(fleet.profile(s, p, Kind::Cpu, time))
    })
    .await;
    assert_eq!(stats.failures, 0, "pushes failed");
}

/// The flame graph and series queries of the comparison: `(label, call)`.
async fn query(client: &ConnectClient, which: &str, start: i64, end: i64) -> usize {
    match which {
        "flame graph, all services" | "flame graph, one service" => {
            let selector = if which.ends_with("all services") {
                "{}"
            } else {
                r#"{service_name="shop-0"}"#
            };
            prost::Message::encoded_len(&flame_graph(client, selector, start, end).await)
        }
        _ => {
            let r: SelectSeriesResponse = rpc(
                client,
                "SelectSeries",
                &SelectSeriesRequest {
                    profile_type_id: CPU.into(),
                    label_selector: "{}".into(),
                    start,
                    end,
                    step: 60.0,
                    group_by: vec!["service_name".into()],
                    ..Default::default()
                },
            )
            .await;
            prost::Message::encoded_len(&r)
        }
    }
}

const QUERIES: [&str; 3] = [
    "flame graph, all services",
    "flame graph, one service",
    "series by service",
];

pub(crate) async fn cluster(args: ClusterArgs) -> Value {
    let stamp = chrono_stamp();
    let dir = args.target.out.join(format!("cluster-{stamp}"));
    std::fs::create_dir_all(&dir).expect("create the benchmark directory");
    let dir = dir.canonicalize().expect("benchmark directory");
    let fleet = Fleet::new(FleetShape::default());
    let end = crate::now_nanos();
    let (start_ms, end_ms) = (end / 1_000_000 - args.minutes * 60_000, end / 1_000_000);

    eprintln!(
        "[1/4] monolith: loading {} minutes of history",
        args.minutes
    );
    let monolith = start(&args.target.server, dir.join("monolith"), &[]);
    load(&monolith.url(""), &fleet, end, args.minutes).await;
    eprintln!("[2/4] cluster: loading the same history through the distributor");
    let mut cluster = Cluster::start(&args.target.server, &dir.join("cluster"));
    load(&cluster.url("distributor"), &fleet, end, args.minutes).await;

    eprintln!(
        "[3/4] latency, monolith against cluster ({} runs each)",
        args.runs
    );
    let mono_client = ConnectClient::new(monolith.url(""));
    let frontend = cluster.url("query-frontend");
    let cluster_client = ConnectClient::new(frontend.clone());
    let ingesters = cluster.urls("ingester-");
    let mut latencies = Vec::new();
    for which in QUERIES {
        let (mono_p50, mono_p95, _) = latency(args.runs, || async {
            query(&mono_client, which, start_ms, end_ms).await;
        })
        .await;
        let (cluster_p50, cluster_p95, _) = latency(args.runs, || async {
            query(&cluster_client, which, start_ms, end_ms).await;
        })
        .await;
        // One more run, measured: what crossed the network for it.
        let queriers = cluster.urls("querier-");
        let sums = [
            (&ingesters, "profusion_ingester_head_sent_rows_total"),
            (&ingesters, "profusion_ingester_head_sent_bytes_total"),
            (&queriers, "profusion_querier_stage_received_rows_total"),
            (&queriers, "profusion_querier_stage_received_bytes_total"),
            (
                &queriers,
                "profusion_store_gateway_object_store_read_bytes_total",
            ),
        ];
        let mut before = Vec::new();
        for (nodes, sample) in sums {
            before.push(total(nodes, sample).await);
        }
        let answer = query(&cluster_client, which, start_ms, end_ms).await;
        let mut delta = Vec::new();
        for ((nodes, sample), before) in sums.into_iter().zip(before) {
            delta.push(total(nodes, sample).await - before);
        }
        let [rows, head, stage_rows, stage_bytes, blocks] = delta[..] else {
            unreachable!("one delta per sum")
        };
        latencies.push(json!({
            "query": which,
            "monolith_p50_ms": mono_p50 * 1e3,
            "monolith_p95_ms": mono_p95 * 1e3,
            "cluster_p50_ms": cluster_p50 * 1e3,
            "cluster_p95_ms": cluster_p95 * 1e3,
            "cluster_over_monolith_p50": cluster_p50 / mono_p50,
            "head_rows_over_flight": rows,
            "head_bytes_over_flight": head,
            "stage_rows_received": stage_rows,
            "stage_bytes_received_decoded": stage_bytes,
            "answer_bytes": answer,
            "block_bytes_read": blocks,
        }));
    }

    eprintln!(
        "[4/4] the work of {} queries with one, then two queriers",
        3 * args.runs
    );
    let mut split = Vec::new();
    for queriers in [1, 2] {
        if queriers == 2 {
            cluster.add("querier-2", &["--target=querier,store-gateway"]);
            // Its workers connect to the scheduler within a heartbeat period.
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        let nodes = cluster.urls("querier-");
        let mut before = Vec::new();
        for (_, url) in &nodes {
            before.push(work(url).await);
        }
        // Concurrent, so both queriers have work to take.
        let batch = (0..args.runs).flat_map(|_| QUERIES).map(|which| {
            let client = ConnectClient::new(frontend.clone());
            async move { query(&client, which, start_ms, end_ms).await }
        });
        futures_util::future::join_all(batch).await;
        let mut per_querier = Vec::new();
        for ((name, url), before) in nodes.iter().zip(before) {
            let after = work(url).await;
            per_querier.push(json!({
                "querier": name,
                "jobs": after[0] - before[0],
                "head_rows": after[1] - before[1],
                "head_bytes": after[2] - before[2],
                "block_bytes_read": after[3] - before[3],
                "stage_rows_received": after[4] - before[4],
                "stage_bytes_received_decoded": after[5] - before[5],
            }));
        }
        split.push(json!({"queriers": queriers, "per_querier": per_querier}));
    }
    drop(cluster);
    drop(monolith);
    let report = json!({
        "history_minutes": args.minutes,
        "pods": fleet.pods().count(),
        "latency": latencies,
        "work_split": split,
        "note": "two cores shared by every process: wall-clock scaling with more queriers \
                 cannot show here; the split of the work can",
    });
    let path = dir.join("cluster.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&report).expect("JSON"))
        .expect("write the report");
    eprintln!("report: {}", path.display());
    report
}

/// A querier's jobs, head rows and bytes received, block bytes read (by the store-gateway of
/// its process), and stage rows and bytes received, so far.
async fn work(url: &str) -> [f64; 6] {
    [
        metric(url, "profusion_querier_jobs_total").await,
        metric(url, "profusion_querier_head_received_rows_total").await,
        metric(url, "profusion_querier_head_received_bytes_total").await,
        metric(url, "profusion_store_gateway_object_store_read_bytes_total").await,
        metric(url, "profusion_querier_stage_received_rows_total").await,
        metric(url, "profusion_querier_stage_received_bytes_total").await,
    ]
}

/// Seconds since the epoch, for the run's directory name.
fn chrono_stamp() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
