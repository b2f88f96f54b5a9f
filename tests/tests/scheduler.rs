//! The query frontend, scheduler and querier workers against the real binary: a tenant
//! flooding queries does not starve another, a tenant over its outstanding-request limit gets
//! 429, and split queries answer exactly what unsplit ones would.

use std::collections::BTreeMap;
use std::sync::Arc;

use profusion_proto::querier::v1::{
    SelectMergeStacktracesRequest, SelectMergeStacktracesResponse, SelectSeriesRequest,
    SelectSeriesResponse,
};
use profusion_tests::flood::{self, flame_request, heavy_stacks, push_tenant, query};
use profusion_tests::{TestServer, decode_flamegraph, now_nanos, post, push_cpu};
use prost::Message;

const CPU: &str = "process_cpu:cpu:nanoseconds:cpu:nanoseconds";

#[test]
fn a_flooding_tenant_does_not_starve_another() {
    let server = TestServer::start(&[
        "--auth.multitenancy-enabled",
        "--querier.max-concurrent=1",
        "--query-scheduler.max-outstanding-requests-per-tenant=1000",
    ]);
    flood::a_flooding_tenant_does_not_starve_another(&server, &server, &server, 1);
}

#[test]
fn a_tenant_over_its_outstanding_limit_gets_429_and_others_are_served() {
    let server = Arc::new(TestServer::start(&[
        "--auth.multitenancy-enabled",
        "--querier.max-concurrent=1",
        "--query-scheduler.max-outstanding-requests-per-tenant=3",
    ]));
    let now = now_nanos();
    for i in 0..10 {
        push_tenant(&server, "flood", &heavy_stacks(i), now);
    }
    push_tenant(&server, "quiet", &[("main;work".into(), 7)], now);
    let results: Vec<(u16, String)> = (0..24)
        .map(|_| {
            let server = Arc::clone(&server);
            std::thread::spawn(move || {
                let (status, text, _) = query(&server, "flood", flame_request(now));
                (status, text)
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    let refused: Vec<&(u16, String)> = results.iter().filter(|(s, _)| *s != 200).collect();
    assert!(
        !refused.is_empty(),
        "24 queries against a queue of 3 all got in"
    );
    for (status, text) in &refused {
        assert_eq!(*status, 429, "{text}");
        assert!(
            text.contains("resource_exhausted") && text.contains("too many outstanding"),
            "{text}"
        );
    }
    let (status, text, _) = query(&server, "quiet", flame_request(now));
    assert_eq!(status, 200, "{text}");
}

#[test]
fn split_queries_answer_exactly_like_the_reference() {
    let server = TestServer::start(&["--querier.split-queries-by-interval=1m"]);
    let now = now_nanos();
    // One profile every 50 s over 5 minutes, so parts and steps both cut across them.
    let pushes: Vec<(i64, &str, i64)> = (0..7)
        .map(|i| {
            let stack = if i % 2 == 0 { "main;even" } else { "main;odd" };
            (now - i * 50_000_000_000, stack, 10 + i)
        })
        .collect();
    for (time, stack, value) in &pushes {
        push_cpu(
            &server,
            &[("__name__", "process_cpu"), ("service_name", "api")],
            &[(stack, *value)],
            *time,
        );
    }
    let (start, end) = (now / 1_000_000 - 400_000, now / 1_000_000 + 1_000);
    let r = post(
        &server.url("/querier.v1.QuerierService/SelectMergeStacktraces"),
        &[("content-type", "application/proto")],
        SelectMergeStacktracesRequest {
            profile_type_id: CPU.into(),
            label_selector: "{}".into(),
            start,
            end,
            ..Default::default()
        }
        .encode_to_vec(),
        false,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let tree = decode_flamegraph(
        &SelectMergeStacktracesResponse::decode(r.body.as_slice())
            .unwrap()
            .flamegraph
            .unwrap(),
    );
    let stacks: Vec<(Vec<String>, i64)> = pushes
        .iter()
        .map(|(_, s, v)| (s.split(';').map(str::to_owned).collect(), *v))
        .collect();
    assert_eq!(tree, profusion_tests::reference_tree(&stacks));

    let r = post(
        &server.url("/querier.v1.QuerierService/SelectSeries"),
        &[("content-type", "application/proto")],
        SelectSeriesRequest {
            profile_type_id: CPU.into(),
            label_selector: "{}".into(),
            start,
            end,
            step: 15.0,
            ..Default::default()
        }
        .encode_to_vec(),
        false,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let series = SelectSeriesResponse::decode(r.body.as_slice())
        .unwrap()
        .series;
    assert_eq!(series.len(), 1);
    let got: Vec<(i64, f64)> = series[0]
        .points
        .iter()
        .map(|p| (p.timestamp, p.value))
        .collect();
    let mut want: BTreeMap<i64, f64> = BTreeMap::new();
    for (time, _, value) in &pushes {
        let ms = time / 1_000_000;
        *want.entry(ms - ms.rem_euclid(15_000)).or_default() += *value as f64;
    }
    assert_eq!(got, want.into_iter().collect::<Vec<_>>());
}
