//! Flight SQL on the main port, driven by the real clients: the ADBC Flight SQL driver through
//! the driver manager's DB-API, and `pyarrow.flight` with hand-built Flight SQL commands.
//! Every figure is checked against what the test pushed; refusals carry the right gRPC code.

use std::collections::BTreeMap;

use profusion_tests::{Clients, TestServer, clients, now_nanos, push_cpu_as};

/// (tenant, service, root-first stack, value): one CPU profile each.
const PUSHED: &[(&str, &str, &str, i64)] = &[
    ("team-a", "checkout", "main;handle;db", 40),
    ("team-a", "checkout", "main;handle;parse", 25),
    ("team-a", "checkout", "main;gc", 5),
    ("team-a", "search", "main;query", 70),
    ("team-b", "billing", "main;charge", 1_000),
];

fn push_all(server: &TestServer) {
    let now = now_nanos();
    for (i, (tenant, service, stack, value)) in PUSHED.iter().enumerate() {
        push_cpu_as(
            server,
            Some(tenant),
            &[("__name__", "process_cpu"), ("service_name", service)],
            &[(stack, *value)],
            now - i as i64 * 1_000_000_000,
        );
    }
}

/// The reference: each tenant scope's total per service.
fn totals(scope: &[&str]) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    for (tenant, service, _, value) in PUSHED {
        if scope.contains(tenant) {
            *out.entry((*service).to_owned()).or_default() += value;
        }
    }
    out
}

/// Queries through ADBC's DB-API: statement queries, parameters (`?` and `$1`), a prepared
/// statement executed with several parameter sets, the metadata calls; errors with their
/// ADBC status. Prints JSON.
const ADBC: &str = r#"
import json, sys
import adbc_driver_flightsql.dbapi as flight_sql
import adbc_driver_manager

uri, scope = sys.argv[1], sys.argv[2]
kwargs = {"adbc.flight.sql.rpc.call_header.x-scope-orgid": scope} if scope else {}
out = {}
with flight_sql.connect(uri, db_kwargs=kwargs) as conn:
    with conn.cursor() as cur:
        cur.execute("SELECT service_name, sum(total_value) AS total FROM profiles "
                    "GROUP BY service_name ORDER BY service_name")
        out["totals"] = cur.fetchall()
        cur.execute("SELECT count(*) AS n FROM profiles WHERE service_name = ? AND total_value > ?",
                    ("checkout", 10))
        out["question_marks"] = cur.fetchall()
        per_service = {}
        for service in ["checkout", "search", "nothing"]:
            cur.execute("SELECT coalesce(sum(value), 0) AS v FROM samples WHERE service_name = $1",
                        (service,))
            per_service[service] = cur.fetchall()[0][0]
        out["prepared"] = per_service
        cur.execute("SELECT time, labels['service_name'] AS service, stack, value "
                    "FROM sample_stacks ORDER BY value DESC LIMIT 1")
        table = cur.fetch_arrow_table()
        out["view_types"] = [str(f.type) for f in table.schema]
        out["view_row"] = [table.column("time").null_count == 0] + [
            table.column(c)[0].as_py() for c in ["service", "stack", "value"]]
        errors = {}
        for name, query in [("ddl", "CREATE TABLE t AS SELECT 1"),
                            ("dml", "INSERT INTO profiles SELECT * FROM profiles"),
                            ("syntax", "SELEC 1"),
                            ("unknown_table", "SELECT * FROM other.public.profiles")]:
            try:
                cur.execute(query)
                cur.fetchall()
                errors[name] = "no error"
            except adbc_driver_manager.Error as e:
                errors[name] = [e.status_code.name, str(e)]
        out["errors"] = errors
    info = conn.adbc_get_info()
    out["info"] = {k: info.get(k) for k in ["vendor_name", "vendor_version", "vendor_arrow_version"]}
    out["table_types"] = conn.adbc_get_table_types()
    objects = conn.adbc_get_objects(depth="all").read_all().to_pylist()
    out["objects"] = [
        [c["catalog_name"], s["db_schema_name"],
         sorted([t["table_name"], t["table_type"]] for t in s["db_schema_tables"])]
        for c in objects for s in c["catalog_db_schemas"]]
    schema = conn.adbc_get_table_schema("profiles")
    out["profiles_schema"] = [[f.name, str(f.type)] for f in schema]
