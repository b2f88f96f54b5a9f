//! OTLP profiles over HTTP (protobuf, JSON) and gRPC, mapped as Pyroscope maps them.

use profusion_tests::{
    Clients, TestServer, clients, fixtures_dir, gzip, now_nanos, otlp_capture_pb, post, stacks_sql,
};
use serde_json::{Value, json};

const CPU: &str = "process_cpu:cpu:nanoseconds:cpu:nanoseconds";
const EXPORT: &str = "/opentelemetry.proto.collector.profiles.v1development.ProfilesService/Export";

/// The capture's JSON twin, moved to `now`, with the link ids in OTLP/JSON's hex form.
fn capture_json(now: i64) -> Vec<u8> {
    let raw =
        std::fs::read(fixtures_dir().join("captures/otlp-synthetic/otlp_profiles_v1.10.json"))
            .unwrap();
    let mut v: Value = serde_json::from_slice(&raw).unwrap();
    v["resourceProfiles"][0]["scopeProfiles"][0]["profiles"][0]["timeUnixNano"] =
        json!(now.to_string());
    let link = &mut v["dictionary"]["linkTable"][1];
    link["traceId"] = json!("4bf92f3577b34da6a3ce929d0e0e4736");
    link["spanId"] = json!("00f067aa0ba902b7");
    v["someFutureField"] = json!(1);
    serde_json::to_vec(&v).unwrap()
}

fn check_capture_tenant(clients: &Clients, server: &TestServer, tenant: &str) {
    let store = server.data.join("objects");
    assert_eq!(
        clients.duckdb(&store, &stacks_sql(tenant)),
        vec![
            json!(["eco-otlp-demo", CPU, "main", 30_000_000]),
            json!(["eco-otlp-demo", CPU, "main;work", 70_000_000])
        ],
        "tenant {tenant}"
    );
    let labels = clients.duckdb(
        &store,
        &format!(
            "SELECT DISTINCT list_sort(list_transform(list_filter(labels, lambda l: l.name NOT IN ('__period_type__', '__period_unit__', '__type__', '__unit__', '__profile_type__', '__service_name__')), lambda l: l.name || '=' || l.value))
             FROM read_parquet('{{store}}/{tenant}/blocks/*/series.parquet')"
        ),
    );
    assert_eq!(
        labels,
        vec![json!([[
            "__delta__=false",
            "__name__=process_cpu",
            "__otel__=true",
            "host.name=devbox",
            "service.name=eco-otlp-demo",
            "service_name=eco-otlp-demo",
            "thread.name=MainThread"
        ]])]
    );
    let spans = clients.duckdb(
        &store,
        &format!("SELECT span_id FROM read_parquet('{{store}}/{tenant}/blocks/*/samples.parquet') WHERE span_id IS NOT NULL"),
    );
    assert_eq!(
        spans,
        vec![json!([0x00f0_67aa_0ba9_02b7_u64])],
        "the linked span of sample 0"
    );
}

#[test]
fn otlp_http_protobuf_json_and_grpc() {
    let Some(clients) = clients("otlp_http_protobuf_json_and_grpc") else {
        return;
    };
    let mut server = TestServer::start(&["--auth.multitenancy-enabled"]);
    let now = now_nanos();

    let r = post(
        &server.url("/v1development/profiles"),
        &[
            ("content-type", "application/x-protobuf"),
            ("x-scope-orgid", "pb"),
        ],
        otlp_capture_pb(now),
        false,
    );
    assert_eq!(
        (r.status, r.header("content-type")),
        (200, Some("application/x-protobuf")),
        "{}",
        r.text()
    );

    let r = post(
        &server.url("/v1development/profiles"),
        &[
            ("content-type", "application/json"),
            ("content-encoding", "gzip"),
            ("x-scope-orgid", "json"),
        ],
        gzip(&capture_json(now)),
        false,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!({}));

    let frame = profusion_tests::grpc_frame(&otlp_capture_pb(now));
    let r = post(
        &server.url(EXPORT),
        &[
            ("content-type", "application/grpc"),
            ("x-scope-orgid", "grpc"),
        ],
        frame,
        true,
    );
    assert_eq!(
        (r.status, r.body.as_slice()),
        (200, &[0u8, 0, 0, 0, 0][..]),
        "{}",
        r.text()
    );

    let r = post(
        &server.url("/v1development/profiles"),
        &[("content-type", "text/plain"), ("x-scope-orgid", "x")],
        vec![1],
        false,
    );
    assert_eq!(r.status, 415);
    let r = post(
        &server.url("/v1development/profiles"),
        &[("content-type", "application/json"), ("x-scope-orgid", "x")],
        b"{}".to_vec(),
        false,
    );
    assert_eq!(r.status, 400);
    assert!(
        r.text().contains("has no resource_profiles"),
        "{}",
        r.text()
    );
    let r = post(
        &server.url("/v1development/profiles"),
        &[("content-type", "application/json"), ("x-scope-orgid", "x")],
        br#"{"resourceProfiles": [{}]}"#.to_vec(),
        false,
    );
    assert_eq!(r.status, 400);
    assert!(r.text().contains("has no dictionary"), "{}", r.text());
    let mut bad: Value = serde_json::from_slice(&capture_json(now)).unwrap();
    bad["resourceProfiles"][0]["scopeProfiles"][0]["profiles"][0]["samples"][0]["stackIndex"] =
        json!(99);
    let r = post(
        &server.url("/v1development/profiles"),
        &[("content-type", "application/json"), ("x-scope-orgid", "x")],
        serde_json::to_vec(&bad).unwrap(),
        false,
    );
    assert_eq!(r.status, 400);
    assert!(
        r.text()
            .contains("profiles[0]: samples[0]: stack_index 99 is out of range"),
        "{}",
        r.text()
    );

    server.stop();
    for tenant in ["pb", "json", "grpc"] {
        check_capture_tenant(&clients, &server, tenant);
    }
}

