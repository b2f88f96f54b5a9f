//! Every ingest request recorded from a real agent under `tests/fixtures/captures/` is replayed (moved
//! to the present, as Pyroscope's ingestion window requires) and accepted, and what it stored
//! is what the agent sent.

use std::path::Path;

use profusion_proto::google::v1::Profile;
use profusion_proto::push::v1::PushRequest;
use profusion_tests::{TestServer, clients, fixtures_dir, gzip, now_nanos, post};
use prost::Message;
use serde_json::{Value, json};

fn gunzip(data: &[u8]) -> Vec<u8> {
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(data)
        .read_to_end(&mut out)
        .expect("gunzip");
    out
}

fn is_gzip(b: &[u8]) -> bool {
    b.starts_with(&[0x1f, 0x8b])
}

/// Rewrites a pprof (gzipped or not) to `time`.
fn retime_pprof(raw: &[u8], time: i64) -> Vec<u8> {
    let zipped = is_gzip(raw);
    let mut p =
        Profile::decode(if zipped { gunzip(raw) } else { raw.to_vec() }.as_slice()).expect("pprof");
    p.time_nanos = time;
    let out = p.encode_to_vec();
    if zipped { gzip(&out) } else { out }
}

struct Replay {
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// Loads a capture and moves its timestamps to `now`.
fn load(meta: &Path, now: i64) -> Replay {
    let m: Value = serde_json::from_slice(&std::fs::read(meta).unwrap()).unwrap();
    let body = std::fs::read(meta.with_extension("body")).unwrap();
    let headers: Vec<(String, String)> = m["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h[0].as_str().unwrap().to_owned(),
                h[1].as_str().unwrap().to_owned(),
            )
        })
        .filter(|(k, _)| !matches!(k.to_ascii_lowercase().as_str(), "content-length" | "host"))
        .collect();
    let encoded = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("content-encoding") && v == "gzip");
    let plain = if encoded { gunzip(&body) } else { body };
    let path = m["path"].as_str().unwrap();
    let secs = now / 1_000_000_000;
    let (path, plain) = if path == "/push.v1.PusherService/Push" {
        let mut req = PushRequest::decode(plain.as_slice()).unwrap();
        for s in req.series.iter_mut().flat_map(|s| s.samples.iter_mut()) {
            s.raw_profile = retime_pprof(&s.raw_profile, now - 5_000_000_000).into();
        }
        (path.to_owned(), req.encode_to_vec())
    } else {
        let query: Vec<(String, String)> = url_pairs(m["raw_query"].as_str().unwrap())
            .into_iter()
            .map(|(k, v)| match k.as_str() {
                "from" => (k, (secs - 10).to_string()),
                "until" => (k, secs.to_string()),
                _ => (k, v),
            })
            .collect();
        let q: Vec<String> = query
            .iter()
            .map(|(k, v)| format!("{k}={}", encode(v)))
            .collect();
        (
            format!("{path}?{}", q.join("&")),
            retime_pprof(&plain, now - 5_000_000_000),
        )
    };
    Replay {
        path,
        headers,
        body: if encoded { gzip(&plain) } else { plain },
    }
}

fn url_pairs(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (k.to_owned(), decode(v)))
        .collect()
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(if b[i] == b'+' { b' ' } else { b[i] });
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Every ingest capture, in directory order (query captures belong to the read path).
fn ingest_captures() -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut dirs: Vec<_> = std::fs::read_dir(fixtures_dir().join("captures"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    dirs.sort();
    for dir in dirs.into_iter().filter(|d| d.is_dir()) {
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                let name = p.file_name().unwrap().to_string_lossy();
                name.starts_with("req")
                    && name.ends_with(".json")
                    && !name.ends_with(".decoded.json")
            })
            .collect();
        files.sort();
        for f in files {
            let m: Value = serde_json::from_slice(&std::fs::read(&f).unwrap()).unwrap();
            if !m["path"].as_str().unwrap().starts_with("/querier.") {
                out.push(f);
            }
        }
    }
    out
}

