//! Compaction, deletion and crash recovery of the real binary, against the reference of
//! [`profusion_tests::reference`]: a random workload spread over twenty hours, flushed into many
//! small blocks, answers every query exactly as the reference does before, while and after the
//! compactor merges it, after a restart, after a crash at every step of compaction, and after
//! series are deleted (at once, and once the deletion is applied to the blocks). The main
//! comparison runs on each catalog (SQLite, PostgreSQL) and object store (local files, S3 on
//! moto, Azure Blob on azurite).

use std::time::{Duration, Instant};

use profusion_proto::querier::v1::{AnalyzeQueryRequest, AnalyzeQueryResponse};
use profusion_testing::postgres::PostgresServer;
use profusion_tests::emulators::ObjectStoreEmulator;
use profusion_tests::reference::{
    Generated, Window, check_everything, check_totals, generate, rows, seed, send,
};
use profusion_tests::{
    ServerBuilder, TestServer, clients, connect_call, now_nanos, post, wait_until_compacted,
};

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

/// Once the deletion delay has passed, the object store holds exactly the blocks queries read:
/// no retired block left behind, no upload of the crashed compactor orphaned.
fn files_match_the_catalog(server: &TestServer, step: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut matched = true;
        for tenant in ["t1", "t2"] {
            // Every profile is within the last day: exactly a day, the longest query allowed
            // (two readings of the clock could make it a millisecond longer).
            let now_ms = now_nanos() / 1_000_000;
            let analysis: AnalyzeQueryResponse = connect_call(
                server,
                "/querier.v1.QuerierService/AnalyzeQuery",
                Some(tenant),
                &AnalyzeQueryRequest {
                    start: now_ms - 86_400_000,
                    end: now_ms,
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

/// Every query equals the reference while the compactor merges a history of many small
/// blocks, after a restart and once it is done, with replica copies counted once; on the
/// catalog and object store `server` configures.
fn every_query_matches_the_reference(server: ServerBuilder) {
    let mut server = server
        .args(&flags(&[
            HISTORY,
            COMPACTING,
            &["--compactor.deletion-delay=30s"],
        ]))
        .spawn();
    let now_ms = now_nanos() / 1_000_000;
    let window = Window::covering(now_ms, SPAN_S);
    let profiles = generate(seed(20_261_201), now_ms / 1000, SPAN_S, 120);
    // Tenant t3's Connect pushes go twice with the same profile id, as a retrying client's or
    // as replicas do; compaction keeps one. Their times are two hours old or more: compaction
    // merges a window once it has ended, and until then a query counts both copies.
    let mut replayed: Vec<Generated> = generate(
        seed(20_261_201) + 1,
        now_ms / 1000 - 2 * 3600,
        SPAN_S - 2 * 3600,
        40,
    )
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
fn every_query_matches_the_reference_before_during_and_after_compaction() {
    every_query_matches_the_reference(TestServer::configure());
}

#[test]
fn compaction_matches_the_reference_with_a_postgresql_catalog() {
    let Some(postgres) = PostgresServer::start("compaction_with_a_postgresql_catalog") else {
        return;
    };
    every_query_matches_the_reference(
        TestServer::configure().arg(format!("--catalog.url={}", postgres.url())),
    );
}

#[test]
fn compaction_matches_the_reference_on_s3() {
    let Some(clients) = clients("compaction_on_s3") else {
        return;
    };
    let s3 = ObjectStoreEmulator::moto(&clients, "profiles", "compaction");
    every_query_matches_the_reference(s3.configure(TestServer::configure()));
}

#[test]
fn compaction_matches_the_reference_on_azure_blob_storage() {
    let Some(clients) = clients("compaction_on_azure") else {
        return;
    };
    let azure = ObjectStoreEmulator::azurite(&clients, "profiles", "compaction");
    every_query_matches_the_reference(azure.configure(TestServer::configure()));
}

#[test]
fn a_crash_at_any_step_of_compaction_changes_no_answer() {
    for step in ["claim", "pending", "upload", "swap", "mark", "delete"] {
        // History first, with a compactor that has nothing to do yet; the shutdown flushes it.
        let mut server =
            TestServer::start(&flags(&[HISTORY, &["--compactor.compaction-interval=1h"]]));
        let now_ms = now_nanos() / 1_000_000;
        let window = Window::covering(now_ms, SPAN_S);
        let profiles = generate(seed(20_261_201) + 7, now_ms / 1000, SPAN_S, 40);
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
        server.restart_to_crash(&crashing);
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

/// `POST /api/v1/admin/tsdb/{call}` for `tenant` with a query string; the status and body.
fn admin(server: &TestServer, call: &str, tenant: &str, query: &str) -> (u16, String) {
    let reply = post(
        &server.url(&format!("/api/v1/admin/tsdb/{call}?{query}")),
        &[("x-scope-orgid", tenant)],
        Vec::new(),
        false,
    );
    (reply.status, reply.text())
}

fn rfc3339(millis: i64) -> String {
    let secs = millis / 1000;
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

#[test]
fn deleted_series_leave_every_answer_at_once_and_the_blocks_at_compaction() {
    let mut server = TestServer::start(&flags(&[
        HISTORY,
        COMPACTING,
        &["--compactor.deletion-delay=3s"],
    ]));
    let now_ms = now_nanos() / 1_000_000;
    let window = Window::covering(now_ms, SPAN_S);
    let profiles = generate(seed(20_261_201) + 3, now_ms / 1000, SPAN_S, 120);
    for p in &profiles {
        send(&server, p);
    }
    let mut all = rows(&profiles);
    check_everything(&server, &all, window, "before deleting");

    // t1's svc-a from 15 h to 5 h ago (an RFC 3339 start, a Unix-seconds end; whole seconds,
    // so the reference's millisecond times compare exactly), and all of t2's staging.
    let (from_s, to_s) = (now_ms / 1000 - 15 * 3600, now_ms / 1000 - 5 * 3600);
    let middle = format!(
        "match[]=%7Bservice_name%3D%22svc-a%22%7D&start={}&end={to_s}",
        rfc3339(from_s * 1000)
    );
    assert_eq!(admin(&server, "delete_series", "t1", &middle).0, 204);
    assert_eq!(
        admin(
            &server,
            "delete_series",
            "t2",
            "match[]=%7Benv%3D%22staging%22%7D"
        )
        .0,
        204
    );
    let deleted = |r: &profusion_tests::reference::Row| {
        (r.tenant == "t1"
            && r.service == "svc-a"
            && r.time_ms >= from_s * 1000
            && r.time_ms <= to_s * 1000)
            || (r.tenant == "t2" && r.env == "staging")
    };
    let before = all.len();
    all.retain(|r| !deleted(r));
    assert!(all.len() < before, "the deletions select some rows");
    check_everything(&server, &all, window, "right after deleting");

    // Repeating a call changes nothing; bad calls say what is wrong.
    assert_eq!(admin(&server, "delete_series", "t1", &middle).0, 204);
    for (query, says) in [
        ("match[]=%7Bservice_name%3D", "matcher"),
        ("match[]=%7B%7D", "has no matcher"),
        ("start=10", "no match[]"),
        (
            "match[]=%7Ba%3D%22b%22%7D&end=noon",
            "end=\"noon\" is not a time",
        ),
        (
            "match[]=%7Ba%3D%22b%22%7D&start=20&end=10",
            "is before start",
        ),
    ] {
        let (status, body) = admin(&server, "delete_series", "t1", query);
        assert_eq!(status, 400, "{query}: {body}");
        assert!(body.contains(says), "{query}: {body}");
    }
    check_everything(
        &server,
        &all,
        window,
        "after repeated and refused deletions",
    );

    // The physical step: every block rewritten without the deleted profiles.
    for tenant in ["t1", "t2"] {
        let (status, body) = admin(&server, "clean_tombstones", tenant, "");
        assert_eq!(status, 204, "{body}");
    }
    assert!(server.metric("profusion_compactor_deleted_profiles_removed_total") > 0.0);
    check_everything(&server, &all, window, "after cleaning tombstones");
    wait_until_compacted(&server);
    files_match_the_catalog(&server, "clean_tombstones");
    if let Some(clients) = clients("deleted_series_leave_every_answer") {
        // Read straight from the files, without Profusion: no staging series has a sample.
        let left = clients.duckdb(
            &server.data.join("objects"),
            "SELECT count(*) FROM read_parquet('{store}/t2/blocks/*/samples.parquet') s
             JOIN read_parquet('{store}/t2/blocks/*/series.parquet') r USING (series_fingerprint)
             WHERE len(list_filter(r.labels, lambda l: l.name = 'env' AND l.value = 'staging')) > 0",
        );
        assert_eq!(left, vec![serde_json::json!([0])]);
    }
    server.stop();
    server.restart();
    check_everything(&server, &all, window, "after a restart");
}
