//! A deliberately simple reference implementation of the read path, and random workloads
//! to compare the server with it.
//!
//! Random profiles (stacks, services, labels, times, tenants, CPU and allocation sample types)
//! go through every ingest path: Connect Push (protobuf and JSON), `/ingest` with pprof and
//! with folded text, and OTLP. The reference keeps every pushed sample as a flat row and
//! answers each query by filtering and summing rows; the server's answers are decoded here
//! (flame-graph levels, diff 7-tuples, pprof) and must match exactly: trees node by node,
//! totals, series points per step, label names and values, diffs and pprof stacks.

use profusion_testing::Rng;
use std::collections::{BTreeMap, BTreeSet};

use crate::{
    TestSample, TestServer, decode_flamegraph, decode_levels, post, pprof, pprof_stacks,
    push_request, reference_tree,
};
use profusion_proto::querier::v1::{
    DiffRequest, DiffResponse, ProfileFormat, ProfileTypesRequest, ProfileTypesResponse,
    SelectMergeStacktracesRequest, SelectMergeStacktracesResponse, SelectSeriesRequest,
    SelectSeriesResponse,
};
use profusion_proto::types::v1::{
    LabelNamesRequest, LabelNamesResponse, LabelValuesRequest, LabelValuesResponse,
    TimeSeriesAggregationType,
};
use prost::Message;
use serde_json::json;

const CPU: &str = "process_cpu:cpu:nanoseconds:cpu:nanoseconds";
const ALLOC_OBJECTS: &str = "memory:alloc_objects:count:space:bytes";
const ALLOC_SPACE: &str = "memory:alloc_space:bytes:space:bytes";
/// Nanoseconds per CPU sample at 100 Hz.
const PERIOD: i64 = 10_000_000;
const FUNCTIONS: &[&str] = &[
    "main",
    "run",
    "handle",
    "db.query",
    "render",
    "json.encode",
    "gc",
    "net.read",
    "alloc",
    "sort",
];
const SERVICES: &[&str] = &["svc-a", "svc-b", "svc-c"];
const ENVS: &[&str] = &["prod", "dev", "staging"];
const TENANTS: &[&str] = &["t1", "t2"];

#[derive(Debug, Clone, Copy, PartialEq)]
enum IngestPath {
    PushProto,
    PushJson,
    IngestPprof,
    IngestFolded,
    Otlp,
}

