//! An acknowledged profile survives SIGKILL; a torn or corrupt WAL tail is reported and
//! skipped, never fatal.

use std::io::Write;

use profusion_tests::{TestServer, clients, cpu_total_last_hour, now_nanos, push_cpu};
use serde_json::json;

fn push(server: &TestServer, i: i64) {
    let stack = format!("main;loop;step{}", i % 5);
    push_cpu(
        server,
        &[("__name__", "process_cpu"), ("service_name", "durable")],
        &[(&stack, 10_000_000 * (i + 1))],
        now_nanos(),
    );
}

/// A push of `stacks` distinct 20-frame stacks named after `chunk`, each of `value`.
fn push_bulk(
    server: &TestServer,
    chunk: usize,
    stacks: usize,
    value: i64,
) -> profusion_tests::Reply {
    let names: Vec<Vec<String>> = (0..stacks)
        .map(|s| (0..20).map(|f| format!("fn_{chunk}_{s}_{f}")).collect())
        .collect();
    let frames: Vec<Vec<&str>> = names
        .iter()
        .map(|s| s.iter().map(String::as_str).collect())
        .collect();
    let stacks: Vec<(&[&str], i64)> = frames.iter().map(|f| (f.as_slice(), value)).collect();
    let req = profusion_tests::push_request(
        &[("__name__", "process_cpu"), ("service_name", "bulk")],
        prost::Message::encode_to_vec(&profusion_tests::cpu_pprof(now_nanos(), &stacks)),
        "",
    );
    profusion_tests::post(
        &server.url("/push.v1.PusherService/Push"),
        &[("content-type", "application/proto")],
        prost::Message::encode_to_vec(&req),
        false,
    )
}

