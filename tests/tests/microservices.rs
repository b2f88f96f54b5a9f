//! Microservices mode: every role its own process, over a private PostgreSQL catalog and an
//! S3 bucket (moto), as `Cluster::seed` starts them. Writes go through the distributor to
//! three ingesters (replication factor 3) over gRPC.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use profusion_proto::querier::v1::SelectMergeStacktracesResponse;
use profusion_tests::reference::{Window, check_everything, generate, rows, seed, send};
use profusion_tests::{
    Clients, Cluster, ClusterBackends, TestServer, clients, cpu_pprof, decode_flamegraph, flood,
    get, now_nanos, post, push_cpu, reference_tree,
};
use prost::Message;

const INGESTERS: [&str; 3] = ["ingester-1", "ingester-2", "ingester-3"];

/// The ring page of `path` as JSON: instance id → (state, address, token count).
fn ring(server: &TestServer, path: &str) -> BTreeMap<String, (String, String, usize)> {
    let reply = get(&server.url(path), &[("accept", "application/json")]);
    assert_eq!(reply.status, 200, "{}", reply.text());
    let page = reply.json();
    assert!(page["now"].is_string(), "{page}");
    page["shards"]
        .as_array()
        .expect("shards")
        .iter()
        .map(|s| {
            assert!(s["timestamp"].is_string() && s["registered_timestamp"].is_string());
            (
                s["id"].as_str().unwrap().to_owned(),
                (
                    s["state"].as_str().unwrap().to_owned(),
                    s["address"].as_str().unwrap().to_owned(),
                    s["tokens"].as_array().unwrap().len(),
                ),
            )
        })
        .collect()
}