/// One generated profile: CPU sample counts per stack, or allocations (objects, and 64 bytes
/// per object) when `alloc`.
#[derive(Debug, Clone)]
pub struct Generated {
    pub tenant: &'static str,
    path: IngestPath,
    /// The profile id a Connect push carries (empty: the server assigns one), so the same
    /// profile can be pushed twice, as a retrying client or a replica does.
    pub id: String,
    service: &'static str,
    env: &'static str,
    time_s: i64,
    alloc: bool,
    /// Root-first stacks with sample counts, distinct.
    stacks: Vec<(Vec<&'static str>, i64)>,
}

/// One stored sample, as the reference sees it.
#[derive(Debug, Clone)]
pub struct Row {
    pub tenant: &'static str,
    pub profile_type: &'static str,
    pub service: &'static str,
    pub env: &'static str,
    pub time_ms: i64,
    pub stack: Vec<&'static str>,
    pub value: i64,
    /// Which generated profile it came from, to count profiles for averages.
    pub profile: usize,
}

/// `count` random profiles with times spread over the `span_s` seconds before a minute ago.
/// The random seed of a reference test: `$PROFUSION_REFERENCE_SEED`, to replay a failure, or
/// the test's `default`.
pub fn seed(default: u64) -> u64 {
    let seed = std::env::var("PROFUSION_REFERENCE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default);
    eprintln!("reference seed {seed} (set PROFUSION_REFERENCE_SEED to replay)");
    seed
}

pub fn generate(seed: u64, now_s: i64, span_s: u64, count: usize) -> Vec<Generated> {
    let mut rng = Rng(seed);
    (0..count)
        .map(|i| {
            let path = [
                IngestPath::PushProto,
                IngestPath::PushJson,
                IngestPath::IngestPprof,
                IngestPath::IngestFolded,
                IngestPath::Otlp,
            ][i % 5];
            let alloc =
                matches!(path, IngestPath::PushProto | IngestPath::PushJson) && rng.below(3) == 0;
            let mut stacks: BTreeMap<Vec<&'static str>, i64> = BTreeMap::new();
            for _ in 0..1 + rng.below(6) {
                let depth = 1 + rng.below(6) as usize;
                let stack: Vec<&'static str> = (0..depth).map(|_| rng.pick(FUNCTIONS)).collect();
                *stacks.entry(stack).or_default() += 1 + rng.below(20) as i64;
            }
            Generated {
                tenant: rng.pick(TENANTS),
                path,
                id: String::new(),
                service: rng.pick(SERVICES),
                env: rng.pick(ENVS),
                time_s: now_s - 60 - rng.below(span_s) as i64,
                alloc,
                stacks: stacks.into_iter().collect(),
            }
        })
        .collect()
}

/// Every sample of `profiles`, as the reference stores it.
pub fn rows(profiles: &[Generated]) -> Vec<Row> {
    let mut out = Vec::new();
    for (i, p) in profiles.iter().enumerate() {
        let types: Vec<(&'static str, i64)> = if p.alloc {
            vec![(ALLOC_OBJECTS, 1), (ALLOC_SPACE, 64)]
        } else {
            vec![(CPU, PERIOD)]
        };
        for (profile_type, scale) in types {
            for (stack, count) in &p.stacks {
                out.push(Row {
                    tenant: p.tenant,
                    profile_type,
                    service: p.service,
                    env: p.env,
                    time_ms: p.time_s * 1000,
                    stack: stack.clone(),
                    value: count * scale,
                    profile: i,
                });
            }
        }
    }
    out
}

impl Generated {
    /// Whether the profile is sent with Connect Push, the path that carries a profile id.
    pub fn is_push(&self) -> bool {
        matches!(self.path, IngestPath::PushProto | IngestPath::PushJson)
    }
}

/// Sends one profile through its ingest path.
pub fn send(server: &TestServer, p: &Generated) {
    let time_nanos = p.time_s * 1_000_000_000;
    let samples = |scale: i64| -> Vec<(Vec<&'static str>, i64)> {
        p.stacks
            .iter()
            .map(|(s, c)| (s.clone(), c * scale))
            .collect()
    };
    let pprof_of = |scale: i64, sample_type: (&str, &str), period_type: (&str, &str)| {
        let s = samples(scale);
        let test_samples: Vec<TestSample<'_>> = s
            .iter()
            .map(|(stack, value)| TestSample {
                stack,
                value: *value,
                labels: &[],
            })
            .collect();
        pprof(sample_type, period_type, PERIOD, time_nanos, &test_samples)
    };
    let cpu = || pprof_of(PERIOD, ("cpu", "nanoseconds"), ("cpu", "nanoseconds"));
    let tenant = [("x-scope-orgid", p.tenant)];
    let reply = match p.path {
        IngestPath::PushProto | IngestPath::PushJson => {
            let mut profiles = Vec::new();
            if p.alloc {
                // One pprof with both allocation sample types, as Go's heap profile has.
                let mut objects = pprof_of(1, ("alloc_objects", "count"), ("space", "bytes"));
                let space = pprof_of(64, ("alloc_space", "bytes"), ("space", "bytes"));
                let unit = objects.string_table.len() as i64;
                objects
                    .string_table
                    .extend(["alloc_space".into(), "bytes".into()]);
                objects
                    .sample_type
                    .push(profusion_proto::google::v1::ValueType {
                        r#type: unit,
                        unit: unit + 1,
                    });
                for (o, s) in objects.sample.iter_mut().zip(&space.sample) {
                    o.value.push(s.value[0]);
                }
                profiles.push(("memory", objects));
            } else {
                profiles.push(("process_cpu", cpu()));
            }
            let (name, profile) = profiles.pop().unwrap();
            let req = push_request(
                &[
                    ("__name__", name),
                    ("service_name", p.service),
                    ("env", p.env),
                ],
                profile.encode_to_vec(),
                &p.id,
            );
            let (content_type, body) = if p.path == IngestPath::PushJson {
                ("application/json", profusion_proto::to_json(&req).unwrap())
            } else {
                ("application/proto", req.encode_to_vec())
            };
            post(
                &server.url("/push.v1.PusherService/Push"),
                &[("content-type", content_type), tenant[0]],
                body,
                false,
            )
        }
        IngestPath::IngestPprof => post(
            &server.url(&format!(
                "/ingest?name={}%7Benv%3D{}%7D&format=pprof&from={}&until={}",
                p.service,
                p.env,
                p.time_s,
                p.time_s + 10
            )),
            &[("content-type", "application/octet-stream"), tenant[0]],
            cpu().encode_to_vec(),
            false,
        ),
        IngestPath::IngestFolded => {
            let body: String = p
                .stacks
                .iter()
                .map(|(s, c)| format!("{} {c}\n", s.join(";")))
                .collect();
            post(
                &server.url(&format!(
                    "/ingest?name={}.cpu%7Benv%3D{}%7D&format=folded&from={}&until={}&sampleRate=100",
                    p.service,
                    p.env,
                    p.time_s,
                    p.time_s + 10
                )),
                &[("content-type", "text/plain"), tenant[0]],
                body.into_bytes(),
                false,
            )
        }
        IngestPath::Otlp => post(
            &server.url("/v1development/profiles"),
            &[("content-type", "application/json"), tenant[0]],
            otlp_json(p, time_nanos),
            false,
        ),
    };
    assert_eq!(reply.status, 200, "{:?}: {}", p.path, reply.text());
}

/// An OTLP `samples:count` profile with a `cpu:nanoseconds` period, in the v1development
/// dictionary layout (index 0 of every table is the empty sentinel).
fn otlp_json(p: &Generated, time_nanos: i64) -> Vec<u8> {
    let mut strings: Vec<String> = ["", "samples", "count", "cpu", "nanoseconds"]
        .map(String::from)
        .to_vec();
    let mut functions = vec![json!({})];
    let mut locations = vec![json!({})];
    let mut stacks = vec![json!({})];
    let mut samples = Vec::new();
    let mut location_of: BTreeMap<&str, usize> = BTreeMap::new();
    for (stack, count) in &p.stacks {
        let mut indices = Vec::new();
        // OTLP stacks list locations leaf first.
        for name in stack.iter().rev() {
            let loc = *location_of.entry(name).or_insert_with(|| {
                strings.push((*name).to_owned());
                functions.push(json!({"nameStrindex": strings.len() - 1}));
                locations.push(json!({"lines": [{"functionIndex": functions.len() - 1}]}));
                locations.len() - 1
            });
            indices.push(loc);
        }
        stacks.push(json!({"locationIndices": indices}));
        samples.push(json!({"stackIndex": stacks.len() - 1, "values": [count.to_string()]}));
    }
    serde_json::to_vec(&json!({
        "resourceProfiles": [{
            "resource": {"attributes": [
                {"key": "service.name", "value": {"stringValue": p.service}},
                {"key": "env", "value": {"stringValue": p.env}},
            ]},
            "scopeProfiles": [{"profiles": [{
                "sampleType": {"typeStrindex": 1, "unitStrindex": 2},
                "periodType": {"typeStrindex": 3, "unitStrindex": 4},
                "period": PERIOD.to_string(),
                "timeUnixNano": time_nanos.to_string(),
                "durationNano": "10000000000",
                "samples": samples,
            }]}],
        }],
        "dictionary": {
            "stringTable": strings,
            "functionTable": functions,
            "locationTable": locations,
            "stackTable": stacks,
            "mappingTable": [{}],
            "attributeTable": [{}],
            "linkTable": [{}],
        },
    }))
    .unwrap()
}

/// A label selector and the reference's reading of it.
struct Case {
    selector: &'static str,
    keep: fn(&Row) -> bool,
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            selector: "{}",
            keep: |_| true,
        },
        Case {
            selector: r#"{service_name="svc-a"}"#,
            keep: |r| r.service == "svc-a",
        },
        Case {
            selector: r#"{env=~"pr.*|dev"}"#,
            keep: |r| r.env == "prod" || r.env == "dev",
        },
        Case {
            selector: r#"{service_name!="svc-b", env!~"st.*"}"#,
            keep: |r| r.service != "svc-b" && r.env != "staging",
        },
        // Service matchers alone read the rows' service column, with no series lookup.
        Case {
            selector: r#"{service_name=~"svc-[ac]", service_name!~"svc-c"}"#,
            keep: |r| r.service == "svc-a",
        },
    ]
}

