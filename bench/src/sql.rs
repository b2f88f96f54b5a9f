//! SQL analyses and the export to data lakes, measured next to their references in the same
//! run over the same data:
//!
//! - **top functions** (self and total per function) and **totals over time** (per service, about
//!   300 steps) as SQL table functions through Flight SQL, against the same questions asked
//!   through the querier API (a whole flame graph whose table the client derives, as Grafana
//!   does; `SelectSeries`) and through DuckDB on the block files;
//! - **export**: `profusion export` of a day of profiles to Delta Lake and to Parquet, its rows/s
//!   and MB/s per core (the command's own CPU time) and the exported bytes per row next to the
//!   blocks' bytes per row.
//!
//! Each answer is checked against the two others, so a fast wrong answer shows as a
//! disagreement in the report and not as a win.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use arrow_array::RecordBatch;
use arrow_array::cast::AsArray;
use arrow_array::types::{Int64Type, TimestampNanosecondType};
use arrow_flight::sql::client::FlightSqlServiceClient;
use futures_util::TryStreamExt;
use profusion_proto::querier::v1::{
    SelectMergeStacktracesRequest, SelectMergeStacktracesResponse, SelectSeriesResponse,
};
use profusion_testing::ConnectClient;
use serde_json::{Value, json};
use tonic::transport::Channel;

use crate::run::{latency, rpc};

const CPU: &str = "process_cpu:cpu:nanoseconds:cpu:nanoseconds";
const HOUR_MS: i64 = 3_600_000;

/// Function name -> (self, total).
type FunctionTable = BTreeMap<String, (i64, i64)>;
/// Service -> its total over the window.
type ServiceTotals = BTreeMap<String, i64>;

/// A time window of the analyses: `[start_ms, end_ms]`, both ends included, as the querier API
/// takes them.
#[derive(Debug, Clone, Copy)]
struct Window {
    label: &'static str,
    start_ms: i64,
    end_ms: i64,
    /// Seconds per step of the totals over time: about 300 steps, at least 15 s.
    step_s: i64,
}

impl Window {
    fn ending_at(label: &'static str, hours: i64, end_ms: i64) -> Self {
        Self {
            label,
            start_ms: end_ms - hours * HOUR_MS,
            end_ms,
            step_s: (hours * 3600 / 300).max(15),
        }
    }

    /// The window as SQL arguments: start included, end excluded (the millisecond after).
    fn sql_range(&self) -> String {
        format!(
            "to_timestamp_millis({}), to_timestamp_millis({})",
            self.start_ms,
            self.end_ms + 1
        )
    }
}

/// A connection to the server's main port, where Flight SQL is served.
async fn connect_flight(url: &str) -> Channel {
    Channel::from_shared(url.to_owned())
        .expect("server URL")
        .connect()
        .await
        .unwrap_or_else(|e| panic!("connect to Flight SQL at {url}: {e}"))
}

/// Every batch of `sql`'s answer: `GetFlightInfo`, then `DoGet` of each endpoint's ticket, by a
/// Flight SQL client on `channel` (clients share the connection).
async fn flight_sql_batches(channel: &Channel, sql: &str) -> Vec<RecordBatch> {
    let mut client = FlightSqlServiceClient::new(channel.clone());
    let info = client
        .execute(sql.to_owned(), None)
        .await
        .unwrap_or_else(|e| panic!("Flight SQL {sql}: {e}"));
    let mut batches = Vec::new();
    for endpoint in info.endpoint {
        let ticket = endpoint.ticket.expect("endpoint ticket");
        let stream = client
            .do_get(ticket)
            .await
            .unwrap_or_else(|e| panic!("DoGet of {sql}: {e}"));
        batches.extend(
            stream
                .try_collect::<Vec<_>>()
                .await
                .unwrap_or_else(|e| panic!("answer of {sql}: {e}")),
        );
    }
    batches
}

fn top_functions_sql(w: &Window) -> String {
    format!(
        "SELECT * FROM top_functions('{CPU}', '{{}}', {})",
        w.sql_range()
    )
}

fn totals_over_time_sql(w: &Window) -> String {
    format!(
        "SELECT * FROM totals_over_time('{CPU}', '{{}}', {}, 'service_name', {})",
        w.step_s,
        w.sql_range()
    )
}

