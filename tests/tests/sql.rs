//! `POST /api/v1/sql` against the real binary: a tenant's own tables, answered as JSON, CSV
//! and Arrow IPC, every figure checked against what the test pushed; and SQL that would write,
//! change the session, or reach beyond the tenant's tables, refused as the caller's mistake.

use std::collections::BTreeMap;

use arrow_array::cast::AsArray;
use arrow_array::types::{Int64Type, UInt64Type};
use profusion_tests::{TestServer, flood, now_nanos, post};

/// `(stack, value)` of the profiles pushed for each tenant, pushed one profile per entry.
fn pushed() -> BTreeMap<&'static str, Vec<Vec<(String, i64)>>> {
    let profile = |stacks: &[(&str, i64)]| -> Vec<(String, i64)> {
        stacks.iter().map(|(s, v)| ((*s).to_owned(), *v)).collect()
    };
    BTreeMap::from([
        (
            "a",
            vec![
                profile(&[("main;work", 30), ("main;idle", 7)]),
                profile(&[("main;work", 11), ("main;gc", 5)]),
                profile(&[("main;work;parse", 13)]),
            ],
        ),
        ("b", vec![profile(&[("main;other", 1_000)])]),
    ])
}

fn sql(server: &TestServer, tenant: &str, accept: &str, query: &str) -> (u16, Vec<u8>) {
    let r = post(
        &server.url("/api/v1/sql"),
        &[("x-scope-orgid", tenant), ("accept", accept)],
        query.as_bytes().to_vec(),
        false,
    );
    (r.status, r.body)
}

fn text(body: &[u8]) -> String {
    String::from_utf8_lossy(body).into_owned()
}

#[test]
fn sql_reads_the_tenants_own_tables_as_json_csv_and_arrow() {
    let server = TestServer::configure()
        .arg("--auth.multitenancy-enabled")
        .spawn();
    let now = now_nanos();
    let pushed = pushed();
    for (tenant, profiles) in &pushed {
        for (i, stacks) in profiles.iter().enumerate() {
            flood::push_tenant(&server, tenant, stacks, now - i as i64 * 1_000_000_000);
        }
    }
    // The reference, from what was pushed: profiles and total per tenant, value per stack.
    let total = |tenant: &str| -> i64 { pushed[tenant].iter().flatten().map(|(_, v)| v).sum() };
    let mut per_stack: BTreeMap<&str, i64> = BTreeMap::new();
    for (stack, value) in pushed["a"].iter().flatten() {
        *per_stack.entry(stack).or_default() += value;
    }

    // JSON rows (the default).
    let query = "SELECT count(*) AS profiles, sum(total_value) AS total FROM profiles";
    let (status, body) = sql(&server, "a", "application/json", query);
    assert_eq!(status, 200, "{}", text(&body));
    let rows: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        rows,
        serde_json::json!([{"profiles": pushed["a"].len(), "total": total("a")}])
    );
    // Tenants see their own rows only; a multi-tenant scope sees both.
    for (scope, profiles, sum) in [
        ("b", pushed["b"].len(), total("b")),
        (
            "a|b",
            pushed["a"].len() + pushed["b"].len(),
            total("a") + total("b"),
        ),
    ] {
        let (status, body) = sql(&server, scope, "application/json", query);
        assert_eq!(status, 200, "{}", text(&body));
        let rows: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            rows,
            serde_json::json!([{"profiles": profiles, "total": sum}]),
            "{scope}"
        );
    }

    // CSV: the samples' values per stack, joined to the stacks' leaf frames by hash.
    let (status, body) = sql(
        &server,
        "a",
        "text/csv",
        "SELECT stack_hash, sum(value) AS value FROM samples GROUP BY stack_hash ORDER BY value",
    );
    assert_eq!(status, 200, "{}", text(&body));
    let csv = text(&body);
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("stack_hash,value"));
    let values: Vec<i64> = lines
        .map(|l| l.split(',').nth(1).unwrap().parse().unwrap())
        .collect();
    let mut want: Vec<i64> = per_stack.values().copied().collect();
    want.sort();
    assert_eq!(values, want);

    // Arrow IPC: the profiles' times and totals, newest first.
    let (status, body) = sql(
        &server,
        "a",
        "application/vnd.apache.arrow.stream",
        "SELECT time_nanos, total_value, num_samples FROM profiles ORDER BY time_nanos DESC",
    );
    assert_eq!(status, 200, "{}", text(&body));
    let reader = arrow_ipc::reader::StreamReader::try_new(body.as_slice(), None).unwrap();
    let mut got = Vec::new();
    for batch in reader {
        let batch = batch.unwrap();
        let times = batch.column(0).as_primitive::<Int64Type>();
        let totals = batch.column(1).as_primitive::<Int64Type>();
        let samples = batch.column(2).as_primitive::<UInt64Type>();
        for row in 0..batch.num_rows() {
            got.push((times.value(row), totals.value(row), samples.value(row)));
        }
    }
    let want: Vec<(i64, i64, u64)> = pushed["a"]
        .iter()
        .enumerate()
        .map(|(i, stacks)| {
            (
                now - i as i64 * 1_000_000_000,
                stacks.iter().map(|(_, v)| v).sum(),
                stacks.len() as u64,
            )
        })
        .collect();
    assert_eq!(got, want);

    // No rows: still the columns.
    let (status, body) = sql(
        &server,
        "a",
        "text/csv",
        "SELECT profile_id FROM profiles WHERE total_value < 0",
    );
    assert_eq!((status, text(&body)), (200, "profile_id\n".to_owned()));
    let (status, body) = sql(
        &server,
        "a",
        "application/json",
        "SELECT profile_id FROM profiles WHERE total_value < 0",
    );
    assert_eq!((status, text(&body)), (200, "[]".to_owned()));
}