struct Client<'a> {
    server: &'a TestServer,
    scope: String,
}

impl Client<'_> {
    fn call<Req: Message, Resp: Message + Default>(&self, method: &str, req: &Req) -> Resp {
        let r = post(
            &self
                .server
                .url(&format!("/querier.v1.QuerierService/{method}")),
            &[
                ("content-type", "application/proto"),
                ("x-scope-orgid", &self.scope),
            ],
            req.encode_to_vec(),
            false,
        );
        assert_eq!(r.status, 200, "{method} for {}: {}", self.scope, r.text());
        Resp::decode(r.body.as_slice()).unwrap()
    }
}

/// SQL (`POST /api/v1/sql`) over the range `[start, end]` (Unix milliseconds), every profile
/// once: each profile type's total from the samples table; each profile type's value per
/// stack from the `sample_stacks` view (function names and labels joined in); and one profile
/// type's `top_functions`.
fn check_sql_totals(client: &Client<'_>, rows: &[&Row], start: i64, end: i64, ctx: &str) {
    let (start_ns, end_ns) = (start * 1_000_000, end * 1_000_000 + 999_999);
    let in_range: Vec<&Row> = rows
        .iter()
        .copied()
        .filter(|r| (start..=end).contains(&r.time_ms))
        .collect();
    let query = |sql: String| -> Vec<serde_json::Value> {
        let r = post(
            &client.server.url("/api/v1/sql"),
            &[("x-scope-orgid", &client.scope)],
            sql.clone().into_bytes(),
            false,
        );
        assert_eq!(r.status, 200, "{ctx}: {sql}: {}", r.text());
        serde_json::from_slice(&r.body).unwrap()
    };
    let text = |v: &serde_json::Value| v.as_str().unwrap().to_owned();

    let got: BTreeMap<String, i64> = query(format!(
        "SELECT profile_type, sum(value) AS total FROM samples \
         WHERE time_nanos BETWEEN {start_ns} AND {end_ns} GROUP BY profile_type"
    ))
    .iter()
    .map(|row| (text(&row["profile_type"]), row["total"].as_i64().unwrap()))
    .collect();
    let mut want: BTreeMap<String, i64> = BTreeMap::new();
    for r in &in_range {
        *want.entry(r.profile_type.to_owned()).or_default() += r.value;
    }
    assert_eq!(got, want, "{ctx}: SQL totals per profile type");

    let got: BTreeMap<(String, String), i64> = query(format!(
        "SELECT profile_type, array_to_string(stack, ';') AS stack, sum(value) AS total \
         FROM sample_stacks \
         WHERE time BETWEEN to_timestamp_nanos({start_ns}) AND to_timestamp_nanos({end_ns}) \
         GROUP BY 1, 2"
    ))
    .iter()
    .map(|row| {
        (
            (text(&row["profile_type"]), text(&row["stack"])),
            row["total"].as_i64().unwrap(),
        )
    })
    .collect();
    let mut want: BTreeMap<(String, String), i64> = BTreeMap::new();
    for r in &in_range {
        *want
            .entry((r.profile_type.to_owned(), r.stack.join(";")))
            .or_default() += r.value;
    }
    assert_eq!(
        got, want,
        "{ctx}: SQL sample_stacks per profile type and stack"
    );

    // The analysis functions run the querier's own reads, as a nested query of the SQL job.
    let Some(profile_type) = in_range.first().map(|r| r.profile_type) else {
        return;
    };
    let got: BTreeMap<String, (i64, i64)> = query(format!(
        "SELECT * FROM top_functions('{profile_type}', '{{}}', \
         to_timestamp_nanos({start_ns}), to_timestamp_nanos({end_ns} + 1))"
    ))
    .iter()
    .map(|row| {
        (
            text(&row["function_name"]),
            (
                row["self"].as_i64().unwrap(),
                row["total"].as_i64().unwrap(),
            ),
        )
    })
    .collect();
    let mut want: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for r in in_range.iter().filter(|r| r.profile_type == profile_type) {
        want.entry(r.stack.last().unwrap().to_string())
            .or_default()
            .0 += r.value;
        let distinct: std::collections::BTreeSet<&str> = r.stack.iter().copied().collect();
        for name in distinct {
            want.entry(name.to_owned()).or_default().1 += r.value;
        }
    }
    assert_eq!(got, want, "{ctx}: SQL top_functions of {profile_type}");
}

