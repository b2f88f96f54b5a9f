//! The other answers of a flame-graph query: pprof (the PPROF format and the deprecated
//! SelectMergeProfile), Graphviz DOT, and the selectors that narrow a merge (profile ids,
//! span ids, call-site prefix, Go PGO trimming), plus SelectMergeSpanProfile and AnalyzeQuery.
//! Every answer is checked against a reference computed here from what was pushed.

use std::collections::BTreeMap;

use profusion_proto::google::v1::Profile;
use profusion_proto::querier::v1::{
    AnalyzeQueryRequest, AnalyzeQueryResponse, ProfileFormat, SelectMergeProfileRequest,
    SelectMergeSpanProfileRequest, SelectMergeSpanProfileResponse, SelectMergeStacktracesRequest,
    SelectMergeStacktracesResponse,
};
use profusion_proto::types::v1::{GoPgo, Location, StackTraceSelector};
use profusion_tests::{
    TestSample, TestServer, decode_flamegraph, now_nanos, post, pprof, pprof_stacks, push_request,
    reference_tree,
};
use prost::Message;

const CPU: &str = "process_cpu:cpu:nanoseconds:cpu:nanoseconds";
const PROFILE_A: &str = "aaaaaaaa-0000-0000-0000-000000000001";
const PROFILE_B: &str = "bbbbbbbb-0000-0000-0000-000000000002";
const SPAN_DB: &str = "0000000000000abc";
const SPAN_SERVE: &str = "0000000000000def";

/// (profile id, service, root-first stack, value, span id) of every pushed sample.
const PUSHED: &[(&str, &str, &str, i64, &str)] = &[
    (PROFILE_A, "api", "main;handle;db", 50, SPAN_DB),
    (PROFILE_A, "api", "main;handle;render", 30, ""),
    (PROFILE_B, "web", "main;serve", 20, SPAN_SERVE),
    (PROFILE_B, "web", "other;x", 5, ""),
];