/// `top_functions`' rows: `function_name`, `self`, `total`.
fn function_table(batches: &[RecordBatch]) -> FunctionTable {
    let mut table = FunctionTable::new();
    for b in batches {
        let names = b.column(0).as_string::<i32>();
        let (selfs, totals) = (
            b.column(1).as_primitive::<Int64Type>(),
            b.column(2).as_primitive::<Int64Type>(),
        );
        for i in 0..b.num_rows() {
            table.insert(names.value(i).to_owned(), (selfs.value(i), totals.value(i)));
        }
    }
    table
}

/// `totals_over_time`'s rows (`time`, `service_name`, `total`) summed per service, and the
/// number of points.
fn service_totals(batches: &[RecordBatch]) -> (ServiceTotals, usize) {
    let (mut totals, mut points) = (ServiceTotals::new(), 0);
    for b in batches {
        // The time column is read, so a wrong type fails here and not silently.
        let _ = b.column(0).as_primitive::<TimestampNanosecondType>();
        let services = b.column(1).as_string::<i32>();
        let values = b.column(2).as_primitive::<Int64Type>();
        for i in 0..b.num_rows() {
            *totals.entry(services.value(i).to_owned()).or_default() += values.value(i);
        }
        points += b.num_rows();
    }
    (totals, points)
}

/// The table a client derives from a whole flame graph, as Grafana's top table does: a
/// function's self is its nodes' self; its total is its nodes' totals, except nodes under
/// another node of the same function (a recursion counts once). Linear in the nodes (times the
/// depth for the recursion check): a level's nodes and their parents are both in `x` order.
fn flame_graph_functions(answer: &SelectMergeStacktracesResponse) -> FunctionTable {
    let Some(graph) = &answer.flamegraph else {
        return FunctionTable::new();
    };
    // Per node of every level: (x, total, name index, parent's index in the level above).
    let mut levels: Vec<Vec<(i64, i64, usize, usize)>> = Vec::with_capacity(graph.levels.len());
    let mut table = FunctionTable::new();
    for (depth, level) in graph.levels.iter().enumerate() {
        let mut nodes = Vec::with_capacity(level.values.len() / 4);
        let (mut end, mut parent) = (0i64, 0usize);
        for node in level.values.chunks_exact(4) {
            let (x, total, self_value, name) = (end + node[0], node[1], node[2], node[3] as usize);
            end = x + total;
            if depth > 0 {
                let above = &levels[depth - 1];
                while parent + 1 < above.len() && above[parent].0 + above[parent].1 <= x {
                    parent += 1;
                }
            }
            nodes.push((x, total, name, parent));
            // The virtual root, `total`, is no function.
            if depth == 0 {
                continue;
            }
            let mut recursive = false;
            let (mut d, mut p) = (depth - 1, parent);
            while d > 0 {
                let caller = levels[d][p];
                if caller.2 == name {
                    recursive = true;
                    break;
                }
                (d, p) = (d - 1, caller.3);
            }
            let entry = table.entry(graph.names[name].clone()).or_default();
            entry.0 += self_value;
            if !recursive {
                entry.1 += total;
            }
        }
        levels.push(nodes);
    }
    table
}

/// `SelectSeries` by service summed per service, and the number of points.
fn series_totals(answer: &SelectSeriesResponse) -> (ServiceTotals, usize) {
    let (mut totals, mut points) = (ServiceTotals::new(), 0);
    for s in &answer.series {
        let service = s
            .labels
            .iter()
            .find(|l| l.name == "service_name")
            .map_or(String::new(), |l| l.value.clone());
        *totals.entry(service).or_default() += s.points.iter().map(|p| p.value as i64).sum::<i64>();
        points += s.points.len();
    }
    (totals, points)
}

/// The whole flame graph (every node, as the top table needs) of the CPU profiles in `w`.
async fn whole_flame_graph(client: &ConnectClient, w: &Window) -> SelectMergeStacktracesResponse {
    rpc(
        client,
        "SelectMergeStacktraces",
        &SelectMergeStacktracesRequest {
            profile_type_id: CPU.into(),
            label_selector: "{}".into(),
            start: w.start_ms,
            end: w.end_ms,
            // The server's largest: the whole tree for this workload.
            max_nodes: Some(1_048_576),
            ..Default::default()
        },
    )
    .await
}
/// `SelectSeries` of CPU by service over a window, at its step.
async fn series_by_service(client: &ConnectClient, w: &Window) -> SelectSeriesResponse {
    crate::run::cpu_by_service(client, w.start_ms, w.end_ms, w.step_s as f64).await
}

