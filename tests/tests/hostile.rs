//! Hostile and careless input against the real binary: every shape that once crashed the
//! server, lost acknowledged data, answered with the wrong code or blew up its memory. Each
//! test sends the input, then checks that the server is still up and answering, that the
//! answer has the right code and a short message naming the problem, that a profile
//! acknowledged before the input (the canary) is still there, and that peak resident memory,
//! read from `/proc`, stayed under a bound.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use profusion_proto::google::v1::{Function, Line, Location, Profile, Sample, ValueType};
use profusion_proto::querier::v1::{
    ProfileFormat, ProfileTypesRequest, ProfileTypesResponse, SelectMergeStacktracesRequest,
    SelectMergeStacktracesResponse, SeriesRequest, SeriesResponse,
};
use profusion_proto::settings::v1::{SetSettingsRequest, SetSettingsResponse, Setting};
use profusion_tests::{
    MutationRng, Reply, TestSample, TestServer, cpu_pprof, decode_flamegraph, get, grpc_frame,
    now_nanos, post, pprof, push_request,
};
use prost::Message;

const CPU: &str = "process_cpu:cpu:nanoseconds:cpu:nanoseconds";
const MIB: u64 = 1024 * 1024;
/// The canary's stack and value.
const CANARY: (&[&str], i64) = (&["main", "canary"], 7_000_000);

/// Pushes a pprof over Connect as `tenant` under `labels`.
fn push_pprof(
    server: &TestServer,
    tenant: Option<&str>,
    labels: &[(&str, &str)],
    profile: &Profile,
) -> Reply {
    let req = push_request(labels, profile.encode_to_vec(), "");
    let mut headers = vec![("content-type", "application/proto")];
    if let Some(t) = tenant {
        headers.push(("x-scope-orgid", t));
    }
    post(
        &server.url("/push.v1.PusherService/Push"),
        &headers,
        req.encode_to_vec(),
        false,
    )
}

fn cpu_labels(service: &str) -> [(&str, &str); 2] {
    [("__name__", "process_cpu"), ("service_name", service)]
}

/// A profile acknowledged before the hostile input: it must survive it.
fn push_canary(server: &TestServer, tenant: Option<&str>) {
    let r = push_pprof(
        server,
        tenant,
        &cpu_labels("canary"),
        &cpu_pprof(now_nanos(), &[CANARY]),
    );
    assert_eq!(r.status, 200, "{}", r.text());
}