fn tree_of<'a>(rows: impl Iterator<Item = &'a Row>) -> BTreeMap<String, (i64, i64)> {
    let stacks: Vec<(Vec<String>, i64)> = rows
        .map(|r| (r.stack.iter().map(|s| (*s).to_owned()).collect(), r.value))
        .collect();
    reference_tree(&stacks)
}

/// The query range over a workload: everything it holds, and a window cutting through it.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub start: i64,
    pub end: i64,
    pub cut: (i64, i64),
}

impl Window {
    /// For profiles generated over the `span_s` seconds before `now_ms` (Unix milliseconds).
    pub fn covering(now_ms: i64, span_s: u64) -> Self {
        let span = span_s as i64 * 1000;
        Self {
            start: now_ms - span - 600_000,
            end: now_ms,
            cut: (now_ms - span / 2, now_ms - span / 5),
        }
    }
}

/// How much of the API a check covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Depth {
    /// Profile types, label names and values, flame graphs and pprof for every selector case
    /// over two windows, series, diffs.
    Everything,
    /// Flame graphs over both windows and series of every profile type, all series: enough to
    /// see any profile lost or counted twice, at a tenth of the queries.
    Totals,
}

/// Compares every query for every tenant scope against the reference.
pub fn check_everything(server: &TestServer, all: &[Row], window: Window, when: &str) {
    check(server, all, window, Depth::Everything, when);
}