/// The same two questions asked of DuckDB over the block files; per window the p50 and p95 of
/// `runs` runs each and the answers, as `{window: {top_functions: {p50_s, p95_s, rows},
/// totals_over_time: {p50_s, p95_s, points, totals}}}`.
const DUCKDB_SCRIPT: &str = r#"
import json, sys, time, duckdb
blocks, windows = sys.argv[1], json.loads(sys.argv[2])
pt = "process_cpu:cpu:nanoseconds:cpu:nanoseconds"
def files(table):
    return f"read_parquet('{blocks}/*/blocks/*/{table}.parquet')"
out = {}
for w in windows:
    start, end, step = w["start_ms"] * 1000000, w["end_ms"] * 1000000 + 999999, w["step_s"] * 1000000000
    # Self is what a stack's leaf (its last frame: stacks are root first) holds; total is what
    # the stacks through a function hold, each stack counted once per function.
    top = f"""
    WITH m AS (SELECT stack_hash, sum(value) AS v FROM {files('samples')}
               WHERE profile_type = '{pt}' AND time_nanos BETWEEN {start} AND {end} GROUP BY 1),
         st AS (SELECT DISTINCT stack_hash, frame_ids FROM {files('stacks')}
                WHERE stack_hash IN (SELECT stack_hash FROM m)),
         fr AS (SELECT DISTINCT frame_id, function_name FROM {files('frames')}),
         f AS (SELECT st.stack_hash, u.pos, len(st.frame_ids) AS depth, fr.function_name
               FROM st, unnest(st.frame_ids) WITH ORDINALITY AS u(frame_id, pos)
               JOIN fr ON fr.frame_id = u.frame_id),
         self AS (SELECT function_name, sum(v) AS self FROM f JOIN m USING (stack_hash)
                  WHERE pos = depth GROUP BY 1),
         total AS (SELECT function_name, sum(v) AS total
                   FROM (SELECT DISTINCT stack_hash, function_name FROM f) JOIN m USING (stack_hash)
                   GROUP BY 1)
    SELECT function_name, coalesce(self, 0)::BIGINT, total::BIGINT
    FROM total LEFT JOIN self USING (function_name) ORDER BY 2 DESC, 3 DESC"""
    over_time = f"""
    SELECT service_name, time_nanos // {step} AS step, sum(total_value)::BIGINT
    FROM {files('profiles')}
    WHERE profile_type = '{pt}' AND time_nanos BETWEEN {start} AND {end} GROUP BY ALL"""
    res = {}
    for name, q in [("top_functions", top), ("totals_over_time", over_time)]:
        # No progress bar: DuckDB draws it on stdout, where the answer is read as JSON.
        con = duckdb.connect()
        con.execute("SET enable_progress_bar = false")
        times = []
        for _ in range(w["runs"]):
            t = time.perf_counter(); rows = con.execute(q).fetchall(); times.append(time.perf_counter() - t)
        times.sort()
        r = {"p50_s": times[len(times) // 2],
             "p95_s": times[min(len(times) - 1, round((len(times) - 1) * 0.95))]}
        if name == "top_functions":
            r["rows"] = [[n, s, t] for n, s, t in rows]
        else:
            totals = {}
            for service, _, v in rows:
                totals[service] = totals.get(service, 0) + v
            r["points"], r["totals"] = len(rows), totals
        res[name] = r
    out[w["window"]] = res
print(json.dumps(out))
"#;

fn duckdb(objects: &Path, windows: &[Window], runs: usize) -> Option<Value> {
    let args: Vec<Value> = windows
        .iter()
        .map(|w| {
            json!({"window": w.label, "start_ms": w.start_ms, "end_ms": w.end_ms,
                   "step_s": w.step_s, "runs": runs})
        })
        .collect();
    crate::run::run_duckdb(DUCKDB_SCRIPT, objects, &args)
}

fn duckdb_functions(rows: &Value) -> FunctionTable {
    rows.as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| Some((r[0].as_str()?.to_owned(), (r[1].as_i64()?, r[2].as_i64()?))))
        .collect()
}