/// A root-first stack, its value and its sample labels.
type StackWithLabels = (Vec<&'static str>, i64, Vec<(&'static str, &'static str)>);

fn push(server: &TestServer, time: i64) {
    for (id, service) in [(PROFILE_A, "api"), (PROFILE_B, "web")] {
        let stacks: Vec<StackWithLabels> = PUSHED
            .iter()
            .filter(|p| p.0 == id)
            .map(|p| {
                let labels = if p.4.is_empty() {
                    vec![]
                } else {
                    vec![("span_id", p.4)]
                };
                (p.2.split(';').collect(), p.3, labels)
            })
            .collect();
        let samples: Vec<TestSample<'_>> = stacks
            .iter()
            .map(|(stack, value, labels)| TestSample {
                stack,
                value: *value,
                labels,
            })
            .collect();
        let profile = pprof(
            ("cpu", "nanoseconds"),
            ("cpu", "nanoseconds"),
            10_000_000,
            time,
            &samples,
        );
        let req = push_request(
            &[("__name__", "process_cpu"), ("service_name", service)],
            profile.encode_to_vec(),
            id,
        );
        let r = post(
            &server.url("/push.v1.PusherService/Push"),
            &[("content-type", "application/proto")],
            req.encode_to_vec(),
            false,
        );
        assert_eq!(r.status, 200, "{}", r.text());
    }
}

fn call<Req: Message, Resp: Message + Default>(
    server: &TestServer,
    method: &str,
    req: &Req,
) -> Result<Resp, (u16, String)> {
    profusion_tests::connect_call(
        server,
        &format!("/querier.v1.QuerierService/{method}"),
        None,
        req,
    )
}

/// Root-first stacks (`;`-joined function names) and values of the pushed samples `keep`
/// picks, after `trim` (applied to the frame list).
fn expected_stacks(
    keep: impl Fn(&(&str, &str, &str, i64, &str)) -> bool,
    trim: fn(Vec<&'static str>) -> Vec<&'static str>,
) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    for p in PUSHED.iter().filter(|p| keep(p)) {
        *out.entry(trim(p.2.split(';').collect()).join(";"))
            .or_default() += p.3;
    }
    out
}

fn tree_of(stacks: &BTreeMap<String, i64>) -> BTreeMap<String, (i64, i64)> {
    let list: Vec<(Vec<String>, i64)> = stacks
        .iter()
        .map(|(s, v)| (s.split(';').map(str::to_owned).collect(), *v))
        .collect();
    reference_tree(&list)
}

struct Range {
    start: i64,
    end: i64,
}

fn merge_request(range: &Range, format: ProfileFormat) -> SelectMergeStacktracesRequest {
    SelectMergeStacktracesRequest {
        profile_type_id: CPU.into(),
        label_selector: "{}".into(),
        start: range.start,
        end: range.end,
        format: format as i32,
        ..Default::default()
    }
}

fn flame(server: &TestServer, req: &SelectMergeStacktracesRequest) -> BTreeMap<String, (i64, i64)> {
    let resp: SelectMergeStacktracesResponse =
        call(server, "SelectMergeStacktraces", req).expect("flame graph");
    decode_flamegraph(&resp.flamegraph.expect("flamegraph"))
}

#[test]
fn pprof_dot_and_selectors_match_the_reference() {
    let server = TestServer::start(&[]);
    let now = now_nanos();
    push(&server, now);
    let range = Range {
        start: now / 1_000_000 - 60_000,
        end: now / 1_000_000 + 60_000,
    };
    let all = expected_stacks(|_| true, |s| s);

    // PPROF format and SelectMergeProfile: the same profile, with the pushed sample and period
    // types, covering the query range.
    let resp: SelectMergeStacktracesResponse = call(
        &server,
        "SelectMergeStacktraces",
        &merge_request(&range, ProfileFormat::Pprof),
    )
    .unwrap();
    let p = resp.pprof.and_then(|p| p.profile).expect("pprof");
    assert_eq!(pprof_stacks(&p), all);
    let st = &p.sample_type[0];
    assert_eq!(
        (
            p.string_table[st.r#type as usize].as_str(),
            p.string_table[st.unit as usize].as_str()
        ),
        ("cpu", "nanoseconds")
    );
    assert_eq!(p.period, 10_000_000);
    assert_eq!(p.time_nanos, range.start * 1_000_000);
    assert_eq!(p.string_table[0], "");
    let merged: Profile = call(
        &server,
        "SelectMergeProfile",
        &SelectMergeProfileRequest {
            profile_type_id: CPU.into(),
            label_selector: "{}".into(),
            start: range.start,
            end: range.end,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(merged, p);

    // DOT: one node per function with flat and cumulative values, one edge per call.
    let resp: SelectMergeStacktracesResponse = call(
        &server,
        "SelectMergeStacktraces",
        &merge_request(&range, ProfileFormat::Dot),
    )
    .unwrap();
    let (nodes, edges) = parse_dot(&resp.dot);
    let (want_nodes, want_edges) = call_graph(&all);
    assert_eq!(nodes, want_nodes, "{}", resp.dot);
    assert_eq!(edges, want_edges, "{}", resp.dot);

    // profile_id_selector keeps one profile's samples.
    let mut req = merge_request(&range, ProfileFormat::Flamegraph);
    req.profile_id_selector = vec![PROFILE_B.into()];
    assert_eq!(
        flame(&server, &req),
        tree_of(&expected_stacks(|p| p.0 == PROFILE_B, |s| s))
    );

    // span_selector keeps the samples of those spans, on both RPCs that take it.
    let mut req = merge_request(&range, ProfileFormat::Flamegraph);
    req.span_selector = vec![SPAN_DB.into(), SPAN_SERVE.into()];
    let spans = tree_of(&expected_stacks(|p| !p.4.is_empty(), |s| s));
    assert_eq!(flame(&server, &req), spans);
    let resp: SelectMergeSpanProfileResponse = call(
        &server,
        "SelectMergeSpanProfile",
        &SelectMergeSpanProfileRequest {
            profile_type_id: CPU.into(),
            label_selector: "{}".into(),
            span_selector: vec![SPAN_DB.into(), SPAN_SERVE.into()],
            start: range.start,
            end: range.end,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(decode_flamegraph(&resp.flamegraph.unwrap()), spans);

    // A call-site prefix keeps the stacks under it.
    let mut req = merge_request(&range, ProfileFormat::Flamegraph);
    req.stack_trace_selector = Some(StackTraceSelector {
        call_site: ["main", "handle"]
            .iter()
            .map(|n| Location { name: (*n).into() })
            .collect(),
        go_pgo: None,
    });
    assert_eq!(
        flame(&server, &req),
        tree_of(&expected_stacks(|p| p.2.starts_with("main;handle;"), |s| s))
    );

    // Go PGO keeps the leaf-most frames of every stack.
    let pgo: Profile = call(
        &server,
        "SelectMergeProfile",
        &SelectMergeProfileRequest {
            profile_type_id: CPU.into(),
            label_selector: "{}".into(),
            start: range.start,
            end: range.end,
            stack_trace_selector: Some(StackTraceSelector {
                call_site: vec![],
                go_pgo: Some(GoPgo {
                    keep_locations: 2,
                    aggregate_callees: true,
                }),
            }),
            ..Default::default()
        },
    )
    .unwrap();
    let keep_two: fn(Vec<&'static str>) -> Vec<&'static str> =
        |s| s[s.len().saturating_sub(2)..].to_vec();
    assert_eq!(pprof_stacks(&pgo), expected_stacks(|_| true, keep_two));
    // Callees aggregate: no leaf location carries a line number.
    for s in &pgo.sample {
        let leaf = pgo
            .location
            .iter()
            .find(|l| l.id == s.location_id[0])
            .unwrap();
        assert_eq!(leaf.line[0].line, 0);
    }

    // Bad selectors say which one is wrong.
    let mut req = merge_request(&range, ProfileFormat::Flamegraph);
    req.span_selector = vec!["xyz".into()];
    let (status, body) =
        call::<_, SelectMergeStacktracesResponse>(&server, "SelectMergeStacktraces", &req)
            .unwrap_err();
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("invalid_argument") && body.contains("span_selector"),
        "{body}"
    );
    let mut req = merge_request(&range, ProfileFormat::Flamegraph);
    req.trace_id_selector = vec!["0".repeat(32)];
    let (status, body) =
        call::<_, SelectMergeStacktracesResponse>(&server, "SelectMergeStacktraces", &req)
            .unwrap_err();
    assert_eq!(status, 501, "{body}");
    assert!(body.contains("trace_id_selector"), "{body}");
}

#[test]
fn analyze_query_counts_what_a_query_would_read() {
    let server = TestServer::start(&[]);
    let now = now_nanos();
    push(&server, now);
    let resp: AnalyzeQueryResponse = call(
        &server,
        "AnalyzeQuery",
        &AnalyzeQueryRequest {
            start: now / 1_000_000 - 60_000,
            end: now / 1_000_000 + 60_000,
            query: format!(r#"{CPU}{{service_name="api"}}"#),
        },
    )
    .unwrap();
    let head = &resp.query_scopes[0];
    assert_eq!(head.component_type, "Head");
    assert_eq!(
        (head.series_count, head.profile_count, head.sample_count),
        (2, 2, 4)
    );
    let store = &resp.query_scopes[1];
    assert_eq!((store.block_count, store.profile_count), (0, 0));
    let impact = resp.query_impact.unwrap();
    assert_eq!(impact.total_queried_series, 1);
    assert!(impact.total_bytes_in_time_range > 0);
}

type Nodes = BTreeMap<String, (i64, i64)>;
type Edges = BTreeMap<(String, String), i64>;

/// Flat and cumulative value per function, and value per call edge; a function or edge
/// counts once per stack.
fn call_graph(stacks: &BTreeMap<String, i64>) -> (Nodes, Edges) {
    let (mut nodes, mut edges) = (Nodes::new(), Edges::new());
    for (stack, v) in stacks {
        let frames: Vec<&str> = stack.split(';').collect();
        let mut seen = std::collections::BTreeSet::new();
        for f in &frames {
            if seen.insert(*f) {
                nodes.entry((*f).to_owned()).or_default().1 += v;
            }
        }
        nodes
            .entry(frames[frames.len() - 1].to_owned())
            .or_default()
            .0 += v;
        let mut seen = std::collections::BTreeSet::new();
        for w in frames.windows(2) {
            if seen.insert((w[0], w[1])) {
                *edges.entry((w[0].to_owned(), w[1].to_owned())).or_default() += v;
            }
        }
    }
    (nodes, edges)
}

/// Nodes `N<i> [label="<name>\n<flat> (..)[\nof <cum> (..)]" ...]` and edges
/// `N<i> -> N<j> [label=" <value>" ...]` of a DOT answer.
fn parse_dot(dot: &str) -> (Nodes, Edges) {
    let mut ids: BTreeMap<String, String> = BTreeMap::new();
    let mut nodes = Nodes::new();
    let mut edges = Edges::new();
    for line in dot.lines() {
        let Some((head, rest)) = line.split_once(" [label=\"") else {
            continue;
        };
        let label = &rest[..rest.find('"').unwrap()];
        if let Some((from, to)) = head.split_once(" -> ") {
            edges.insert(
                (ids[from].clone(), ids[to].clone()),
                label.trim().parse().unwrap(),
            );
        } else if head.starts_with('N') {
            let parts: Vec<&str> = label.split("\\n").collect();
            let flat: i64 = parts[1].split(' ').next().unwrap().parse().unwrap();
            let cum = parts
                .get(2)
                .map_or(flat, |p| p.split(' ').nth(1).unwrap().parse().unwrap());
            ids.insert(head.to_owned(), parts[0].to_owned());
            nodes.insert(parts[0].to_owned(), (flat, cum));
        }
    }
    (nodes, edges)
}
