//! Query limits (maximum range length, lookback, flame-graph node defaults and maximum) and
//! cross-tenant reads (`X-Scope-OrgID: a|b`), against the real binary.

use profusion_proto::querier::v1::{SelectMergeStacktracesRequest, SelectMergeStacktracesResponse};
use profusion_proto::types::v1::{LabelValuesRequest, LabelValuesResponse};
use profusion_tests::{TestServer, decode_flamegraph, now_nanos, post, push_request};
use prost::Message;

const CPU: &str = "process_cpu:cpu:nanoseconds:cpu:nanoseconds";
const HOUR_MS: i64 = 3_600_000;

fn push(server: &TestServer, tenant: &str, service: &str, stack: &[&str], value: i64, time: i64) {
    profusion_tests::push_cpu_as(
        server,
        Some(tenant),
        &[("__name__", "process_cpu"), ("service_name", service)],
        &[(&stack.join(";"), value)],
        time,
    );
}

fn call<Req: Message, Resp: Message + Default>(
    server: &TestServer,
    tenant: &str,
    method: &str,
    req: &Req,
) -> Result<Resp, (u16, String)> {
    profusion_tests::connect_call(
        server,
        &format!("/querier.v1.QuerierService/{method}"),
        Some(tenant),
        req,
    )
}

fn merge(
    server: &TestServer,
    tenant: &str,
    start: i64,
    end: i64,
    max_nodes: Option<i64>,
) -> Result<SelectMergeStacktracesResponse, (u16, String)> {
    call(
        server,
        tenant,
        "SelectMergeStacktraces",
        &SelectMergeStacktracesRequest {
            profile_type_id: CPU.into(),
            label_selector: "{}".into(),
            start,
            end,
            max_nodes,
            ..Default::default()
        },
    )
}

fn total(r: &SelectMergeStacktracesResponse) -> i64 {
    r.flamegraph.as_ref().map_or(0, |f| f.total)
}

#[test]
fn cross_tenant_reads_merge_the_named_tenants_only() {
    let server = TestServer::start(&["--auth.multitenancy-enabled"]);
    let now = now_nanos();
    push(&server, "team-a", "api", &["main", "a"], 30, now);
    push(&server, "team-b", "web", &["main", "b"], 10, now);
    push(&server, "team-c", "db", &["main", "c"], 5, now);
    let (start, end) = (now / 1_000_000 - 60_000, now / 1_000_000 + 60_000);

    let both = merge(&server, "team-b|team-a|team-a", start, end, None).unwrap();
    let tree = decode_flamegraph(both.flamegraph.as_ref().unwrap());
    assert_eq!(tree["total"], (40, 0));
    assert_eq!(tree["total;main;a"], (30, 30));
    assert_eq!(tree["total;main;b"], (10, 10));
    assert!(!tree.contains_key("total;main;c"), "{tree:?}");
    assert_eq!(
        total(&merge(&server, "team-a", start, end, None).unwrap()),
        30
    );

    let values: LabelValuesResponse = call(
        &server,
        "team-a|team-c",
        "LabelValues",
        &LabelValuesRequest {
            name: "service_name".into(),
            start,
            end,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(values.names, ["api", "db"]);

    let (status, body) = merge(&server, "team-a|", start, end, None).unwrap_err();
    assert_eq!(status, 401, "{body}");
    // Writes still name exactly one tenant.
    let r = post(
        &server.url("/push.v1.PusherService/Push"),
        &[
            ("content-type", "application/proto"),
            ("x-scope-orgid", "team-a|team-b"),
        ],
        push_request(&[("service_name", "x")], vec![], "").encode_to_vec(),
        false,
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("exactly one tenant"), "{}", r.text());
}

#[test]
fn query_length_lookback_and_node_limits() {
    let server = TestServer::start(&[
        "--querier.max-query-length=3h",
        "--querier.max-query-lookback=2h",
        "--querier.max-flamegraph-nodes-default=1",
        "--querier.max-flamegraph-nodes-max=10",
        "--validation.reject-older-than=0s",
    ]);
    let now = now_nanos();
    let now_ms = now / 1_000_000;
    push(&server, "anonymous", "api", &["recent"], 30, now);
    push(&server, "anonymous", "api", &["spare"], 5, now);
    push(
        &server,
        "anonymous",
        "api",
        &["old"],
        7,
        now - 3 * HOUR_MS * 1_000_000,
    );

    // A start older than the lookback moves up to it: the 3-hour-old profile is not read.
    let r = merge(
        &server,
        "anonymous",
        now_ms - 4 * HOUR_MS,
        now_ms + 60_000,
        Some(8),
    )
    .unwrap();
    let tree = decode_flamegraph(r.flamegraph.as_ref().unwrap());
    assert_eq!(tree["total"].0, 35, "{tree:?}");
    // A range entirely older answers empty, not an error.
    let r = merge(
        &server,
        "anonymous",
        now_ms - 4 * HOUR_MS,
        now_ms - 150 * 60_000,
        None,
    )
    .unwrap();
    assert_eq!(total(&r), 0);

    // Too long after the lookback clamp: refused with both durations named.
    let server_unclamped = TestServer::start(&[
        "--querier.max-query-length=1h",
        "--querier.max-query-lookback=0s",
    ]);
    let (status, body) = merge(
        &server_unclamped,
        "anonymous",
        now_ms - 90 * 60_000,
        now_ms,
        None,
    )
    .unwrap_err();
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("query length: 1h30m") && body.contains("limit: 1h"),
        "{body}"
    );

    // max_nodes above the configured maximum is refused; 0 takes the configured default.
    let (status, body) = merge(
        &server,
        "anonymous",
        now_ms - 60_000,
        now_ms + 60_000,
        Some(11),
    )
    .unwrap_err();
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("max_nodes 11") && body.contains("10"),
        "{body}"
    );
    let r = merge(
        &server,
        "anonymous",
        now_ms - 60_000,
        now_ms + 60_000,
        Some(0),
    )
    .unwrap();
    let tree = decode_flamegraph(r.flamegraph.as_ref().unwrap());
    assert_eq!(tree.len(), 3, "{tree:?}");
    assert_eq!(tree["total;recent"], (30, 30));
    assert_eq!(tree["total;other"], (5, 5));
}