fn duckdb_totals(totals: &Value) -> ServiceTotals {
    totals
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.clone(), v.as_i64()?)))
        .collect()
}

/// p50, p95 and the cold first run of a measurement, in seconds.
fn timing((p50, p95, cold): (f64, f64, f64)) -> Value {
    json!({"p50_s": p50, "p95_s": p95, "cold_s": cold})
}

fn ratio(a: &Value, b: &Value) -> Value {
    match (a["p50_s"].as_f64(), b["p50_s"].as_f64()) {
        (Some(a), Some(b)) if b > 0.0 => json!(a / b),
        _ => Value::Null,
    }
}

/// Top functions and totals over time through Flight SQL, the querier API and DuckDB over 1 h,
/// 24 h and 7 d before `end_ms`, `runs` timed runs each, on the server at `url` whose blocks
/// are under `objects`.
pub(crate) async fn analyses(url: &str, objects: &Path, end_ms: i64, runs: usize) -> Value {
    let windows = [
        Window::ending_at("1h", 1, end_ms),
        Window::ending_at("24h", 24, end_ms),
        Window::ending_at("7d", 168, end_ms),
    ];
    let connect = ConnectClient::new(url);
    let flight = connect_flight(url).await;
    let mut measured = Vec::new();
    for w in &windows {
        // Answers first (checked below), then the timed runs.
        let sql_top = function_table(&flight_sql_batches(&flight, &top_functions_sql(w)).await);
        let (sql_totals, sql_points) =
            service_totals(&flight_sql_batches(&flight, &totals_over_time_sql(w)).await);
        let api_top = flame_graph_functions(&whole_flame_graph(&connect, w).await);
        let (api_totals, api_points) = series_totals(&series_by_service(&connect, w).await);

        let sql_top_t = timing(
            latency(runs, || async {
                let answer = flight_sql_batches(&flight, &top_functions_sql(w)).await;
                std::hint::black_box(answer.len());
            })
            .await,
        );
        let sql_totals_t = timing(
            latency(runs, || async {
                let answer = flight_sql_batches(&flight, &totals_over_time_sql(w)).await;
                std::hint::black_box(answer.len());
            })
            .await,
        );
        let api_top_t = timing(
            latency(runs, || async {
                let answer = whole_flame_graph(&connect, w).await;
                std::hint::black_box(flame_graph_functions(&answer).len());
            })
            .await,
        );
        let api_totals_t = timing(
            latency(runs, || async {
                std::hint::black_box(series_by_service(&connect, w).await.series.len());
            })
            .await,
        );
        eprintln!(
            "  {}: top functions {:.0} ms by Flight SQL, {:.0} ms by the querier API; totals over time {:.0} / {:.0} ms",
            w.label,
            sql_top_t["p50_s"].as_f64().unwrap_or(0.0) * 1e3,
            api_top_t["p50_s"].as_f64().unwrap_or(0.0) * 1e3,
            sql_totals_t["p50_s"].as_f64().unwrap_or(0.0) * 1e3,
            api_totals_t["p50_s"].as_f64().unwrap_or(0.0) * 1e3,
        );
        measured.push((
            *w,
            json!({
                "window": w.label, "start_ms": w.start_ms, "end_ms": w.end_ms, "step_s": w.step_s,
                "top_functions": {
                    "functions": sql_top.len(),
                    "flight_sql": sql_top_t,
                    "querier_api": api_top_t,
                    "querier_api_agrees": api_top == sql_top,
                },
                "totals_over_time": {
                    "flight_sql": sql_totals_t,
                    "flight_sql_points": sql_points,
                    "querier_api": api_totals_t,
                    "querier_api_points": api_points,
                    "querier_api_agrees": api_totals == sql_totals,
                },
            }),
            sql_top,
            sql_totals,
        ));
    }
    let duck = duckdb(objects, &windows, runs);
    let mut out = Vec::new();
    for (w, mut m, sql_top, sql_totals) in measured {
        if let Some(d) = duck.as_ref().map(|d| &d[w.label]) {
            let (top, over) = (&d["top_functions"], &d["totals_over_time"]);
            let t = &mut m["top_functions"];
            t["duckdb"] = json!({"p50_s": top["p50_s"], "p95_s": top["p95_s"]});
            t["duckdb_agrees"] = json!(duckdb_functions(&top["rows"]) == sql_top);
            t["ratio_flight_sql_to_duckdb"] = ratio(&t["flight_sql"], &t["duckdb"]);
            t["ratio_querier_api_to_duckdb"] = ratio(&t["querier_api"], &t["duckdb"]);
            let o = &mut m["totals_over_time"];
            o["duckdb"] = json!({"p50_s": over["p50_s"], "p95_s": over["p95_s"]});
            o["duckdb_points"] = over["points"].clone();
            o["duckdb_agrees"] = json!(duckdb_totals(&over["totals"]) == sql_totals);
            o["ratio_flight_sql_to_duckdb"] = ratio(&o["flight_sql"], &o["duckdb"]);
            o["ratio_querier_api_to_duckdb"] = ratio(&o["querier_api"], &o["duckdb"]);
        }
        let t = &mut m["top_functions"];
        t["ratio_flight_sql_to_querier_api"] = ratio(&t["flight_sql"], &t["querier_api"]);
        let o = &mut m["totals_over_time"];
        o["ratio_flight_sql_to_querier_api"] = ratio(&o["flight_sql"], &o["querier_api"]);
        out.push(m);
    }
    Value::Array(out)
}

