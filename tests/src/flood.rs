//! A tenant flooding the read path while another queries: the fairness the scheduler's
//! per-tenant queues promise, checked the same way against one process and against a cluster.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use profusion_proto::querier::v1::{SelectMergeStacktracesRequest, SelectMergeStacktracesResponse};
use prost::Message;

use crate::{TestServer, decode_flamegraph, get, now_nanos, post};

const CPU: &str = "process_cpu:cpu:nanoseconds:cpu:nanoseconds";

pub fn push_tenant(server: &TestServer, tenant: &str, stacks: &[(String, i64)], time: i64) {
    let stacks: Vec<(&str, i64)> = stacks.iter().map(|(s, v)| (s.as_str(), *v)).collect();
    crate::push_cpu_as(
        server,
        Some(tenant),
        &[("__name__", "process_cpu"), ("service_name", tenant)],
        &stacks,
        time,
    );
}

/// Many distinct deep stacks, so one merge keeps a worker busy for a while.
pub fn heavy_stacks(seed: usize) -> Vec<(String, i64)> {
    (0..150)
        .map(|i| {
            let stack: Vec<String> = (0..12).map(|d| format!("fn_{seed}_{i}_{d}")).collect();
            (stack.join(";"), 1 + i as i64)
        })
        .collect()
}

pub fn flame_request(now: i64) -> Vec<u8> {
    SelectMergeStacktracesRequest {
        profile_type_id: CPU.into(),
        label_selector: "{}".into(),
        start: now / 1_000_000 - 120_000,
        end: now / 1_000_000 + 60_000,
        ..Default::default()
    }
    .encode_to_vec()
}

/// [`flame_request`] for the whole tree, however many nodes it has.
pub fn whole_flame_request(now: i64) -> Vec<u8> {
    let mut request =
        SelectMergeStacktracesRequest::decode(flame_request(now).as_slice()).expect("just encoded");
    request.max_nodes = Some(1 << 20);
    request.encode_to_vec()
}

pub fn query(server: &TestServer, tenant: &str, body: Vec<u8>) -> (u16, String, Vec<u8>) {
    query_at(&server.url(""), tenant, body)
}

/// [`query`] against the server at `base` (its URL without a path), from any thread.
pub fn query_at(base: &str, tenant: &str, body: Vec<u8>) -> (u16, String, Vec<u8>) {
    let r = post(
        &format!("{base}/querier.v1.QuerierService/SelectMergeStacktraces"),
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
pub fn queued(server: &TestServer, tenant: &str) -> usize {
    let text = get(&server.url("/metrics"), &[]).text();
    let needle = format!("profusion_query_scheduler_queue_length{{tenant=\"{tenant}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&needle))
        .map_or(0, |v| v.trim().parse().unwrap())
}

/// Forty heavy queries of tenant `flood` queue up (through `read`, on `scheduler`'s queues,
/// run by `workers` querier workers in all); a query of tenant `quiet` then waits for the
/// flood's running queries and at most one more turn of the flood, not for its whole queue.
pub fn a_flooding_tenant_does_not_starve_another(
    write: &TestServer,
    read: &TestServer,
    scheduler: &TestServer,
    workers: usize,
) {
    let now = now_nanos();
    for i in 0..20 {
        push_tenant(
            write,
            "flood",
            &heavy_stacks(i),
            now - i as i64 * 1_000_000_000,
        );
    }
    push_tenant(write, "quiet", &[("main;work".into(), 7)], now);
    let read_url = read.url("");

    let done = Arc::new(AtomicUsize::new(0));
    let flood: Vec<_> = (0..40)
        .map(|_| {
            let (url, done) = (read_url.clone(), Arc::clone(&done));
            std::thread::spawn(move || {
                let (status, text, _) = query_at(&url, "flood", flame_request(now));
                assert_eq!(status, 200, "{text}");
                done.fetch_add(1, Ordering::SeqCst);
            })
        })
        .collect();
    let started = Instant::now();
    while queued(scheduler, "flood") < 10 {
        assert!(
            done.load(Ordering::SeqCst) < 30 && started.elapsed() < Duration::from_secs(60),
            "the flood never queued up"
        );
        std::thread::sleep(Duration::from_millis(5));
    }

    let before = done.load(Ordering::SeqCst);
    let (status, text, body) = query(read, "quiet", flame_request(now));
    let after = done.load(Ordering::SeqCst);
    assert_eq!(status, 200, "{text}");
    let fg = SelectMergeStacktracesResponse::decode(body.as_slice())
        .unwrap()
        .flamegraph
        .unwrap();
    assert_eq!(decode_flamegraph(&fg)["total;main;work"], (7, 7));
    // Round-robin: the quiet query waits for the running flood queries and at most one more
    // turn of the flood per worker, not for the whole flood queue.
    assert!(
        after - before <= 2 * workers + 1,
        "{} flood queries finished while the quiet one waited ({} were queued)",
        after - before,
        40 - before
    );
    assert!(after < 40, "the flood had already drained");
    for t in flood {
        t.join().unwrap();
    }
}