#[test]
fn sql_that_writes_or_reaches_beyond_the_tenants_tables_is_refused() {
    let server = TestServer::configure()
        .arg("--auth.multitenancy-enabled")
        .spawn();
    flood::push_tenant(
        &server,
        "other",
        &[("secret;stack".to_owned(), 42)],
        now_nanos(),
    );
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("out.parquet");
    for (query, says) in [
        (
            "CREATE EXTERNAL TABLE leak STORED AS PARQUET LOCATION '/'".to_owned(),
            "DDL not supported",
        ),
        (
            format!("COPY (SELECT 1) TO '{}'", target.display()),
            "DML not supported",
        ),
        (
            "INSERT INTO profiles SELECT * FROM profiles".to_owned(),
            "DML not supported",
        ),
        (
            "SET datafusion.execution.batch_size = 1".to_owned(),
            "Statement not supported",
        ),
        ("SELECT * FROM '/etc/passwd'".to_owned(), "not found"),
        (
            "SELECT * FROM other.public.profiles".to_owned(),
            "not found",
        ),
        (
            "SELECT * FROM information_schema.tables".to_owned(),
            "not found",
        ),
        ("SELEC 1".to_owned(), "SQL"),
        ("   ".to_owned(), "empty"),
    ] {
        let (status, body) = sql(&server, "mine", "application/json", &query);
        assert_eq!(status, 400, "{query}: {}", text(&body));
        assert!(text(&body).contains(says), "{query}: {}", text(&body));
    }
    assert!(!target.exists(), "COPY wrote a file");
    // The tenant's own tables hold nothing of another's.
    let (status, body) = sql(
        &server,
        "mine",
        "application/json",
        "SELECT count(*) AS n FROM samples",
    );
    assert_eq!(status, 200, "{}", text(&body));
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&body).unwrap(),
        serde_json::json!([{"n": 0}])
    );
    // An answer format it cannot give is refused before the query runs.
    let (status, body) = sql(&server, "mine", "application/xml", "SELECT 1");
    assert_eq!(status, 400, "{}", text(&body));
    assert!(text(&body).contains("text/csv"), "{}", text(&body));
}

#[test]
fn a_runaway_sql_query_fails_alone_within_the_memory_budget() {
    let server = TestServer::configure()
        .arg("--querier.max-query-memory=8388608")
        .spawn();
    // Ten million rows of answer: far over an 8 MiB budget.
    let (status, body) = sql(
        &server,
        "anonymous",
        "application/json",
        "SELECT value * 2 AS v FROM generate_series(1, 10000000) AS t(value)",
    );
    assert_eq!(status, 429, "{}", text(&body));
    assert!(
        text(&body).contains("--querier.max-query-memory"),
        "{}",
        text(&body)
    );
    // The server keeps serving.
    let (status, body) = sql(&server, "anonymous", "text/csv", "SELECT 1 + 1 AS two");
    assert_eq!((status, text(&body)), (200, "two\n2\n".to_owned()));
}
