//! The query frontend, scheduler and querier workers against the real binary: a tenant
//! flooding queries does not starve another, a tenant over its outstanding-request limit gets
//! 429, and split queries answer exactly what unsplit ones would.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use profusion_proto::querier::v1::{
    SelectMergeStacktracesRequest, SelectMergeStacktracesResponse, SelectSeriesRequest,
    SelectSeriesResponse,
};
use profusion_tests::{TestServer, decode_flamegraph, get, now_nanos, post, push_cpu};
use prost::Message;

const CPU: &str = "process_cpu:cpu:nanoseconds:cpu:nanoseconds";

fn push_tenant(server: &TestServer, tenant: &str, stacks: &[(String, i64)], time: i64) {
    use profusion_tests::{cpu_pprof, push_request};
    let frames: Vec<Vec<&str>> = stacks.iter().map(|(s, _)| s.split(';').collect()).collect();
    let with_values: Vec<(&[&str], i64)> = frames
        .iter()
        .zip(stacks)
        .map(|(f, (_, v))| (f.as_slice(), *v))
        .collect();
    let req = push_request(
        &[("__name__", "process_cpu"), ("service_name", tenant)],
        cpu_pprof(time, &with_values).encode_to_vec(),
        "",
    );
    let r = post(
        &server.url("/push.v1.PusherService/Push"),
        &[
            ("content-type", "application/proto"),
            ("x-scope-orgid", tenant),
        ],
        req.encode_to_vec(),
        false,
    );
    assert_eq!(r.status, 200, "{}", r.text());
}

/// Many distinct deep stacks, so one merge keeps a worker busy for a while.
fn heavy_stacks(seed: usize) -> Vec<(String, i64)> {
    (0..150)
        .map(|i| {
            let stack: Vec<String> = (0..12).map(|d| format!("fn_{seed}_{i}_{d}")).collect();
            (stack.join(";"), 1 + i as i64)
        })
        .collect()
}

fn flame_request(now: i64) -> Vec<u8> {
    SelectMergeStacktracesRequest {
        profile_type_id: CPU.into(),
        label_selector: "{}".into(),
        start: now / 1_000_000 - 120_000,
        end: now / 1_000_000 + 60_000,
        ..Default::default()
    }
    .encode_to_vec()
}

fn query(server: &TestServer, tenant: &str, body: Vec<u8>) -> (u16, String, Vec<u8>) {
    let r = post(
        &server.url("/querier.v1.QuerierService/SelectMergeStacktraces"),
        &[
            ("content-type", "application/proto"),
            ("x-scope-orgid", tenant),
        ],
        body,
        false,
    );
    (r.status, r.text(), r.body)
}

/// The scheduler's queue length of `tenant`, from `/metrics`.
fn queued(server: &TestServer, tenant: &str) -> usize {
    let text = get(&server.url("/metrics"), &[]).text();
    let needle = format!("profusion_query_scheduler_queue_length{{tenant=\"{tenant}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&needle))
        .map_or(0, |v| v.trim().parse().unwrap())
}

#[test]
fn a_flooding_tenant_does_not_starve_another() {
    let server = Arc::new(TestServer::start(&[
        "--auth.multitenancy-enabled",
        "--querier.max-concurrent=1",
        "--query-scheduler.max-outstanding-requests-per-tenant=1000",
    ]));
    let now = now_nanos();
    for i in 0..20 {
        push_tenant(
            &server,
            "flood",
            &heavy_stacks(i),
            now - i as i64 * 1_000_000_000,
        );
    }
    push_tenant(&server, "quiet", &[("main;work".into(), 7)], now);

    let done = Arc::new(AtomicUsize::new(0));
    let flood: Vec<_> = (0..40)
        .map(|_| {
            let (server, done) = (Arc::clone(&server), Arc::clone(&done));
            std::thread::spawn(move || {
                let (status, text, _) = query(&server, "flood", flame_request(now));
                assert_eq!(status, 200, "{text}");
                done.fetch_add(1, Ordering::SeqCst);
            })
        })
        .collect();
    let started = Instant::now();
    while queued(&server, "flood") < 10 {
        assert!(
            done.load(Ordering::SeqCst) < 30 && started.elapsed() < Duration::from_secs(60),
            "the flood never queued up"
        );
        std::thread::sleep(Duration::from_millis(5));
    }

    let before = done.load(Ordering::SeqCst);
    let (status, text, body) = query(&server, "quiet", flame_request(now));
    let after = done.load(Ordering::SeqCst);
    assert_eq!(status, 200, "{text}");
    let fg = SelectMergeStacktracesResponse::decode(body.as_slice())
        .unwrap()
        .flamegraph
        .unwrap();
    assert_eq!(decode_flamegraph(&fg)["total;main;work"], (7, 7));
    // Round-robin: the quiet query waits for the running flood query and at most one more
    // turn of the flood, not for the whole flood queue.
    assert!(
        after - before <= 3,
        "{} flood queries finished while the quiet one waited ({} were queued)",
        after - before,
        40 - before
    );
    assert!(after < 40, "the flood had already drained");
    for t in flood {
        t.join().unwrap();
    }
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
