//! Pyroscope's plain-HTTP query endpoints against the real binary: `/pyroscope/render`
//! (flamebearer JSON with timeline and groups, and DOT), `/pyroscope/render-diff`,
//! `/pyroscope/label-values` and `/pyroscope/labels`, checked against references computed here.

use profusion_tests::{
    TestServer, decode_levels, get, now_nanos, push_small_fleet, small_fleet_tree,
};
use serde_json::Value;

const CPU: &str = "process_cpu:cpu:nanoseconds:cpu:nanoseconds";

fn levels(fb: &Value) -> (Vec<String>, Vec<Vec<i64>>) {
    let names = fb["names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap().to_owned())
        .collect();
    let levels = fb["levels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            l.as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_i64().unwrap())
                .collect()
        })
        .collect();
    (names, levels)
}

fn encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[test]
fn render_answers_flamebearer_with_timeline_groups_and_dot() {
    let server = TestServer::start(&[]);
    let now = now_nanos();
    push_small_fleet(&server, now);
    let now_ms = now / 1_000_000;
    let (from, until) = (now_ms - 300_000, now_ms + 300_000);
    let query = encode(&format!(r#"{CPU}{{service_name="api"}}"#));

    let r = get(
        &server.url(&format!(
            "/pyroscope/render?query={query}&from={from}&until={until}&groupBy=env"
        )),
        &[],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.json();
    let (names, lv) = levels(&body["flamebearer"]);
    let want = small_fleet_tree(|s, _| s == "api", 1);
    assert_eq!(decode_levels(&names, &lv, 4, 0), want);
    assert_eq!(body["flamebearer"]["numTicks"], want["total"].0);
    assert_eq!(body["flamebearer"]["maxSelf"], 60_000_000);
    assert_eq!(body["metadata"]["format"], "single");
    assert_eq!(body["metadata"]["units"], "samples");
    assert_eq!(body["metadata"]["sampleRate"], 1_000_000_000);
    assert_eq!(body["metadata"]["name"], "cpu");

    // A 10-minute window gets Pyroscope's smallest step, 15 s, zero-backfilled, with the
    // pushed total in the step that holds the push.
    let step_ms = 15_000;
    let start = from - from.rem_euclid(step_ms);
    let end = until - until.rem_euclid(step_ms);
    let timeline = &body["timeline"];
    assert_eq!(timeline["durationDelta"], 15);
    assert_eq!(timeline["startTime"], start / 1000);
    let samples: Vec<i64> = timeline["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    assert_eq!(samples.len() as i64, (end - start) / step_ms);
    let at = ((now_ms - now_ms.rem_euclid(step_ms) - start) / step_ms) as usize;
    let mut want_samples = vec![0; samples.len()];
    want_samples[at] = want["total"].0;
    assert_eq!(samples, want_samples);

    // Groups: one timeline per value of the first groupBy label.
    let groups = body["groups"].as_object().unwrap();
    assert_eq!(
        groups.keys().collect::<Vec<_>>(),
        ["dev", "prod"],
        "{groups:?}"
    );
    for (env, group) in groups {
        let total: i64 = group["samples"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap())
            .sum();
        assert_eq!(
            total,
            small_fleet_tree(|s, e| s == "api" && e == env, 1)["total"].0
        );
    }

    // DOT of the same selection.
    let r = get(
        &server.url(&format!(
            "/pyroscope/render?query={query}&from={from}&until={until}&format=dot&max-nodes=2"
        )),
        &[],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let dot = r.text();
    assert!(dot.starts_with("digraph"), "{dot}");
    // The two functions on every stack, each 90 ms cumulative, and nothing else.
    assert!(
        dot.contains(r#"label="main\n0 (0.00%)\nof 90000000 (100.00%)""#),
        "{dot}"
    );
    assert!(
        dot.contains(r#"label="handle\n0 (0.00%)\nof 90000000 (100.00%)""#),
        "{dot}"
    );
    assert!(!dot.contains("label=\"db"), "{dot}");

    // Bad input names the parameter.
    for (q, needle) in [
        ("query=%7B%7D", "query"),
        (&format!("query={query}&from=yesterday") as &str, "from"),
        (&format!("query={query}&aggregation=max"), "aggregation"),
        (&format!("query={query}&maxNodes=x"), "maxNodes"),
    ] {
        let r = get(&server.url(&format!("/pyroscope/render?{q}")), &[]);
        assert_eq!(r.status, 400, "{q}: {}", r.text());
        assert!(r.text().contains(needle), "{q}: {}", r.text());
    }
}

#[test]
fn render_diff_and_label_endpoints_match_the_reference() {
    let server = TestServer::start(&[]);
    let now = now_nanos();
    push_small_fleet(&server, now);
    let now_ms = now / 1_000_000;
    let (from, until) = (now_ms - 60_000, now_ms + 60_000);
    let left = encode(&format!(r#"{CPU}{{service_name="api",env="prod"}}"#));
    let right = encode(&format!(r#"{CPU}{{service_name="api",env="dev"}}"#));
    let r = get(
        &server.url(&format!(
            "/pyroscope/render-diff?leftQuery={left}&leftFrom={from}&leftUntil={until}&rightQuery={right}&rightFrom={from}&rightUntil={until}"
        )),
        &[],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.json();
    assert_eq!(body["metadata"]["format"], "double");
    let (names, lv) = levels(&body["flamebearer"]);
    let (want_left, want_right) = (
        small_fleet_tree(|s, e| s == "api" && e == "prod", 1),
        small_fleet_tree(|s, e| s == "api" && e == "dev", 1),
    );
    // Both sides share one shape; the decoder drops nodes absent on its side.
    assert_eq!(decode_levels(&names, &lv, 7, 0), want_left);
    assert_eq!(decode_levels(&names, &lv, 7, 1), want_right);
    assert_eq!(body["leftTicks"], want_left["total"].0);
    assert_eq!(body["rightTicks"], want_right["total"].0);
    assert_eq!(
        body["flamebearer"]["numTicks"],
        want_left["total"].0 + want_right["total"].0
    );

    let other = encode(r#"memory:alloc_space:bytes:space:bytes{}"#);
    let r = get(
        &server.url(&format!(
            "/pyroscope/render-diff?leftQuery={left}&leftFrom={from}&leftUntil={until}&rightQuery={other}&rightFrom={from}&rightUntil={until}"
        )),
        &[],
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("same profile type"), "{}", r.text());

    let json_list = |path: &str| -> Vec<String> {
        let r = get(&server.url(path), &[]);
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        serde_json::from_slice(&r.body).unwrap()
    };
    assert_eq!(
        json_list("/pyroscope/label-values?label=service_name"),
        ["api", "web"]
    );
    assert_eq!(json_list("/pyroscope/label-values?label=__name__"), [CPU]);
    assert_eq!(
        json_list(&format!(
            "/pyroscope/label-values?label=env&query={}",
            encode(r#"{service_name="web"}"#)
        )),
        ["prod"]
    );
    let names = json_list("/pyroscope/labels");
    for name in ["__name__", "__profile_type__", "env", "service_name"] {
        assert!(names.contains(&name.to_owned()), "{names:?}");
    }
    assert!(names.windows(2).all(|w| w[0] < w[1]), "{names:?}");
    let r = get(&server.url("/pyroscope/label-values"), &[]);
    assert_eq!(r.status, 400);
    assert!(r.text().contains("label is required"), "{}", r.text());
}
