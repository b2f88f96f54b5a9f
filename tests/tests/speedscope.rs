//! `format=speedscope` uploads: a real py-spy recording of a Python workload, made at test
//! time, read back as the file's own samples and weights say; several profiles in one file
//! (sampled and evented, shared frames, their units); and broken files refused with 422.

use std::collections::BTreeMap;
use std::process::Command;

use profusion_tests::{TestServer, clients, post, reference_tree, render_total, whole_flame_graph};
use serde_json::{Value, json};

const WORKLOAD: &str = r#"
import time

def leaf(n):
    s = 0
    for i in range(n):
        s += i * i
    return s

def left(n):
    return leaf(n) + leaf(n // 2)

def right(n):
    return leaf(n * 2)

deadline = time.time() + 3
while time.time() < deadline:
    left(2000)
    right(1000)
"#;

fn push(
    server: &TestServer,
    name: &str,
    body: Vec<u8>,
    from: i64,
    until: i64,
) -> profusion_tests::Reply {
    let name: String = url::form_urlencoded::byte_serialize(name.as_bytes()).collect();
    post(
        &server.url(&format!(
            "/ingest?name={name}&format=speedscope&from={from}&until={until}&spyName=pyspy"
        )),
        &[("content-type", "application/json")],
        body,
        false,
    )
}

/// Root-first stacks of a speedscope profile's samples, each with its weight in nanoseconds
/// (the file's unit is seconds), read straight from the file.
fn sampled_stacks(file: &Value, profile: &Value) -> Vec<(Vec<String>, i64)> {
    let frames = file["shared"]["frames"].as_array().unwrap();
    let mut out: BTreeMap<Vec<String>, f64> = BTreeMap::new();
    for (sample, weight) in profile["samples"]
        .as_array()
        .unwrap()
        .iter()
        .zip(profile["weights"].as_array().unwrap())
    {
        let stack: Vec<String> = sample
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                frames[i.as_u64().unwrap() as usize]["name"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        *out.entry(stack).or_default() += weight.as_f64().unwrap();
    }
    out.into_iter()
        .filter(|(s, _)| !s.is_empty())
        .map(|(s, seconds)| (s, (seconds * 1e9).round() as i64))
        .collect()
}

#[test]
fn a_py_spy_recording_reads_back_as_its_samples_and_weights() {
    let Some(clients) = clients("speedscope") else {
        return;
    };
    let py_spy = clients.python.with_file_name("py-spy");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("workload.py"), WORKLOAD).unwrap();
    let out = dir.path().join("profile.speedscope.json");
    let run = Command::new(&py_spy)
        .args(["record", "-r", "100", "-f", "speedscope", "-o"])
        .arg(&out)
        .arg("--")
        .arg(&clients.python)
        .arg(dir.path().join("workload.py"))
        .output()
        .expect("run py-spy");
    assert!(
        run.status.success(),
        "py-spy: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    let body = std::fs::read(&out).unwrap();
    let file: Value = serde_json::from_slice(&body).unwrap();
    let profiles = file["profiles"].as_array().unwrap();
    assert_eq!(profiles.len(), 1, "one thread, one profile");
    assert_eq!(profiles[0]["unit"], "seconds");
    let want = sampled_stacks(&file, &profiles[0]);
    assert!(
        want.iter().map(|(_, v)| v).sum::<i64>() > 1_000_000_000,
        "{want:?}"
    );

    let server = TestServer::start(&[]);
    let until = profusion_tests::now_nanos() / 1_000_000_000;
    let from = until - 10;
    let r = push(&server, "pyspy-app{env=test}", body, from, until);
    assert_eq!(r.status, 200, "{}", r.text());
    let range = ((from - 1) * 1000, (until + 1) * 1000);
    let thread = profiles[0]["name"].as_str().unwrap();
    // One profile: the app name keeps no unit suffix, so it is CPU time, 10 ms per sample
    // (py-spy's 0.01 s weights, which Pyroscope would have truncated to nothing).
    let selector = format!(
        r#"{{service_name="pyspy-app", env="test", pyroscope_spy="pyspy", profile_name="{}"}}"#,
        thread.replace('"', "\\\"")
    );
    let cpu = "process_cpu:cpu:nanoseconds:cpu:nanoseconds";
    assert_eq!(
        whole_flame_graph(&server, cpu, &selector, range),
        reference_tree(&want)
    );
    assert_eq!(
        render_total(
            &server,
            &format!(r#"{cpu}{{service_name="pyspy-app"}}"#),
            range
        ),
        want.iter().map(|(_, v)| v).sum::<i64>()
    );
}

/// A file of three profiles over shared frames: two sampled in seconds, one evented in
/// milliseconds; values worked out by hand.
fn several_profiles() -> Value {
    json!({
        "$schema": "https://www.speedscope.app/file-format-schema.json",
        "shared": {"frames": [{"name": "main"}, {"name": "work"}, {"name": "io", "file": "x.py", "line": 3}]},
        "profiles": [
            {"type": "sampled", "name": "one", "unit": "seconds", "startValue": 0, "endValue": 4,
             "samples": [[0, 1], [0, 1], [0, 2]], "weights": [0.5, 1.25, 2]},
            {"type": "sampled", "name": "two", "unit": "seconds", "startValue": 1, "endValue": 2,
             "samples": [[0, 1, 2]], "weights": [0.01]},
            {"type": "evented", "name": "three", "unit": "milliseconds", "startValue": 10, "endValue": 40,
             "events": [{"type": "O", "frame": 0, "at": 10}, {"type": "O", "frame": 2, "at": 15},
                        {"type": "C", "frame": 2, "at": 35}, {"type": "C", "frame": 0, "at": 40}]}
        ]
    })
}

#[test]
fn several_profiles_in_one_file_become_series_by_name_and_unit() {
    let server = TestServer::start(&[]);
    let until = profusion_tests::now_nanos() / 1_000_000_000;
    let from = until - 10;
    let range = ((from - 1) * 1000, (until + 1) * 1000);
    let body = serde_json::to_vec(&several_profiles()).unwrap();
    let r = push(&server, "multi", body, from, until);
    assert_eq!(r.status, 200, "{}", r.text());
    // Several profiles: each is wall-clock time of `multi` under its own profile_name
    // (Pyroscope names the app `multi.seconds`, `multi.milliseconds`, and takes the suffix as
    // the type), in nanoseconds.
    let wall = "wall:wall:nanoseconds:cpu:nanoseconds";
    let s = |names: &[&str], v: i64| (names.iter().map(|n| (*n).to_owned()).collect(), v);
    for (profile, stacks) in [
        (
            "one",
            vec![
                s(&["main", "work"], 1_750_000_000),
                s(&["main", "io"], 2_000_000_000),
            ],
        ),
        ("two", vec![s(&["main", "work", "io"], 10_000_000)]),
        (
            "three",
            vec![s(&["main"], 10_000_000), s(&["main", "io"], 20_000_000)],
        ),
    ] {
        assert_eq!(
            whole_flame_graph(
                &server,
                wall,
                &format!(r#"{{service_name="multi", profile_name="{profile}"}}"#),
                range
            ),
            reference_tree(&stacks),
            "{profile}"
        );
    }
}

#[test]
fn broken_speedscope_files_are_refused_with_422_saying_what_is_wrong() {
    let server = TestServer::start(&[]);
    let until = profusion_tests::now_nanos() / 1_000_000_000;
    let mut wrong_schema = several_profiles();
    wrong_schema["$schema"] = json!("https://example.com/other.json");
    let mut bad_frame = several_profiles();
    bad_frame["profiles"][0]["samples"][1] = json!([0, 3]);
    let mut unclosed = several_profiles();
    unclosed["profiles"][2]["events"][2]["frame"] = json!(0);
    let mut backwards = several_profiles();
    backwards["profiles"][2]["events"][1]["at"] = json!(5);
    let mut weights = several_profiles();
    weights["profiles"][0]["weights"] = json!([1]);
    for (body, says) in [
        (b"{not json".to_vec(), "not a speedscope JSON file"),
        (
            serde_json::to_vec(&wrong_schema).unwrap(),
            "unknown $schema",
        ),
        (
            serde_json::to_vec(&bad_frame).unwrap(),
            "profiles[0].samples[1]: frame index 3 is not one of the 3 shared frames",
        ),
        (
            serde_json::to_vec(&unclosed).unwrap(),
            "profiles[2].events[2]: closes frame 0, which is not the innermost open frame",
        ),
        (
            serde_json::to_vec(&backwards).unwrap(),
            "profiles[2].events[1]: events out of order",
        ),
        (
            serde_json::to_vec(&weights).unwrap(),
            "profiles[0]: 3 samples but 1 weights",
        ),
    ] {
        let r = push(&server, "broken", body, until - 10, until);
        assert_eq!(r.status, 422, "{says}: {}", r.text());
        assert!(r.text().contains(says), "{says}: {}", r.text());
    }
}
