//! What Grafana's Pyroscope data source sends, against the real binary: the request bodies
//! recorded from `buf curl` replayed byte for byte over data a real agent pushed, and `buf curl`
//! (a real Connect client, binary `application/proto`) running the data source's request
//! sequence: ProfileTypes, LabelNames, LabelValues, SelectSeries, SelectMergeStacktraces and
//! SelectMergeSpanProfile. Every answer is checked against a reference computed here.

use std::collections::BTreeMap;
use std::path::Path;

use profusion_proto::querier::v1::{
    ProfileTypesRequest, ProfileTypesResponse, SelectMergeSpanProfileRequest,
    SelectMergeSpanProfileResponse, SelectMergeStacktracesRequest, SelectMergeStacktracesResponse,
    SelectSeriesRequest, SelectSeriesResponse,
};
use profusion_proto::types::v1::{
    ExemplarType, LabelNamesRequest, LabelNamesResponse, LabelValuesRequest, LabelValuesResponse,
};
use profusion_tests::{
    TestSample, TestServer, clients, decode_flamegraph, fixtures_dir, now_nanos, post, pprof,
    push_request, reference_tree,
};
use prost::Message;
use serde_json::Value;

const CPU: &str = "process_cpu:cpu:nanoseconds:cpu:nanoseconds";

/// Headers and body of a recorded request, without the hop-specific ones.
fn recorded(dir: &Path, name: &str) -> (Vec<(String, String)>, Vec<u8>) {
    let meta: Value =
        serde_json::from_slice(&std::fs::read(dir.join(format!("{name}.json"))).unwrap()).unwrap();
    let headers = meta["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h[0].as_str().unwrap().to_owned(),
                h[1].as_str().unwrap().to_owned(),
            )
        })
        .filter(|(k, _)| !matches!(k.to_ascii_lowercase().as_str(), "content-length" | "host"))
        .collect();
    (
        headers,
        std::fs::read(dir.join(format!("{name}.body"))).unwrap(),
    )
}

fn replay(server: &TestServer, dir: &Path, name: &str) -> Vec<u8> {
    let meta: Value =
        serde_json::from_slice(&std::fs::read(dir.join(format!("{name}.json"))).unwrap()).unwrap();
    let (headers, body) = recorded(dir, name);
    let headers: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let r = post(
        &server.url(meta["path"].as_str().unwrap()),
        &headers,
        body,
        false,
    );
    assert_eq!(r.status, 200, "{name}: {}", r.text());
    r.body
}

/// The captured `buf curl` queries, unchanged, over the push a real pyroscope-io agent sent
/// in the same session: the flame graph and the series are those of the pushed samples.
#[test]
fn recorded_grafana_queries_answer_over_recorded_agent_data() {
    let server = TestServer::start(&[
        // The recordings keep their original timestamps, so neither the ingestion window nor
        // the query lookback may move them.
        "--validation.reject-older-than=0s",
        "--querier.max-query-lookback=0s",
    ]);
    let captures = fixtures_dir().join("captures");
    replay(&server, &captures.join("pyroscope-io-1.4.0-push"), "req001");

    let queries = captures.join("buf-curl-connect-query");
    let (_, body) = recorded(&queries, "req001");
    let req = SelectMergeStacktracesRequest::decode(body.as_slice()).unwrap();
    let resp =
        SelectMergeStacktracesResponse::decode(replay(&server, &queries, "req001").as_slice())
            .unwrap();
    // The agent sent two samples of `<module>` calling `work` (different lines of `work`).
    let tree = decode_flamegraph(&resp.flamegraph.unwrap());
    let total = 2_490_000_000 + 470_000_000;
    assert_eq!(
        tree,
        reference_tree(&[(vec!["<module>".into(), "work".into()], total)]),
        "{req:?}"
    );

    let (_, body) = recorded(&queries, "req002");
    let req = SelectSeriesRequest::decode(body.as_slice()).unwrap();
    assert_eq!(req.group_by, ["service_name"]);
    let series =
        SelectSeriesResponse::decode(replay(&server, &queries, "req002").as_slice()).unwrap();
    let pushed_ms: i64 = 1_795_252_095_417_382_690 / 1_000_000;
    let step = (req.step * 1000.0) as i64;
    assert_eq!(series.series.len(), 1);
    let s = &series.series[0];
    assert_eq!(
        s.labels
            .iter()
            .map(|l| (l.name.as_str(), l.value.as_str()))
            .collect::<Vec<_>>(),
        [("service_name", "eco.python.app")]
    );
    assert_eq!(
        s.points
            .iter()
            .map(|p| (p.timestamp, p.value))
            .collect::<Vec<_>>(),
        [(pushed_ms - pushed_ms.rem_euclid(step), total as f64)]
    );
}

/// (service, env, root-first stack, value, span id).
type Pushed = (&'static str, &'static str, &'static str, i64, &'static str);

const PUSHED: &[Pushed] = &[
    (
        "api",
        "prod",
        "main;handle;db",
        50_000_000,
        "00000000000000a1",
    ),
    ("api", "prod", "main;handle;render", 30_000_000, ""),
    (
        "api",
        "dev",
        "main;handle;db",
        10_000_000,
        "00000000000000b2",
    ),
    ("web", "prod", "main;serve", 20_000_000, ""),
];