/// CPU seconds (user + system) of this process's children that have ended and been waited
/// for.
fn children_cpu_seconds() -> f64 {
    crate::run::stat_cpu_seconds("/proc/self/stat", 13)
}

/// Bytes of the files under `dir`, recursively.
fn tree_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => tree_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// `profusion export` of the day ending two hours before `end_ns` (surely in blocks, and below
/// the command's cap) from the stopped server's data directory `data`, to Delta Lake and to
/// Parquet under `out`; `block_bytes_per_row` is what the blocks store per sample row.
pub(crate) fn export(
    binary: &Path,
    data: &Path,
    out: &Path,
    end_ns: i64,
    block_bytes_per_row: f64,
) -> Value {
    let end = end_ns - 2 * HOUR_MS * 1_000_000;
    let start = end - 24 * HOUR_MS * 1_000_000;
    let secs = |nanos: i64| format!("{}", nanos as f64 / 1e9);
    let mut formats = Vec::new();
    for format in ["delta", "parquet"] {
        let destination = out.join(format!("export-{format}"));
        let _ = std::fs::remove_dir_all(&destination);
        let cpu_before = children_cpu_seconds();
        let t = Instant::now();
        let run = Command::new(binary)
            .args([
                "export",
                "--tenant=anonymous",
                &format!("--start={}", secs(start)),
                &format!("--end={}", secs(end)),
                &format!("--format={format}"),
                &format!("--pyroscopedb.data-path={}", data.display()),
            ])
            .arg(&destination)
            .output()
            .expect("run profusion export");
        let wall = t.elapsed().as_secs_f64();
        let cpu = (children_cpu_seconds() - cpu_before).max(0.01);
        assert!(
            run.status.success(),
            "profusion export --format={format}: {}",
            String::from_utf8_lossy(&run.stderr)
        );
        let report: Value = serde_json::from_slice(&run.stdout).expect("export report");
        let rows = report["rows"].as_u64().unwrap_or(0);
        let bytes = tree_bytes(&destination);
        let per_row = bytes as f64 / rows.max(1) as f64;
        eprintln!(
            "  {format}: {rows} rows in {wall:.1} s ({:.0} rows/s per core), {per_row:.1} bytes per row against {block_bytes_per_row:.1} in blocks",
            rows as f64 / cpu
        );
        formats.push(json!({
            "format": format,
            "rows": rows,
            "files": report["files"],
            "wall_s": wall,
            "cpu_s": cpu,
            "rows_per_s": rows as f64 / wall,
            "rows_per_s_per_core": rows as f64 / cpu,
            "exported_mb_per_s_per_core": bytes as f64 / 1e6 / cpu,
            // The block bytes holding those rows, read per CPU second.
            "block_mb_per_s_per_core": rows as f64 * block_bytes_per_row / 1e6 / cpu,
            "exported_bytes": bytes,
            "exported_bytes_per_row": per_row,
            "block_bytes_per_row": block_bytes_per_row,
            "ratio_exported_to_block_bytes": per_row / block_bytes_per_row.max(1e-9),
        }));
        let _ = std::fs::remove_dir_all(&destination);
    }
    json!({"start_ns": start, "end_ns": end, "formats": formats})
}
