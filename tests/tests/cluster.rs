//! The cluster harness: several `profusion` processes with different flags, each started and
//! waited for. Two monolithic nodes that share a catalog and an object store but not their
//! heads: what one flushes, the other serves, counted once.

use std::time::{Duration, Instant};

use profusion_proto::querier::v1::{SelectMergeStacktracesRequest, SelectMergeStacktracesResponse};
use profusion_tests::{
    Cluster, TestServer, connect_call, decode_flamegraph, now_nanos, push_cpu, reference_tree,
};

const CPU: &str = "process_cpu:cpu:nanoseconds:cpu:nanoseconds";

fn flame_graph(
    server: &TestServer,
    start: i64,
    end: i64,
) -> std::collections::BTreeMap<String, (i64, i64)> {
    let resp: SelectMergeStacktracesResponse = connect_call(
        server,
        "/querier.v1.QuerierService/SelectMergeStacktraces",
        None,
        &SelectMergeStacktracesRequest {
            profile_type_id: CPU.into(),
            label_selector: r#"{service_name="shared"}"#.into(),
            start,
            end,
            ..Default::default()
        },
    )
    .expect("flame graph");
    decode_flamegraph(&resp.flamegraph.unwrap_or_default())
}

#[test]
fn nodes_sharing_a_catalog_and_a_store_serve_each_others_blocks() {
    let shared = tempfile::tempdir().unwrap();
    let catalog = format!(
        "--catalog.url=sqlite:{}",
        shared.path().join("catalog.db").display()
    );
    let storage = format!(
        "--storage.url=file://{}",
        shared.path().join("objects").display()
    );
    let mut cluster = Cluster::new();
    for (name, id) in [("a", "ingester-a"), ("b", "ingester-b")] {
        cluster.start(
            name,
            TestServer::configure().args(&[
                &catalog,
                &storage,
                &format!("--ingester.id={id}"),
                "--pyroscopedb.max-block-duration=1s",
                "--ingester.flush-check-interval=100ms",
            ]),
        );
    }
    assert_eq!(cluster.names(), ["a", "b"]);
    assert_ne!(cluster.node("a").addr, cluster.node("b").addr);

    let now = now_nanos();
    push_cpu(
        cluster.node("a"),
        &[("service_name", "shared"), ("__name__", "process_cpu")],
        &[("main;work", 30_000_000), ("main;idle", 10_000_000)],
        now,
    );
    let want = reference_tree(&[
        (vec!["main".into(), "work".into()], 30_000_000),
        (vec!["main".into(), "idle".into()], 10_000_000),
    ]);
    let (start, end) = (now / 1_000_000 - 60_000, now / 1_000_000 + 60_000);
    // Node a answers from its head at once, and from its block after the flush.
    assert_eq!(flame_graph(cluster.node("a"), start, end), want);
    // Node b has an empty head: it sees the profile once a's block is registered.
    let started = Instant::now();
    loop {
        let got = flame_graph(cluster.node("b"), start, end);
        if got == want {
            break;
        }
        assert!(
            got.get("total").is_none_or(|t| *t == (0, 0)),
            "node b must see the profile whole or not at all: {got:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "node b never saw node a's block:\n{}",
            cluster.node("a").log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(flame_graph(cluster.node("a"), start, end), want);
    cluster.node_mut("b").stop();
}