/// `buf curl` runs the data source's request sequence with binary protobuf.
#[test]
fn buf_curl_replays_the_grafana_data_source_sequence() {
    let Some(clients) = clients("buf_curl_replays_the_grafana_data_source_sequence") else {
        return;
    };
    let server = TestServer::start(&[]);
    let now = now_nanos();
    for (service, env, stack, value, span) in PUSHED {
        let frames: Vec<&str> = stack.split(';').collect();
        let labels: Vec<(&str, &str)> = if span.is_empty() {
            vec![]
        } else {
            vec![("span_id", span)]
        };
        let profile = pprof(
            ("cpu", "nanoseconds"),
            ("cpu", "nanoseconds"),
            10_000_000,
            now,
            &[TestSample {
                stack: &frames,
                value: *value,
                labels: &labels,
            }],
        );
        let req = push_request(
            &[
                ("__name__", "process_cpu"),
                ("service_name", service),
                ("env", env),
            ],
            profile.encode_to_vec(),
            "",
        );
        let r = post(
            &server.url("/push.v1.PusherService/Push"),
            &[("content-type", "application/proto")],
            req.encode_to_vec(),
            false,
        );
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let buf = |method: &str, body: Vec<u8>| -> Vec<u8> {
        profusion_tests::agents::buf_curl(
            &clients,
            &server.url(""),
            method,
            &String::from_utf8(body).unwrap(),
        )
    };
    let (start, end) = (now / 1_000_000 - 3_600_000, now / 1_000_000 + 60_000);
    let selector = r#"{service_name="api"}"#;

    // 1. The profile-type picker (also the data source's health check).
    let types: ProfileTypesResponse = profusion_proto::from_json(&buf(
        "ProfileTypes",
        profusion_proto::to_json(&ProfileTypesRequest { start, end }).unwrap(),
    ))
    .unwrap();
    assert_eq!(types.profile_types.len(), 1);
    let t = &types.profile_types[0];
    assert_eq!(
        (
            t.id.as_str(),
            t.name.as_str(),
            t.sample_type.as_str(),
            t.sample_unit.as_str()
        ),
        (CPU, "process_cpu", "cpu", "nanoseconds")
    );

    // 2. Label autocomplete for the current selector.
    let names: LabelNamesResponse = profusion_proto::from_json(&buf(
        "LabelNames",
        profusion_proto::to_json(&LabelNamesRequest {
            matchers: vec![selector.into()],
            start,
            end,
        })
        .unwrap(),
    ))
    .unwrap();
    for name in ["__name__", "env", "service_name"] {
        assert!(names.names.contains(&name.to_owned()), "{:?}", names.names);
    }
    let values: LabelValuesResponse = profusion_proto::from_json(&buf(
        "LabelValues",
        profusion_proto::to_json(&LabelValuesRequest {
            name: "env".into(),
            matchers: vec![selector.into()],
            start,
            end,
        })
        .unwrap(),
    ))
    .unwrap();
    assert_eq!(values.names, ["dev", "prod"]);

    // 3. The metrics query: grouped by env, 15 s step, top 10, no exemplars.
    let series: SelectSeriesResponse = profusion_proto::from_json(&buf(
        "SelectSeries",
        profusion_proto::to_json(&SelectSeriesRequest {
            profile_type_id: CPU.into(),
            label_selector: selector.into(),
            start,
            end,
            group_by: vec!["env".into()],
            step: 15.0,
            limit: Some(10),
            exemplar_type: ExemplarType::None as i32,
            ..Default::default()
        })
        .unwrap(),
    ))
    .unwrap();
    let now_ms = now / 1_000_000;
    let bucket = now_ms - now_ms.rem_euclid(15_000);
    let got: BTreeMap<String, Vec<(i64, f64)>> = series
        .series
        .iter()
        .map(|s| {
            (
                s.labels[0].value.clone(),
                s.points.iter().map(|p| (p.timestamp, p.value)).collect(),
            )
        })
        .collect();
    let mut want: BTreeMap<String, Vec<(i64, f64)>> = BTreeMap::new();
    for (_, env, _, value, _) in PUSHED.iter().filter(|p| p.0 == "api") {
        let points = want.entry((*env).to_owned()).or_default();
        match points.first_mut() {
            Some(p) => p.1 += *value as f64,
            None => points.push((bucket, *value as f64)),
        }
    }
    assert_eq!(got, want);

    // 4. The flame graph, at the data source's maxNodes.
    let expected = |keep: &dyn Fn(&Pushed) -> bool| {
        let stacks: Vec<(Vec<String>, i64)> = PUSHED
            .iter()
            .filter(|p| keep(p))
            .map(|p| (p.2.split(';').map(str::to_owned).collect(), p.3))
            .collect();
        reference_tree(&stacks)
    };
    let flame: SelectMergeStacktracesResponse = profusion_proto::from_json(&buf(
        "SelectMergeStacktraces",
        profusion_proto::to_json(&SelectMergeStacktracesRequest {
            profile_type_id: CPU.into(),
            label_selector: selector.into(),
            start,
            end,
            max_nodes: Some(16_384),
            ..Default::default()
        })
        .unwrap(),
    ))
    .unwrap();
    assert_eq!(
        decode_flamegraph(&flame.flamegraph.unwrap()),
        expected(&|p| p.0 == "api")
    );

    // 5. Traces to profiles: the samples of the given spans.
    let spans: SelectMergeSpanProfileResponse = profusion_proto::from_json(&buf(
        "SelectMergeSpanProfile",
        profusion_proto::to_json(&SelectMergeSpanProfileRequest {
            profile_type_id: CPU.into(),
            label_selector: selector.into(),
            span_selector: vec!["00000000000000a1".into(), "00000000000000b2".into()],
            start,
            end,
            max_nodes: Some(16_384),
            ..Default::default()
        })
        .unwrap(),
    ))
    .unwrap();
    assert_eq!(
        decode_flamegraph(&spans.flamegraph.unwrap()),
        expected(&|p| p.0 == "api" && !p.4.is_empty())
    );
}
