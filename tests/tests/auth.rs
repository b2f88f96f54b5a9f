//! Access control (`--auth.enabled`) against the real binary: tokens made with `profusion
//! tokens` and the admin API; every API called without a token, with an unknown one, a
//! malformed header, a revoked token, another tenant's token and a token lacking the scope,
//! each refused with its code and no data, and stores nothing; the refusals counted in
//! `/metrics` by reason and logged without secrets; Flight SQL through ADBC with a token; the
//! real agents and Grafana's data-source sequence with credentials.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine;
use profusion_proto::querier::v1::{SelectMergeStacktracesRequest, SelectMergeStacktracesResponse};
use profusion_tests::agents::buf_curl_with;
use profusion_tests::{
    Cluster, ClusterBackends, Reply, TestServer, clients, cpu_pprof, create_token,
    decode_flamegraph, delete, get, grpc_frame, now_nanos, otlp_capture_pb, post, push_request,
    reference_tree, tokens_cli,
};
use prost::Message;

const CPU: &str = "process_cpu:cpu:nanoseconds:cpu:nanoseconds";

/// A token's id: the part between the prefix and the secret.
fn id_of(token: &str) -> &str {
    token.split('_').nth(1).unwrap()
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn basic(user: &str, password: &str) -> String {
    let pair = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {pair}")
}

/// The tokens of the matrix: team-a's with each scope alone, team-b's with every scope, and a
/// revoked one of team-a with every scope.
struct Tokens {
    a_read: String,
    a_write: String,
    a_admin: String,
    b_all: String,
    revoked: String,
}

impl Tokens {
    fn make(data: &Path) -> Self {
        let tokens = Self {
            a_read: create_token(data, "team-a", "read"),
            a_write: create_token(data, "team-a", "write"),
            a_admin: create_token(data, "team-a", "admin"),
            b_all: create_token(data, "team-b", "read,write,admin"),
            revoked: create_token(data, "team-a", "read,write,admin"),
        };
        let flag = format!("--pyroscopedb.data-path={}", data.display());
        let said = tokens_cli(&flag, &["revoke", id_of(&tokens.revoked)]);
        assert_eq!(
            said,
            format!(
                "revoked token {} of tenant \"team-a\"",
                id_of(&tokens.revoked)
            )
        );
        tokens
    }

    fn of_team_a(&self, scope: &str) -> &str {
        match scope {
            "read" => &self.a_read,
            "write" => &self.a_write,
            "admin" => &self.a_admin,
            other => panic!("no scope {other}"),
        }
    }

    /// A team-a token without `scope`.
    fn team_a_without(&self, scope: &str) -> &str {
        match scope {
            "read" => &self.a_write,
            _ => &self.a_read,
        }
    }

    fn all(&self) -> [&str; 5] {
        [
            &self.a_read,
            &self.a_write,
            &self.a_admin,
            &self.b_all,
            &self.revoked,
        ]
    }
}

/// Function names only one tenant's profiles hold: no refused answer may contain them.
const A_SECRET: &str = "team_a_secret_fn";
const B_SECRET: &str = "team_b_secret_fn";

fn push_body(service: &str, function: &str, value: i64, time: i64) -> Vec<u8> {
    let profile = cpu_pprof(time, &[(&["main", function][..], value)]);
    push_request(
        &[("__name__", "process_cpu"), ("service_name", service)],
        profile.encode_to_vec(),
        "",
    )
    .encode_to_vec()
}

/// Calls an API with extra headers.
type Call<'a> = Box<dyn Fn(&[(&str, &str)]) -> Reply + 'a>;

/// One API of the matrix: its name, the scope it needs, and how to call it with extra headers.
struct Api<'a> {
    name: &'static str,
    need: &'static str,
    call: Call<'a>,
}

impl<'a> Api<'a> {
    /// POSTs `body()` to `path`, with `content_type` when given.
    fn post(
        server: &'a TestServer,
        name: &'static str,
        need: &'static str,
        path: &str,
        content_type: Option<&'static str>,
        body: impl Fn() -> Vec<u8> + 'a,
    ) -> Self {
        let url = server.url(path);
        Self {
            name,
            need,
            call: Box::new(move |h| {
                let mut headers = h.to_vec();
                headers.extend(content_type.map(|c| ("content-type", c)));
                post(&url, &headers, body(), false)
            }),
        }
    }