print(json.dumps(out, default=str))
"#;

/// A multi-tenant server holding [`PUSHED`], and its Flight URI (`grpc://127.0.0.1:PORT`).
fn server_with_profiles() -> (TestServer, String) {
    let server = TestServer::configure()
        .arg("--auth.multitenancy-enabled")
        .spawn();
    push_all(&server);
    let uri = server.url("").replace("http://", "grpc://");
    let uri = uri.trim_end_matches('/').to_owned();
    (server, uri)
}

/// The JSON a client script prints for `args`.
fn run(clients: &Clients, script: &str, args: &[&str]) -> serde_json::Value {
    serde_json::from_str(clients.python(script, args).trim()).unwrap()
}

#[test]
fn adbc_queries_prepares_and_lists_the_tenants_tables() {
    let Some(clients) = clients("flight_sql") else {
        return;
    };
    let (_server, uri) = server_with_profiles();
    let uri = uri.as_str();
    let out = run(&clients, ADBC, &[uri, "team-a"]);

    let want: Vec<serde_json::Value> = totals(&["team-a"])
        .into_iter()
        .map(|(service, total)| serde_json::json!([service, total]))
        .collect();
    assert_eq!(out["totals"], serde_json::json!(want));
    let over_10 = PUSHED
        .iter()
        .filter(|(t, s, _, v)| *t == "team-a" && *s == "checkout" && *v > 10)
        .count();
    assert_eq!(out["question_marks"], serde_json::json!([[over_10]]));
    let a = totals(&["team-a"]);
    assert_eq!(
        out["prepared"],
        serde_json::json!({"checkout": a["checkout"], "search": a["search"], "nothing": 0})
    );
    // The view's row, in types every client reads: a UTC timestamp, plain strings, a list.
    assert_eq!(
        out["view_types"],
        serde_json::json!([
            "timestamp[ns, tz=UTC]",
            "string",
            "list<item: string>",
            "int64"
        ])
    );
    assert_eq!(
        out["view_row"],
        serde_json::json!([true, "search", ["main", "query"], 70])
    );
    for (name, says) in [
        ("ddl", "DDL not supported"),
        ("dml", "DML not supported"),
        ("syntax", "SQL"),
        ("unknown_table", "not found"),
    ] {
        let error = &out["errors"][name];
        assert_eq!(error[0], "INVALID_ARGUMENT", "{name}: {error}");
        assert!(error[1].as_str().unwrap().contains(says), "{name}: {error}");
    }
    assert_eq!(
        out["info"],
        serde_json::json!({"vendor_name": "Profusion",
            "vendor_version": env!("CARGO_PKG_VERSION"), "vendor_arrow_version": "1.3"})
    );
    assert_eq!(out["table_types"], serde_json::json!(["TABLE", "VIEW"]));
    assert_eq!(
        out["objects"],
        serde_json::json!([[
            "profusion",
            "public",
            [
                ["frames", "TABLE"],
                ["profiles", "TABLE"],
                ["sample_stacks", "VIEW"],
                ["samples", "TABLE"],
                ["series", "TABLE"],
                ["stacks", "TABLE"]
            ]
        ]])
    );
    let columns: Vec<&str> = out["profiles_schema"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c[0].as_str().unwrap())
        .collect();
    assert_eq!(
        columns,
        [
            "service_name",
            "profile_type",
            "series_fingerprint",
            "time_nanos",
            "profile_id",
            "duration_nanos",
            "period",
            "total_value",
            "num_samples",
            "time"
        ]
    );

    // Another tenant, and both at once; without the tenant header, refused.
    for scope in ["team-b", "team-a|team-b"] {
        let out = run(&clients, ADBC, &[uri, scope]);
        let want: Vec<serde_json::Value> = totals(&scope.split('|').collect::<Vec<_>>())
            .into_iter()
            .map(|(service, total)| serde_json::json!([service, total]))
            .collect();
        assert_eq!(out["totals"], serde_json::json!(want), "{scope}");
    }
    let refused = std::process::Command::new(&clients.python)
        .args(["-c", ADBC, uri, ""])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("UNAUTHENTICATED") || stderr.contains("Unauthenticated"),
        "{stderr}"
    );
}