/// A request built by PyPI `opentelemetry-proto`: per-sample `service.name` splits one OTLP
/// profile into two services; a timestamps-only sample counts its timestamps.
#[test]
fn opentelemetry_proto_client_with_per_sample_services() {
    let Some(clients) = clients("opentelemetry_proto_client_with_per_sample_services") else {
        return;
    };
    let mut server = TestServer::start(&[]);
    let script = r#"
import sys, time, urllib.request
from opentelemetry.proto.collector.profiles.v1development import profiles_service_pb2 as ps
from opentelemetry.proto.profiles.v1development import profiles_pb2 as pp
from opentelemetry.proto.common.v1 import common_pb2 as cp
from opentelemetry.proto.resource.v1 import resource_pb2 as rp

strings = ["", "samples", "count", "cpu", "nanoseconds", "main", "handler", "service.name", "checkout", "cart", "process.executable.name", "shop"]
d = pp.ProfilesDictionary(string_table=strings)
d.function_table.extend([pp.Function(), pp.Function(name_strindex=5), pp.Function(name_strindex=6)])
d.location_table.extend([pp.Location(), pp.Location(lines=[pp.Line(function_index=1)]), pp.Location(lines=[pp.Line(function_index=2)])])
d.stack_table.extend([pp.Stack(), pp.Stack(location_indices=[2, 1])])
d.attribute_table.extend([pp.KeyValueAndUnit(),
    pp.KeyValueAndUnit(key_strindex=7, value=cp.AnyValue(string_value="checkout")),
    pp.KeyValueAndUnit(key_strindex=7, value=cp.AnyValue(string_value="cart"))])
d.link_table.extend([pp.Link()])
now = time.time_ns()
profile = pp.Profile(sample_type=pp.ValueType(type_strindex=1, unit_strindex=2),
    period_type=pp.ValueType(type_strindex=3, unit_strindex=4), period=10_000_000, time_unix_nano=now,
    samples=[pp.Sample(stack_index=1, attribute_indices=[1], values=[5]),
             pp.Sample(stack_index=1, attribute_indices=[2], timestamps_unix_nano=[now, now + 1])])
req = ps.ExportProfilesServiceRequest(dictionary=d, resource_profiles=[pp.ResourceProfiles(
    resource=rp.Resource(attributes=[cp.KeyValue(key="process.executable.name", value=cp.AnyValue(string_value="shop"))]),
    scope_profiles=[pp.ScopeProfiles(profiles=[profile])])])
r = urllib.request.urlopen(urllib.request.Request(sys.argv[1], data=req.SerializeToString(),
    headers={"Content-Type": "application/x-protobuf"}, method="POST"))
print(r.status)
"#;
    let out = clients.python(script, &[&server.url("/v1development/profiles")]);
    assert_eq!(out.trim(), "200");
    server.stop();
    assert_eq!(
        clients.duckdb(&server.data.join("objects"), &stacks_sql("anonymous")),
        vec![
            json!(["cart", CPU, "main;handler", 20_000_000]),
            json!(["checkout", CPU, "main;handler", 50_000_000])
        ]
    );
}