/// Compares flame graphs and series of every profile type, for every tenant scope, against the
/// reference: every profile counted exactly once.
pub fn check_totals(server: &TestServer, all: &[Row], window: Window, when: &str) {
    check(server, all, window, Depth::Totals, when);
}

fn check(server: &TestServer, all: &[Row], window: Window, depth: Depth, when: &str) {
    let (start, end) = (window.start, window.end);
    // Each tenant alone, and all of them in one cross-tenant query.
    let tenants: BTreeSet<&'static str> = all.iter().map(|r| r.tenant).collect();
    let mut scopes: Vec<Vec<&str>> = tenants.iter().map(|t| vec![*t]).collect();
    if tenants.len() > 1 {
        scopes.push(tenants.iter().copied().collect());
    }
    for scope in scopes {
        let client = Client {
            server,
            scope: scope.join("|"),
        };
        let rows: Vec<&Row> = all.iter().filter(|r| scope.contains(&r.tenant)).collect();
        let ctx = format!("{when}, tenants {}", client.scope);
        check_sql_totals(&client, &rows, start, end, &ctx);
        if depth == Depth::Totals {
            for profile_type in [CPU, ALLOC_OBJECTS, ALLOC_SPACE] {
                let typed: Vec<&Row> = rows
                    .iter()
                    .copied()
                    .filter(|r| r.profile_type == profile_type)
                    .collect();
                let case = &cases()[0];
                for (from, to) in [(start, end), window.cut] {
                    check_merge(&client, &typed, profile_type, case, from, to, &ctx);
                }
                check_series(&client, &typed, profile_type, case, start, end, &ctx);
            }
            continue;
        }

        let types: ProfileTypesResponse =
            client.call("ProfileTypes", &ProfileTypesRequest { start, end });
        let got: BTreeSet<String> = types.profile_types.into_iter().map(|t| t.id).collect();
        let want: BTreeSet<String> = rows.iter().map(|r| r.profile_type.to_owned()).collect();
        assert_eq!(got, want, "{ctx}: profile types");

        for (label, of) in [
            (
                "service_name",
                (|r: &Row| r.service) as fn(&Row) -> &'static str,
            ),
            ("env", |r: &Row| r.env),
        ] {
            let values: LabelValuesResponse = client.call(
                "LabelValues",
                &LabelValuesRequest {
                    name: label.into(),
                    matchers: vec![],
                    start,
                    end,
                },
            );
            let want: BTreeSet<&str> = rows.iter().map(|r| of(r)).collect();
            assert_eq!(
                values
                    .names
                    .iter()
                    .map(String::as_str)
                    .collect::<BTreeSet<_>>(),
                want,
                "{ctx}: values of {label}"
            );
        }
        let names: LabelNamesResponse = client.call(
            "LabelNames",
            &LabelNamesRequest {
                matchers: vec![r#"{service_name="svc-a"}"#.into()],
                start,
                end,
            },
        );
        let has_a = rows.iter().any(|r| r.service == "svc-a");
        for name in ["__name__", "env", "service_name"] {
            assert_eq!(
                names.names.contains(&name.to_owned()),
                has_a,
                "{ctx}: {name}"
            );
        }

        for profile_type in [CPU, ALLOC_OBJECTS, ALLOC_SPACE] {
            let typed: Vec<&Row> = rows
                .iter()
                .copied()
                .filter(|r| r.profile_type == profile_type)
                .collect();
            for case in cases() {
                // The whole range, and a window that cuts through the profiles.
                for (from, to) in [(start, end), window.cut] {
                    check_merge(&client, &typed, profile_type, &case, from, to, &ctx);
                }
                check_series(&client, &typed, profile_type, &case, start, end, &ctx);
            }
            check_diff(&client, &typed, profile_type, start, end, &ctx);
        }
    }
}

fn merge_request(
    profile_type: &str,
    selector: &str,
    start: i64,
    end: i64,
    format: ProfileFormat,
) -> SelectMergeStacktracesRequest {
    SelectMergeStacktracesRequest {
        profile_type_id: profile_type.into(),
        label_selector: selector.into(),
        start,
        end,
        max_nodes: Some(1_048_576),
        format: format as i32,
        ..Default::default()
    }
}

fn check_merge(
    client: &Client<'_>,
    rows: &[&Row],
    profile_type: &str,
    case: &Case,
    start: i64,
    end: i64,
    ctx: &str,
) {
    let selected: Vec<&Row> = rows
        .iter()
        .copied()
        .filter(|r| (case.keep)(r) && r.time_ms >= start && r.time_ms <= end)
        .collect();
    let ctx = format!("{ctx}, {profile_type} {} [{start}, {end}]", case.selector);
    let want = tree_of(selected.iter().copied());
    let fg: SelectMergeStacktracesResponse = client.call(
        "SelectMergeStacktraces",
        &merge_request(
            profile_type,
            case.selector,
            start,
            end,
            ProfileFormat::Flamegraph,
        ),
    );
    let fg = fg.flamegraph.unwrap_or_default();
    let got = decode_flamegraph(&fg);
    if want.is_empty() {
        assert_eq!(fg.total, 0, "{ctx}: flame graph of nothing");
    } else {
        assert_eq!(got, want, "{ctx}: flame graph");
        assert_eq!(fg.total, want["total"].0, "{ctx}: total");
    }

    let pp: SelectMergeStacktracesResponse = client.call(
        "SelectMergeStacktraces",
        &merge_request(
            profile_type,
            case.selector,
            start,
            end,
            ProfileFormat::Pprof,
        ),
    );
    let mut want_stacks: BTreeMap<String, i64> = BTreeMap::new();
    for r in &selected {
        *want_stacks.entry(r.stack.join(";")).or_default() += r.value;
    }
    let profile = pp.pprof.and_then(|p| p.profile).unwrap();
    assert_eq!(pprof_stacks(&profile), want_stacks, "{ctx}: pprof");
}

fn check_series(
    client: &Client<'_>,
    rows: &[&Row],
    profile_type: &str,
    case: &Case,
    start: i64,
    end: i64,
    ctx: &str,
) {
    let step_ms = 60_000;
    for (group, average) in [("service_name", false), ("env", true)] {
        let resp: SelectSeriesResponse = client.call(
            "SelectSeries",
            &SelectSeriesRequest {
                profile_type_id: profile_type.into(),
                label_selector: case.selector.into(),
                start,
                end,
                group_by: vec![group.into()],
                step: (step_ms / 1000) as f64,
                aggregation: average.then_some(TimeSeriesAggregationType::Average as i32),
                ..Default::default()
            },
        );
        // (group value, step) -> (sum, profiles)
        let mut buckets: BTreeMap<(&str, i64), (i64, BTreeSet<usize>)> = BTreeMap::new();
        for r in rows.iter().filter(|r| (case.keep)(r)) {
            let key = if group == "env" { r.env } else { r.service };
            let b = buckets
                .entry((key, r.time_ms - r.time_ms.rem_euclid(step_ms)))
                .or_default();
            b.0 += r.value;
            b.1.insert(r.profile);
        }
        let mut want: BTreeMap<String, Vec<(i64, f64)>> = BTreeMap::new();
        for ((key, ts), (sum, profiles)) in buckets {
            let v = if average {
                sum as f64 / profiles.len() as f64
            } else {
                sum as f64
            };
            want.entry(key.to_owned()).or_default().push((ts, v));
        }
        let got: BTreeMap<String, Vec<(i64, f64)>> = resp
            .series
            .iter()
            .map(|s| {
                assert_eq!(s.labels.len(), 1, "{ctx}: {:?}", s.labels);
                (
                    s.labels[0].value.clone(),
                    s.points.iter().map(|p| (p.timestamp, p.value)).collect(),
                )
            })
            .collect();
        assert_eq!(
            got, want,
            "{ctx}, {profile_type} {} by {group} (average {average}): series",
            case.selector
        );
    }
}

fn check_diff(
    client: &Client<'_>,
    rows: &[&Row],
    profile_type: &str,
    start: i64,
    end: i64,
    ctx: &str,
) {
    let (left, right) = (r#"{service_name="svc-a"}"#, r#"{service_name!="svc-a"}"#);
    let resp: DiffResponse = client.call(
        "Diff",
        &DiffRequest {
            left: Some(merge_request(
                profile_type,
                left,
                start,
                end,
                ProfileFormat::Flamegraph,
            )),
            right: Some(merge_request(
                profile_type,
                right,
                start,
                end,
                ProfileFormat::Flamegraph,
            )),
        },
    );
    let fg = resp.flamegraph.unwrap_or_default();
    let levels: Vec<Vec<i64>> = fg.levels.iter().map(|l| l.values.clone()).collect();
    let side =
        |i: usize| -> BTreeMap<String, (i64, i64)> { decode_levels(&fg.names, &levels, 7, i) };
    let want_left = tree_of(rows.iter().copied().filter(|r| r.service == "svc-a"));
    let want_right = tree_of(rows.iter().copied().filter(|r| r.service != "svc-a"));
    let ctx = format!("{ctx}, {profile_type} diff");
    if !want_left.is_empty() {
        assert_eq!(side(0), want_left, "{ctx}: left");
    }
    if !want_right.is_empty() {
        assert_eq!(side(1), want_right, "{ctx}: right");
    }
    assert_eq!(
        (fg.left_ticks, fg.right_ticks),
        (
            want_left.get("total").map_or(0, |t| t.0),
            want_right.get("total").map_or(0, |t| t.0)
        ),
        "{ctx}: ticks"
    );
}
