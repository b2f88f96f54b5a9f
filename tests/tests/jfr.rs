//! `format=jfr` uploads from a real JVM: a small Java workload recorded by the JDK's Flight
//! Recorder at test time, pushed raw and as the Java agent's multipart upload, read back
//! through `SelectMergeStacktraces` and `/pyroscope/render` and compared with what the JDK's own
//! `jfr print --json` reports for the same file. Corrupt and truncated recordings are refused
//! with 422 naming the chunk and byte offset.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::Command;

use profusion_tests::jfr::{SAMPLING_PERIOD_MS, jdk, record};
use profusion_tests::{TestServer, post, reference_tree, render_total, whole_flame_graph};
use serde_json::Value;

/// Root-first `;`-joined stack -> value, per profile type.
type Expected = BTreeMap<String, BTreeMap<String, i64>>;

/// Nanoseconds of an ISO-8601 duration as `jfr print --json` writes them (`PT0.012829193S`,
/// `PT1M2S`).
fn iso_nanos(s: &str) -> i64 {
    let mut rest = s
        .strip_prefix("PT")
        .unwrap_or_else(|| panic!("duration {s}"));
    let mut nanos = 0i64;
    for (unit, scale) in [('H', 3_600_000_000_000i64), ('M', 60_000_000_000)] {
        if let Some(i) = rest.find(unit) {
            nanos += rest[..i].parse::<i64>().unwrap() * scale;
            rest = &rest[i + 1..];
        }
    }
    if let Some(seconds) = rest.strip_suffix('S') {
        let (whole, fraction) = seconds.split_once('.').unwrap_or((seconds, ""));
        nanos += whole.parse::<i64>().unwrap() * 1_000_000_000;
        if !fraction.is_empty() {
            nanos += format!("{fraction:0<9}")[..9].parse::<i64>().unwrap();
        }
    }
    nanos
}

/// A symbol as Pyroscope names it: generated lambda and accessor classes lose their numbers.
fn stable(symbol: &str) -> String {
    const ACCESSOR: &str = "jdk/internal/reflect/GeneratedMethodAccessor";
    if symbol
        .strip_prefix(ACCESSOR)
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    {
        return format!("{ACCESSOR}_");
    }
    if let Some(i) = symbol.rfind("$$Lambda") {
        let tail = &symbol[i + 8..];
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        let hex = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit());
        let t = tail.strip_prefix('$').unwrap_or(tail);
        let t = t.trim_start_matches(|c: char| c.is_ascii_digit());
        let generated = digits(tail)
            || t.strip_prefix(['.', '/'])
                .map(|h| h.strip_prefix("0x").unwrap_or(h))
                .is_some_and(|h| hex(h) && h == h.to_ascii_lowercase());
        if generated {
            return format!("{}$$Lambda_", &symbol[..i]);
        }
    }
    symbol.to_owned()
}