/// Checks that the server runs, answers `/ready`, and still has the canary.
fn assert_alive_with_canary(server: &mut TestServer, tenant: Option<&str>) {
    assert!(server.is_running(), "the server died:\n{}", server.log());
    assert_eq!(get(&server.url("/ready"), &[]).status, 200);
    let fg = merge(server, tenant, r#"{service_name="canary"}"#, None)
        .expect("the canary query")
        .flamegraph
        .expect("a flame graph");
    assert_eq!(
        fg.total, CANARY.1,
        "the acknowledged canary profile is gone"
    );
}

/// What every test ends with: the server is up with its canary, under a peak memory bound.
fn assert_survived(server: &mut TestServer, tenant: Option<&str>, peak_mib: u64) {
    assert_alive_with_canary(server, tenant);
    assert_peak_below(server, peak_mib);
}

fn assert_peak_below(server: &TestServer, mib: u64) {
    let peak = server.peak_rss_bytes();
    assert!(
        peak < mib * MIB,
        "peak resident memory {} MiB, over the bound of {mib} MiB",
        peak / MIB
    );
}

/// The last ten minutes, in Unix milliseconds.
fn recent() -> (i64, i64) {
    let now = now_nanos() / 1_000_000;
    (now - 600_000, now + 60_000)
}

fn merge(
    server: &TestServer,
    tenant: Option<&str>,
    selector: &str,
    format: Option<ProfileFormat>,
) -> Result<SelectMergeStacktracesResponse, (u16, String)> {
    let (start, end) = recent();
    profusion_tests::connect_call(
        server,
        "/querier.v1.QuerierService/SelectMergeStacktraces",
        tenant,
        &SelectMergeStacktracesRequest {
            profile_type_id: CPU.into(),
            label_selector: selector.into(),
            start,
            end,
            format: format.map_or(0, |f| f as i32),
            ..Default::default()
        },
    )
}

/// A Connect error's `(HTTP status, code, message)`.
fn connect_error(r: &Reply) -> (u16, String, String) {
    let j = r.json();
    (
        r.status,
        j["code"].as_str().unwrap_or_default().to_owned(),
        j["message"].as_str().unwrap_or_default().to_owned(),
    )
}

/// A CPU pprof of one function whose single location holds `lines` inlined lines, referenced
/// `refs` times by one sample: `lines × refs` frames from a body of a few hundred bytes.
fn inlined_pprof(lines: usize, refs: usize) -> Profile {
    Profile {
        sample_type: vec![ValueType { r#type: 2, unit: 3 }],
        period_type: Some(ValueType { r#type: 2, unit: 3 }),
        period: 10_000_000,
        sample: vec![Sample {
            location_id: vec![1; refs],
            value: vec![10_000_000],
            label: vec![],
        }],
        location: vec![Location {
            id: 1,
            line: (0..lines)
                .map(|i| Line {
                    function_id: 1,
                    line: i as i64 + 1,
                })
                .collect(),
            ..Location::default()
        }],
        function: vec![Function {
            id: 1,
            name: 1,
            ..Function::default()
        }],
        string_table: vec![
            "".into(),
            "inlined".into(),
            "cpu".into(),
            "nanoseconds".into(),
        ],
        time_nanos: now_nanos(),
        ..Profile::default()
    }
}

/// Finding 1: one location with 60 inlined lines, referenced 1,000 times by one sample, was a
/// 60,000-frame stack that overflowed the query's stack on every query and every restart; a
/// million frames held both runtime threads for minutes.
#[test]
fn deep_inlined_stacks_are_cut_at_the_frame_limit_and_query_after_restarts() {
    let mut server = TestServer::start(&[]);
    push_canary(&server, None);
    for (lines, refs) in [(60, 1_000), (1_000, 1_000)] {
        let p = inlined_pprof(lines, refs);
        let r = push_pprof(&server, None, &cpu_labels("inlined"), &p);
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let check = |server: &TestServer| {
        let fg = merge(server, None, r#"{service_name="inlined"}"#, None)
            .unwrap()
            .flamegraph
            .unwrap();
        // The depth limit counts frames: the leaf-most 1,000 of each stack are kept, and both
        // pushes are the same 1,000 frames of one function.
        assert_eq!(fg.total, 20_000_000);
        assert_eq!(fg.levels.len(), 1 + 1000);
        let render = get(
            &server.url(&format!(
                "/pyroscope/render?query={CPU}{{service_name=\"inlined\"}}&from=now-10m&until=now%2B1m"
            )),
            &[],
        );
        assert_eq!(render.status, 200, "{}", render.text());
        assert_eq!(render.json()["flamebearer"]["numTicks"], 20_000_000);
    };
    check(&server);
    // The WAL replays the pushes: queries keep working after a crash.
    server.kill();
    server.restart();
    check(&server);
    assert_survived(&mut server, None, 200);
}

/// Finding 1, the same class with the depth limit raised: a stack of 150,000 frames goes
/// through every query path (flame graph, tree, DOT, pprof, render) with nothing recursing.
#[test]
fn stacks_far_deeper_than_the_default_limit_never_recurse() {
    let mut server = TestServer::start(&["--validation.max-profile-stacktrace-depth=200000"]);
    push_canary(&server, None);
    let r = push_pprof(
        &server,
        None,
        &cpu_labels("deep"),
        &inlined_pprof(1_500, 100),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let selector = r#"{service_name="deep"}"#;
    let fg = merge(&server, None, selector, None)
        .unwrap()
        .flamegraph
        .unwrap();
    assert_eq!((fg.total, fg.levels.len()), (10_000_000, 150_001));
    let tree = merge(&server, None, selector, Some(ProfileFormat::Tree)).unwrap();
    assert!(tree.tree.len() > 150_000);
    let dot = merge(&server, None, selector, Some(ProfileFormat::Dot)).unwrap();
    assert!(dot.dot.contains("inlined"), "{}", dot.dot);
    let pprof = merge(&server, None, selector, Some(ProfileFormat::Pprof))
        .unwrap()
        .pprof
        .unwrap()
        .profile
        .unwrap();
    assert_eq!(pprof.sample[0].location_id.len(), 150_000);
    server.kill();
    server.restart();
    assert_survived(&mut server, None, 250);
}

/// Finding 2: a second server on the same data directory replayed, flushed and deleted the
/// first one's open WAL segment, losing acknowledged profiles.
#[test]
fn a_second_server_on_the_data_directory_is_refused_and_nothing_is_lost() {
    let mut server = TestServer::start(&["--ingester.flush-check-interval=100ms"]);
    let mut second = server
        .command()
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut acknowledged = 0;
    for i in 1..=120 {
        let r = push_pprof(
            &server,
            None,
            &cpu_labels("many"),
            &cpu_pprof(now_nanos(), &[(&["main", "work"], i)]),
        );
        assert_eq!(r.status, 200, "{}", r.text());
        acknowledged += i;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = second.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = second.kill();
            panic!("a second server on the same data directory kept running");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    second
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(!status.success());
    assert!(
        stderr.contains(&format!(
            "is in use by another profusion process (pid {})",
            server.pid()
        )),
        "{stderr}"
    );
    let total = |server: &TestServer| {
        merge(server, None, r#"{service_name="many"}"#, None)
            .unwrap()
            .flamegraph
            .unwrap()
            .total
    };
    assert_eq!(total(&server), acknowledged);
    server.kill();
    server.restart();
    assert_eq!(total(&server), acknowledged);
    assert_peak_below(&server, 200);
}

/// Finding 3: a tenant id with `*` (allowed, as in Pyroscope) had its blocks written under one
/// encoding of the id and read under another: its data vanished at the first flush.
#[test]
fn tenant_ids_with_reserved_characters_keep_their_data_through_flushes() {
    let mut server = TestServer::start(&["--auth.multitenancy-enabled"]);
    let tenants = ["team*1", "team1", "(a)!'*-_.x"];
    for (i, tenant) in tenants.iter().enumerate() {
        push_canary(&server, Some(tenant));
        let r = push_pprof(
            &server,
            Some(tenant),
            &cpu_labels("svc"),
            &cpu_pprof(now_nanos(), &[(&["main", "t"], (i as i64 + 1) * 1000)]),
        );
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let check = |server: &mut TestServer| {
        for (i, tenant) in tenants.iter().enumerate() {
            let fg = merge(server, Some(tenant), r#"{service_name="svc"}"#, None)
                .unwrap()
                .flamegraph
                .unwrap();
            assert_eq!(fg.total, (i as i64 + 1) * 1000, "tenant {tenant}");
            assert_alive_with_canary(server, Some(tenant));
        }
    };
    check(&mut server);
    // SIGTERM flushes the head into blocks: the same answers come from them.
    server.stop();
    for tenant in tenants {
        assert_eq!(server.blocks(tenant).len(), 1, "tenant {tenant}");
    }
    server.restart();
    check(&mut server);
    assert_peak_below(&server, 200);
}

/// Finding 4: values that sum past 2^63 − 1 wrapped negative, and every flame graph over them
/// failed with 500. Sums hold at 2^63 − 1 instead (docs/read-path.md).
#[test]
fn sums_past_64_bits_hold_at_the_largest_value() {
    let mut server = TestServer::start(&[]);
    push_canary(&server, None);
    // ×10,000,000 (the period at the default sample rate): each push is past 2^63 on its own.
    for _ in 0..3 {
        let r = post(
            &server.url("/ingest?name=big.cpu"),
            &[],
            b"main 922337203685477580\n".to_vec(),
            false,
        );
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let check = |server: &TestServer| {
        let fg = merge(server, None, r#"{service_name="big"}"#, None)
            .unwrap()
            .flamegraph
            .unwrap();
        assert_eq!(fg.total, i64::MAX);
        let tree = decode_flamegraph(&fg);
        assert_eq!(tree["total;main"], (i64::MAX, i64::MAX));
        let render = get(
            &server.url(&format!(
                "/pyroscope/render?query={CPU}{{}}&from=now-10m&until=now%2B1m"
            )),
            &[],
        );
        assert_eq!(render.status, 200, "{}", render.text());
        assert_eq!(render.json()["flamebearer"]["numTicks"], i64::MAX);
    };
    check(&server);
    server.stop();
    server.restart();
    check(&server);
    assert_survived(&mut server, None, 200);
}

/// A tree-format chain of `n` nodes, each with a self value: a small body whose stacks repeat
/// the whole path, n²/2 frames.
fn tree_chain(n: usize) -> Vec<u8> {
    let mut b = Vec::new();
    for i in 0..n {
        b.extend_from_slice(&[1, b'f', 1, u8::from(i + 1 < n)]);
    }
    b
}

/// Finding 5: a 32 KB `format=tree` chain peaked at 2 GB; a 7 MB JSON push with 200,000 labels
/// on one series held a runtime thread for seconds, and two at once made `/ready` time out.
#[test]
fn small_bodies_with_huge_expansions_are_refused_before_the_work() {
    let mut server = TestServer::start(&[]);
    push_canary(&server, None);
    let r = post(
        &server.url("/ingest?name=chain.cpu&format=tree"),
        &[],
        tree_chain(8_000),
        false,
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.text().contains("frames in all") && r.text().len() < 300,
        "{}",
        r.text()
    );
    // Before: 2 GB for this 32 KB body.
    assert_peak_below(&server, 150);

    let labels: Vec<serde_json::Value> = (0..200_000)
        .map(|i| serde_json::json!({"name": format!("label_{i}"), "value": "v"}))
        .collect();
    let body = serde_json::json!({"series": [{"labels": labels, "samples": [{"rawProfile": ""}]}]})
        .to_string()
        .into_bytes();
    assert!(body.len() > 6_000_000);
    let url = server.url("/push.v1.PusherService/Push");
    let pushes: Vec<_> = (0..2)
        .map(|_| {
            let (url, body) = (url.clone(), body.clone());
            std::thread::spawn(move || {
                post(&url, &[("content-type", "application/json")], body, false)
            })
        })
        .collect();
    // While both are being decoded and refused, the server answers at once.
    let ready_url = server.url("/ready");
    let started = Instant::now();
    while pushes.iter().any(|p| !p.is_finished()) && started.elapsed() < Duration::from_secs(60) {
        assert_eq!(get(&ready_url, &[]).status, 200);
        std::thread::sleep(Duration::from_millis(20));
    }
    for p in pushes {
        let r = p.join().unwrap();
        assert_eq!(
            connect_error(&r),
            (
                400,
                "invalid_argument".into(),
                "series[0] has 200000 labels, more than the limit of 30".into()
            )
        );
    }
    assert_survived(&mut server, None, 250);
}

/// An OTLP request whose profiles share one dictionary: `profiles` profiles of `samples`
/// samples each, every sample on the one stack of `stack_depth` locations and with its own
/// `service.name` when `services`.
fn otlp_shared(
    profiles: usize,
    samples: usize,
    stack_depth: usize,
    services: bool,
) -> profusion_proto::otlp::collector::ExportProfilesServiceRequest {
    use profusion_proto::otlp::collector::ExportProfilesServiceRequest;
    use profusion_proto::otlp::common::{AnyValue, KeyValue, any_value};
    use profusion_proto::otlp::profiles as otlp;
    let string = |v: &str| {
        Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        })
    };
    // A 1 MB function name, which a copy per profile or per service would multiply.
    let mut string_table = vec![
        String::new(),
        "f".repeat(1 << 20),
        "cpu".into(),
        "nanoseconds".into(),
        "service.name".into(),
    ];
    string_table.extend(["samples".into(), "count".into()]);
    let dictionary = otlp::ProfilesDictionary {
        function_table: vec![otlp::Function {
            name_strindex: 1,
            ..Default::default()
        }],
        location_table: vec![otlp::Location {
            lines: vec![otlp::Line::default()],
            ..Default::default()
        }],
        stack_table: vec![otlp::Stack {
            location_indices: vec![0; stack_depth],
        }],
        attribute_table: (0..samples)
            .map(|i| otlp::KeyValueAndUnit {
                key_strindex: 4,
                value: string(&format!("svc-{i}")),
                ..Default::default()
            })
            .collect(),
        string_table,
        ..Default::default()
    };
    // samples:count over cpu:nanoseconds every 10 ms: Pyroscope's process_cpu, ×10,000,000.
    let profile = otlp::Profile {
        sample_type: Some(otlp::ValueType {
            type_strindex: 5,
            unit_strindex: 6,
        }),
        period_type: Some(otlp::ValueType {
            type_strindex: 2,
            unit_strindex: 3,
        }),
        period: 10_000_000,
        time_unix_nano: now_nanos() as u64,
        samples: (0..samples)
            .map(|i| otlp::Sample {
                stack_index: 0,
                attribute_indices: if services { vec![i as i32] } else { vec![] },
                values: vec![1],
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    ExportProfilesServiceRequest {
        resource_profiles: vec![otlp::ResourceProfiles {
            resource: Some(profusion_proto::otlp::resource::Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: string("otel-app"),
                }],
                ..Default::default()
            }),
            scope_profiles: vec![otlp::ScopeProfiles {
                profiles: vec![profile; profiles],
                ..Default::default()
            }],
            ..Default::default()
        }],
        dictionary: Some(dictionary),
    }
}

/// Finding 5's class in OTLP: profiles and per-sample services over one shared dictionary
/// once copied the dictionary for each (2,000 services of a 1 MB dictionary: 2 GB), and a
/// shared stack referenced by every sample was expanded per sample before any limit.
#[test]
fn otlp_requests_cost_what_they_hold_not_what_they_reference() {
    let mut server = TestServer::start(&["--distributor.ingestion-rate-limit-mb=0"]);
    push_canary(&server, None);
    let url = server.url("/v1development/profiles");
    let send = |req: &profusion_proto::otlp::collector::ExportProfilesServiceRequest| {
        post(
            &url,
            &[("content-type", "application/x-protobuf")],
            req.encode_to_vec(),
            false,
        )
    };
    let r = send(&otlp_shared(1, 2_000, 1, true));
    assert_eq!(r.status, 200, "{}", r.text());
    let r = send(&otlp_shared(2_000, 1, 1, false));
    assert_eq!(r.status, 200, "{}", r.text());
    // 16,000 samples on one stack of 100,000 locations: 1.6 billion references from 400 KB.
    let r = send(&otlp_shared(1, 16_000, 100_000, false));
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("reference more than"), "{}", r.text());
    let fg = merge(&server, None, r#"{service_name="svc-7"}"#, None)
        .unwrap()
        .flamegraph
        .unwrap();
    assert_eq!(fg.total, 10_000_000);
    let fg = merge(&server, None, r#"{service_name="otel-app"}"#, None)
        .unwrap()
        .flamegraph
        .unwrap();
    assert_eq!(fg.total, 2_000 * 10_000_000);
    assert_survived(&mut server, None, 300);
}

/// `count` CPU profiles of 2,000 random stacks each, 12 frames deep over 200 functions: a
/// call tree of about two million nodes.
fn push_random_fleet(server: &TestServer, count: usize) {
    let names: Vec<String> = (0..200).map(|i| format!("fn_{i}")).collect();
    let mut rng = MutationRng(0x5eed);
    for _ in 0..count {
        let stacks: Vec<Vec<&str>> = (0..2_000)
            .map(|_| (0..12).map(|_| names[rng.below(200)].as_str()).collect())
            .collect();
        let samples: Vec<TestSample<'_>> = stacks
            .iter()
            .map(|s| TestSample {
                stack: s,
                value: 10_000_000,
                labels: &[],
            })
            .collect();
        let p = pprof(
            ("cpu", "nanoseconds"),
            ("cpu", "nanoseconds"),
            10_000_000,
            now_nanos(),
            &samples,
        );
        let r = push_pprof(server, None, &cpu_labels("random"), &p);
        assert_eq!(r.status, 200, "{}", r.text());
    }
}

/// Finding 6: with a 64 MiB budget a flame graph over 100 profiles of 2,000 random stacks
/// peaked at 1.8 GB and succeeded: the call tree was not charged to the budget.
#[test]
fn the_query_memory_budget_covers_the_call_tree() {
    // Without the caches, which keep what queries resolved up to their own sizes: the symbols
    // of the refused flame graph (resolved before its tree was refused) would stay in one.
    let mut server = TestServer::start(&[
        "--querier.max-query-memory=67108864",
        "--querier.symbol-cache-size=0",
        "--querier.block-cache-size=0",
    ]);
    push_canary(&server, None);
    push_random_fleet(&server, 100);
    let before = server.peak_rss_bytes();
    let err = merge(&server, None, r#"{service_name="random"}"#, None).unwrap_err();
    assert_eq!(err.0, 429, "{}", err.1);
    assert!(
        err.1.contains("needs more memory than its budget")
            && err.1.contains("--querier.max-query-memory"),
        "{}",
        err.1
    );
    let render = get(
        &server.url(&format!(
            "/pyroscope/render?query={CPU}{{service_name=\"random\"}}&from=now-10m&until=now%2B1m"
        )),
        &[],
    );
    assert_eq!(render.status, 429, "{}", render.text());
    // What the refused queries added to the peak stays near their budget.
    let added = server.peak_rss_bytes().saturating_sub(before);
    // The budget, the head snapshot the first query builds, and buffers DataFusion does not
    // account (before the budget covered the call tree: 1.8 GB).
    assert!(
        added < 200 * MIB,
        "the queries added {} MiB to the peak",
        added / MIB
    );
    assert_alive_with_canary(&mut server, None);
}

/// Finding 6, the series half: one 645 KB push created 336,000 series (no per-tenant limit),
/// and a `Series` query over them peaked at 3.1 GB.
#[test]
fn series_are_limited_per_tenant_and_series_queries_stay_in_budget() {
    let mut server = TestServer::start(&[
        "--ingester.max-global-series-per-tenant=5000",
        "--querier.max-query-memory=1048576",
    ]);
    push_canary(&server, None);
    let pods: Vec<String> = (0..10_000).map(|i| format!("pod-{i}")).collect();
    let pushed = |range: std::ops::Range<usize>| {
        let labels: Vec<[(&str, &str); 1]> =
            pods[range].iter().map(|p| [("pod", p.as_str())]).collect();
        let samples: Vec<TestSample<'_>> = labels
            .iter()
            .map(|l| TestSample {
                stack: &["main", "serve"],
                value: 10_000_000,
                labels: l,
            })
            .collect();
        let p = pprof(
            ("cpu", "nanoseconds"),
            ("cpu", "nanoseconds"),
            10_000_000,
            now_nanos(),
            &samples,
        );
        push_pprof(&server, None, &cpu_labels("pods"), &p)
    };
    let (status, code, message) = connect_error(&pushed(0..10_000));
    assert_eq!((status, code.as_str()), (429, "resource_exhausted"));
    assert!(
        message.contains("Maximum active series limit exceeded (1/5000)")
            && message.contains("this push would add 10000 series"),
        "{message}"
    );
    // Nothing of the refused push was stored; pushes within the limit are.
    assert_eq!(pushed(0..4_000).status, 200);
    let (status, _, message) = connect_error(&pushed(4_000..6_000));
    assert_eq!(status, 429, "{message}");
    let (start, end) = recent();
    let series: Result<SeriesResponse, _> = profusion_tests::connect_call(
        &server,
        "/querier.v1.QuerierService/Series",
        None,
        &SeriesRequest {
            matchers: vec![],
            label_names: vec![],
            start,
            end,
        },
    );
    let (status, text) = series.unwrap_err();
    assert_eq!(status, 429, "{text}");
    // Which part of the lookup runs out first (the distinct series of the grouping, or the
    // label sets collected from it) is the engine's business; the message names the budget.
    assert!(
        text.contains("resource_exhausted") && text.contains("--querier.max-query-memory"),
        "{text}"
    );
    assert_survived(&mut server, None, 200);
}

/// Whether the peer closed `stream`: a read returns end of file (or a reset).
fn closed(stream: &mut TcpStream) -> bool {
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut buf = [0u8; 512];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return false,
            Err(_) => return true,
        }
    }
}

/// Finding 7: a client sending one header a second kept its connection 45 s, idle connections
/// were never closed, and 260 idle connections under a 256-descriptor limit made the server
/// unreachable and its flushes fail.
#[test]
fn slow_headers_and_idle_connections_are_cut_off() {
    let mut server = TestServer::start(&[
        "--server.http-read-header-timeout=1s",
        "--server.http-idle-timeout=2s",
    ]);
    push_canary(&server, None);
    let addr = server.addr.clone();

    // One header every 300 ms: the connection is closed once a second has passed.
    let mut slow = TcpStream::connect(&addr).unwrap();
    slow.write_all(b"POST /ingest?name=a.cpu HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let started = Instant::now();
    let mut cut = false;
    for i in 0..40 {
        std::thread::sleep(Duration::from_millis(300));
        if slow.write_all(format!("x-h{i}: v\r\n").as_bytes()).is_err() || closed(&mut slow) {
            cut = true;
            break;
        }
    }
    assert!(
        cut,
        "a client dribbling headers kept its connection for 12 s"
    );
    assert!(started.elapsed() < Duration::from_secs(6));

    // A kept-alive connection that falls silent is closed after the idle timeout, and a
    // connection within it is not.
    let mut idle = TcpStream::connect(&addr).unwrap();
    idle.write_all(b"GET /ready HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(!closed(&mut idle), "closed within the idle timeout");
    let started = Instant::now();
    while !closed(&mut idle) {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "an idle connection stayed open"
        );
    }
    assert_survived(&mut server, None, 200);
}

/// Finding 7, the body half: a body that stops arriving is answered 408 once
/// `--server.http-read-timeout` has passed, over plain HTTP and over Connect.
#[test]
fn stalled_bodies_are_answered_408() {
    let mut server = TestServer::start(&["--server.http-read-timeout=1s"]);
    push_canary(&server, None);
    for (path, content_type) in [
        ("/ingest?name=slow.cpu", "text/plain"),
        ("/push.v1.PusherService/Push", "application/proto"),
    ] {
        let mut stream = TcpStream::connect(&server.addr).unwrap();
        write!(
            stream,
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\nContent-Length: 1000\r\n\r\nmain 1"
        )
        .unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut answer = String::new();
        let mut buf = [0u8; 4096];
        while !answer.contains("\r\n\r\n") {
            let n = stream
                .read(&mut buf)
                .expect("an answer before the client gives up");
            assert!(n > 0, "closed without an answer: {answer:?}");
            answer.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        assert!(answer.starts_with("HTTP/1.1 408"), "{path}: {answer}");
    }
    assert_survived(&mut server, None, 200);
}

/// Finding 7, the descriptor half: 260 idle connections under a 256-descriptor limit. The
/// server keeps a quarter of its descriptors for its own files, closes idle connections to let
/// new clients in, and its flushes go on.
#[test]
fn a_flood_of_idle_connections_leaves_the_server_reachable_and_flushing() {
    let mut server = TestServer::configure()
        .wrapper(&["prlimit", "--nofile=256:256"])
        .args(&[
            "--pyroscopedb.max-block-duration=1s",
            "--ingester.flush-check-interval=100ms",
        ])
        .spawn();
    push_canary(&server, None);
    let flood: Vec<TcpStream> = (0..260)
        .map(|_| TcpStream::connect(&server.addr).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    // New clients get in, pushes are acknowledged and flushed into blocks.
    for i in 0..5 {
        let r = push_pprof(
            &server,
            None,
            &cpu_labels("flood"),
            &cpu_pprof(now_nanos(), &[(&["main", "flood"], 1000 + i)]),
        );
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let started = Instant::now();
    while server.blocks("anonymous").is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no block was flushed:\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        !server.log().contains("Too many open files"),
        "{}",
        server.log()
    );
    drop(flood);
    assert_survived(&mut server, None, 200);
}

/// Finding 8: Connect bodies over the body limit answered 429 (an invitation to retry); folded
/// bodies over the profile size answered 429 where pprof answered 400; a message echoed a
/// 10,000-label series whole, more than gRPC clients can read; duplicate ids were reported as
/// references to missing ones.
#[test]
fn codes_are_right_and_messages_short() {
    let mut server = TestServer::start(&[
        "--distributor.ingestion-body-limit-mb=1",
        "--validation.max-profile-size-bytes=2000",
    ]);
    push_canary(&server, None);
    let push_url = server.url("/push.v1.PusherService/Push");
    let r = post(
        &push_url,
        &[("content-type", "application/proto")],
        vec![0; 2_000_000],
        false,
    );
    assert_eq!(
        (r.status, connect_error(&r).1.as_str()),
        (413, "resource_exhausted"),
        "{}",
        r.text()
    );
    let r = post(
        &push_url,
        &[("content-type", "application/grpc")],
        grpc_frame(&vec![0; 2_000_000]),
        true,
    );
    assert_eq!(r.header("grpc-status"), Some("8"), "{:?}", r.headers);

    // Over the profile size: 400 in every format.
    let folded = format!("main;{} 1\n", "f;".repeat(1000)).into_bytes();
    let r = post(&server.url("/ingest?name=big.cpu"), &[], folded, false);
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.text().contains("more than the limit of 2000 bytes"),
        "{}",
        r.text()
    );
    let names: Vec<String> = (0..300).map(|i| format!("function_{i}")).collect();
    let stack: Vec<&str> = names.iter().map(String::as_str).collect();
    let r = push_pprof(
        &server,
        None,
        &cpu_labels("big"),
        &cpu_pprof(now_nanos(), &[(&stack, 1)]),
    );
    let (status, _, message) = connect_error(&r);
    assert_eq!(status, 400, "{message}");
    assert!(
        message.contains("more than the limit of 2000 bytes"),
        "{message}"
    );

    // A message quoting a 100 KB selector stays short, over Connect and in a gRPC header.
    let huge = format!("{{service_name=\"{}", "x".repeat(100_000));
    let (start, end) = recent();
    let req = SelectMergeStacktracesRequest {
        profile_type_id: CPU.into(),
        label_selector: huge,
        start,
        end,
        ..Default::default()
    };
    let r = post(
        &server.url("/querier.v1.QuerierService/SelectMergeStacktraces"),
        &[("content-type", "application/proto")],
        req.encode_to_vec(),
        false,
    );
    let (status, code, message) = connect_error(&r);
    assert_eq!((status, code.as_str()), (400, "invalid_argument"));
    assert!(
        message.len() <= 1024 && message.contains("truncated"),
        "{}",
        message.len()
    );
    let r = post(
        &server.url("/querier.v1.QuerierService/SelectMergeStacktraces"),
        &[("content-type", "application/grpc")],
        grpc_frame(&req.encode_to_vec()),
        true,
    );
    assert_eq!(r.header("grpc-status"), Some("3"));
    assert!(r.header("grpc-message").is_some_and(|m| m.len() < 2048));

    // A series of 10,000 labels is refused by its count, without echoing it.
    let labels: Vec<(String, String)> = (0..10_000)
        .map(|i| (format!("label_{i}"), "v".repeat(10)))
        .collect();
    let mut pairs: Vec<(&str, &str)> = cpu_labels("wide").to_vec();
    pairs.extend(labels.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let r = push_pprof(
        &server,
        None,
        &pairs,
        &cpu_pprof(now_nanos(), &[(&["main"], 1)]),
    );
    let (status, _, message) = connect_error(&r);
    assert_eq!(status, 400);
    assert_eq!(
        message,
        "series[0] has 10002 labels, more than the limit of 30"
    );

    // Duplicate ids are named as duplicates.
    let mut p = cpu_pprof(now_nanos(), &[(&["main", "work"], 1)]);
    p.location[1].id = p.location[0].id;
    let r = push_pprof(&server, None, &cpu_labels("dup"), &p);
    assert_eq!(
        connect_error(&r),
        (
            400,
            "invalid_argument".into(),
            "profile 0: location[1] has id 1, the same as location[0]: ids must be unique".into()
        )
    );
    assert_survived(&mut server, None, 200);
}

/// Finding 9: `__name__="a:b"`, a sample type `cpu:x` or a display name `x:y` were stored and
/// listed, but no query could select them.
#[test]
fn names_no_query_could_select_are_refused_at_ingest() {
    let mut server = TestServer::start(&[]);
    push_canary(&server, None);
    let r = push_pprof(
        &server,
        None,
        &[("__name__", "a:b"), ("service_name", "colon")],
        &cpu_pprof(now_nanos(), &[(&["main"], 1)]),
    );
    let (status, _, message) = connect_error(&r);
    assert_eq!(status, 400);
    assert!(
        message.contains("__name__ \"a:b\" must not contain ':'"),
        "{message}"
    );

    let p = pprof(
        ("cpu:x", "nanoseconds"),
        ("cpu", "nanoseconds"),
        1,
        now_nanos(),
        &[TestSample {
            stack: &["main"],
            value: 1,
            labels: &[],
        }],
    );
    let (status, _, message) = connect_error(&push_pprof(&server, None, &cpu_labels("c"), &p));
    assert_eq!(status, 400);
    assert!(
        message.contains("sample type \"cpu:x\" must not contain ':'"),
        "{message}"
    );

    let p = pprof(
        ("samples", "count"),
        ("cpu", "nanoseconds"),
        1,
        now_nanos(),
        &[TestSample {
            stack: &["main"],
            value: 1,
            labels: &[],
        }],
    );
    let mut body = b"--B\r\nContent-Disposition: form-data; name=\"profile\"\r\n\r\n".to_vec();
    body.extend_from_slice(&p.encode_to_vec());
    body.extend_from_slice(b"\r\n--B\r\nContent-Disposition: form-data; name=\"sample_type_config\"\r\n\r\n{\"samples\":{\"display-name\":\"x:y\"}}\r\n--B--\r\n");
    let r = post(
        &server.url("/ingest?name=app&format=pprof"),
        &[("content-type", "multipart/form-data; boundary=B")],
        body,
        false,
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.text()
            .contains("sample type \"x:y\" must not contain ':'"),
        "{}",
        r.text()
    );

    let (start, end) = recent();
    let types: ProfileTypesResponse = profusion_tests::connect_call(
        &server,
        "/querier.v1.QuerierService/ProfileTypes",
        None,
        &ProfileTypesRequest { start, end },
    )
    .unwrap();
    let ids: Vec<&str> = types.profile_types.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids, [CPU]);
    assert_survived(&mut server, None, 200);
}

/// Finding 10: with the lookback disabled, a range of [i64 min, i64 max] overflowed past the
/// query-length limit; settings took a 100 KB name and a 10 MB value.
#[test]
fn extreme_ranges_and_oversized_settings_are_refused() {
    let mut server = TestServer::start(&[
        "--querier.max-query-lookback=0s",
        "--settings.max-per-tenant=3",
    ]);
    push_canary(&server, None);
    let everything = SelectMergeStacktracesRequest {
        profile_type_id: CPU.into(),
        label_selector: "{}".into(),
        start: i64::MIN,
        end: i64::MAX,
        ..Default::default()
    };
    let err = profusion_tests::connect_call::<_, SelectMergeStacktracesResponse>(
        &server,
        "/querier.v1.QuerierService/SelectMergeStacktraces",
        None,
        &everything,
    )
    .unwrap_err();
    assert_eq!(err.0, 400, "{}", err.1);
    assert!(err.1.contains("exceeds the limit"), "{}", err.1);

    let set = |name: String, value: String| {
        profusion_tests::connect_call::<_, SetSettingsResponse>(
            &server,
            "/settings.v1.SettingsService/Set",
            None,
            &SetSettingsRequest {
                setting: Some(Setting {
                    name,
                    value,
                    modified_at: 1,
                }),
            },
        )
    };
    let (status, message) = set("n".repeat(100_000), "v".into()).unwrap_err();
    assert_eq!(status, 400);
    assert!(message.contains("more than the limit of 256"), "{message}");
    assert!(message.len() < 400, "{}", message.len());
    let (status, message) = set("big".into(), "v".repeat(10_000_000)).unwrap_err();
    assert_eq!(status, 400);
    assert!(
        message.contains("more than the limit of 65536"),
        "{message}"
    );
    for i in 0..3 {
        set(format!("s{i}"), "v".into()).unwrap();
    }
    set("s1".into(), "again".into()).unwrap();
    let (status, message) = set("s3".into(), "v".into()).unwrap_err();
    assert_eq!(status, 429, "{message}");
    assert_survived(&mut server, None, 200);
}

/// Finding 10, with both query limits off: the widest range is a valid query over everything,
/// and split into hours it would be billions of parts, refused before any is queued.
#[test]
fn the_widest_range_is_a_query_over_everything_when_limits_are_off() {
    let everything = SelectMergeStacktracesRequest {
        profile_type_id: CPU.into(),
        label_selector: r#"{service_name="canary"}"#.into(),
        start: i64::MIN,
        end: i64::MAX,
        ..Default::default()
    };
    let call = |server: &TestServer| {
        profusion_tests::connect_call::<_, SelectMergeStacktracesResponse>(
            server,
            "/querier.v1.QuerierService/SelectMergeStacktraces",
            None,
            &everything,
        )
    };
    let unlimited = [
        "--querier.max-query-lookback=0s",
        "--querier.max-query-length=0s",
    ];
    let mut server = TestServer::start(&unlimited);
    push_canary(&server, None);
    let fg = call(&server).unwrap().flamegraph.unwrap();
    assert_eq!(fg.total, CANARY.1);
    assert_alive_with_canary(&mut server, None);

    let mut split = TestServer::start(&[
        unlimited[0],
        unlimited[1],
        "--querier.split-queries-by-interval=1h",
    ]);
    push_canary(&split, None);
    let err = call(&split).unwrap_err();
    assert_eq!(err.0, 429, "{}", err.1);
    assert!(err.1.contains("splits into"), "{}", err.1);
    assert_survived(&mut split, None, 200);
}