/// Raw Flight calls with hand-encoded Flight SQL commands: a statement query, GetSqlInfo, a
/// command the server does not know, and CancelFlightInfo of a running query.
const PYARROW: &str = r#"
import json, sys, threading, time
import pyarrow.flight as fl

uri, scope = sys.argv[1], sys.argv[2]
client = fl.FlightClient(uri)
opts = fl.FlightCallOptions(headers=[(b"x-scope-orgid", scope.encode())])

def varint(n):
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])

def field(number, payload):
    return bytes([number << 3 | 2]) + varint(len(payload)) + payload

def command(name, payload=b""):
    url = b"type.googleapis.com/arrow.flight.protocol.sql." + name.encode()
    return field(1, url) + (field(2, payload) if payload else b"")

def statement(query):
    return fl.FlightDescriptor.for_command(command("CommandStatementQuery", field(1, query.encode())))

out = {}
info = client.get_flight_info(statement(
    "SELECT service_name, sum(value) AS v FROM samples GROUP BY 1 ORDER BY 1"), opts)
out["schema"] = [f.name for f in info.schema]
out["rows"] = client.do_get(info.endpoints[0].ticket, opts).read_all().to_pylist()

info = client.get_flight_info(fl.FlightDescriptor.for_command(command("CommandGetSqlInfo")))
sql_info = client.do_get(info.endpoints[0].ticket).read_all().to_pylist()
out["sql_info"] = {str(r["info_name"]): r["value"] for r in sql_info if r["info_name"] in (0, 3, 4)}

try:
    client.get_flight_info(fl.FlightDescriptor.for_command(b"garbage"), opts)
    out["garbage"] = "no error"
except Exception as e:
    out["garbage"] = [type(e).__name__, str(e)]

# A query that runs for minutes, cancelled while it runs.
info = client.get_flight_info(statement(
    "SELECT count(*) FROM generate_series(1, 100000000000)"), opts)
result = {}
def run():
    started = time.time()
    try:
        client.do_get(info.endpoints[0].ticket, opts).read_all()
        result["outcome"] = "finished"
    except fl.FlightError as e:
        result["outcome"] = type(e).__name__
        result["message"] = str(e)
    result["seconds"] = time.time() - started
thread = threading.Thread(target=run)
thread.start()
time.sleep(2)
cancel = list(client.do_action(fl.Action("CancelFlightInfo", field(1, info.serialize())), opts))
out["cancel_status"] = [r.body.to_pybytes().hex() for r in cancel]
thread.join(120)
out["cancelled"] = result
# The server keeps serving.
info = client.get_flight_info(statement("SELECT 1 + 1 AS two"), opts)
out["after"] = client.do_get(info.endpoints[0].ticket, opts).read_all().to_pylist()
print(json.dumps(out, default=str))
"#;

#[test]
fn pyarrow_flight_runs_statements_reads_sql_info_and_cancels_a_running_query() {
    let Some(clients) = clients("flight_sql") else {
        return;
    };
    let (_server, uri) = server_with_profiles();
    let out = run(&clients, PYARROW, &[&uri, "team-a"]);

    assert_eq!(out["schema"], serde_json::json!(["service_name", "v"]));
    let want: Vec<serde_json::Value> = totals(&["team-a"])
        .into_iter()
        .map(|(service, v)| serde_json::json!({"service_name": service, "v": v}))
        .collect();
    assert_eq!(out["rows"], serde_json::json!(want));
    // Name, read-only, SQL; asked without a tenant (drivers ask before they send one).
    assert_eq!(
        out["sql_info"],
        serde_json::json!({"0": "Profusion", "3": true, "4": true})
    );
    // Not a Flight SQL command: invalid argument, which pyarrow raises as ArrowInvalid.
    assert_eq!(out["garbage"][0], "ArrowInvalid", "{}", out["garbage"]);
    // CancelFlightInfoResult { status: CANCEL_STATUS_CANCELLED (1) }.
    assert_eq!(out["cancel_status"], serde_json::json!(["0801"]));
    let cancelled = &out["cancelled"];
    assert_eq!(cancelled["outcome"], "FlightCancelledError", "{cancelled}");
    assert!(cancelled["seconds"].as_f64().unwrap() < 60.0, "{cancelled}");
    assert_eq!(out["after"], serde_json::json!([{"two": 2}]));
}