    fn get(server: &'a TestServer, name: &'static str, need: &'static str, path: &str) -> Self {
        let url = server.url(path);
        Self {
            name,
            need,
            call: Box::new(move |h| get(&url, h)),
        }
    }
}

/// Every tenant-facing API family, called as team-a.
fn apis(server: &TestServer, now: i64) -> Vec<Api<'_>> {
    let (start_ms, end_ms) = (now / 1_000_000 - 3_600_000, now / 1_000_000 + 60_000);
    let merge = format!(
        r#"{{"profileTypeID":"{CPU}","labelSelector":"{{}}","start":"{start_ms}","end":"{end_ms}"}}"#
    );
    let (proto, json) = (Some("application/proto"), Some("application/json"));
    let ingest = format!(
        "/ingest?name=matrix-legacy.cpu&from={}&until={}",
        now / 1_000_000_000 - 10,
        now / 1_000_000_000
    );
    let render = format!("/pyroscope/render?query={CPU}%7B%7D&from={start_ms}&until={end_ms}");
    let nothing = "/api/v1/admin/tsdb/delete_series?match[]=%7Bservice_name%3D%22nothing%22%7D";
    vec![
        Api::post(
            server,
            "Push",
            "write",
            "/push.v1.PusherService/Push",
            proto,
            move || push_body("matrix", "matrix_fn", 7, now),
        ),
        Api::post(server, "/ingest", "write", &ingest, None, || {
            b"main;legacy_fn 3\n".to_vec()
        }),
        Api::post(
            server,
            "OTLP",
            "write",
            "/v1development/profiles",
            Some("application/x-protobuf"),
            move || otlp_capture_pb(now),
        ),
        Api::post(
            server,
            "SelectMergeStacktraces",
            "read",
            "/querier.v1.QuerierService/SelectMergeStacktraces",
            json,
            move || merge.clone().into_bytes(),
        ),
        Api::get(server, "render", "read", &render),
        Api::get(
            server,
            "label-values",
            "read",
            "/pyroscope/label-values?label=service_name",
        ),
        Api::post(server, "SQL", "read", "/api/v1/sql", None, || {
            b"SELECT service_name, stack FROM sample_stacks".to_vec()
        }),
        Api::post(
            server,
            "settings Get",
            "read",
            "/settings.v1.SettingsService/Get",
            json,
            || b"{}".to_vec(),
        ),
        Api::post(
            server,
            "settings Set",
            "admin",
            "/settings.v1.SettingsService/Set",
            json,
            || br#"{"setting":{"name":"theme","value":"dark"}}"#.to_vec(),
        ),
        Api::post(server, "delete_series", "admin", nothing, None, Vec::new),
        Api::get(server, "tokens list", "admin", "/api/v1/admin/tokens"),
    ]
}

/// A way of asking: its name, its headers, the status it gets and the failure reason counted
/// (`None`: allowed).
type Case = (
    &'static str,
    Vec<(String, String)>,
    u16,
    Option<&'static str>,
);

/// Each way of asking, with the status and the failure reason it must get.
fn cases(tokens: &Tokens, need: &str) -> Vec<Case> {
    let unknown = format!("pfs_{}_{}", "0".repeat(12), "0".repeat(64));
    let auth = |v: String| ("authorization".to_owned(), v);
    let team_a = ("x-scope-orgid".to_owned(), "team-a".to_owned());
    vec![
        ("no token", vec![team_a.clone()], 401, Some("missing")),
        (
            "unknown token",
            vec![team_a.clone(), auth(bearer(&unknown))],
            401,
            Some("unknown"),
        ),
        (
            "another scheme",
            vec![team_a.clone(), auth(format!("Token {}", tokens.a_admin))],
            401,
            Some("malformed"),
        ),
        (
            "revoked token",
            vec![team_a.clone(), auth(bearer(&tokens.revoked))],
            401,
            Some("revoked"),
        ),
        (
            "team-b's token",
            vec![team_a.clone(), auth(bearer(&tokens.b_all))],
            403,
            Some("wrong_tenant"),
        ),
        (
            "team-a's token as Basic user team-b",
            vec![auth(basic("team-b", tokens.of_team_a(need)))],
            403,
            Some("wrong_tenant"),
        ),
        (
            "too small a scope",
            vec![team_a.clone(), auth(bearer(tokens.team_a_without(need)))],
            403,
            Some("scope"),
        ),
        (
            "the right token",
            vec![team_a.clone(), auth(bearer(tokens.of_team_a(need)))],
            200,
            None,
        ),
        (
            "the right token as Basic, no tenant header",
            vec![auth(basic("team-a", tokens.of_team_a(need)))],
            200,
            None,
        ),
    ]
}

