//! `profusion export` against the real binary and real readers: a tenant's profiles written
//! as a Delta Lake table (read by PyPI `deltalake`) and as Hive-partitioned Parquet (read by
//! pyarrow), every row checked against what the test pushed; re-runs append only what is new;
//! a run killed before its commit leaves the table as it was, and the next run writes the
//! range once.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use profusion_tests::emulators::ObjectStoreEmulator;
use profusion_tests::{TestServer, clients, now_nanos, push_cpu_as};

const MINUTE: i64 = 60_000_000_000;

/// One pushed profile: service, region, minutes after the test's origin, root-first stacks.
type Pushed = (
    &'static str,
    &'static str,
    i64,
    &'static [(&'static str, i64)],
);

/// The first batch of profiles, then the second, pushed after the first export.
const FIRST: &[Pushed] = &[
    (
        "checkout",
        "eu",
        0,
        &[("main;handle;db", 40), ("main;handle;parse", 25)],
    ),
    ("checkout", "us", 10, &[("main;gc", 5)]),
    (
        "search",
        "eu",
        20,
        &[("main;query", 70), ("main;handle;db", 3)],
    ),
];
const SECOND: &[Pushed] = &[
    ("checkout", "eu", 90, &[("main;handle;db", 11)]),
    ("search", "us", 95, &[("main;query", 8)]),
];

/// Pushes `profiles` for tenant `t`, `origin` being minute 0.
fn push(server: &TestServer, profiles: &[Pushed], origin: i64) {
    for (service, region, minutes, stacks) in profiles {
        push_cpu_as(
            server,
            Some("t"),
            &[
                ("__name__", "process_cpu"),
                ("service_name", service),
                ("region", region),
            ],
            stacks,
            origin + minutes * MINUTE,
        );
    }
}

/// Starts the server on `data`, pushes `profiles`, and stops it (which flushes the head).
fn push_and_flush(data: &Path, profiles: &[Pushed], origin: i64) {
    let mut server = TestServer::configure()
        .arg("--auth.multitenancy-enabled")
        // The profiles are hours old: older than what the ingesters may still hold.
        .arg("--validation.reject-older-than=24h")
        .data_dir(data)
        .spawn();
    push(&server, profiles, origin);
    server.stop();
}

/// An exported row as the test compares it: time in µs, service, region, stack joined by
/// `;`, value.
type Row = (i64, String, String, String, i64);

/// The rows an export of `profiles` holds, one per profile and stack, sorted.
fn reference(profiles: &[&Pushed], origin: i64) -> Vec<Row> {
    let mut rows: Vec<_> = profiles
        .iter()
        .flat_map(|(service, region, minutes, stacks)| {
            stacks.iter().map(move |(stack, value)| {
                (
                    (origin + minutes * MINUTE) / 1000,
                    (*service).to_owned(),
                    (*region).to_owned(),
                    (*stack).to_owned(),
                    *value,
                )
            })
        })
        .collect();
    rows.sort();
    rows
}

/// Runs `profusion export` over the data directory `data`; its JSON report, or its stderr.
fn export(
    data: &Path,
    format: &str,
    destination: &Path,
    start: i64,
    end: i64,
    extra: &[&str],
) -> Result<serde_json::Value, String> {
    export_with(
        data,
        format,
        &destination.display().to_string(),
        start,
        end,
        extra,
        &[],
    )
}

/// [`export`] to any destination, with environment variables (a cloud's credentials).
fn export_with(
    data: &Path,
    format: &str,
    destination: &str,
    start: i64,
    end: i64,
    extra: &[&str],
    env: &[(&str, String)],
) -> Result<serde_json::Value, String> {
    let secs = |nanos: i64| format!("{}", nanos as f64 / 1e9);
    let out = Command::new(profusion_tests::binary())
        .args([
            "export",
            "--tenant=t",
            &format!("--start={}", secs(start)),
            &format!("--end={}", secs(end)),
            &format!("--format={format}"),
            &format!("--pyroscopedb.data-path={}", data.display()),
        ])
        .args(extra)
        .arg(destination)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .expect("run profusion export");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    Ok(serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}")))
}

/// Reads a Delta table with `deltalake` or a Parquet export with pyarrow's Hive dataset: the
/// rows as (time µs, service, region, stack joined by `;`, value), sorted; and the columns.
const READ: &str = r#"
import json, sys
kind, path = sys.argv[1], sys.argv[2]
options = json.loads(sys.argv[3]) if len(sys.argv) > 3 else None
if kind == "delta":
    from deltalake import DeltaTable
    table = DeltaTable(path, storage_options=options).to_pyarrow_table()
else:
    import pyarrow.dataset as ds
    table = ds.dataset(path, format="parquet", partitioning="hive").to_table()