/// What the JDK's `jfr print --json` says the recording holds, mapped as Pyroscope maps it
/// (docs/ingest.md): per profile type, each stack's value. Events without a stack, or with
/// an empty one, are not counted; CPU samples of sleeping threads are not CPU.
fn expected(jdk: &Path, recording: &Path, period: i64) -> Expected {
    let out = Command::new(jdk.join("bin/jfr"))
        .args(["print", "--json", "--stack-depth", "4096", "--events"])
        .arg(
            "jdk.ExecutionSample,jdk.ObjectAllocationSample,jdk.ObjectAllocationInNewTLAB,\
             jdk.ObjectAllocationOutsideTLAB,jdk.JavaMonitorEnter,jdk.ThreadPark",
        )
        .arg(recording)
        .output()
        .expect("jfr print");
    assert!(
        out.status.success(),
        "jfr print: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: Value = serde_json::from_slice(&out.stdout).expect("jfr JSON");
    let mut want = Expected::new();
    let mut add = |profile_type: &str, stack: &str, value: i64| {
        *want
            .entry(profile_type.to_owned())
            .or_default()
            .entry(stack.to_owned())
            .or_default() += value;
    };
    for event in json["recording"]["events"].as_array().expect("events") {
        let v = &event["values"];
        let Some(frames) = v["stackTrace"]["frames"]
            .as_array()
            .filter(|f| !f.is_empty())
        else {
            continue;
        };
        let stack: Vec<String> = frames
            .iter()
            .rev()
            .map(|f| {
                let method = &f["method"];
                format!(
                    "{}.{}",
                    stable(method["type"]["name"].as_str().expect("class name")),
                    stable(method["name"].as_str().expect("method name"))
                )
            })
            .collect();
        let stack = stack.join(";");
        let int = |k: &str| v[k].as_i64().unwrap_or_else(|| panic!("{k} in {v}"));
        let duration = || iso_nanos(v["duration"].as_str().expect("duration"));
        let pair =
            |objects: &str, amount: &str, value: i64, add: &mut dyn FnMut(&str, &str, i64)| {
                add(objects, &stack, 1);
                add(amount, &stack, value);
            };
        match event["type"].as_str().unwrap() {
            "jdk.ExecutionSample" if v["state"] != "STATE_SLEEPING" => {
                add(
                    "process_cpu:cpu:nanoseconds:cpu:nanoseconds",
                    &stack,
                    period,
                );
            }
            "jdk.ObjectAllocationSample" => pair(
                "memory:alloc_sample_objects:count:space:bytes",
                "memory:alloc_sample_bytes:bytes:space:bytes",
                int("weight"),
                &mut add,
            ),
            "jdk.ObjectAllocationInNewTLAB" => pair(
                "memory:alloc_in_new_tlab_objects:count:space:bytes",
                "memory:alloc_in_new_tlab_bytes:bytes:space:bytes",
                int("tlabSize"),
                &mut add,
            ),
            "jdk.ObjectAllocationOutsideTLAB" => pair(
                "memory:alloc_outside_tlab_objects:count:space:bytes",
                "memory:alloc_outside_tlab_bytes:bytes:space:bytes",
                int("allocationSize"),
                &mut add,
            ),
            "jdk.JavaMonitorEnter" => pair(
                "mutex:contentions:count:mutex:count",
                "mutex:delay:nanoseconds:mutex:count",
                duration(),
                &mut add,
            ),
            "jdk.ThreadPark" => pair(
                "block:contentions:count:block:count",
                "block:delay:nanoseconds:block:count",
                duration(),
                &mut add,
            ),
            _ => {}
        }
    }
    want
}

/// Asserts two flame-graph trees are equal, showing only the nodes that differ.
fn assert_same_tree(
    got: &BTreeMap<String, (i64, i64)>,
    want: &BTreeMap<String, (i64, i64)>,
    what: &str,
) {
    let differ: Vec<String> = got
        .keys()
        .chain(want.keys())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .filter(|k| got.get(*k) != want.get(*k))
        .take(8)
        .map(|k| format!("{k}: got {:?}, want {:?}", got.get(k), want.get(k)))
        .collect();
    assert!(
        differ.is_empty(),
        "{what}: nodes differ:\n{}",
        differ.join("\n")
    );
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// The Java agent's body: file parts `jfr` and `labels`, each gzipped.
fn agent_multipart(recording: &[u8], labels: &[u8]) -> (String, Vec<u8>) {
    let boundary = "profusion-jfr-boundary";
    let mut body = Vec::new();
    for (name, data) in [("jfr", gzip(recording)), ("labels", gzip(labels))] {
        write!(
            body,
            "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
        )
        .unwrap();
        body.extend_from_slice(&data);
        body.extend_from_slice(b"\r\n");
    }
    write!(body, "--{boundary}--\r\n").unwrap();
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// `LabelsSnapshot { contexts = {1: {labels: {1: 2}}}, strings = {1: "region", 2: "eu-west-1"} }`,
/// encoded by hand (the worked bytes of the reference, docs/ingest.md).
const LABELS_SNAPSHOT: &[u8] = &[
    0x0a, 0x0a, 0x08, 0x01, 0x12, 0x06, 0x0a, 0x04, 0x08, 0x01, 0x10, 0x02, 0x12, 0x0a, 0x08, 0x01,
    0x12, 0x06, 0x72, 0x65, 0x67, 0x69, 0x6f, 0x6e, 0x12, 0x0d, 0x08, 0x02, 0x12, 0x09, 0x65, 0x75,
    0x2d, 0x77, 0x65, 0x73, 0x74, 0x2d, 0x31,
];

/// The agent's URL: `sampleRate=100` (its default), or none (the recording's period counts).
fn ingest_url(server: &TestServer, name: &str, from: i64, until: i64, rate: bool) -> String {
    let name: String = url::form_urlencoded::byte_serialize(name.as_bytes()).collect();
    let rate = if rate { "&sampleRate=100" } else { "" };
    server.url(&format!(
        "/ingest?name={name}&format=jfr&from={from}&until={until}&spyName=javaspy{rate}&units=samples&aggregationType=sum"
    ))
}

#[test]
fn jdk_recordings_pushed_raw_and_as_the_agent_read_back_as_the_jdk_reports_them() {
    let Some(jdk) = jdk("jfr") else { return };
    let dir = tempfile::tempdir().unwrap();
    let recording_path = record(&jdk, dir.path(), 4);
    let recording = std::fs::read(&recording_path).unwrap();
    let want = expected(&jdk, &recording_path, 10_000_000);
    for profile_type in [
        "process_cpu:cpu:nanoseconds:cpu:nanoseconds",
        "memory:alloc_sample_bytes:bytes:space:bytes",
        "memory:alloc_in_new_tlab_bytes:bytes:space:bytes",
        "mutex:delay:nanoseconds:mutex:count",
        "block:delay:nanoseconds:block:count",
    ] {
        assert!(
            want.get(profile_type).is_some_and(|s| !s.is_empty()),
            "the workload recorded no {profile_type}: {:?}",
            want.keys()
        );
    }

    let server = TestServer::start(&[]);
    let until = profusion_tests::now_nanos() / 1_000_000_000;
    let from = until - 10;
    let range = ((from - 1) * 1000, (until + 1) * 1000);
    // Raw, and as the agent sends it (gzipped parts, its labels snapshot), and the recording
    // twice over (two chunks: every value doubles).
    let r = post(
        &ingest_url(&server, "jfr-raw{env=test}", from, until, true),
        &[("content-type", "application/octet-stream")],
        recording.clone(),
        false,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let (content_type, body) = agent_multipart(&recording, LABELS_SNAPSHOT);
    let r = post(
        &ingest_url(&server, "jfr-agent{env=test}", from, until, true),
        &[("content-type", content_type.as_str())],
        body,
        false,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    // Compressed by Content-Encoding rather than recognized by its magic bytes.
    let r = post(
        &ingest_url(&server, "jfr-encoded", from, until, true),
        &[
            ("content-type", "application/octet-stream"),
            ("content-encoding", "gzip"),
        ],
        gzip(&recording),
        false,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    // Without sampleRate, a CPU sample is worth the recording's own sampling period.
    let r = post(
        &ingest_url(&server, "jfr-own-period", from, until, false),
        &[("content-type", "application/octet-stream")],
        recording.clone(),
        false,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let cpu = "process_cpu:cpu:nanoseconds:cpu:nanoseconds";
    let own_cpu: Vec<(Vec<String>, i64)> = want[cpu]
        .iter()
        .map(|(s, v)| {
            let samples = v / 10_000_000;
            (
                s.split(';').map(str::to_owned).collect(),
                samples * SAMPLING_PERIOD_MS * 1_000_000,
            )
        })
        .collect();
    assert_same_tree(
        &whole_flame_graph(&server, cpu, r#"{service_name="jfr-own-period"}"#, range),
        &reference_tree(&own_cpu),
        "CPU at the recording's own period",
    );
    let twice = [recording.as_slice(), recording.as_slice()].concat();
    let r = post(
        &ingest_url(&server, "jfr-twice", from, until, true),
        &[("content-type", "application/octet-stream")],
        gzip(&twice),
        false,
    );
    assert_eq!(r.status, 200, "{}", r.text());

    for (profile_type, stacks) in &want {
        let stacks: Vec<(Vec<String>, i64)> = stacks
            .iter()
            .map(|(s, v)| (s.split(';').map(str::to_owned).collect(), *v))
            .collect();
        let tree = reference_tree(&stacks);
        for service in ["jfr-raw", "jfr-agent", "jfr-encoded"] {
            let env = if service == "jfr-encoded" {
                ""
            } else {
                ", env=\"test\""
            };
            let selector = format!(r#"{{service_name="{service}"{env}, pyroscope_spy="javaspy"}}"#);
            assert_same_tree(
                &whole_flame_graph(&server, profile_type, &selector, range),
                &tree,
                &format!("{profile_type} of {service}"),
            );
        }
        let doubled: Vec<(Vec<String>, i64)> =
            stacks.iter().map(|(s, v)| (s.clone(), v * 2)).collect();
        assert_eq!(
            whole_flame_graph(
                &server,
                profile_type,
                r#"{service_name="jfr-twice"}"#,
                range
            ),
            reference_tree(&doubled),
            "{profile_type} of the two-chunk recording"
        );
    }

    // As Grafana reads it: /pyroscope/render's flame graph total for the CPU profile.
    assert_eq!(
        render_total(
            &server,
            &format!(r#"{cpu}{{service_name="jfr-agent"}}"#),
            range
        ),
        want[cpu].values().sum::<i64>()
    );
}

#[test]
fn corrupt_and_truncated_recordings_are_refused_with_422_naming_the_place() {
    let Some(jdk) = jdk("jfr") else { return };
    let dir = tempfile::tempdir().unwrap();
    let recording = std::fs::read(record(&jdk, dir.path(), 1)).unwrap();
    let server = TestServer::start(&[]);
    let until = profusion_tests::now_nanos() / 1_000_000_000;
    let push = |body: Vec<u8>| {
        post(
            &ingest_url(&server, "broken", until - 10, until, true),
            &[("content-type", "application/octet-stream")],
            body,
            false,
        )
    };
    let mut no_magic = recording.clone();
    no_magic[0] = 0;
    let mut bad_event = recording.clone();
    // The first record after the header: a size that runs past the chunk.
    bad_event[68..77].copy_from_slice(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]);
    for (body, says) in [
        (
            recording[..recording.len() / 2].to_vec(),
            "chunk 0 at byte 8:",
        ),
        (
            recording[..40].to_vec(),
            "chunk 0 at byte 0: truncated chunk header",
        ),
        (no_magic, "chunk 0 at byte 0: not a JFR chunk"),
        (bad_event, "chunk 0 at byte 68: record size"),
        (
            [recording.as_slice(), &recording[..100]].concat(),
            &format!("chunk 1 at byte {}:", recording.len() + 8),
        ),
    ] {
        let r = push(body);
        assert_eq!(r.status, 422, "{says}: {}", r.text());
        assert!(r.text().contains(says), "{says}: {}", r.text());
    }
    // Nothing stored, and the server still takes a good recording.
    assert_eq!(push(recording).status, 200);
}
