//! `push.v1.PusherService/Push` over Connect (proto and JSON, gzip), gRPC and gRPC-Web, checked
//! by reading the stored blocks with DuckDB; and the exact error codes of bad pushes.

use profusion_proto::push::v1::PushRequest;
use profusion_tests::{
    TestServer, clients, cpu_pprof, grpc_frame, gzip, now_nanos, post, push_request, stacks_sql,
};
use prost::Message;
use serde_json::json;

fn cpu_push(service: &str, time: i64, gzipped: bool) -> PushRequest {
    let profile = cpu_pprof(
        time,
        &[
            (&["main", "work"], 30_000_000),
            (&["main", "idle"], 10_000_000),
        ],
    );
    let raw = profile.encode_to_vec();
    push_request(
        &[
            ("__name__", "process_cpu"),
            ("service_name", service),
            ("env", "test"),
        ],
        if gzipped { gzip(&raw) } else { raw },
        &uuid::Uuid::new_v4().to_string(),
    )
}

const PUSH: &str = "/push.v1.PusherService/Push";

#[test]
fn every_protocol_stores_the_exact_stacks() {
    let Some(clients) = clients("every_protocol_stores_the_exact_stacks") else {
        return;
    };
    let mut server = TestServer::start(&[]);
    let now = now_nanos();

    let body = cpu_push("svc-connect-proto", now, true).encode_to_vec();
    let r = post(
        &server.url(PUSH),
        &[("content-type", "application/proto")],
        body,
        false,
    );
    assert_eq!(
        (r.status, r.header("content-type")),
        (200, Some("application/proto")),
        "{}",
        r.text()
    );

    let json = profusion_proto::to_json(&cpu_push("svc-connect-json", now, false)).unwrap();
    let r = post(
        &server.url(PUSH),
        &[
            ("content-type", "application/json"),
            ("content-encoding", "gzip"),
            ("connect-protocol-version", "1"),
        ],
        gzip(&json),
        false,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!({}));

    let body = grpc_frame(&cpu_push("svc-grpc", now, false).encode_to_vec());
    let r = post(
        &server.url(PUSH),
        &[("content-type", "application/grpc"), ("te", "trailers")],
        body,
        true,
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/grpc"));
    assert_eq!(r.body, grpc_frame(&[]), "one empty PushResponse frame");

    let body = grpc_frame(&cpu_push("svc-grpc-web", now, true).encode_to_vec());
    let r = post(
        &server.url(PUSH),
        &[("content-type", "application/grpc-web+proto")],
        body,
        false,
    );
    assert_eq!(r.status, 200);
    let trailer = b"grpc-status: 0\r\n";
    let mut expected = grpc_frame(&[]);
    expected.push(0x80);
    expected.extend_from_slice(&(trailer.len() as u32).to_be_bytes());
    expected.extend_from_slice(trailer);
    assert_eq!(r.body, expected, "data frame then trailer frame");

    server.stop();
    let rows = clients.duckdb(&server.data.join("objects"), &stacks_sql("anonymous"));
    let cpu = "process_cpu:cpu:nanoseconds:cpu:nanoseconds";
    let mut expected = Vec::new();
    for svc in [
        "svc-connect-json",
        "svc-connect-proto",
        "svc-grpc",
        "svc-grpc-web",
    ] {
        expected.push(json!([svc, cpu, "main;idle", 10_000_000]));
        expected.push(json!([svc, cpu, "main;work", 30_000_000]));
    }
    assert_eq!(rows, expected);

    let labels = clients.duckdb(
        &server.data.join("objects"),
        "SELECT DISTINCT list_sort(list_transform(labels, lambda l: l.name || '=' || l.value))
         FROM read_parquet('{store}/anonymous/blocks/*/series.parquet') WHERE service_name = 'svc-grpc'",
    );
    assert_eq!(
        labels,
        vec![json!([[
            "__name__=process_cpu",
            "__period_type__=cpu",
            "__period_unit__=nanoseconds",
            format!("__profile_type__={cpu}"),
            "__service_name__=svc-grpc",
            "__type__=cpu",
            "__unit__=nanoseconds",
            "env=test",
            "service_name=svc-grpc"
        ]])]
    );
}

#[test]
fn bad_pushes_get_exact_codes_and_messages() {
    let server = TestServer::start(&[]);
    let url = server.url(PUSH);

    let r = post(
        &url,
        &[("content-type", "application/proto")],
        b"\xff\xff\xff".to_vec(),
        false,
    );
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["code"], "invalid_argument");
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap()
            .contains("invalid push.v1.PushRequest protobuf"),
        "{}",
        r.text()
    );

    let two_hours_ago = now_nanos() - 2 * 3600 * 1_000_000_000;
    let body = cpu_push("old", two_hours_ago, false).encode_to_vec();
    let r = post(&url, &[("content-type", "application/proto")], body, false);
    assert_eq!(
        (r.status, r.json()["code"].as_str()),
        (400, Some("invalid_argument"))
    );
    assert!(
        r.json()["message"].as_str().unwrap().contains("too old"),
        "{}",
        r.text()
    );

    let mut req = cpu_push("no-name", now_nanos(), false);
    req.series[0].labels.retain(|l| l.name != "__name__");
    let r = post(
        &url,
        &[("content-type", "application/proto")],
        req.encode_to_vec(),
        false,
    );
    assert_eq!(r.status, 400);
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap()
            .contains("has no __name__ label"),
        "{}",
        r.text()
    );

    let mut req = cpu_push("bad-id", now_nanos(), false);
    req.series[0].samples[0].id = "not-a-uuid".into();
    let r = post(
        &url,
        &[("content-type", "application/proto")],
        req.encode_to_vec(),
        false,
    );
    assert_eq!(r.status, 400);
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap()
            .contains("\"not-a-uuid\" is not a UUID"),
        "{}",
        r.text()
    );

    let r = post(
        &url,
        &[("content-type", "application/json")],
        br#"{"series": [{"nope": 1}]}"#.to_vec(),
        false,
    );
    assert_eq!(
        (r.status, r.json()["code"].as_str()),
        (400, Some("invalid_argument"))
    );

    // gRPC errors travel as grpc-status in a trailers-only response.
    let r = post(
        &url,
        &[("content-type", "application/grpc")],
        vec![0, 0, 0, 0, 3, 0xff, 0xff, 0xff],
        true,
    );
    assert_eq!((r.status, r.header("grpc-status")), (200, Some("3")));

    let r = post(
        &url,
        &[("content-type", "text/plain")],
        b"hello".to_vec(),
        false,
    );
    assert_eq!(r.status, 415);

    let r = post(
        &server.url("/push.v1.PusherService/Nope"),
        &[("content-type", "application/proto")],
        vec![],
        false,
    );
    assert_eq!(
        (r.status, r.json()["code"].as_str()),
        (501, Some("unimplemented"))
    );
}