rows = []
for r in table.to_pylist():
    labels = dict(r["labels"])
    time = table.schema.field("time").type
    rows.append([r["time"].timestamp() * 1e6 if hasattr(r["time"], "timestamp") else r["time"],
                 r["service_name"], labels.get("region"), ";".join(r["stack"]), r["value"],
                 str(r["date"]), r["profile_type"]])
print(json.dumps({"columns": sorted(table.schema.names), "rows": rows}, default=str), flush=True)
# Skip the interpreter's teardown: deltalake's and Arrow's native threads can abort it
# ("terminate called without an active exception") after the answer is printed.
import os
os._exit(0)
"#;

fn read(python: &Path, kind: &str, path: &Path) -> (Vec<String>, Vec<Row>) {
    read_from(python, kind, &path.display().to_string(), None)
}

/// [`read`] from any location, with the reader's storage options.
fn read_from(
    python: &Path,
    kind: &str,
    location: &str,
    options: Option<serde_json::Value>,
) -> (Vec<String>, Vec<Row>) {
    let mut args = vec![
        "-c".to_owned(),
        READ.to_owned(),
        kind.to_owned(),
        location.to_owned(),
    ];
    args.extend(options.map(|o| o.to_string()));
    let out = Command::new(python).args(&args).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let columns = v["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    let mut rows: Vec<_> = v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let time = r[0].as_f64().unwrap().round() as i64;
            // Each row's partition date is its time's UTC day.
            let day = chrono::DateTime::from_timestamp_micros(time)
                .unwrap()
                .format("%Y-%m-%d")
                .to_string();
            assert_eq!(r[5].as_str().unwrap(), day, "{r}");
            assert_eq!(
                r[6].as_str().unwrap(),
                "process_cpu:cpu:nanoseconds:cpu:nanoseconds"
            );
            (
                time,
                r[1].as_str().unwrap().to_owned(),
                r[2].as_str().unwrap().to_owned(),
                r[3].as_str().unwrap().to_owned(),
                r[4].as_i64().unwrap(),
            )
        })
        .collect();
    rows.sort();
    (columns, rows)
}

/// Reads a Delta table with DuckDB's `delta` extension, loaded from the file its wheel ships
/// (no download): the rows as [`read`] gives them.
const DUCKDB: &str = r#"
import duckdb, glob, json, sys, sysconfig
extension = glob.glob(sysconfig.get_paths()["purelib"]
                      + "/duckdb_ext/extensions/*/*/delta.duckdb_extension")[0]
con = duckdb.connect()
con.execute(f"LOAD '{extension}'")
rows = con.execute(
    "SELECT epoch_us(time), service_name, labels['region'], array_to_string(stack, ';'), value "
    "FROM delta_scan(?) ORDER BY ALL", [sys.argv[1]]).fetchall()
print(json.dumps(rows))
"#;

