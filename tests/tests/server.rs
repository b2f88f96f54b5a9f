//! Server behaviour: flush triggers, readiness, metrics, configuration sources.

use std::time::{Duration, Instant};

use profusion_tests::{TestServer, binary, post};

fn push_folded(server: &TestServer, app: &str, body: &str) {
    let r = post(
        &server.url(&format!("/ingest?name={app}.cpu")),
        &[],
        body.as_bytes().to_vec(),
        false,
    );
    assert_eq!(r.status, 200, "{}", r.text());
}

/// Waits until `n` blocks are registered in the server's SQLite catalog.
fn wait_for_blocks(server: &TestServer, n: usize) {
    let started = Instant::now();
    while registered_blocks(server) < n {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "fewer than {n} blocks after 20s:\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Blocks registered in the catalog, read with Python's standard `sqlite3` module.
fn registered_blocks(server: &TestServer) -> usize {
    let script = "import sqlite3, sys\ntry:\n    print(sqlite3.connect(sys.argv[1]).execute('SELECT count(*) FROM blocks').fetchone()[0])\nexcept sqlite3.Error:\n    print(0)";
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(server.data.join("catalog.db"))
        .output()
        .expect("python3");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

#[test]
fn the_head_flushes_by_time_window() {
    let server = TestServer::start(&[
        "--pyroscopedb.max-block-duration=1s",
        "--ingester.flush-check-interval=100ms",
    ]);
    push_folded(&server, "timed", "a;b 1\n");
    wait_for_blocks(&server, 1);
    push_folded(&server, "timed", "a;c 1\n");
    wait_for_blocks(&server, 2);
    assert_eq!(server.blocks("anonymous").len(), 2);
}

#[test]
fn the_head_flushes_by_size() {
    let server = TestServer::start(&[
        "--ingester.max-head-bytes=4000",
        "--ingester.flush-check-interval=1h",
    ]);
    let mut body = String::new();
    for i in 0..20 {
        body.push_str(&format!("main;function_number_{i} {}\n", i + 1));
    }
    push_folded(&server, "sized", &body);
    push_folded(&server, "sized", &body);
    wait_for_blocks(&server, 1);
}

#[test]
fn metrics_and_readiness() {
    let server = TestServer::start(&[]);
    push_folded(&server, "metered", "a;b 3\n");
    let r = post(
        &server.url("/ingest?name=bad.nope"),
        &[],
        b"a 1\n".to_vec(),
        false,
    );
    assert_eq!(r.status, 400);
    let metrics = profusion_tests::blocking::runtime().block_on(async {
        reqwest::get(server.url("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    });
    for line in [
        "profusion_ingest_profiles_total 1",
        "profusion_head_profiles_appended_total 1",
        "profusion_http_requests_total{method=\"POST\",route=\"/ingest\",status=\"200\"} 1",
        "profusion_http_requests_total{method=\"POST\",route=\"/ingest\",status=\"400\"} 1",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line:?} missing from:\n{metrics}"
        );
    }
    assert_eq!(
        profusion_tests::blocking::get_status(&server.url("/ready")).unwrap(),
        200
    );
}

#[test]
fn yaml_file_and_environment_configure_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = dir.path().join("profusion.yaml");
    std::fs::write(
        &yaml,
        "auth:\n  multitenancy_enabled: true\nvalidation:\n  max_profile_stacktrace_samples: 1\n",
    )
    .unwrap();
    let server = TestServer::start(&[&format!("--config.file={}", yaml.display())]);
    let r = post(
        &server.url("/ingest?name=cfg.cpu"),
        &[],
        b"a 1\n".to_vec(),
        false,
    );
    assert_eq!(r.status, 401, "multitenancy from YAML: {}", r.text());
    let r = post(
        &server.url("/ingest?name=cfg.cpu"),
        &[("x-scope-orgid", "t")],
        b"a 1\nb 1\n".to_vec(),
        false,
    );
    assert_eq!(r.status, 400, "sample limit from YAML: {}", r.text());
    assert!(
        r.text().contains("2 samples, more than the limit of 1"),
        "{}",
        r.text()
    );

    // The environment overrides the file.
    let env_server = TestServer::configure()
        .arg(format!("--config.file={}", yaml.display()))
        .env("PROFUSION_AUTH_MULTITENANCY_ENABLED", "false")
        .spawn();
    let r = post(
        &env_server.url("/ingest?name=cfg.cpu"),
        &[],
        b"a 1\n".to_vec(),
        false,
    );
    assert_eq!(
        r.status,
        200,
        "multitenancy off from the environment: {}",
        r.text()
    );

    let out = std::process::Command::new(binary())
        .arg("--target=all,quarrier")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("unknown target \"quarrier\"")
            && stderr.contains("known targets: all, distributor, ingester, query-frontend"),
        "{stderr}"
    );

    let help = std::process::Command::new(binary())
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--server.http-listen-port",
        "--auth.multitenancy-enabled",
        "--storage.url",
        "--catalog.url",
        "PROFUSION_TARGET",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help");
    }
}

/// `--catalog.url=postgres://...` puts the catalog in PostgreSQL: blocks flushed by the server
/// are registered there.
#[test]
fn a_postgres_catalog_receives_the_blocks() {
    let Some(pg) = profusion_tests::PostgresServer::start("a_postgres_catalog_receives_the_blocks")
    else {
        return;
    };
    let mut server = TestServer::start(&[&format!("--catalog.url={}", pg.url())]);
    push_folded(&server, "pg", "main;work 3\nmain;idle 1\n");
    push_folded(&server, "pg", "main;work 2\n");
    server.stop();
    let url = pg.url();
    let rows = profusion_tests::blocking::runtime().block_on(async move {
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(connection);
        let row = client
            .query_one("SELECT count(*), sum(num_profiles)::BIGINT, min(services) FROM blocks WHERE tenant = 'anonymous'", &[])
            .await
            .unwrap();
        (row.get::<_, i64>(0), row.get::<_, i64>(1), row.get::<_, String>(2))
    });
    assert_eq!(rows, (1, 2, "[\"pg\"]".to_owned()));
    assert!(
        !server.data.join("catalog.db").exists(),
        "no SQLite catalog when PostgreSQL is configured"
    );
}

/// A SIGTERM while start-up waits on a catalog that accepts the connection and never answers
/// ends the process at once and cleanly. The signal handlers are installed before start-up
/// (when they were installed only once the server polled its shutdown future, after printing
/// that it listens, a SIGTERM before that killed the process), and start-up gives way to them.
#[test]
fn a_sigterm_during_a_stuck_start_up_ends_the_process_cleanly() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("postgres://u:p@{}/db", silent.local_addr().unwrap());
    let mut server = TestServer::start(&[]);
    server.stop();
    server.restart_to_crash(&["--catalog.url", &url]);
    // The server is inside its start-up once it connects to the catalog.
    let (_connection, _) = silent.accept().unwrap();
    // Asserts a successful exit, as after any graceful stop.
    server.stop();
    assert!(
        server.log().contains("shutdown requested during start-up"),
        "{}",
        server.log()
    );
}
