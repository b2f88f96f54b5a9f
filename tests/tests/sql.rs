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
        ("SHOW TABLES".to_owned(), "information_schema"),
        ("SELECT * FROM other.samples".to_owned(), "not found"),
        (
            "SELECT * FROM 'http://127.0.0.1:1/leak.parquet'".to_owned(),
            "not found",
        ),
        (
            "SELECT * FROM 's3://bucket/other/blocks/x/samples.parquet'".to_owned(),
            "not found",
        ),
        (
            "SELECT * FROM read_parquet('/etc/passwd')".to_owned(),
            "not found",
        ),
        (
            "SELECT * FROM read_csv('/etc/passwd')".to_owned(),
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

/// One profile of the docs' example tenant: service, region, minutes ago, root-first stacks.
type Example = (
    &'static str,
    &'static str,
    i64,
    &'static [(&'static str, i64)],
);

/// The tenant docs/sql.md's examples describe: `checkout` in two regions, 45 and 10 minutes
/// ago (both halves of the last hour), and another service.
const EXAMPLE_PROFILES: &[Example] = &[
    (
        "checkout",
        "eu",
        45,
        &[
            ("main;handle;parse", 40),
            ("main;handle;db", 20),
            ("main;walk;walk;visit", 10),
        ],
    ),
    ("checkout", "us", 45, &[("main;handle;db", 30)]),
    (
        "checkout",
        "eu",
        10,
        &[("main;handle;parse", 90), ("main;handle;db", 20)],
    ),
    (
        "checkout",
        "us",
        10,
        &[
            ("main;handle;db", 35),
            ("main;handle;db;encode", 15),
            ("main;gc", 5),
        ],
    ),
    ("search", "eu", 10, &[("main;query", 50)]),
];

/// A pushed profile as the reference sees it.
struct Pushed {
    service: &'static str,
    region: &'static str,
    time: i64,
    stacks: Vec<(Vec<String>, i64)>,
}

/// The `sql` blocks of docs/sql.md, each with the name of its `<!-- checked: name -->` line.
fn doc_examples() -> Vec<(String, String)> {
    let page = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/sql.md"))
        .expect("docs/sql.md");
    let lines: Vec<&str> = page.lines().collect();
    let mut examples = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if lines[i].trim() == "```sql" {
            let name = lines[..i]
                .iter()
                .rev()
                .find(|l| !l.trim().is_empty())
                .and_then(|l| l.trim().strip_prefix("<!-- checked: "))
                .and_then(|l| l.strip_suffix(" -->"))
                .unwrap_or_else(|| panic!("docs/sql.md line {}: an example without a check", i + 1))
                .to_owned();
            let end = i + lines[i..].iter().position(|l| l.trim() == "```").unwrap();
            examples.push((name, lines[i + 1..end].join("\n")));
            i = end;
        }
        i += 1;
    }
    examples
}

/// The functions of some stacks as the analyses count them: self, what the function's own
/// frames hold; total, what the stacks through it hold, each stack once.
fn function_values<'a>(
    stacks: impl Iterator<Item = &'a (Vec<String>, i64)>,
) -> BTreeMap<String, (i64, i64)> {
    let mut values: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for (stack, value) in stacks {
        values.entry(stack.last().unwrap().clone()).or_default().0 += value;
        let distinct: std::collections::BTreeSet<&String> = stack.iter().collect();
        for name in distinct {
            values.entry(name.clone()).or_default().1 += value;
        }
    }
    values
}

/// The reference flame graph of some stacks: (depth, name, self, total), depth first, children
/// by name.
fn flame_rows<'a>(stacks: impl Iterator<Item = &'a (Vec<String>, i64)>) -> Vec<serde_json::Value> {
    #[derive(Default)]
    struct Node {
        self_value: i64,
        total: i64,
        children: BTreeMap<String, Node>,
    }
    let mut root = Node::default();
    for (stack, value) in stacks {
        let mut node = &mut root;
        for name in stack {
            node = node.children.entry(name.clone()).or_default();
            node.total += value;
        }
        node.self_value += value;
    }
    fn visit(node: &Node, depth: usize, out: &mut Vec<serde_json::Value>) {
        for (name, child) in &node.children {
            out.push(serde_json::json!({
                "depth": depth, "function_name": name,
                "self": child.self_value, "total": child.total,
            }));
            visit(child, depth + 1, out);
        }
    }
    let mut out = Vec::new();
    visit(&root, 0, &mut out);
    out
}

