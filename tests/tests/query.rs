//! `querier.v1.QuerierService` over Connect: flame graphs, label names and values, series and
//! profile types, checked against a reference computed in the test from what was pushed, and
//! identical before and after the head is flushed into a block.

use std::time::{Duration, Instant};

use profusion_proto::querier::v1::{
    ProfileTypesRequest, ProfileTypesResponse, SelectMergeStacktracesRequest,
    SelectMergeStacktracesResponse, SeriesRequest, SeriesResponse,
};
use profusion_proto::types::v1::{
    LabelNamesRequest, LabelNamesResponse, LabelValuesRequest, LabelValuesResponse,
};
use profusion_tests::{
    TestServer, decode_flamegraph, now_nanos, push_cpu, push_small_fleet, reference_tree,
    small_fleet_tree,
};
use prost::Message;

const CPU: &str = "process_cpu:cpu:nanoseconds:cpu:nanoseconds";

/// Which pushed (service, env) pairs a selector should pick.
type Keep = Box<dyn Fn(&str, &str) -> bool>;

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

fn flame(
    server: &TestServer,
    selector: &str,
    start: i64,
    end: i64,
) -> std::collections::BTreeMap<String, (i64, i64)> {
    let resp: SelectMergeStacktracesResponse = call(
        server,
        "SelectMergeStacktraces",
        &SelectMergeStacktracesRequest {
            profile_type_id: CPU.into(),
            label_selector: selector.into(),
            start,
            end,
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("{selector}: {e:?}"));
    let fg = resp.flamegraph.expect("flamegraph");
    let tree = decode_flamegraph(&fg);
    assert_eq!(
        fg.total,
        tree.get("total").map_or(0, |t| t.0),
        "total field"
    );
    tree
}

fn wait_for_block(server: &TestServer) {
    let started = Instant::now();
    while server
        .blocks("anonymous")
        .iter()
        .all(|b| !b.join("meta.json").exists())
    {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no flush:\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The catalog registration follows the upload closely; give it a moment.
    std::thread::sleep(Duration::from_millis(300));
}

#[test]
fn flame_graphs_and_labels_are_exact_and_survive_a_flush() {
    let server = TestServer::start(&[
        "--pyroscopedb.max-block-duration=2s",
        "--ingester.flush-check-interval=100ms",
    ]);
    let now = now_nanos();
    push_small_fleet(&server, now);
    let (start, end) = (now / 1_000_000 - 60_000, now / 1_000_000 + 60_000);

    let cases: Vec<(&str, Keep)> = vec![
        (r#"{service_name="api"}"#, Box::new(|s, _| s == "api")),
        (
            r#"{service_name="api", env="prod"}"#,
            Box::new(|s, e| s == "api" && e == "prod"),
        ),
        (r#"{env=~"d.*"}"#, Box::new(|_, e| e == "dev")),
        (r#"{service_name!="api"}"#, Box::new(|s, _| s != "api")),
        ("{}", Box::new(|_, _| true)),
        (r#"{service_name="nope"}"#, Box::new(|_, _| false)),
    ];
    let before: Vec<_> = cases
        .iter()
        .map(|(sel, _)| flame(&server, sel, start, end))
        .collect();
    for ((sel, keep), got) in cases.iter().zip(&before) {
        let mut want = small_fleet_tree(keep, 1);
        want.retain(|_, (t, _)| *t > 0);
        let mut got = got.clone();
        got.retain(|_, (t, _)| *t > 0);
        assert_eq!(got, want, "{sel} from the head");
    }

    wait_for_block(&server);
    let after: Vec<_> = cases
        .iter()
        .map(|(sel, _)| flame(&server, sel, start, end))
        .collect();
    assert_eq!(before, after, "identical answers from the block");

    // New data after the flush is merged with the block's.
    push_small_fleet(&server, now_nanos());
    let both = flame(&server, r#"{service_name="api"}"#, start, end);
    let mut want = small_fleet_tree(|s, _| s == "api", 2);
    want.retain(|_, (t, _)| *t > 0);
    assert_eq!(both, want, "head and block together");

    // A range before the data is empty.
    assert!(
        flame(&server, "{}", start - 3_600_000, start - 1)
            .values()
            .all(|(t, _)| *t == 0)
    );

    let names: LabelNamesResponse = call(
        &server,
        "LabelNames",
        &LabelNamesRequest {
            matchers: vec![r#"{service_name="web"}"#.into()],
            start,
            end,
        },
    )
    .unwrap();
    assert_eq!(
        names.names,
        [
            "__name__",
            "__period_type__",
            "__period_unit__",
            "__profile_type__",
            "__service_name__",
            "__type__",
            "__unit__",
            "env",
            "service_name"
        ]
    );
    let values: LabelValuesResponse = call(
        &server,
        "LabelValues",
        &LabelValuesRequest {
            name: "env".into(),
            matchers: vec![r#"{service_name="api"}"#.into()],
            start,
            end,
        },
    )
    .unwrap();
    assert_eq!(values.names, ["dev", "prod"]);
    let series: SeriesResponse = call(
        &server,
        "Series",
        &SeriesRequest {
            matchers: vec![r#"{env="prod"}"#.into()],
            label_names: vec!["service_name".into(), "env".into()],
            start,
            end,
        },
    )
    .unwrap();
    let sets: Vec<Vec<(String, String)>> = series
        .labels_set
        .iter()
        .map(|l| {
            l.labels
                .iter()
                .map(|p| (p.name.clone(), p.value.clone()))
                .collect()
        })
        .collect();
    assert_eq!(
        sets,
        vec![
            vec![
                ("env".to_owned(), "prod".to_owned()),
                ("service_name".to_owned(), "api".to_owned())
            ],
            vec![
                ("env".to_owned(), "prod".to_owned()),
                ("service_name".to_owned(), "web".to_owned())
            ],
        ]
    );
    let types: ProfileTypesResponse =
        call(&server, "ProfileTypes", &ProfileTypesRequest { start, end }).unwrap();
    assert_eq!(
        types
            .profile_types
            .iter()
            .map(|t| t.id.as_str())
            .collect::<Vec<_>>(),
        [CPU]
    );
    assert_eq!(types.profile_types[0].name, "process_cpu");
}

#[test]
fn bad_queries_get_invalid_argument_naming_the_problem() {
    let server = TestServer::start(&[]);
    let now = now_nanos() / 1_000_000;
    let req = |sel: &str, start: i64, end: i64, max_nodes: Option<i64>, pt: &str| {
        SelectMergeStacktracesRequest {
            profile_type_id: pt.into(),
            label_selector: sel.into(),
            start,
            end,
            max_nodes,
            ..Default::default()
        }
    };
    for (r, message) in [
        (
            req(r#"{service_name="a""#, now - 1, now, None, CPU),
            "label_selector",
        ),
        (
            req(r#"{a=~"(("}"#, now - 1, now, None, CPU),
            "invalid regular expression",
        ),
        (req("{}", now, now - 1, None, CPU), "start"),
        (req("{}", 0, 0, None, CPU), "missing time range"),
        (
            req("{}", now - 1, now, Some(2_000_000), CPU),
            "more than the limit of 1048576",
        ),
        (
            req("{}", now - 1, now, Some(-1), CPU),
            "must not be negative",
        ),
        (
            req("{}", now - 1, now, None, "process_cpu:cpu"),
            "invalid profile type",
        ),
    ] {
        let err = call::<_, SelectMergeStacktracesResponse>(&server, "SelectMergeStacktraces", &r)
            .unwrap_err();
        assert_eq!(err.0, 400, "{err:?}");
        let body: serde_json::Value = serde_json::from_str(&err.1).unwrap();
        assert_eq!(body["code"], "invalid_argument");
        assert!(
            body["message"].as_str().unwrap().contains(message),
            "{message:?} not in {body}"
        );
    }
    let err = call::<_, SelectMergeStacktracesResponse>(
        &server,
        "NoSuchMethod",
        &req("{}", 0, 1, None, CPU),
    )
    .unwrap_err();
    assert_eq!(err.0, 501);
}

fn push_at(
    server: &TestServer,
    service: &str,
    env: &str,
    stack: &str,
    value: i64,
    time_nanos: i64,
) {
    push_cpu(
        server,
        &[
            ("__name__", "process_cpu"),
            ("service_name", service),
            ("env", env),
        ],
        &[(stack, value)],
        time_nanos,
    );
}

#[test]
fn series_diff_and_stats_match_the_reference() {
    use profusion_proto::querier::v1::{
        DiffRequest, DiffResponse, SelectSeriesRequest, SelectSeriesResponse,
    };
    use profusion_proto::types::v1::{
        GetProfileStatsRequest, GetProfileStatsResponse, TimeSeriesAggregationType,
    };
    use std::collections::BTreeMap;

    let server = TestServer::start(&[]);
    let step_ms = 15_000;
    let base_ms = (now_nanos() / 1_000_000 / step_ms) * step_ms - 4 * step_ms;
    // (env, offset ms from base, value)
    let pushes = [
        ("prod", 1_000, 10),
        ("prod", 5_000, 20),
        ("prod", 20_000, 40),
        ("dev", 2_000, 7),
        ("dev", 31_000, 3),
    ];
    for (env, offset, value) in pushes {
        push_at(
            &server,
            "api",
            env,
            "main;work",
            value,
            (base_ms + offset) * 1_000_000,
        );
    }
    let (start, end) = (base_ms - step_ms, base_ms + 10 * step_ms);

    // The reference: points per (env, step) computed here.
    let reference = |average: bool| {
        let mut buckets: BTreeMap<(&str, i64), (f64, f64)> = BTreeMap::new();
        for (env, offset, value) in pushes {
            let t = base_ms + offset;
            let e = buckets.entry((env, t - t % step_ms)).or_default();
            e.0 += value as f64;
            e.1 += 1.0;
        }
        let mut out: BTreeMap<&str, Vec<(i64, f64)>> = BTreeMap::new();
        for ((env, ts), (sum, n)) in buckets {
            out.entry(env)
                .or_default()
                .push((ts, if average { sum / n } else { sum }));
        }
        out
    };
    let query = |aggregation: Option<TimeSeriesAggregationType>, limit: Option<i64>| {
        let resp: SelectSeriesResponse = call(
            &server,
            "SelectSeries",
            &SelectSeriesRequest {
                profile_type_id: CPU.into(),
                label_selector: r#"{service_name="api"}"#.into(),
                start,
                end,
                group_by: vec!["env".into()],
                step: (step_ms / 1000) as f64,
                aggregation: aggregation.map(|a| a as i32),
                limit,
                ..Default::default()
            },
        )
        .unwrap();
        resp.series
            .into_iter()
            .map(|s| {
                assert_eq!(s.labels.len(), 1);
                (
                    s.labels[0].value.clone(),
                    s.points
                        .iter()
                        .map(|p| (p.timestamp, p.value))
                        .collect::<Vec<_>>(),
                )
            })
            .collect::<Vec<_>>()
    };
    let as_vec = |m: BTreeMap<&str, Vec<(i64, f64)>>| {
        m.into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect::<Vec<_>>()
    };
    assert_eq!(query(None, None), as_vec(reference(false)));
    assert_eq!(
        query(Some(TimeSeriesAggregationType::Average), None),
        as_vec(reference(true))
    );
    let top = query(None, Some(1));
    assert_eq!(
        top.iter().map(|s| s.0.as_str()).collect::<Vec<_>>(),
        ["prod"],
        "prod has the larger total"
    );

    let side = |env: &str| SelectMergeStacktracesRequest {
        profile_type_id: CPU.into(),
        label_selector: format!(r#"{{env="{env}"}}"#),
        start,
        end,
        ..Default::default()
    };
    let d: DiffResponse = call(
        &server,
        "Diff",
        &DiffRequest {
            left: Some(side("prod")),
            right: Some(side("dev")),
        },
    )
    .unwrap();
    let fg = d.flamegraph.unwrap();
    assert_eq!((fg.left_ticks, fg.right_ticks, fg.total), (70, 10, 80));
    let levels: Vec<Vec<i64>> = fg.levels.iter().map(|l| l.values.clone()).collect();
    let left = profusion_tests::decode_levels(&fg.names, &levels, 7, 0);
    let right = profusion_tests::decode_levels(&fg.names, &levels, 7, 1);
    let stacks = |v: i64| vec![(vec!["main".to_owned(), "work".to_owned()], v)];
    assert_eq!(left, reference_tree(&stacks(70)));
    assert_eq!(right, reference_tree(&stacks(10)));

    let stats: GetProfileStatsResponse =
        call(&server, "GetProfileStats", &GetProfileStatsRequest {}).unwrap();
    assert_eq!(
        (
            stats.data_ingested,
            stats.oldest_profile_time,
            stats.newest_profile_time
        ),
        (true, base_ms + 1_000, base_ms + 31_000)
    );

    let err = call::<_, SelectSeriesResponse>(
        &server,
        "SelectSeries",
        &SelectSeriesRequest {
            profile_type_id: CPU.into(),
            start,
            end,
            step: 0.0,
            ..Default::default()
        },
    )
    .unwrap_err();
    assert_eq!(err.0, 400);
    assert!(
        err.1.contains("step must be a positive number of seconds"),
        "{}",
        err.1
    );
}

#[test]
fn a_query_over_its_memory_budget_fails_and_the_server_keeps_serving() {
    let server = TestServer::start(&["--querier.max-query-memory=65536"]);
    let now = now_nanos();
    // Many distinct stacks: the merge's hash table outgrows 64 KiB.
    let stacks: Vec<String> = (0..3000).map(|i| format!("main;function_{i}")).collect();
    let stacks: Vec<(&str, i64)> = stacks.iter().map(|s| (s.as_str(), 1)).collect();
    push_cpu(
        &server,
        &[("__name__", "process_cpu"), ("service_name", "big")],
        &stacks,
        now,
    );
    let (start, end) = (now / 1_000_000 - 60_000, now / 1_000_000 + 60_000);
    let err = call::<_, SelectMergeStacktracesResponse>(
        &server,
        "SelectMergeStacktraces",
        &SelectMergeStacktracesRequest {
            profile_type_id: CPU.into(),
            label_selector: "{}".into(),
            start,
            end,
            ..Default::default()
        },
    )
    .unwrap_err();
    assert_eq!(err.0, 429, "{}", err.1);
    let body: serde_json::Value = serde_json::from_str(&err.1).unwrap();
    assert_eq!(body["code"], "resource_exhausted");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("more memory than its budget"),
        "{body}"
    );
    // Other queries and writes still work.
    let values: LabelValuesResponse = call(
        &server,
        "LabelValues",
        &LabelValuesRequest {
            name: "service_name".into(),
            matchers: vec![],
            start,
            end,
        },
    )
    .unwrap();
    assert_eq!(values.names, ["big"]);
    assert_eq!(
        profusion_tests::blocking::get_status(&server.url("/ready")).unwrap(),
        200
    );
}