fn read_with_duckdb(python: &Path, table: &Path) -> Vec<Row> {
    let out = Command::new(python)
        .args(["-c", DUCKDB, &table.display().to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn exports_are_read_by_real_readers_and_reruns_append_only_what_is_new() {
    let Some(clients) = clients("export") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // Four hours ago: far older than what ingesters may still hold.
    let origin = (now_nanos() - 240 * MINUTE) / MINUTE * MINUTE;
    push_and_flush(&data, FIRST, origin);

    let first_end = origin + 60 * MINUTE;
    let second_end = origin + 120 * MINUTE;
    let all: Vec<&Pushed> = FIRST.iter().chain(SECOND).collect();
    let mut by_format = BTreeMap::new();
    for format in ["delta", "parquet"] {
        let table = dir.path().join(format);
        let report = export(&data, format, &table, origin - MINUTE, first_end, &[]).unwrap();
        assert_eq!(report["exported"], true, "{report}");
        let want = reference(&FIRST.iter().collect::<Vec<_>>(), origin);
        assert_eq!(report["rows"], want.len(), "{report}");
        let (columns, rows) = read(&clients.python, format, &table);
        assert_eq!(
            columns,
            [
                "date",
                "labels",
                "profile_id",
                "profile_type",
                "service_name",
                "stack",
                "time",
                "value"
            ]
        );
        assert_eq!(rows, want, "{format}");
        if format == "delta" {
            assert_eq!(read_with_duckdb(&clients.python_delta, &table), want);
        }
        // Nothing new: a re-run writes nothing.
        let again = export(&data, format, &table, origin - MINUTE, first_end, &[]).unwrap();
        assert_eq!(again["exported"], false, "{again}");
        by_format.insert(format, table);
    }

    // New profiles, then a re-run up to a later end: only they are appended.
    push_and_flush(&data, SECOND, origin);
    for (format, table) in &by_format {
        let report = export(&data, format, table, origin - MINUTE, second_end, &[]).unwrap();
        assert_eq!(
            report["rows"],
            reference(&SECOND.iter().collect::<Vec<_>>(), origin).len(),
            "{report}"
        );
        assert_eq!(
            read(&clients.python, format, table).1,
            reference(&all, origin)
        );
        if *format == "delta" {
            assert_eq!(
                read_with_duckdb(&clients.python_delta, table),
                reference(&all, origin)
            );
        }
    }
}

#[test]
fn an_export_killed_before_its_commit_leaves_the_table_as_it_was() {
    let Some(clients) = clients("export") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let origin = (now_nanos() - 240 * MINUTE) / MINUTE * MINUTE;
    let both: Vec<Pushed> = FIRST.iter().chain(SECOND).copied().collect();
    push_and_flush(&data, &both, origin);
    let first_end = origin + 60 * MINUTE;
    let second_end = origin + 120 * MINUTE;
    let first = reference(&FIRST.iter().collect::<Vec<_>>(), origin);
    let all = reference(&both.iter().collect::<Vec<_>>(), origin);
    for (format, fail_at) in [
        ("delta", "written"),
        ("parquet", "written"),
        ("parquet", "renamed"),
    ] {
        let table = dir.path().join(format!("{format}-{fail_at}"));
        export(&data, format, &table, origin - MINUTE, first_end, &[]).unwrap();
        // A run over the second batch, killed before its commit.
        let crashed = export(
            &data,
            format,
            &table,
            origin - MINUTE,
            second_end,
            &[&format!("--fail-at={fail_at}")],
        );
        assert!(crashed.is_err(), "{format} {fail_at}: the run was to abort");
        if fail_at == "written" {
            // Nothing of the killed run is visible.
            assert_eq!(read(&clients.python, format, &table).1, first, "{format}");
        }
        // The next run writes the killed run's range once.
        let report = export(&data, format, &table, origin - MINUTE, second_end, &[]).unwrap();
        assert_eq!(report["exported"], true, "{report}");
        assert_eq!(
            read(&clients.python, format, &table).1,
            all,
            "{format} {fail_at}: every row once"
        );
    }
}

#[test]
fn an_export_reads_blocks_from_s3_and_writes_a_delta_table_to_s3() {
    let Some(clients) = clients("export") else {
        return;
    };
    let s3 = ObjectStoreEmulator::moto(&clients, "profiles", "blocks");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let origin = (now_nanos() - 240 * MINUTE) / MINUTE * MINUTE;
    let mut server = s3
        .configure(TestServer::configure())
        .arg("--auth.multitenancy-enabled")
        .arg("--validation.reject-older-than=24h")
        .data_dir(&data)
        .spawn();
    push(&server, FIRST, origin);
    server.stop();

    let env: Vec<(&str, String)> = s3.env().to_vec();
    let storage = s3.storage_flag();
    let report = export_with(
        &data,
        "delta",
        "s3://profiles/lake",
        origin - MINUTE,
        origin + 60 * MINUTE,
        &[&storage],
        &env,
    )
    .unwrap();
    assert_eq!(report["exported"], true, "{report}");
    let options = serde_json::json!({
        "AWS_ENDPOINT_URL": s3.endpoint,
        "AWS_ALLOW_HTTP": "true",
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_REGION": "us-east-1",
    });
    let (_, rows) = read_from(
        &clients.python,
        "delta",
        "s3://profiles/lake",
        Some(options),
    );
    assert_eq!(rows, reference(&FIRST.iter().collect::<Vec<_>>(), origin));
}

#[test]
fn the_server_exports_each_tenant_on_schedule() {
    let Some(clients) = clients("export") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let origin = (now_nanos() - 240 * MINUTE) / MINUTE * MINUTE;
    let server = TestServer::configure()
        .arg("--auth.multitenancy-enabled")
        .arg("--validation.reject-older-than=24h")
        // Heads flushed within a second, so the blocks hold every profile at once.
        .arg("--pyroscopedb.max-block-duration=1s")
        .arg(format!("--export.destination={}", lake.display()))
        .arg("--export.format=parquet")
        .arg("--export.interval=1s")
        .data_dir(dir.path().join("data"))
        .spawn();
    push(&server, FIRST, origin);
    let want = reference(&FIRST.iter().collect::<Vec<_>>(), origin);
    // Each tenant in its own folder; the state file is written once a run's files are in view.
    let table = lake.join("t");
    let started = std::time::Instant::now();
    loop {
        if table.join("_profusion_export/t.json").exists()
            && read(&clients.python, "parquet", &table).1 == want
        {
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(90),
            "the scheduled export did not write the tenant's profiles: {:?}",
            table
                .exists()
                .then(|| read(&clients.python, "parquet", &table).1)
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    let metrics = profusion_tests::get(&server.url("/metrics"), &[]).text();
    let rows: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("profusion_export_rows_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no export rows metric:\n{metrics}"));
    assert_eq!(rows, want.len() as u64);
}