/// Unix nanoseconds of an RFC 3339 timestamp as the JSON answer writes it.
fn nanos(value: &serde_json::Value) -> i64 {
    let text = value.as_str().expect("a timestamp");
    chrono::DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|e| panic!("{text}: {e}"))
        .timestamp_nanos_opt()
        .unwrap()
}

#[test]
fn every_example_of_the_sql_docs_answers_as_the_reference() {
    let server = TestServer::start(&[]);
    let now = now_nanos();
    let minute = 60_000_000_000;
    let pushed: Vec<Pushed> = EXAMPLE_PROFILES
        .iter()
        .map(|(service, region, ago, stacks)| Pushed {
            service,
            region,
            time: now - ago * minute,
            stacks: stacks
                .iter()
                .map(|(s, v)| (s.split(';').map(str::to_owned).collect(), *v))
                .collect(),
        })
        .collect();
    for p in &pushed {
        let stacks: Vec<(String, i64)> = p.stacks.iter().map(|(s, v)| (s.join(";"), *v)).collect();
        let stacks: Vec<(&str, i64)> = stacks.iter().map(|(s, v)| (s.as_str(), *v)).collect();
        profusion_tests::push_cpu(
            &server,
            &[
                ("__name__", "process_cpu"),
                ("service_name", p.service),
                ("region", p.region),
            ],
            &stacks,
            p.time,
        );
    }
    let floor = |t: i64| t - t.rem_euclid(minute);
    let checkout = || pushed.iter().filter(|p| p.service == "checkout");
    let stacks_of = |profiles: Vec<&Pushed>| -> Vec<(Vec<String>, i64)> {
        profiles
            .into_iter()
            .flat_map(|p| p.stacks.iter().cloned())
            .collect()
    };
    let top = |values: BTreeMap<String, (i64, i64)>| -> Vec<(String, (i64, i64))> {
        let mut rows: Vec<_> = values.into_iter().collect();
        rows.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        rows
    };

    let examples = doc_examples();
    let mut checked = Vec::new();
    for (name, query) in &examples {
        let (status, body) = sql(&server, "anonymous", "application/json", query);
        assert_eq!(status, 200, "{name}: {}", text(&body));
        let got: Vec<serde_json::Value> = serde_json::from_slice(&body).unwrap();
        let want: Vec<serde_json::Value> = match name.as_str() {
            "per_minute" => {
                let mut groups: BTreeMap<(i64, &str), (u64, i64)> = BTreeMap::new();
                for p in &pushed {
                    let g = groups.entry((floor(p.time), p.service)).or_default();
                    g.0 += 1;
                    g.1 += p.stacks.iter().map(|s| s.1).sum::<i64>();
                }
                let got: Vec<serde_json::Value> = got
                    .iter()
                    .map(|r| {
                        let mut r = r.clone();
                        r["minute"] = nanos(&r["minute"]).into();
                        r
                    })
                    .collect();
                let want = groups
                    .into_iter()
                    .map(|((t, service), (profiles, total))| {
                        serde_json::json!({"minute": t, "service_name": service,
                            "profiles": profiles, "cpu_nanos": total})
                    })
                    .collect::<Vec<_>>();
                assert_eq!(got, want, "{name}");
                checked.push(name.clone());
                continue;
            }
            "regions" => {
                let regions: std::collections::BTreeSet<&str> =
                    checkout().map(|p| p.region).collect();
                regions
                    .into_iter()
                    .map(|r| serde_json::json!({"region": r, "series": 1}))
                    .collect()
            }
            "heaviest_stacks" => {
                let mut sums: BTreeMap<Vec<String>, i64> = BTreeMap::new();
                for (stack, value) in stacks_of(checkout().filter(|p| p.region == "eu").collect()) {
                    *sums.entry(stack).or_default() += value;
                }
                let mut rows: Vec<_> = sums.into_iter().collect();
                rows.sort_by_key(|r| std::cmp::Reverse(r.1));
                rows.into_iter()
                    .take(10)
                    .map(|(stack, v)| serde_json::json!({"stack": stack, "cpu_nanos": v}))
                    .collect()
            }
            "top_functions" => top(function_values(stacks_of(checkout().collect()).iter()))
                .into_iter()
                .take(5)
                .map(|(f, (s, t))| serde_json::json!({"function_name": f, "self": s, "total": t}))
                .collect(),
            "totals_over_time" => {
                let mut sums: BTreeMap<(i64, &str), i64> = BTreeMap::new();
                for p in checkout() {
                    *sums.entry((floor(p.time), p.region)).or_default() +=
                        p.stacks.iter().map(|s| s.1).sum::<i64>();
                }
                let got: Vec<serde_json::Value> = got
                    .iter()
                    .map(|r| {
                        let mut r = r.clone();
                        r["time"] = nanos(&r["time"]).into();
                        r
                    })
                    .collect();
                let want = sums
                    .into_iter()
                    .map(|((t, region), total)| {
                        serde_json::json!({"time": t, "region": region, "total": total})
                    })
                    .collect::<Vec<_>>();
                assert_eq!(got, want, "{name}");
                checked.push(name.clone());
                continue;
            }
            "compare_ranges" => {
                let half = now - 30 * minute;
                let a = function_values(
                    stacks_of(checkout().filter(|p| p.time < half).collect()).iter(),
                );
                let b = function_values(
                    stacks_of(checkout().filter(|p| p.time >= half).collect()).iter(),
                );
                let mut names: Vec<&String> = a.keys().chain(b.keys()).collect();
                names.sort();
                names.dedup();
                let side =
                    |m: &BTreeMap<String, (i64, i64)>, n: &String| m.get(n).map_or(0, |v| v.0);
                names.sort_by_key(|n| std::cmp::Reverse((side(&b, n) - side(&a, n)).abs()));
                names
                    .into_iter()
                    .map(|n| {
                        let (sa, sb) = (side(&a, n), side(&b, n));
                        serde_json::json!({"function_name": n, "self_a": sa, "self_b": sb,
                            "change": sb - sa})
                    })
                    .collect()
            }
            "stacks_through" => {
                let mut sums: BTreeMap<Vec<String>, i64> = BTreeMap::new();
                for (stack, value) in stacks_of(checkout().collect()) {
                    if stack.iter().any(|f| f == "db") {
                        *sums.entry(stack).or_default() += value;
                    }
                }
                let mut rows: Vec<_> = sums.into_iter().collect();
                rows.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
                rows.into_iter()
                    .map(|(stack, v)| serde_json::json!({"stack": stack, "value": v}))
                    .collect()
            }
            "flame_graph" => {
                flame_rows(stacks_of(checkout().filter(|p| p.region == "eu").collect()).iter())
            }
            other => panic!("docs/sql.md has an example `{other}` this test does not check"),
        };
        assert_eq!(got, want, "{name}: {query}");
        checked.push(name.clone());
    }
    // Every analysis the page promises has its example.
    checked.sort();
    assert_eq!(
        checked,
        [
            "compare_ranges",
            "flame_graph",
            "heaviest_stacks",
            "per_minute",
            "regions",
            "stacks_through",
            "top_functions",
            "totals_over_time",
        ]
    );
}