#[test]
fn tenancy_rate_limits_and_size_limits() {
    let server = TestServer::start(&[
        "--auth.multitenancy-enabled",
        "--distributor.ingestion-rate-limit-mb=0.001",
        "--distributor.ingestion-burst-size-mb=0.002",
        "--validation.max-profile-size-bytes=600",
        "--distributor.ingestion-body-limit-mb=0.01",
    ]);
    let url = server.url(PUSH);
    let body = cpu_push("svc", now_nanos(), false).encode_to_vec();

    let r = post(
        &url,
        &[("content-type", "application/proto")],
        body.clone(),
        false,
    );
    assert_eq!(
        (r.status, r.json()["code"].as_str()),
        (401, Some("unauthenticated"))
    );
    let r = post(
        &url,
        &[
            ("content-type", "application/proto"),
            ("x-scope-orgid", "../x"),
        ],
        body.clone(),
        false,
    );
    assert_eq!(
        (r.status, r.json()["code"].as_str()),
        (401, Some("unauthenticated"))
    );

    let ok = |tenant: &str| {
        post(
            &url,
            &[
                ("content-type", "application/proto"),
                ("x-scope-orgid", tenant),
            ],
            body.clone(),
            false,
        )
    };
    assert_eq!(ok("team-a").status, 200);
    // The 2 KB burst allows only a few pushes of this size; then 429 for team-a but not team-b.
    let mut limited = None;
    for _ in 0..20 {
        let r = ok("team-a");
        if r.status != 200 {
            limited = Some(r);
            break;
        }
    }
    let r = limited.expect("the rate limit never applied");
    assert_eq!(
        (r.status, r.json()["code"].as_str()),
        (429, Some("resource_exhausted"))
    );
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap()
            .contains("\"team-a\" is over its ingestion rate limit")
    );
    assert_eq!(ok("team-b").status, 200);

    let big = cpu_pprof(now_nanos(), &[(&["a".repeat(700).as_str()], 1)]).encode_to_vec();
    let mut req = cpu_push("svc", now_nanos(), false);
    req.series[0].samples[0].raw_profile = big.into();
    let r = post(
        &url,
        &[
            ("content-type", "application/proto"),
            ("x-scope-orgid", "team-c"),
        ],
        req.encode_to_vec(),
        false,
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap()
            .contains("more than the limit of 600 bytes"),
        "{}",
        r.text()
    );

    let r = post(
        &url,
        &[
            ("content-type", "application/proto"),
            ("x-scope-orgid", "team-c"),
        ],
        vec![0; 20_000],
        false,
    );
    // 413, not Connect's 429 for resource_exhausted: a body over the limit can never succeed,
    // and 429 tells clients to retry it.
    assert_eq!(
        (r.status, r.json()["code"].as_str()),
        (413, Some("resource_exhausted")),
        "{}",
        r.text()
    );
}