/// Waits until `check` holds of `path`'s ring, as seen from `server`.
fn wait_for_ring(
    server: &TestServer,
    path: &str,
    what: &str,
    check: impl Fn(&BTreeMap<String, (String, String, usize)>) -> bool,
) {
    let started = Instant::now();
    loop {
        let members = ring(server, path);
        if check(&members) {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{what}: the ring is {members:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn appended(server: &TestServer) -> f64 {
    server.metric("profusion_head_profiles_appended_total")
}

/// Series profiles per push: one per sample type of the pushed pprof.
fn series_per_push() -> f64 {
    cpu_pprof(0, &[(&["main"], 1)]).sample_type.len() as f64
}

fn push(server: &TestServer, i: usize) {
    push_cpu(
        server,
        &[
            ("service_name", &format!("svc-{}", i % 4)),
            ("__name__", "process_cpu"),
        ],
        &[("main;work", 10_000_000 + i as i64)],
        now_nanos(),
    );
}

/// Profiles per block source in the catalog: `ingester-<id>` → profiles.
fn block_profiles(cluster: &Cluster) -> BTreeMap<String, i64> {
    let url = cluster.backends().unwrap().postgres.url();
    profusion_tests::blocking::runtime().block_on(async move {
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        client
            .query(
                "SELECT source, sum(num_profiles)::BIGINT FROM blocks \
                 WHERE tenant = 'anonymous' GROUP BY source",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|row| (row.get::<_, String>(0), row.get::<_, i64>(1)))
            .collect()
    })
}

#[test]
fn writes_reach_every_replica_and_survive_an_ingester_killed_mid_stream() {
    let test = "writes_reach_every_replica";
    let Some((_, backends)) = backends(test) else {
        return;
    };
    let mut cluster = Cluster::on(backends).seed();
    let distributor = cluster.node("distributor");

    // Membership: every process is in its ring, ACTIVE, at the address it listens on.
    let members = ring(distributor, "/ring");
    assert_eq!(
        members.keys().map(String::as_str).collect::<Vec<_>>(),
        INGESTERS
    );
    for id in INGESTERS {
        let (state, address, tokens) = &members[id];
        assert_eq!(state, "ACTIVE");
        assert_eq!(address, &cluster.node(id).addr);
        assert_eq!(*tokens, 128);
    }
    let distributors = ring(cluster.node("ingester-1"), "/distributor/ring");
    assert_eq!(distributors.len(), 1, "{distributors:?}");
    let (state, address, _) = distributors.values().next().unwrap();
    assert_eq!((state.as_str(), address), ("ACTIVE", &distributor.addr));
    assert!(
        get(&distributor.url("/ring"), &[])
            .text()
            .contains("<td>ingester-2</td>"),
        "the ring page is an HTML table"
    );

    // A request to a process that lacks the role says which role to call.
    let misrouted = post(
        &cluster
            .node("ingester-1")
            .url("/push.v1.PusherService/Push"),
        &[("content-type", "application/proto")],
        Vec::new(),
        false,
    );
    assert_eq!(misrouted.status, 501, "{}", misrouted.text());
    assert!(
        misrouted.text().contains("--target=distributor"),
        "{}",
        misrouted.text()
    );
    let read = get(&distributor.url("/pyroscope/labels"), &[]);
    assert_eq!(read.status, 501);
    assert!(read.text().contains("query-frontend"), "{}", read.text());

    // Every write reaches all three replicas.
    let per_push = series_per_push();
    for i in 0..20 {
        push(distributor, i);
    }
    for id in INGESTERS {
        assert_eq!(appended(cluster.node(id)), 20.0 * per_push, "{id}");
    }

    // One ingester killed: writes keep being acknowledged by the other two (a majority).
    cluster.node_mut("ingester-3").kill();
    let distributor = cluster.node("distributor");
    for i in 20..30 {
        push(distributor, i);
    }
    // Its heartbeats stop: unhealthy on the ring page once the timeout passes, and writes
    // no longer try it.
    wait_for_ring(distributor, "/ring", "ingester-3 unhealthy", |m| {
        m.get("ingester-3")
            .is_some_and(|(s, _, _)| s == "UNHEALTHY")
    });
    for i in 30..35 {
        push(distributor, i);
    }
    for id in &INGESTERS[..2] {
        assert_eq!(appended(cluster.node(id)), 35.0 * per_push, "{id}");
    }

    // Restarted, it replays its WAL, rejoins, and takes writes again.
    cluster.node_mut("ingester-3").restart();
    let distributor = cluster.node("distributor");
    wait_for_ring(distributor, "/ring", "ingester-3 back", |m| {
        m.get("ingester-3").is_some_and(|(s, _, _)| s == "ACTIVE")
    });
    // The distributor rebuilds its ring from the membership within a heartbeat period.
    std::thread::sleep(Duration::from_millis(700));
    for i in 35..40 {
        push(distributor, i);
    }

    // Graceful stops flush every head and leave the ring. Each replica's blocks hold what it
    // acknowledged: all 40 pushes on the two that stayed up; the killed one, the 20 before
    // its death (recovered from its WAL) and the 5 after its return.
    for id in INGESTERS {
        cluster.node_mut(id).stop();
    }
    wait_for_ring(
        cluster.node("distributor"),
        "/ring",
        "every ingester left",
        |m| m.is_empty(),
    );
    let per_push = per_push as i64;
    let want: BTreeMap<String, i64> = [
        ("ingester-ingester-1", 40 * per_push),
        ("ingester-ingester-2", 40 * per_push),
        ("ingester-ingester-3", 25 * per_push),
    ]
    .into_iter()
    .map(|(s, n)| (s.to_owned(), n))
    .collect();
    assert_eq!(block_profiles(&cluster), want);

    // With no ingester left, the distributor is not ready (once it has read the ring again)
    // and refuses writes as unavailable, never acknowledging what nothing stored.
    let distributor = cluster.node("distributor");
    let started = Instant::now();
    loop {
        let ready = get(&distributor.url("/ready"), &[]);
        if ready.status == 503 {
            assert!(
                ready.text().contains("waiting for ingesters"),
                "{}",
                ready.text()
            );
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "still ready");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Every write is refused as unavailable; once the distributor's ring has caught up with
    // the last leave, the refusal says no ingester is left.
    loop {
        let refused = post(
            &distributor.url("/ingest?name=late.cpu"),
            &[],
            b"main;work 1\n".to_vec(),
            false,
        );
        assert_eq!(refused.status, 503, "{}", refused.text());
        if refused.text().contains("no ingester") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{}",
            refused.text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_dead_member_can_be_forgotten_from_the_ring_page() {
    let test = "a_dead_member_can_be_forgotten";
    let Some((_, backends)) = backends(test) else {
        return;
    };
    let mut cluster = Cluster::on(backends);
    cluster.start_ingester("ingester-1");
    cluster.start_ingester("ingester-2");
    cluster.node_mut("ingester-2").kill();
    let page = cluster.node("ingester-1");
    wait_for_ring(page, "/ring", "ingester-2 unhealthy", |m| {
        m.get("ingester-2")
            .is_some_and(|(s, _, _)| s == "UNHEALTHY")
    });
    let reply = post(
        &page.url("/ring"),
        &[("content-type", "application/x-www-form-urlencoded")],
        b"forget=ingester-2".to_vec(),
        false,
    );
    assert_eq!(reply.status, 200, "the redirect leads back to the page");
    assert_eq!(
        ring(page, "/ring")
            .keys()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        ["ingester-1"]
    );
}

/// The test clients and a cluster's backends, or `None` (the test says why it is skipped).
fn backends(test: &str) -> Option<(Clients, ClusterBackends)> {
    let clients = clients(test)?;
    let backends = ClusterBackends::start(test, &clients)?;
    Some((clients, backends))
}

#[test]
fn every_query_on_the_cluster_matches_the_reference_counting_replicas_once() {
    let test = "every_query_on_the_cluster_matches_the_reference";
    let Some((_, backends)) = backends(test) else {
        return;
    };
    let mut cluster = Cluster::on(backends)
        .with_args(&[
            "--auth.multitenancy-enabled",
            "--pyroscopedb.max-block-duration=1h",
        ])
        .seed();
    let now_ms = now_nanos() / 1_000_000;
    let span_s = 50 * 60;
    let profiles = generate(seed(20_261_201), now_ms / 1000, span_s, 40);
    for p in &profiles {
        send(cluster.node("distributor"), p);
    }
    let all = rows(&profiles);
    let window = Window::covering(now_ms, span_s);
    check_everything(
        cluster.node("query-frontend"),
        &all,
        window,
        "from the heads of three replicas",
    );

    // One ingester down: its replicas answer for it.
    cluster.node_mut("ingester-2").kill();
    check_everything(
        cluster.node("query-frontend"),
        &all,
        window,
        "with one ingester killed",
    );

    // Back from its WAL, then every head flushed: three copies of each profile in blocks.
    cluster.node_mut("ingester-2").restart();
    for id in INGESTERS {
        cluster.node_mut(id).stop();
    }
    check_everything(
        cluster.node("query-frontend"),
        &all,
        window,
        "from the blocks of three replicas",
    );
}

/// The seed cluster with tenants, one querier worker per querier, and room in the queues for
/// a flood.
fn flood_cluster(test: &str) -> Option<Cluster> {
    let (_, backends) = backends(test)?;
    Some(
        Cluster::on(backends)
            .with_args(&[
                "--auth.multitenancy-enabled",
                "--querier.max-concurrent=1",
                "--query-scheduler.max-outstanding-requests-per-tenant=1000",
            ])
            .seed(),
    )
}

#[test]
fn a_flooding_tenant_does_not_starve_another_across_processes() {
    let Some(cluster) = flood_cluster("a_flooding_tenant_does_not_starve_another_across_processes")
    else {
        return;
    };
    // Two queriers with one worker each; the queues are the query-scheduler's.
    flood::a_flooding_tenant_does_not_starve_another(
        cluster.node("distributor"),
        cluster.node("query-frontend"),
        cluster.node("query-scheduler"),
        2,
    );
}

/// Pushes ten heavy profiles of tenant `busy` over the last ten seconds before `now`; their
/// merged flame graph, by the reference.
fn push_busy_tenant(cluster: &Cluster, now: i64) -> BTreeMap<String, (i64, i64)> {
    let mut want_stacks = Vec::new();
    for i in 0..10 {
        let stacks = flood::heavy_stacks(i);
        flood::push_tenant(
            cluster.node("distributor"),
            "busy",
            &stacks,
            now - i as i64 * 1_000_000_000,
        );
        want_stacks.extend(
            stacks
                .into_iter()
                .map(|(s, v)| (s.split(';').map(str::to_owned).collect::<Vec<_>>(), v)),
        );
    }
    reference_tree(&want_stacks)
}

/// Thirty whole-range flame-graph queries of tenant `busy`, six at a time, with `during`
/// run on the cluster mid-way: every answer is exactly `want`, or fails as unavailable (a
/// retryable error), never partial. How many answered.
fn queries_while(
    cluster: &mut Cluster,
    now: i64,
    want: &BTreeMap<String, (i64, i64)>,
    during: impl FnOnce(&mut Cluster),
) -> usize {
    let frontend = cluster.node("query-frontend").url("");
    let queries: Vec<_> = (0..6)
        .map(|_| {
            let frontend = frontend.clone();
            std::thread::spawn(move || {
                (0..5)
                    .map(|_| flood::query_at(&frontend, "busy", flood::whole_flame_request(now)))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    during(cluster);
    let mut answered = 0;
    for t in queries {
        for (status, text, body) in t.join().unwrap() {
            match status {
                200 => {
                    let fg = SelectMergeStacktracesResponse::decode(body.as_slice())
                        .unwrap()
                        .flamegraph
                        .unwrap();
                    let got = decode_flamegraph(&fg);
                    // Not the whole trees on failure: thousands of nodes each.
                    assert!(
                        &got == want,
                        "a wrong answer: total {:?}, {} nodes; want {:?}, {} nodes",
                        got.get("total"),
                        got.len(),
                        want.get("total"),
                        want.len()
                    );
                    answered += 1;
                }
                // Lost twice over one job: retryable, never partial.
                503 => assert!(text.contains("unavailable"), "{text}"),
                other => panic!("status {other}: {text}"),
            }
        }
    }
    eprintln!(
        "{answered} of 30 answered; jobs the scheduler ran again: {}",
        cluster
            .node("query-scheduler")
            .log()
            .matches("running it again")
            .count()
    );
    answered
}

#[test]
fn queriers_killed_and_added_while_queries_run_never_give_a_wrong_answer() {
    let Some(mut cluster) = flood_cluster("queriers_killed_and_added_while_queries_run") else {
        return;
    };
    let now = now_nanos();
    let want = push_busy_tenant(&cluster, now);
    // Mid-flood: one querier dies, another joins.
    let answered = queries_while(&mut cluster, now, &want, |cluster| {
        cluster.node_mut("querier-1").kill();
        cluster.start_querier("querier-3");
    });
    assert!(answered >= 28, "only {answered} of 30 queries answered");

    // The new querier takes work: another round of queries reaches it.
    let frontend = cluster.node("query-frontend").url("");
    let more: Vec<_> = (0..4)
        .map(|_| {
            let frontend = frontend.clone();
            std::thread::spawn(move || {
                flood::query_at(&frontend, "busy", flood::flame_request(now))
            })
        })
        .collect();
    for t in more {
        let (status, text, _) = t.join().unwrap();
        assert_eq!(status, 200, "{text}");
    }
    assert!(
        cluster
            .node("querier-3")
            .metric("profusion_querier_jobs_total")
            > 0.0,
        "querier-3 ran no job: {}",
        cluster.node("querier-3").log()
    );
}

#[test]
fn a_store_gateway_killed_mid_query_never_gives_a_wrong_answer() {
    let Some(mut cluster) = flood_cluster("a_store_gateway_killed_mid_query") else {
        return;
    };
    let now = now_nanos();
    let want = push_busy_tenant(&cluster, now);
    // Every head flushed: the profiles are in blocks only, read by the store-gateways.
    for id in INGESTERS {
        cluster.node_mut(id).stop();
    }
    // Block footers a store-gateway looked up: one per block file a stage there opened.
    let read = |cluster: &Cluster, name: &str| {
        ["hit", "miss"]
            .iter()
            .map(|r| {
                cluster.node(name).metric(&format!(
                    "profusion_store_gateway_metadata_cache_requests_total{{result=\"{r}\"}}"
                ))
            })
            .sum::<f64>()
    };
    let frontend = cluster.node("query-frontend").url("");
    let (status, text, _) = flood::query_at(&frontend, "busy", flood::whole_flame_request(now));
    assert_eq!(status, 200, "{text}");
    assert!(
        read(&cluster, "store-gateway-1") + read(&cluster, "store-gateway-2") > 0.0,
        "the store-gateways read no block:\n{}\n{}",
        get(&cluster.node("store-gateway-1").url("/metrics"), &[]).text(),
        cluster.node("querier-1").log()
    );
    let answered = queries_while(&mut cluster, now, &want, |cluster| {
        cluster.node_mut("store-gateway-1").kill();
    });
    assert!(answered >= 28, "only {answered} of 30 queries answered");
    // The one left serves every block now.
    let before = read(&cluster, "store-gateway-2");
    let (status, text, _) = flood::query_at(&frontend, "busy", flood::whole_flame_request(now));
    assert_eq!(status, 200, "{text}");
    assert!(
        read(&cluster, "store-gateway-2") > before,
        "store-gateway-2 read no block: {}",
        cluster.node("querier-1").log()
    );
}

#[test]
fn a_hung_ingester_holds_no_push_or_query_past_its_timeout() {
    let test = "a_hung_ingester_holds_no_push_or_query_past_its_timeout";
    let Some((_, backends)) = backends(test) else {
        return;
    };
    let cluster = Cluster::on(backends)
        .with_args(&[
            "--distributor.push.timeout=2s",
            "--querier.remote-timeout=2s",
        ])
        .seed();
    let distributor = cluster.node("distributor");
    for i in 0..8 {
        push(distributor, i);
    }
    // Stopped, not dead: its sockets stay open and nothing comes back. Before its heartbeat
    // times out it is still in the ring as ACTIVE: the query waits for it at most the remote
    // timeout, and answers from its replicas.
    cluster.node("ingester-3").pause();
    let started = Instant::now();
    let total = profusion_tests::cpu_total_last_hour(cluster.node("query-frontend"), "svc-1");
    let querying = started.elapsed();
    let started = Instant::now();
    for i in 8..12 {
        push(distributor, i);
    }
    let pushing = started.elapsed();
    eprintln!("query {querying:?}, pushes {pushing:?} with ingester-3 hung");
    cluster.node("ingester-3").resume();
    // svc-1 got pushes 1 and 5, each one sample of this value.
    assert_eq!(total, serde_json::json!(10_000_001 + 10_000_005));
    // Each push waits at most the push timeout for the hung replica (then the ring marks it
    // unhealthy and writes stop trying it), the query at most the remote timeout; plus slack
    // for this machine.
    assert!(
        pushing < Duration::from_secs(4 * 2 + 5),
        "pushes took {pushing:?}"
    );
    assert!(
        querying < Duration::from_secs(2 + 5),
        "the query took {querying:?}"
    );
}

#[test]
fn compaction_and_deletion_run_in_the_cluster() {
    let test = "compaction_and_deletion_run_in_the_cluster";
    let Some((_, backends)) = backends(test) else {
        return;
    };
    // Twenty hours of history in many small blocks per ingester, compacted as they come.
    let cluster = Cluster::on(backends)
        .with_args(&[
            "--auth.multitenancy-enabled",
            "--validation.reject-older-than=0s",
            "--ingester.max-head-bytes=40000",
            "--ingester.flush-check-interval=100ms",
            "--compactor.compaction-interval=200ms",
            "--compactor.first-level-compaction-wait-period=0s",
            "--compactor.claim-lease=2s",
        ])
        .seed();
    let now_ms = now_nanos() / 1_000_000;
    let span_s = 20 * 3600;
    let profiles = generate(seed(20_261_201) + 3, now_ms / 1000, span_s, 60);
    for p in &profiles {
        send(cluster.node("distributor"), p);
    }
    let all = rows(&profiles);
    let window = Window::covering(now_ms, span_s);
    let frontend = cluster.node("query-frontend");
    check_everything(
        frontend,
        &all,
        window,
        "while the compactor merges replicas",
    );
    let compactor = cluster.node("compactor");
    profusion_tests::wait_until_compacted(compactor);
    // Three ingesters flushed each profile: the compactor kept one copy of each.
    assert!(compactor.metric("profusion_compactor_blocks_compacted_total") > 0.0);
    let removed = compactor.metric("profusion_compactor_duplicate_profiles_removed_total");
    assert!(
        removed > 0.0,
        "no replica copy was merged:\n{}",
        compactor.log()
    );
    check_everything(frontend, &all, window, "after compaction");

    // Deletions through the query-frontend: gone from every answer at once, then from the
    // blocks once every ingester has flushed and the tenant's blocks are rewritten.
    let (from_s, to_s) = (now_ms / 1000 - 15 * 3600, now_ms / 1000 - 5 * 3600);
    let admin = |call: &str, tenant: &str, query: &str| {
        let reply = post(
            &frontend.url(&format!("/api/v1/admin/tsdb/{call}?{query}")),
            &[("x-scope-orgid", tenant)],
            Vec::new(),
            false,
        );
        (reply.status, reply.text())
    };
    let (status, body) = admin(
        "delete_series",
        "t1",
        &format!("match[]=%7Bservice_name%3D%22svc-a%22%7D&start={from_s}&end={to_s}"),
    );
    assert_eq!(status, 204, "{body}");
    let mut kept = all.clone();
    kept.retain(|r| {
        !(r.tenant == "t1"
            && r.service == "svc-a"
            && r.time_ms >= from_s * 1000
            && r.time_ms <= to_s * 1000)
    });
    assert!(kept.len() < all.len(), "the deletion selects some rows");
    check_everything(frontend, &kept, window, "right after deleting");
    let (status, body) = admin("clean_tombstones", "t1", "");
    assert_eq!(status, 204, "{body}");
    // Removed by the cleaning itself, or by the running compactor's next rewrite of the same
    // blocks, whichever came first.
    let removed =
        |node: &TestServer| node.metric("profusion_compactor_deleted_profiles_removed_total");
    assert!(
        removed(frontend) + removed(compactor) > 0.0,
        "no deleted profile left a block:\n{}",
        frontend.log()
    );
    check_everything(frontend, &kept, window, "after cleaning tombstones");
}

#[test]
fn the_real_agents_and_buf_curl_work_against_the_cluster() {
    let test = "the_real_agents_and_buf_curl_work_against_the_cluster";
    let Some((clients, backends)) = backends(test) else {
        return;
    };
    let cluster = Cluster::on(backends).seed();
    // The agents push to the distributor: Connect Push (Python) and /ingest (Node.js).
    let distributor = cluster.node("distributor").url("");
    profusion_tests::agents::run_python_agent(&clients, &distributor);
    profusion_tests::agents::run_node_agent(&clients, &distributor);

    // `buf curl` reads them back from the query-frontend, as Grafana's data source would.
    let frontend = cluster.node("query-frontend").url("");
    let now = now_nanos() / 1_000_000;
    let (start, end) = (now - 3_600_000, now + 60_000);
    let buf = |method: &str, body: serde_json::Value| -> serde_json::Value {
        let answer =
            profusion_tests::agents::buf_curl(&clients, &frontend, method, &body.to_string());
        serde_json::from_slice(&answer).expect("JSON from buf curl")
    };
    let types = buf(
        "ProfileTypes",
        serde_json::json!({"start": start, "end": end}),
    );
    let ids: Vec<&str> = types["profileTypes"]
        .as_array()
        .expect("profile types")
        .iter()
        .map(|t| t["ID"].as_str().unwrap_or_default())
        .collect();
    for id in [
        "process_cpu:cpu:nanoseconds:cpu:nanoseconds",
        "wall:wall:nanoseconds:wall:nanoseconds",
    ] {
        assert!(ids.contains(&id), "{id} not in {ids:?}");
    }
    let services = buf(
        "LabelValues",
        serde_json::json!({"name": "service_name", "start": start, "end": end}),
    );
    assert_eq!(
        services["names"],
        serde_json::json!(["agent-node", "agent.python"])
    );
    for (service, profile_type, function) in [
        (
            "agent.python",
            "process_cpu:cpu:nanoseconds:cpu:nanoseconds",
            "crunch_numbers",
        ),
        (
            "agent-node",
            "wall:wall:nanoseconds:wall:nanoseconds",
            "fibonacciWork",
        ),
    ] {
        let graph = buf(
            "SelectMergeStacktraces",
            serde_json::json!({
                "profileTypeID": profile_type,
                "labelSelector": format!("{{service_name=\"{service}\"}}"),
                "start": start,
                "end": end,
            }),
        );
        let names = graph["flamegraph"]["names"].as_array().expect("names");
        assert!(
            names
                .iter()
                .any(|n| n.as_str().is_some_and(|n| n.contains(function))),
            "{function} not in the {service} flame graph"
        );
        assert!(
            graph["flamegraph"]["total"]
                .as_str()
                .and_then(|t| t.parse::<i64>().ok())
                .is_some_and(|t| t > 0),
            "{graph}"
        );
    }
}