#[test]
fn an_analysis_function_called_wrongly_says_which_argument_and_how() {
    let server = TestServer::start(&[]);
    for (query, says) in [
        (
            "SELECT * FROM top_functions('cpu', '{}')",
            "top_functions: argument 1",
        ),
        (
            "SELECT * FROM top_functions('process_cpu:cpu:nanoseconds:cpu:nanoseconds', '{service_name=}')",
            "top_functions: argument 2",
        ),
        (
            "SELECT * FROM flame_graph('process_cpu:cpu:nanoseconds:cpu:nanoseconds')",
            "flame_graph(profile_type, selector [, start, end [, max_nodes]])",
        ),
        (
            "SELECT * FROM totals_over_time('process_cpu:cpu:nanoseconds:cpu:nanoseconds', '{}', 'often', '')",
            "totals_over_time: argument 3",
        ),
        (
            "SELECT * FROM compare_ranges('process_cpu:cpu:nanoseconds:cpu:nanoseconds', '{}', \
             now(), now() - INTERVAL '1 hour', now(), now())",
            "the end must be after the start",
        ),
        (
            "SELECT * FROM stacks_through('process_cpu:cpu:nanoseconds:cpu:nanoseconds', '{}', \
             'f', 'yesterday')",
            "stacks_through: argument 4 must be a TIMESTAMP",
        ),
        (
            "SELECT * FROM top_functions('process_cpu:cpu:nanoseconds:cpu:nanoseconds', '{}', \
             (SELECT max(time) FROM profiles))",
            "top_functions: argument 3",
        ),
    ] {
        let (status, body) = sql(&server, "anonymous", "application/json", query);
        assert_eq!(status, 400, "{query}: {}", text(&body));
        assert!(text(&body).contains(says), "{query}: {}", text(&body));
    }
}