/// `buf curl`, a real Connect client, pushes with the Connect, gRPC and gRPC-Web protocols
/// using this repository's `.proto` files as its schema.
#[test]
fn buf_curl_pushes_over_connect_grpc_and_grpc_web() {
    let Some(clients) = clients("buf_curl_pushes_over_connect_grpc_and_grpc_web") else {
        return;
    };
    let mut server = TestServer::start(&[]);
    let schema = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../proto/proto");
    let buf = |protocol: &str, body: &[u8]| {
        std::process::Command::new(&clients.buf)
            .args(["curl", "--schema"])
            .arg(&schema)
            .args(["--protocol", protocol, "--http2-prior-knowledge", "-d"])
            .arg(String::from_utf8_lossy(body).as_ref())
            .arg(server.url(PUSH))
            .output()
            .expect("run buf")
    };
    for protocol in ["connect", "grpc", "grpcweb"] {
        let body =
            profusion_proto::to_json(&cpu_push(&format!("buf-{protocol}"), now_nanos(), false))
                .unwrap();
        let out = buf(protocol, &body);
        assert!(
            out.status.success(),
            "{protocol}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap(),
            json!({})
        );

        let bad = br#"{"series":[{"labels":[{"name":"__name__","value":"process_cpu"}],"samples":[{"rawProfile":"AAAA"}]}]}"#;
        let out = buf(protocol, bad);
        assert!(!out.status.success());
        let err: serde_json::Value = serde_json::from_slice(&out.stderr).unwrap();
        assert_eq!(err["code"], "invalid_argument", "{protocol}: {err}");
        assert!(
            err["message"]
                .as_str()
                .unwrap()
                .contains("profile 0: invalid pprof protobuf"),
            "{err}"
        );
    }
    server.stop();
    let rows = clients.duckdb(
        &server.data.join("objects"),
        "SELECT service_name, sum(value)::BIGINT FROM read_parquet('{store}/anonymous/blocks/*/samples.parquet') GROUP BY 1 ORDER BY 1",
    );
    assert_eq!(
        rows,
        vec![
            json!(["buf-connect", 40_000_000]),
            json!(["buf-grpc", 40_000_000]),
            json!(["buf-grpcweb", 40_000_000])
        ]
    );
}