fn wal_segments(server: &TestServer) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(server.data.join("wal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

#[test]
fn acknowledged_profiles_survive_sigkill_and_a_torn_wal_tail() {
    let Some(clients) = clients("acknowledged_profiles_survive_sigkill_and_a_torn_wal_tail") else {
        return;
    };
    let mut server = TestServer::start(&[]);
    let n = 40;
    for i in 0..n {
        push(&server, i);
    }
    server.kill();
    assert!(
        server.blocks("anonymous").is_empty(),
        "nothing may be flushed before the kill"
    );

    // A crash in the middle of an append leaves a partial record at the end of the segment.
    let last = wal_segments(&server).pop().expect("a WAL segment");
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&last)
        .unwrap();
    f.write_all(&[200, 1, 0, 0, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3])
        .unwrap();
    drop(f);

    server.restart();
    assert!(
        server.log().contains("write-ahead log segment is damaged"),
        "{}",
        server.log()
    );
    // The server keeps taking writes after recovery.
    push(&server, n);
    server.stop();

    let rows = clients.duckdb(
        &server.data.join("objects"),
        "SELECT count(DISTINCT profile_id), sum(value)::BIGINT FROM read_parquet('{store}/anonymous/blocks/*/samples.parquet')",
    );
    let expected_total: i64 = (0..=n).map(|i| 10_000_000 * (i + 1)).sum();
    assert_eq!(rows, vec![json!([n + 1, expected_total])]);
    assert!(
        wal_segments(&server)
            .iter()
            .all(|p| std::fs::metadata(p).unwrap().len() <= 16),
        "WAL not truncated after flush"
    );
}

#[test]
fn a_corrupt_record_is_skipped_with_what_follows_it() {
    let Some(clients) = clients("a_corrupt_record_is_skipped_with_what_follows_it") else {
        return;
    };
    let mut server = TestServer::start(&[]);
    push(&server, 0);
    push(&server, 1);
    server.kill();
    // Flip a byte in the last record's payload: its checksum no longer matches.
    let last = wal_segments(&server).pop().unwrap();
    let mut bytes = std::fs::read(&last).unwrap();
    let end = bytes.len() - 1;
    bytes[end] ^= 0xff;
    std::fs::write(&last, bytes).unwrap();
    server.restart();
    assert!(
        server.log().contains("checksum mismatch"),
        "{}",
        server.log()
    );
    server.stop();
    let rows = clients.duckdb(
        &server.data.join("objects"),
        "SELECT count(DISTINCT profile_id), sum(value)::BIGINT FROM read_parquet('{store}/anonymous/blocks/*/samples.parquet')",
    );
    assert_eq!(
        rows,
        vec![json!([1, 10_000_000])],
        "the intact first record is recovered"
    );
}

/// A flush does not hold pushes up: while one writes its block, pushes keep being acknowledged
/// (with the usual durability: each is in the WAL when it returns). Measured by completion, not
/// by the clock: how many small pushes return between the head passing its limit and the
/// flushed block being registered. When a flush encoded its block under the head's lock, every
/// push waited for the whole encoding and that count was zero or one.
#[test]
fn pushes_are_acknowledged_while_a_flush_writes_its_block() {
    let server = TestServer::start(&[
        "--ingester.max-head-bytes=40000000",
        "--ingester.flush-check-interval=10ms",
    ]);
    let flushes = || server.metric("profusion_ingester_flushes_total");
    // Pushes of 2,000 distinct 20-frame stacks each (about 5 MB of head) until the open
    // generation reaches half the limit and the flush starts.
    let mut chunk = 0;
    while server.metric("profusion_head_bytes") < 20e6 && flushes() == 0.0 {
        let r = push_bulk(&server, chunk, 2000, 10_000_000);
        assert_eq!(r.status, 200, "{}", r.text());
        chunk += 1;
        assert!(chunk < 50, "the head never reached its limit");
    }
    let mut during = 0;
    let started = std::time::Instant::now();
    while flushes() == 0.0 {
        push(&server, during);
        during += 1;
    }
    eprintln!(
        "{during} pushes acknowledged during a flush of {:?}, after {chunk} bulk pushes",
        started.elapsed()
    );
    assert!(
        during >= 10,
        "only {during} pushes were acknowledged while the flush ran:\n{}",
        server.log()
    );
}

/// `--ingester.max-head-bytes` bounds the head even when no flush can finish (here the object
/// store does not answer): once the head holds the limit, a push waits for room up to
/// `--ingester.head-full-wait` and is then refused with 503, stored nowhere. Every push
/// acknowledged before stays readable, and after a restart onto a working store the WAL brings
/// exactly the acknowledged pushes into blocks.
#[test]
fn a_full_head_refuses_writes_with_503_and_keeps_every_acknowledged_one() {
    let dead_store = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let endpoint = format!("http://127.0.0.1:{dead_store}");
    let mut server = TestServer::configure()
        .args(&[
            "--storage.url=s3://bucket/profiles",
            "--ingester.max-head-bytes=4000000",
            "--ingester.head-full-wait=1s",
            "--ingester.flush-check-interval=10ms",
        ])
        .env("AWS_ENDPOINT", &endpoint)
        .env("AWS_ALLOW_HTTP", "true")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .spawn();
    // Pushes of 200 distinct stacks (about half a megabyte of head each), each push's value
    // its own, until one is refused.
    let mut acknowledged = 0i64;
    let refused = (0..40)
        .find_map(|chunk| {
            let value = 1_000 + chunk as i64;
            let r = push_bulk(&server, chunk, 200, value);
            match r.status {
                200 => {
                    acknowledged += 200 * value;
                    None
                }
                _ => Some(r),
            }
        })
        .unwrap_or_else(|| panic!("no push was refused:\n{}", server.log()));
    assert_eq!(refused.status, 503, "{}", refused.text());
    let message = refused.text();
    assert!(
        message.contains("head is full") && message.contains("--ingester.max-head-bytes"),
        "{message}"
    );
    assert!(server.metric("profusion_ingester_head_full_waits_total") >= 1.0);
    assert_eq!(server.metric("profusion_ingester_flushes_total"), 0.0);
    // Bounded: at most one push's worth of head beyond the limit.
    assert!(
        server.metric("profusion_head_bytes") < 4e6 + 1e6,
        "the head grew to {} bytes",
        server.metric("profusion_head_bytes")
    );
    assert_eq!(cpu_total_last_hour(&server, "bulk"), json!(acknowledged));

    // A graceful stop would keep retrying the flush against the dead store.
    server.kill();
    server.restart_with(&["--ingester.flush-check-interval=10ms"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while server.metric("profusion_ingester_flushes_total") == 0.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the replayed head was not flushed:\n{}",
            server.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(!server.blocks("anonymous").is_empty(), "{}", server.log());
    assert_eq!(cpu_total_last_hour(&server, "bulk"), json!(acknowledged));
}

/// A query of the head builds block batches of it, kept for the next queries until a write
/// changes the head; they are memory the head holds, so `--ingester.max-head-bytes` counts
/// them, and a flush frees them with the rest.
#[test]
fn query_snapshots_of_the_head_count_as_head_memory() {
    let server = TestServer::start(&[]);
    let r = push_bulk(&server, 0, 500, 1_000);
    assert_eq!(r.status, 200, "{}", r.text());
    let data_only = server.metric("profusion_head_bytes");
    assert!(data_only > 0.0);
    assert_eq!(cpu_total_last_hour(&server, "bulk"), json!(500_000));
    let with_snapshot = server.metric("profusion_head_bytes");
    assert!(
        with_snapshot > data_only,
        "{with_snapshot} bytes with a query snapshot, {data_only} without"
    );
    // The snapshot is reused, not built again.
    assert_eq!(cpu_total_last_hour(&server, "bulk"), json!(500_000));
    assert_eq!(server.metric("profusion_head_bytes"), with_snapshot);
}