/// Sixteen thousand stacks 40 frames deep named through `sample_stacks`, from the head and
/// then from a block, every name in its place and every value as pushed, within a quarter of
/// the default query budget. (The benchmark's week of history is what showed the old naming
/// of stacks, with `first_value` of the frame lists and the samples joined first, asking for
/// 11 GB; each stack's names are now sorted by `names_in_order`.)
#[test]
fn sample_stacks_names_thousands_of_deep_stacks_within_a_small_budget() {
    let mut server = TestServer::configure()
        .arg("--querier.max-query-memory=268435456")
        .spawn();
    let depth = 40;
    let stacks: Vec<(String, i64)> = (0..16_000i64)
        .map(|i| {
            // Shared prefixes (a few callers per level), then a leaf of its own.
            let mut frames: Vec<String> = (0..depth - 1)
                .map(|d| format!("fn{d}_{}", (i >> (d % 12)) % 3))
                .collect();
            frames.push(format!("leaf{i}"));
            (frames.join(";"), i + 1)
        })
        .collect();
    // Eight profiles of 2,000 stacks each.
    let now = now_nanos();
    for (p, chunk) in stacks.chunks(2_000).enumerate() {
        let borrowed: Vec<(&str, i64)> = chunk.iter().map(|(s, v)| (s.as_str(), *v)).collect();
        profusion_tests::push_cpu(
            &server,
            &[("__name__", "process_cpu"), ("service_name", "deep")],
            &borrowed,
            now - p as i64 * 1_000_000_000,
        );
    }
    // The reference: what was pushed.
    let want: BTreeMap<String, i64> = stacks.iter().cloned().collect();
    let named = |server: &TestServer| -> BTreeMap<String, i64> {
        let (status, body) = sql(
            server,
            "anonymous",
            "application/json",
            "SELECT array_to_string(stack, ';') AS stack, sum(value) AS value
             FROM sample_stacks GROUP BY 1",
        );
        assert_eq!(status, 200, "{}", text(&body));
        let rows: Vec<serde_json::Value> = serde_json::from_slice(&body).expect("JSON rows");
        assert_eq!(rows.len(), want.len());
        rows.iter()
            .map(|r| {
                (
                    r["stack"].as_str().expect("stack").to_owned(),
                    r["value"].as_i64().expect("value"),
                )
            })
            .collect()
    };
    // From the head, then from the block the restart flushed.
    assert_eq!(named(&server), want);
    server.stop();
    server.restart();
    assert_eq!(named(&server), want);
}
