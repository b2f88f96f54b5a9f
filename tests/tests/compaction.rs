//! Compaction, retention and crash recovery of the real binary, against the reference of
//! [`profusion_tests::reference`]: a random workload spread over twenty hours, flushed into many
//! small blocks, answers every query exactly as the reference does before, while and after the
//! compactor merges it, after a restart, and after a crash at every step of compaction.

use std::time::{Duration, Instant};

use profusion_proto::querier::v1::{AnalyzeQueryRequest, AnalyzeQueryResponse};
use profusion_tests::reference::{
    Generated, Window, check_everything, check_totals, generate, rows, send,
};
use profusion_tests::{TestServer, connect_call, now_nanos};

/// Twenty hours of history: several windows of every level of the default block ranges.
const SPAN_S: u64 = 20 * 3600;

/// Flags for a server that takes twenty-hour-old profiles and flushes them into many small
/// blocks.
const HISTORY: &[&str] = &[
    "--auth.multitenancy-enabled",
    "--validation.reject-older-than=0s",
    "--ingester.max-head-bytes=40000",
    "--ingester.flush-check-interval=100ms",
];

/// Flags for a compactor that runs continuously and takes blocks as soon as they are flushed.
const COMPACTING: &[&str] = &[
    "--compactor.compaction-interval=200ms",
    "--compactor.first-level-compaction-wait-period=0s",
    "--compactor.claim-lease=2s",
];

fn flags<'a>(parts: &[&[&'a str]]) -> Vec<&'a str> {
    parts.iter().flat_map(|p| p.iter().copied()).collect()
}

fn seed() -> u64 {
    std::env::var("PROFUSION_REFERENCE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_261_201)
}

fn jobs(server: &TestServer) -> f64 {
    ["done", "skipped", "conflict", "failed"]
        .iter()
        .map(|o| {
            server.metric(&format!(
                "profusion_compactor_jobs_total{{outcome=\"{o}\"}}"
            ))
        })
        .sum()
}

/// Waits until the compactor has run full cycles with nothing left to do.
fn wait_until_compacted(server: &TestServer) {
    let deadline = Instant::now() + Duration::from_secs(120);
    let cycles = || server.metric("profusion_compactor_cycles_total");
    let (mut since_cycle, mut since_jobs) = (cycles(), jobs(server));
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        let (c, j) = (cycles(), jobs(server));
        if j != since_jobs {
            (since_cycle, since_jobs) = (c, j);
        } else if c >= since_cycle + 3.0 {
            assert_eq!(
                server.metric("profusion_compactor_jobs_total{outcome=\"failed\"}"),
                0.0,
                "{}",
                server.log()
            );
            return;
        }
    }
    panic!("compaction did not settle:\n{}", server.log());
}

/// Once the deletion delay has passed, the object store holds exactly the blocks queries read:
/// no retired block left behind, no upload of the crashed compactor orphaned.
fn files_match_the_catalog(server: &TestServer, step: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut matched = true;
        for tenant in ["t1", "t2"] {
            let analysis: AnalyzeQueryResponse = connect_call(
                server,
                "/querier.v1.QuerierService/AnalyzeQuery",
                Some(tenant),
                &AnalyzeQueryRequest {
                    // Every profile is within the last day.
                    start: now_nanos() / 1_000_000 - 86_400_000,
                    end: now_nanos() / 1_000_000,
                    query: "{}".into(),
                },
            )
            .unwrap();
            let listed: u64 = analysis
                .query_scopes
                .iter()
                .filter(|s| s.component_type == "Object storage")
                .map(|s| s.block_count)
                .sum();
            matched &= server.blocks(tenant).len() as u64 == listed;
        }
        if matched {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{step}: block files never matched the catalog:\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn every_query_matches_the_reference_before_during_and_after_compaction() {
    let mut server = TestServer::start(&flags(&[
        HISTORY,
        COMPACTING,
        &["--compactor.deletion-delay=30s"],
    ]));
    let now_ms = now_nanos() / 1_000_000;
    let window = Window::covering(now_ms, SPAN_S);
    let profiles = generate(seed(), now_ms / 1000, SPAN_S, 120);
    // Tenant t3's Connect pushes go twice with the same profile id, as a retrying client's or
    // as replicas do; compaction keeps one.
    let mut replayed: Vec<Generated> = generate(seed() + 1, now_ms / 1000, SPAN_S, 40)
        .into_iter()
        .filter(Generated::is_push)
        .collect();
    for (i, p) in replayed.iter_mut().enumerate() {
        p.tenant = "t3";
        p.id = format!("00000000-0000-4000-8000-{i:012}");
    }
    for p in &profiles {
        send(&server, p);
    }
    for p in replayed.iter().chain(&replayed) {
        send(&server, p);
    }
    let all = rows(&profiles);
    let once = rows(&replayed);

    // Compaction runs every 200 ms while the checks run, over blocks and the head; then a
    // restart flushes the rest of the head and compaction goes on over blocks only.
    check_everything(&server, &all, window, "while compacting");
    server.stop();
    server.restart();
    check_everything(&server, &all, window, "while compacting after a restart");
    wait_until_compacted(&server);
    assert!(server.metric("profusion_compactor_blocks_compacted_total") > 0.0);
    let removed = server.metric("profusion_compactor_duplicate_profiles_removed_total");
    let copies = rows(&replayed).len() as f64;
    assert!(
        removed > 0.0 && removed <= copies,
        "{removed} copies removed"
    );
    check_everything(&server, &all, window, "after compaction");
    check_everything(&server, &once, window, "replica copies after compaction");
}

#[test]
fn a_crash_at_any_step_of_compaction_changes_no_answer() {
    for step in ["claim", "pending", "upload", "swap", "mark", "delete"] {
        // History first, with a compactor that has nothing to do yet; the shutdown flushes it.
        let mut server =
            TestServer::start(&flags(&[HISTORY, &["--compactor.compaction-interval=1h"]]));
        let now_ms = now_nanos() / 1_000_000;
        let window = Window::covering(now_ms, SPAN_S);
        let profiles = generate(seed() + 7, now_ms / 1000, SPAN_S, 40);
        for p in &profiles {
            send(&server, p);
        }
        let all = rows(&profiles);
        server.stop();

        let fail = format!("--compactor.fail-after-step={step}");
        let crashing = flags(&[
            HISTORY,
            COMPACTING,
            &["--compactor.deletion-delay=3s", fail.as_str()],
        ]);
        server.restart_with(&crashing);
        let status = server.wait_for_exit(Duration::from_secs(60));
        assert!(!status.success(), "{step}: the process aborted: {status}");
        assert!(
            server
                .log()
                .contains("failing on purpose after this compaction step"),
            "{step}: {}",
            server.log()
        );

        server.restart_with(&flags(&[
            HISTORY,
            COMPACTING,
            &["--compactor.deletion-delay=3s"],
        ]));
        check_totals(&server, &all, window, &format!("after a crash at {step}"));
        wait_until_compacted(&server);
        check_totals(
            &server,
            &all,
            window,
            &format!("compacted after a crash at {step}"),
        );
        files_match_the_catalog(&server, step);
        server.stop();
    }
}