/// The CPU flame graph of `selector`, read with the `authorization` header `auth` (so as its
/// token's tenant).
fn flame_graph(
    server: &TestServer,
    auth: &str,
    selector: &str,
    now: i64,
) -> BTreeMap<String, (i64, i64)> {
    let req = SelectMergeStacktracesRequest {
        profile_type_id: CPU.into(),
        label_selector: selector.into(),
        start: now / 1_000_000 - 3_600_000,
        end: now / 1_000_000 + 60_000,
        max_nodes: Some(65_536),
        ..Default::default()
    };
    let r = post(
        &server.url("/querier.v1.QuerierService/SelectMergeStacktraces"),
        &[
            ("content-type", "application/proto"),
            ("authorization", auth),
        ],
        req.encode_to_vec(),
        false,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let resp = SelectMergeStacktracesResponse::decode(r.body.as_slice()).unwrap();
    decode_flamegraph(&resp.flamegraph.unwrap_or_default())
}

#[test]
fn every_api_refuses_what_a_token_does_not_allow() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let tokens = Tokens::make(&data);
    let server = TestServer::configure()
        .data_dir(&data)
        .args(&["--auth.enabled", "--auth.multitenancy-enabled"])
        .spawn();
    let now = now_nanos();

    // Each tenant's own data, pushed with its token: Bearer for team-a, Basic for team-b.
    for (auth, service, function, value) in [
        (bearer(&tokens.a_write), "svc-a", A_SECRET, 40),
        (basic("team-b", &tokens.b_all), "svc-b", B_SECRET, 60),
    ] {
        let r = post(
            &server.url("/push.v1.PusherService/Push"),
            &[
                ("content-type", "application/proto"),
                ("authorization", &auth),
            ],
            push_body(service, function, value, now),
            false,
        );
        assert_eq!(r.status, 200, "{}", r.text());
    }

    let mut refusals: BTreeMap<&str, f64> = BTreeMap::new();
    let mut pushes_allowed = 0;
    for api in apis(&server, now) {
        for (case, headers, status, reason) in cases(&tokens, api.need) {
            let headers: Vec<(&str, &str)> = headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let r = (api.call)(&headers);
            let what = format!("{} with {case}", api.name);
            match reason {
                Some(reason) => {
                    *refusals.entry(reason).or_default() += 1.0;
                    assert_eq!(r.status, status, "{what}: {}", r.text());
                    let text = r.text();
                    for secret in [A_SECRET, B_SECRET, "svc-a", "svc-b"] {
                        assert!(!text.contains(secret), "{what} answered data: {text}");
                    }
                    if status == 401 {
                        assert!(
                            r.header("www-authenticate")
                                .is_some_and(|v| v.starts_with("Basic ")),
                            "{what}: {:?}",
                            r.headers
                        );
                    }
                    // Connect callers get the code by name.
                    if r.header("content-type") == Some("application/json") {
                        let want = if status == 401 {
                            "unauthenticated"
                        } else {
                            "permission_denied"
                        };
                        assert_eq!(r.json()["code"], want, "{what}");
                    }
                }
                None => {
                    assert!(
                        (200..300).contains(&r.status),
                        "{what}: {} {}",
                        r.status,
                        r.text()
                    );
                    assert!(!r.text().contains(B_SECRET), "{what}: {}", r.text());
                    if api.name == "Push" {
                        pushes_allowed += 1;
                    }
                }
            }
        }
    }

    // What the allowed reads see: each tenant its own data only, and of the matrix's pushes
    // only the allowed ones (two per write API: Bearer and Basic).
    assert_eq!(pushes_allowed, 2);

    // gRPC callers get the status number: gRPC-Web carries it in the body's trailer frame.
    for (auth, status, reason) in [
        (None, 16, "missing"),
        (Some(bearer(&tokens.a_read)), 7, "scope"),
        (Some(bearer(&tokens.a_write)), 0, ""),
    ] {
        let mut headers = vec![("content-type", "application/grpc-web+proto")];
        headers.extend(auth.as_deref().map(|a| ("authorization", a)));
        let r = post(
            &server.url("/push.v1.PusherService/Push"),
            &headers,
            grpc_frame(&push_body("grpc-web", "grpc_fn", 1, now)),
            false,
        );
        let body = String::from_utf8_lossy(&r.body).into_owned();
        assert!(
            body.contains(&format!("grpc-status: {status}\r\n")),
            "{auth:?}: {body}"
        );
        if !reason.is_empty() {
            *refusals.entry(reason).or_default() += 1.0;
        }
    }
    let pushed = r#"{service_name=~"svc-.|matrix|grpc-web"}"#;
    assert_eq!(
        flame_graph(&server, &bearer(&tokens.a_read), pushed, now),
        reference_tree(&[
            (vec!["main".into(), A_SECRET.into()], 40),
            (vec!["main".into(), "matrix_fn".into()], 7 * pushes_allowed),
            (vec!["main".into(), "grpc_fn".into()], 1),
        ])
    );
    assert_eq!(
        flame_graph(&server, &basic("team-b", &tokens.b_all), pushed, now),
        reference_tree(&[(vec!["main".into(), B_SECRET.into()], 60)])
    );

    // Every refusal counted by reason; no secret in the log.
    for (reason, count) in &refusals {
        assert_eq!(
            server.metric(&format!(
                "profusion_auth_failures_total{{reason=\"{reason}\"}}"
            )),
            *count,
            "{reason}"
        );
    }
    let log = server.log();
    for token in tokens.all() {
        let secret = token.rsplit('_').next().unwrap();
        assert!(!log.contains(secret), "the log holds a token's secret");
    }
    assert!(
        log.contains("request refused by access control"),
        "refusals are logged"
    );
}

