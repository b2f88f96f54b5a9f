//! The read path against a deliberately simple reference implementation (see
//! [`profusion_tests::reference`]): everything is checked from the head, then again after a
//! restart has flushed it all into blocks, and then once more, when the querier's caches
//! answer.

use profusion_tests::reference::{
    Window, check_everything, check_totals, generate, rows, seed, send,
};
use profusion_tests::{TestServer, now_nanos};

#[test]
fn every_query_matches_the_reference_across_every_ingest_path() {
    let mut server = TestServer::start(&[
        "--auth.multitenancy-enabled",
        "--pyroscopedb.max-block-duration=1h",
    ]);
    let now_ms = now_nanos() / 1_000_000;
    let span_s = 50 * 60;
    let profiles = generate(seed(20_261_121), now_ms / 1000, span_s, 40);
    for p in &profiles {
        send(&server, p);
    }
    let all = rows(&profiles);
    let window = Window::covering(now_ms, span_s);
    check_everything(&server, &all, window, "from the head");
    server.stop();
    server.restart();
    assert!(!server.blocks("t1").is_empty() && !server.blocks("t2").is_empty());
    check_everything(&server, &all, window, "from blocks");
    // The same questions again are answered from the querier's per-file aggregates and
    // resolved symbols, which must not change a single answer.
    check_totals(&server, &all, window, "from blocks, again from the caches");
}
