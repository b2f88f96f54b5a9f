//! Pyroscope's legacy `POST /ingest`: every body format, the name and sample-rate semantics,
//! and the refusals.

use profusion_tests::{TestSample, TestServer, clients, gzip, now_nanos, post, pprof, stacks_sql};
use prost::Message;
use serde_json::json;

fn uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn node(out: &mut Vec<u8>, name: &str, value: u64, children: u64) {
    uvarint(out, name.len() as u64);
    out.extend_from_slice(name.as_bytes());
    uvarint(out, value);
    uvarint(out, children);
}

fn ingest(
    server: &TestServer,
    query: &str,
    content_type: &str,
    body: Vec<u8>,
) -> profusion_tests::Reply {
    post(
        &server.url(&format!("/ingest?{query}")),
        &[("content-type", content_type)],
        body,
        false,
    )
}

#[test]
fn every_text_and_pprof_format_is_stored_with_pyroscope_semantics() {
    let Some(clients) = clients("every_text_and_pprof_format_is_stored_with_pyroscope_semantics")
    else {
        return;
    };
    let mut server = TestServer::start(&[]);
    let now = now_nanos() / 1_000_000_000;
    let window = format!("from={}&until={now}", now - 10);

    let r = ingest(
        &server,
        &format!("name=app-folded.cpu%7Benv%3Ddev%7D&{window}&spyName=gospy"),
        "text/plain",
        b"main;work 3\nmain;idle 1\n".to_vec(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let r = ingest(
        &server,
        &format!("name=app-lines.wall&format=lines&{window}&sampleRate=50"),
        "text/plain",
        b"a;b\na;b\na;c\n".to_vec(),
    );
    assert_eq!(r.status, 200, "{}", r.text());

    let mut trie = Vec::new();
    node(&mut trie, "", 0, 1);
    node(&mut trie, "a;", 0, 2);
    node(&mut trie, "b", 3, 0);
    node(&mut trie, "c", 1, 0);
    let r = ingest(
        &server,
        &format!("name=app-trie.alloc_space&{window}"),
        "binary/octet-stream+trie",
        trie,
    );
    assert_eq!(r.status, 200, "{}", r.text());

    let mut tree = Vec::new();
    node(&mut tree, "", 0, 1);
    node(&mut tree, "a", 1, 2);
    node(&mut tree, "b", 3, 0);
    node(&mut tree, "c", 1, 0);
    let r = ingest(
        &server,
        &format!("name=app-tree.goroutines&format=tree&{window}"),
        "application/octet-stream",
        tree,
    );
    assert_eq!(r.status, 200, "{}", r.text());

    // pprof gzipped inside the body without Content-Encoding, as the Node agent sends it; its
    // own time is 0, so `from` is used.
    let p = pprof(
        ("cpu", "nanoseconds"),
        ("cpu", "nanoseconds"),
        10_000_000,
        0,
        &[TestSample {
            stack: &["main", "run"],
            value: 70,
            labels: &[("route", "/x")],
        }],
    );
    let r = ingest(
        &server,
        &format!("name=app-pprof&format=pprof&{window}&spyName=nodespy"),
        "application/octet-stream",
        gzip(&p.encode_to_vec()),
    );
    assert_eq!(r.status, 200, "{}", r.text());

    // Multipart pprof with a sample_type_config that renames the sample type.
    let p = pprof(
        ("samples", "count"),
        ("cpu", "nanoseconds"),
        10_000_000,
        now_nanos(),
        &[TestSample {
            stack: &["x", "y"],
            value: 4,
            labels: &[],
        }],
    );
    let mut body = b"--BOUND\r\nContent-Disposition: form-data; name=\"profile\"; filename=\"profile.pprof\"\r\nContent-Type: application/octet-stream\r\n\r\n".to_vec();
    body.extend_from_slice(&p.encode_to_vec());
    body.extend_from_slice(b"\r\n--BOUND\r\nContent-Disposition: form-data; name=\"sample_type_config\"\r\n\r\n{\"samples\":{\"display-name\":\"cpu\",\"units\":\"samples\"}}\r\n--BOUND--\r\n");
    let r = ingest(
        &server,
        &format!("name=app-multipart&{window}"),
        "multipart/form-data; boundary=BOUND",
        body,
    );
    assert_eq!(r.status, 200, "{}", r.text());

    server.stop();
    let store = server.data.join("objects");
    let rows = clients.duckdb(&store, &stacks_sql("anonymous"));
    let cpu = "process_cpu:cpu:nanoseconds:cpu:nanoseconds";
    assert_eq!(
        rows,
        vec![
            json!(["app-folded", cpu, "main;idle", 10_000_000]),
            json!(["app-folded", cpu, "main;work", 30_000_000]),
            json!([
                "app-lines",
                "wall:wall:nanoseconds:cpu:nanoseconds",
                "a;b",
                40_000_000
            ]),
            json!([
                "app-lines",
                "wall:wall:nanoseconds:cpu:nanoseconds",
                "a;c",
                20_000_000
            ]),
            json!([
                "app-multipart",
                "process_cpu:cpu:samples:cpu:nanoseconds",
                "x;y",
                4
            ]),
            json!(["app-pprof", cpu, "main;run", 70]),
            json!([
                "app-tree",
                "goroutine:goroutines:count:goroutines:count",
                "a",
                1
            ]),
            json!([
                "app-tree",
                "goroutine:goroutines:count:goroutines:count",
                "a;b",
                3
            ]),
            json!([
                "app-tree",
                "goroutine:goroutines:count:goroutines:count",
                "a;c",
                1
            ]),
            json!([
                "app-trie",
                "memory:alloc_space:bytes:alloc_space:bytes",
                "a;b",
                3
            ]),
            json!([
                "app-trie",
                "memory:alloc_space:bytes:alloc_space:bytes",
                "a;c",
                1
            ]),
        ]
    );
    let labels = |service: &str| {
        clients.duckdb(
            &store,
            &format!(
                "SELECT DISTINCT list_sort(list_transform(list_filter(labels, lambda l: NOT starts_with(l.name, '__') OR l.name = '__delta__'), lambda l: l.name || '=' || l.value))
                 FROM read_parquet('{{store}}/anonymous/blocks/*/series.parquet') WHERE service_name = '{service}'"
            ),
        )
    };
    assert_eq!(
        labels("app-folded"),
        vec![json!([[
            "__delta__=false",
            "env=dev",
            "pyroscope_spy=gospy",
            "service_name=app-folded"
        ]])]
    );
    assert_eq!(
        labels("app-pprof"),
        vec![json!([[
            "__delta__=false",
            "pyroscope_spy=nodespy",
            "route=/x",
            "service_name=app-pprof"
        ]])]
    );
    let times = clients.duckdb(
        &store,
        "SELECT DISTINCT time_nanos FROM read_parquet('{store}/anonymous/blocks/*/profiles.parquet') WHERE service_name = 'app-pprof'",
    );
    assert_eq!(
        times,
        vec![json!([(now - 10) * 1_000_000_000])],
        "time 0 is replaced by `from`"
    );
}

#[test]
fn refusals_name_the_problem() {
    let server = TestServer::start(&[]);
    let cases: &[(&str, &str, &[u8], u16, &str)] = &[
        (
            "from=now",
            "text/plain",
            b"a 1\n",
            400,
            "the name parameter is required",
        ),
        (
            "name=app.nope",
            "text/plain",
            b"a 1\n",
            400,
            "unknown profile type \"nope\"",
        ),
        (
            "name=app.cpu",
            "text/plain",
            b"a;b x\n",
            400,
            "line 1: count \"x\" is not an integer",
        ),
        (
            "name=app.cpu&from=yesterday",
            "text/plain",
            b"a 1\n",
            400,
            "invalid time \"yesterday\"",
        ),
        (
            "name=app.cpu&format=trie",
            "text/plain",
            b"\x05ab",
            400,
            "overruns the body",
        ),
        (
            "name=app&format=jfr",
            "application/octet-stream",
            b"FLR\0",
            422,
            "jfr: chunk 0 at byte 0: truncated chunk header: 4 of 68 bytes",
        ),
        (
            "name=app&format=speedscope",
            "application/json",
            b"{}",
            422,
            "speedscope: unknown $schema None",
        ),
        (
            "name=app&format=pprof",
            "application/octet-stream",
            b"\x1f\x8bnot gzip",
            400,
            "invalid gzip data",
        ),
        (
            "name=app&format=bogus",
            "text/plain",
            b"",
            400,
            "unknown format \"bogus\"",
        ),
        (
            "name=a%20b.cpu",
            "text/plain",
            b"a 1\n",
            400,
            "not allowed in an application name",
        ),
    ];
    for (query, ct, body, status, message) in cases {
        let r = ingest(&server, query, ct, body.to_vec());
        assert_eq!(r.status, *status, "{query}: {}", r.text());
        assert!(r.text().contains(message), "{query}: {}", r.text());
    }
    let body = b"--B\r\nContent-Disposition: form-data; name=\"profile\"\r\n\r\nx\r\n--B\r\nContent-Disposition: form-data; name=\"prev_profile\"\r\n\r\nx\r\n--B--\r\n";
    let r = ingest(
        &server,
        "name=app",
        "multipart/form-data; boundary=B",
        body.to_vec(),
    );
    assert_eq!(r.status, 400);
    assert!(
        r.text().contains("unsupported client version"),
        "{}",
        r.text()
    );
    let r = post(
        &server.url("/pyroscope/ingest?name=alias.cpu"),
        &[],
        b"a 1\n".to_vec(),
        false,
    );
    assert_eq!(r.status, 200, "the /pyroscope/ingest alias: {}", r.text());
}