/// Polls `check` until it holds, for at most `within`; how long it took.
fn eventually(within: Duration, what: &str, mut check: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < within, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    start.elapsed()
}

/// Tokens made and revoked through one process's admin API (the query-frontend) take effect
/// on another (the distributor) within seconds, through the shared PostgreSQL catalog; the API
/// never shows a secret or another tenant's tokens; `profusion tokens list` sees the same.
#[test]
fn tokens_made_and_revoked_on_one_process_take_effect_on_another_within_seconds() {
    let test = "tokens_take_effect_across_a_cluster";
    let Some(clients) = clients(test) else {
        return;
    };
    let Some(backends) = ClusterBackends::start(test, &clients) else {
        return;
    };
    let catalog = format!("--catalog.url={}", backends.postgres.url());
    let mut cluster = Cluster::on(backends).with_args(&[
        "--auth.enabled",
        "--auth.multitenancy-enabled",
        "--auth.refresh-interval=1s",
    ]);
    for i in 1..=3 {
        cluster.start_ingester(&format!("ingester-{i}"));
    }
    cluster.start_role("distributor", "distributor", &[]);
    cluster.start_role("frontend", "query-scheduler,query-frontend", &[]);
    let (distributor, frontend) = (cluster.node("distributor"), cluster.node("frontend"));
    let a_admin = tokens_cli(
        &catalog,
        &["create", "--tenant", "team-a", "--scope", "admin"],
    );
    let b_admin = tokens_cli(
        &catalog,
        &["create", "--tenant", "team-b", "--scope", "admin"],
    );
    let admin = |token: &str| ("authorization", bearer(token));
    let tokens_url = frontend.url("/api/v1/admin/tokens");
    let create_as = |token: &str, body: &str| {
        let (k, v) = admin(token);
        post(
            &tokens_url,
            &[(k, &v), ("content-type", "application/json")],
            body.into(),
            false,
        )
    };
    let list_as = |token: &str| {
        let (k, v) = admin(token);
        get(&tokens_url, &[(k, &v)])
    };

    // Wait until the frontend knows the admin tokens (made after it started).
    eventually(
        Duration::from_secs(10),
        "the frontend learns the CLI's tokens",
        || list_as(&a_admin).status == 200,
    );

    // Refusals of the token API itself.
    let r = create_as(&a_admin, r#"{"scopes":"write,superuser"}"#);
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("superuser"), "{}", r.text());
    let a_write_only = tokens_cli(
        &catalog,
        &["create", "--tenant", "team-a", "--scope", "write"],
    );
    eventually(
        Duration::from_secs(10),
        "a write token cannot make tokens",
        || create_as(&a_write_only, r#"{"scopes":"read"}"#).status == 403,
    );

    // A write token made through the API: its secret shown once, never listed.
    let r = create_as(&a_admin, r#"{"scopes":"write","description":"ci agent"}"#);
    assert_eq!(r.status, 201, "{}", r.text());
    let created = r.json();
    let token = created["token"].as_str().unwrap().to_owned();
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(
        (
            created["tenant"].as_str(),
            created["scopes"].as_str(),
            created["description"].as_str()
        ),
        (Some("team-a"), Some("write"), Some("ci agent"))
    );
    assert_eq!(id_of(&token), id);
    let listed = list_as(&a_admin);
    assert_eq!(listed.status, 200);
    let secret = token.rsplit('_').next().unwrap();
    assert!(
        !listed.text().contains(secret) && !listed.text().contains("hash"),
        "{}",
        listed.text()
    );
    let ids: Vec<String> = listed
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        ids.contains(&id) && ids.iter().any(|i| i == id_of(&a_admin)),
        "{ids:?}"
    );
    assert!(
        !ids.iter().any(|i| i == id_of(&b_admin)),
        "team-b's token listed to team-a: {ids:?}"
    );
    // team-b's admin can neither see nor revoke it.
    let b_list = list_as(&b_admin);
    assert!(!b_list.text().contains(&id), "{}", b_list.text());
    let revoke_as = |token: &str| {
        delete(
            &format!("{tokens_url}/{id}"),
            &[("authorization", &bearer(token))],
        )
    };
    assert_eq!(revoke_as(&b_admin).status, 404);

    // The distributor takes the new token within seconds.
    let push = |auth: &str| {
        post(
            &distributor.url("/push.v1.PusherService/Push"),
            &[
                ("content-type", "application/proto"),
                ("authorization", auth),
            ],
            push_body("cluster", "cluster_fn", 5, now_nanos()),
            false,
        )
    };
    let took = eventually(
        Duration::from_secs(10),
        "the distributor accepts the new token",
        || push(&bearer(&token)).status == 200,
    );
    eprintln!("a new token took effect on another process in {took:?}");

    // Revoked on the frontend: the distributor refuses it within seconds, saying why.
    let revoked = revoke_as(&a_admin);
    assert_eq!(revoked.status, 200, "{}", revoked.text());
    assert!(
        revoked.json()["revoked_at_millis"].as_i64().is_some(),
        "{}",
        revoked.text()
    );
    let took = eventually(
        Duration::from_secs(10),
        "the distributor refuses the revoked token",
        || {
            let r = push(&basic("team-a", &token));
            r.status == 401 && r.text().contains("revoked")
        },
    );
    eprintln!("a revocation took effect on another process in {took:?}");

    // The CLI reads the same catalog.
    let list = tokens_cli(&catalog, &["list", "--tenant", "team-a"]);
    let line = list
        .lines()
        .find(|l| l.starts_with(&id))
        .unwrap_or_else(|| panic!("{list}"));
    let columns: Vec<&str> = line
        .split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    assert_eq!(columns.len(), 6, "{line}");
    assert_eq!(
        (columns[1], columns[2], columns[5]),
        ("team-a", "write", "ci agent")
    );
    assert_ne!(columns[4], "-", "listed as not revoked: {line}");
    assert!(!list.contains(&id_of(&b_admin).to_owned()), "{list}");
}

/// Flight SQL through ADBC: a user and password (the handshake hands back a Bearer token), or
/// the `authorization` header set directly. Prints the services as JSON, or the error.
const ADBC: &str = r#"
import json, sys
import adbc_driver_flightsql.dbapi as flight_sql
from adbc_driver_flightsql import DatabaseOptions

uri, mode, tenant, token = sys.argv[1:5]
if mode == "basic":
    kwargs = {"username": tenant, "password": token}
elif mode == "bearer":
    kwargs = {DatabaseOptions.AUTHORIZATION_HEADER.value: "Bearer " + token}
else:
    kwargs = {}
try:
    with flight_sql.connect(uri, db_kwargs=kwargs) as conn:
        with conn.cursor() as cur:
            cur.execute("SELECT DISTINCT service_name FROM profiles ORDER BY service_name")
            print(json.dumps({"services": [r[0] for r in cur.fetchall()]}))
except Exception as e:
    print(json.dumps({"error": str(e)}))
"#;

/// The real agents push with their users' credentials (pyroscope-io: Basic and the tenant
/// header; @pyroscope/nodejs: a Bearer token); Grafana's data-source sequence (`buf curl`,
/// HTTP Basic as the data source sends it) and ADBC's Flight SQL read them back with a read
/// token; a write token reads nothing and no token gets nothing.
#[test]
fn the_real_agents_grafana_and_flight_sql_work_with_tokens() {
    let Some(clients) = clients("the_real_agents_grafana_and_flight_sql_work_with_tokens") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let write = create_token(&data, "team-a", "write");
    let read = create_token(&data, "team-a", "read");
    let other = create_token(&data, "team-b", "read");
    let revoked = create_token(&data, "team-a", "read");
    let flag = format!("--pyroscopedb.data-path={}", data.display());
    tokens_cli(&flag, &["revoke", id_of(&revoked)]);
    let unknown = format!("pfs_{}_{}", "1".repeat(12), "2".repeat(64));
    let server = TestServer::configure()
        .data_dir(&data)
        .args(&["--auth.enabled", "--auth.multitenancy-enabled"])
        .spawn();
    let base = server.url("");
    profusion_tests::agents::run_python_agent_as(&clients, &base, Some(("team-a", &write)));
    profusion_tests::agents::run_node_agent_as(&clients, &base, Some(("team-a", &write)));

    // Grafana's sequence as team-a's data source: the agents' services and functions.
    let grafana = format!("Authorization: {}", basic("team-a", &read));
    let buf = |method: &str, body: String| -> serde_json::Value {
        let out = buf_curl_with(&clients, &base, method, &body, &[&grafana]);
        serde_json::from_slice(&out).unwrap()
    };
    let now_ms = now_nanos() / 1_000_000;
    let (start, end) = (now_ms - 3_600_000, now_ms + 60_000);
    let types = buf(
        "ProfileTypes",
        format!(r#"{{"start":"{start}","end":"{end}"}}"#),
    );
    assert!(
        types["profileTypes"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t["ID"] == CPU)),
        "{types}"
    );
    let services = buf(
        "LabelValues",
        format!(r#"{{"name":"service_name","start":"{start}","end":"{end}"}}"#),
    );
    assert_eq!(
        services["names"],
        serde_json::json!(["agent-node", "agent.python"])
    );
    let merged = buf(
        "SelectMergeStacktraces",
        format!(
            r#"{{"profileTypeID":"{CPU}","labelSelector":"{{service_name=\"agent.python\"}}","start":"{start}","end":"{end}"}}"#
        ),
    );
    assert!(
        merged["flamegraph"]["names"].as_array().is_some_and(|n| n
            .iter()
            .any(|n| n.as_str().is_some_and(|n| n.contains("crunch_numbers")))),
        "{merged}"
    );

    // Flight SQL: both ways of sending the token see team-a's services; the others nothing.
    let adbc = |mode: &str, tenant: &str, token: &str| -> serde_json::Value {
        let uri = format!("grpc://{}", server.addr);
        serde_json::from_str(&clients.python(ADBC, &[&uri, mode, tenant, token])).unwrap()
    };
    let want = serde_json::json!({"services": ["agent-node", "agent.python"]});
    assert_eq!(adbc("basic", "team-a", &read), want);
    assert_eq!(adbc("bearer", "", &read), want);
    assert_eq!(
        adbc("bearer", "", &other),
        serde_json::json!({"services": []})
    );
    for (mode, tenant, token, why) in [
        (
            "bearer",
            "",
            write.as_str(),
            "has scopes write; this API needs read",
        ),
        (
            "basic",
            "team-b",
            read.as_str(),
            "belongs to tenant \"team-a\", not \"team-b\"",
        ),
        ("none", "", "", "no credentials"),
        ("bearer", "", revoked.as_str(), "was revoked"),
        ("basic", "team-a", unknown.as_str(), "invalid token"),
    ] {
        let refused = adbc(mode, tenant, token);
        let error = refused["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{mode} {tenant}: {refused}"));
        assert!(error.contains(why), "{mode} {tenant}: {error}");
    }
}