#[test]
fn every_agent_capture_is_accepted_and_stored() {
    let Some(clients) = clients("every_agent_capture_is_accepted_and_stored") else {
        return;
    };
    let captures = ingest_captures();
    assert_eq!(captures.len(), 6, "captures found: {captures:?}");
    let mut server = TestServer::start(&[]);
    for capture in &captures {
        let r = load(capture, now_nanos());
        let headers: Vec<(&str, &str)> = r
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let reply = post(&server.url(&r.path), &headers, r.body, false);
        assert_eq!(reply.status, 200, "{}: {}", capture.display(), reply.text());
    }
    server.stop();
    let store = server.data.join("objects");
    let types = clients.duckdb(
        &store,
        "SELECT DISTINCT service_name, profile_type FROM read_parquet('{store}/anonymous/blocks/*/samples.parquet') ORDER BY ALL",
    );
    assert_eq!(
        types,
        vec![
            json!([
                "eco.node.app",
                "memory:inuse_objects:count:inuse_space:bytes"
            ]),
            json!(["eco.node.app", "memory:inuse_space:bytes:inuse_space:bytes"]),
            json!(["eco.node.app", "wall:cpu:nanoseconds:wall:nanoseconds"]),
            json!(["eco.node.app", "wall:samples:count:wall:nanoseconds"]),
            json!(["eco.node.app", "wall:wall:nanoseconds:wall:nanoseconds"]),
            json!([
                "eco.python.app",
                "process_cpu:cpu:nanoseconds:cpu:nanoseconds"
            ]),
            json!([
                "eco.python.app.v0.8.16",
                "process_cpu:cpu:nanoseconds:cpu:nanoseconds"
            ]),
            json!([
                "eco.python.otel",
                "process_cpu:cpu:nanoseconds:cpu:nanoseconds"
            ]),
            json!([
                "eco.rust.app",
                "process_cpu:cpu:nanoseconds:cpu:nanoseconds"
            ]),
        ]
    );
    // The legacy Python agent's sample labels became series labels; its stacks kept their names.
    let py = clients.duckdb(
        &store,
        "SELECT DISTINCT list_sort(list_transform(labels, lambda l: l.name || '=' || l.value))
         FROM read_parquet('{store}/anonymous/blocks/*/series.parquet') WHERE service_name = 'eco.python.app.v0.8.16'",
    );
    let labels = py[0][0].as_array().unwrap();
    for expected in [
        "endpoint=/work",
        "env=test",
        "region=us-east",
        "pyroscope_spy=pyspy",
        "__delta__=false",
    ] {
        assert!(
            labels.contains(&json!(expected)),
            "{expected} missing from {labels:?}"
        );
    }
    // Span ids from the OTel span processor are kept per sample.
    let spans = clients.duckdb(
        &store,
        "SELECT count(*) FROM read_parquet('{store}/anonymous/blocks/*/samples.parquet')
         WHERE service_name = 'eco.python.otel' AND span_id IS NOT NULL",
    );
    assert!(spans[0][0].as_i64().unwrap() > 0, "no span ids stored");
}

#[test]
fn captures_land_in_the_tenant_they_name() {
    let Some(clients) = clients("captures_land_in_the_tenant_they_name") else {
        return;
    };
    let mut server = TestServer::start(&["--auth.multitenancy-enabled"]);
    for capture in ingest_captures() {
        let r = load(&capture, now_nanos());
        let has_tenant = r
            .headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("x-scope-orgid"));
        let headers: Vec<(&str, &str)> = r
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let reply = post(&server.url(&r.path), &headers, r.body, false);
        assert_eq!(
            reply.status,
            if has_tenant { 200 } else { 401 },
            "{}: {}",
            capture.display(),
            reply.text()
        );
    }
    server.stop();
    let services = |tenant: &str| {
        clients.duckdb(
            &server.data.join("objects"),
            &format!("SELECT DISTINCT service_name FROM read_parquet('{{store}}/{tenant}/blocks/*/samples.parquet') ORDER BY 1"),
        )
    };
    assert_eq!(
        services("tenant-a"),
        vec![json!(["eco.python.app"]), json!(["eco.python.app.v0.8.16"])]
    );
    assert_eq!(services("tenant-b"), vec![json!(["eco.node.app"])]);
    assert_eq!(services("tenant-c"), vec![json!(["eco.rust.app"])]);
    assert!(server.blocks("anonymous").is_empty());
}
