//! The web UI in a real browser: Debian's headless Chromium driven by PyPI `playwright`
//! (`tests/ui/browser.py`) against the real binary holding known profiles. What the page
//! rendered is checked against references computed here: each frame's width from the pushed
//! values, the pixels under the frames, the top table's numbers and order, zoom, search, the
//! keyboard, the diff's colours from each side's shares, the tag explorer's totals, the SQL
//! page, the exports decoded independently, a link reopened, the UI behind access control, and
//! a 16,384-node flame graph. Screenshots are written to `docs/ui/` when
//! `PROFUSION_UPDATE_SCREENSHOTS=1`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use profusion_proto::google::v1::Profile;
use profusion_tests::{
    Clients, TestServer, clients, cpu_pprof, create_token, now_nanos, post, push_cpu, push_cpu_as,
    push_request, reference_tree,
};
use prost::Message;
use serde_json::{Value, json};

const CPU: &str = "process_cpu:cpu:nanoseconds:cpu:nanoseconds";
const MS: i64 = 1_000_000;
const BROWSER: &str = include_str!("ui/browser.py");

/// (env, root-first stack, milliseconds of CPU) before and after a change: `render` grew,
/// `db` shrank, `gc` stayed the same.
const BEFORE: &[(&str, &str, i64)] = &[
    ("prod", "main;checkout;db", 300),
    ("prod", "main;checkout;render", 100),
    ("prod", "main;gc", 50),
    ("dev", "main;checkout;db", 70),
];
const AFTER: &[(&str, &str, i64)] = &[
    ("prod", "main;checkout;db", 100),
    ("prod", "main;checkout;render", 400),
    ("prod", "main;gc", 50),
];

fn chromium(test: &str) -> Option<(Clients, String)> {
    let clients = clients(test)?;
    match std::env::var("PROFUSION_CHROMIUM") {
        Ok(path) if Path::new(&path).exists() => Some((clients, path)),
        // Like the JDK, a system package: where it could not be installed the test says so.
        _ => {
            eprintln!(
                "SKIPPED {test}: no Chromium (scripts/install-test-clients installs Debian's \
                 `chromium` where it may)"
            );
            None
        }
    }
}

/// Runs the browser script; its JSON report.
fn browse(
    clients: &Clients,
    chromium: &str,
    server: &TestServer,
    out: &Path,
    scenario: &Value,
) -> Value {
    let out_text = clients.python(
        BROWSER,
        &[
            chromium,
            &server.url(""),
            &out.display().to_string(),
            &scenario.to_string(),
        ],
    );
    let report: Value = serde_json::from_str(out_text.trim()).expect("the browser's JSON report");
    assert_eq!(report["errors"], json!([]), "errors in the page");
    report
}

fn query_string(pairs: &[(&str, String)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

/// Per (row, frame name): the total each frame must have, from the harness's reference tree of
/// the pushed stacks (in this data a name appears once per row).
fn frame_totals(
    pushed: &[&[(&str, &str, i64)]],
    keep: impl Fn(&str) -> bool,
) -> BTreeMap<(usize, String), i64> {
    let stacks: Vec<(Vec<String>, i64)> = pushed
        .iter()
        .flat_map(|p| p.iter())
        .filter(|(env, _, _)| keep(env))
        .map(|(_, stack, value)| (stack.split(';').map(str::to_owned).collect(), value * MS))
        .collect();
    let mut totals = BTreeMap::new();
    for (path, (total, _)) in reference_tree(&stacks) {
        let name = path.rsplit(';').next().unwrap_or_default().to_owned();
        *totals.entry((path.matches(';').count(), name)).or_default() += total;
    }
    totals
}

/// Self and total per function, as the top table must show them.
fn function_totals(
    pushed: &[&[(&str, &str, i64)]],
    keep: impl Fn(&str) -> bool,
) -> BTreeMap<String, (i64, i64)> {
    let mut out: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for (env, stack, value) in pushed.iter().flat_map(|p| p.iter()) {
        if !keep(env) {
            continue;
        }
        let frames: Vec<&str> = stack.split(';').collect();
        for (i, name) in frames.iter().enumerate() {
            let entry = out.entry((*name).to_owned()).or_default();
            if !frames[..i].contains(name) {
                entry.1 += value * MS;
            }
            if i + 1 == frames.len() {
                entry.0 += value * MS;
            }
        }
    }
    out
}

fn frames_of(report: &Value) -> Vec<(usize, String, f64, f64, String, Vec<i64>)> {
    report
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["depth"].as_u64().unwrap() as usize,
                f["name"].as_str().unwrap().to_owned(),
                f["x"].as_f64().unwrap(),
                f["width"].as_f64().unwrap(),
                f["color"].as_str().unwrap().to_owned(),
                f["pixel"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_i64().unwrap())
                    .collect(),
            )
        })
        .collect()
}

/// Checks each drawn frame's width against `totals`, scaled so `whole` spans the canvas.
fn assert_widths(
    frames: &Value,
    totals: &BTreeMap<(usize, String), i64>,
    whole: i64,
    canvas: f64,
    what: &str,
) {
    let frames = frames_of(frames);
    let drawn: Vec<(usize, String)> = frames.iter().map(|f| (f.0, f.1.clone())).collect();
    for ((depth, name), total) in totals {
        let frame = frames
            .iter()
            .find(|f| f.0 == *depth && &f.1 == name)
            .unwrap_or_else(|| panic!("{what}: frame {name} (row {depth}) not drawn: {drawn:?}"));
        let want = *total as f64 / whole as f64 * canvas;
        assert!(
            (frame.3 - want).abs() <= 1.0,
            "{what}: {name} is {} px wide, not {want:.1}",
            frame.3
        );
    }
    assert_eq!(frames.len(), totals.len(), "{what}: frames drawn {drawn:?}");
}

fn hex_rgb(color: &str) -> Vec<i64> {
    let c = color.trim_start_matches('#');
    (0..3)
        .map(|i| i64::from_str_radix(&c[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

fn push_history(server: &TestServer, now: i64) -> (i64, i64) {
    let (before, after) = (now - 40 * 60 * 1_000_000_000, now - 10 * 60 * 1_000_000_000);
    for (time, samples) in [(before, BEFORE), (after, AFTER)] {
        for (env, stack, value) in samples {
            push_cpu(
                server,
                &[
                    ("__name__", "process_cpu"),
                    ("service_name", "shop"),
                    ("env", env),
                ],
                &[(stack, value * MS)],
                time,
            );
        }
    }
    (before / MS, after / MS)
}

#[test]
fn the_web_ui_renders_what_the_api_holds() {
    let Some((clients, chromium)) = chromium("the_web_ui_renders_what_the_api_holds") else {
        return;
    };
    let server = TestServer::start(&[]);
    let now = now_nanos();
    let (before, after) = push_history(&server, now);
    let now_ms = now / MS;
    let (from, until) = (now_ms - 3_600_000, now_ms + 60_000);
    let query = format!("{CPU}{{service_name=\"shop\"}}");
    let window = |t: i64| ((t - 300_000).to_string(), (t + 300_000).to_string());
    let (left, right) = (window(before), window(after));
    let out = tempfile::tempdir().unwrap();
    let scenario = json!({
        "mode": "full",
        "single": query_string(&[("query", query.clone()), ("from", from.to_string()), ("until", until.to_string())]),
        "diff": query_string(&[
            ("view", "diff".into()), ("query", query.clone()), ("from", from.to_string()), ("until", until.to_string()),
            ("leftFrom", left.0), ("leftUntil", left.1), ("rightFrom", right.0), ("rightUntil", right.1),
        ]),
        "diff_selectors": query_string(&[
            ("view", "diff".into()), ("query", query.clone()), ("from", from.to_string()), ("until", until.to_string()),
            ("leftQuery", "{service_name=\"shop\", env=\"dev\"}".into()), ("leftFrom", from.to_string()), ("leftUntil", until.to_string()),
            ("rightQuery", "{service_name=\"shop\", env=\"prod\"}".into()), ("rightFrom", from.to_string()), ("rightUntil", until.to_string()),
        ]),
        "tags": query_string(&[("view", "tags".into()), ("label", "env".into()), ("query", query.clone()),
            ("from", from.to_string()), ("until", until.to_string())]),
        "zoom": "checkout",
        "search": "db",
        "sql": "SELECT service_name, count(*) AS profiles FROM profiles GROUP BY service_name",
    });
    let report = browse(&clients, &chromium, &server, out.path(), &scenario);
    let canvas = report["canvas_width"].as_f64().unwrap();
    let all = |_: &str| true;
    let totals = frame_totals(&[BEFORE, AFTER], all);
    let whole = totals[&(0, "total".to_owned())];

    // The flame graph: every frame as wide as its share, drawn in the colour it declares.
    assert_widths(&report["frames"], &totals, whole, canvas, "flame graph");
    for f in frames_of(&report["frames"]) {
        assert_eq!(f.5, hex_rgb(&f.4), "{} is drawn in its colour", f.1);
    }
    // A drag across the middle half of the timeline narrows the range to it.
    let dragged = &report["dragged"];
    assert_eq!(
        dragged["before"],
        json!([from.to_string(), until.to_string()])
    );
    let after: Vec<i64> = dragged["after"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().parse().unwrap())
        .collect();
    let span = (until - from) as f64;
    assert!(
        (after[0] as f64 - (from as f64 + span / 4.0)).abs() < span * 0.02,
        "{dragged}"
    );
    assert!(
        (after[1] as f64 - (from as f64 + span * 3.0 / 4.0)).abs() < span * 0.02,
        "{dragged}"
    );
    assert!(
        dragged["url"]
            .as_str()
            .unwrap()
            .contains(&format!("from={}", after[0])),
        "{dragged}"
    );
    // The timeline sums to the flame graph's total.
    let timeline: f64 = report["timeline_points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[1].as_f64().unwrap())
        .sum();
    assert_eq!(timeline as i64, whole);

    // The top table: self and total per function, by self (ties by name), then by total.
    let functions = function_totals(&[BEFORE, AFTER], all);
    let mut by_self: Vec<(&String, &(i64, i64))> = functions.iter().collect();
    by_self.sort_by(|a, b| b.1.0.cmp(&a.1.0).then(a.0.cmp(b.0)));
    let rows = |v: Vec<(&String, &(i64, i64))>| -> Value {
        json!(
            v.into_iter()
                .map(|(n, (s, t))| json!([n, s, t]))
                .collect::<Vec<_>>()
        )
    };
    assert_eq!(report["table"], rows(by_self.clone()));
    let mut by_total = by_self.clone();
    by_total.sort_by(|a, b| b.1.1.cmp(&a.1.1).then(a.0.cmp(b.0)));
    assert_eq!(report["table_by_total"], rows(by_total));
    assert_eq!(report["aria_sort"], json!(["none", "none", "descending"]));
    assert_eq!(
        report["table_filtered"],
        rows(
            by_self
                .into_iter()
                .filter(|(n, _)| n.contains("check"))
                .collect()
        )
    );

    // Label autocomplete from the API: names, then the values of the name typed.
    assert!(
        report["label_suggestions"][0]
            .as_array()
            .unwrap()
            .contains(&json!("env=\"")),
        "{}",
        report["label_suggestions"]
    );
    let values = &report["label_suggestions"][1];
    for v in ["env=\"prod\"", "env=\"dev\""] {
        assert!(values.as_array().unwrap().contains(&json!(v)), "{values}");
    }

    // Keyboard: down to `main` (announced), down to its widest child `checkout`, Enter zooms.
    assert!(
        report["focus_announced"]
            .as_str()
            .unwrap()
            .starts_with("main"),
        "{}",
        report["focus_announced"]
    );
    let checkout = totals[&(2, "checkout".to_owned())];
    let zoomed: BTreeMap<(usize, String), i64> = totals
        .iter()
        .filter(|((d, n), _)| *d <= 1 || n == "checkout" || (*d == 3))
        .map(|((d, n), t)| ((*d, n.clone()), if *d <= 2 { checkout } else { *t }))
        .collect();
    assert_widths(
        &report["keyboard_zoom"],
        &zoomed,
        checkout,
        canvas,
        "zoomed with the keyboard",
    );
    // A click on `checkout` zooms the same way.
    assert_widths(
        &report["zoomed"],
        &zoomed,
        checkout,
        canvas,
        "zoomed by a click",
    );

    // Search (in the zoomed view): matches keep their colour, the rest fade; the link
    // reproduces both, and resetting the zoom takes it out of the link.
    assert_widths(
        &report["searched"],
        &zoomed,
        checkout,
        canvas,
        "zoomed and searched",
    );
    for f in frames_of(&report["searched"]) {
        let faded = f.4 == "#e6e6e6";
        assert_eq!(faded, !f.1.contains("db"), "{} after searching db", f.1);
        assert_eq!(f.5, hex_rgb(&f.4));
    }
    assert!(
        report["link"]
            .as_str()
            .unwrap()
            .contains("zoom=main%3Bcheckout"),
        "{}",
        report["link"]
    );
    assert!(!report["unzoomed_url"].as_str().unwrap().contains("zoom="));
    assert!(
        report["link"].as_str().unwrap().contains("search=db"),
        "{}",
        report["link"]
    );
    assert_eq!(report["reopened_search"], "db");
    assert_eq!(
        frames_of(&report["reopened"]),
        frames_of(&report["searched"])
    );

    // Exports, decoded here.
    let json_export: Value =
        serde_json::from_slice(&std::fs::read(out.path().join("export.json")).unwrap()).unwrap();
    assert_eq!(json_export["flamebearer"]["numTicks"].as_i64(), Some(whole));
    let svg = std::fs::read_to_string(out.path().join("export.svg")).unwrap();
    assert!(
        svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""),
        "{}",
        &svg[..80]
    );
    assert_eq!(svg.matches("<rect").count(), totals.len());
    for name in ["main", "checkout", "render", "db", "gc"] {
        assert!(
            svg.contains(&format!(">{name}</text>")),
            "{name} in the SVG"
        );
    }
    let pprof = Profile::decode(
        std::fs::read(out.path().join("export.pprof"))
            .unwrap()
            .as_slice(),
    )
    .unwrap();
    let pprof_total: i64 = pprof.sample.iter().map(|s| s.value[0]).sum();
    assert_eq!(pprof_total, whole);
    let png = std::fs::read(out.path().join("export.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");

    // The diff of two ranges: red where the comparison's share grew, green where it shrank,
    // grey where equal; the diff of two selectors (dev against prod over the whole range) too.
    let left = frame_totals(&[BEFORE], all);
    let right = frame_totals(&[AFTER], all);
    assert_diff_colours(&report["diff_frames"], &left, &right);
    let dev = frame_totals(&[BEFORE, AFTER], |e| e == "dev");
    let prod = frame_totals(&[BEFORE, AFTER], |e| e == "prod");
    assert_diff_colours(&report["diff_selector_frames"], &dev, &prod);
    let diff_names: Vec<String> = frames_of(&report["diff_frames"])
        .into_iter()
        .map(|f| f.1)
        .collect();
    for name in ["render", "db", "gc", "main"] {
        assert!(
            diff_names.iter().any(|n| n == name),
            "{name} in the diff: {diff_names:?}"
        );
    }

    // The tag explorer: totals per env, largest first, with shares; a click drills down.
    let env_total = |env: &str| -> i64 {
        BEFORE
            .iter()
            .chain(AFTER)
            .filter(|(e, _, _)| *e == env)
            .map(|(_, _, v)| v * MS)
            .sum()
    };
    let (prod, dev) = (env_total("prod"), env_total("dev"));
    let share = |v: i64| format!("{:.1}%", 100.0 * v as f64 / (prod + dev) as f64);
    assert_eq!(
        report["tags"],
        json!([["prod", prod, share(prod)], ["dev", dev, share(dev)]])
    );
    assert_eq!(report["tag_drilldown"]["selector"], "env=\"prod\"");
    let prod_functions = function_totals(&[BEFORE, AFTER], |e| e == "prod");
    let mut prod_rows: Vec<(&String, &(i64, i64))> = prod_functions.iter().collect();
    prod_rows.sort_by(|a, b| b.1.0.cmp(&a.1.0).then(a.0.cmp(b.0)));
    assert_eq!(report["tag_drilldown"]["table"], rows(prod_rows));

    // SQL through the API.
    let profiles = (BEFORE.len() + AFTER.len()).to_string();
    assert_eq!(
        report["sql"]["columns"],
        json!(["service_name", "profiles"])
    );
    assert_eq!(report["sql"]["rows"], json!([["shop", profiles]]));

    keep_screenshots(
        out.path(),
        &[
            "flamegraph.png",
            "search.png",
            "diff.png",
            "tags.png",
            "sql.png",
        ],
    );
}

/// Checks a diff's drawn colours (the pixel under each frame) against each side's shares.
fn assert_diff_colours(
    frames: &Value,
    left: &BTreeMap<(usize, String), i64>,
    right: &BTreeMap<(usize, String), i64>,
) {
    let (lw, rw) = (
        left[&(0, "total".to_owned())],
        right[&(0, "total".to_owned())],
    );
    let frames = frames_of(frames);
    assert!(!frames.is_empty());
    for f in frames {
        let key = (f.0, f.1.clone());
        let share = |m: &BTreeMap<(usize, String), i64>, w: i64| {
            *m.get(&key).unwrap_or(&0) as f64 / w as f64
        };
        let (l, r) = (share(left, lw), share(right, rw));
        let [red, green, blue] = [f.5[0], f.5[1], f.5[2]];
        if (l - r).abs() < 1e-12 {
            assert_eq!(f.5, vec![189, 189, 189], "{} is unchanged: grey", f.1);
        } else if r > l {
            assert!(
                red > green + 40 && red > blue + 40,
                "{} grew: red, drawn {:?}",
                f.1,
                f.5
            );
        } else {
            assert!(
                green > red + 20 && green > blue + 20,
                "{} shrank: green, drawn {:?}",
                f.1,
                f.5
            );
        }
    }
}

/// With `PROFUSION_UPDATE_SCREENSHOTS=1`, copies the screenshots to `docs/ui/` for the README.
fn keep_screenshots(out: &Path, names: &[&str]) {
    if std::env::var("PROFUSION_UPDATE_SCREENSHOTS").as_deref() != Ok("1") {
        return;
    }
    let docs = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/ui");
    std::fs::create_dir_all(&docs).unwrap();
    for name in names {
        std::fs::copy(out.join(name), docs.join(name)).unwrap();
    }
}

/// With `--auth.enabled`, the page needs credentials (a browser is asked for them); with a
/// tenant's read token it shows that tenant's data only.
#[test]
fn the_web_ui_is_behind_access_control() {
    let Some((clients, chromium)) = chromium("the_web_ui_is_behind_access_control") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let token = |tenant: &str, scope: &str| create_token(&data, tenant, scope);
    let (a_read, a_write, b_write) = (
        token("team-a", "read"),
        token("team-a", "write"),
        token("team-b", "write"),
    );
    let server = TestServer::configure()
        .data_dir(&data)
        .args(&["--auth.enabled", "--auth.multitenancy-enabled"])
        .spawn();
    let now = now_nanos();
    for (token, service, stack) in [
        (&a_write, "shop-a", "main;a_work"),
        (&b_write, "shop-b", "main;b_work"),
    ] {
        let body = push_request(
            &[("__name__", "process_cpu"), ("service_name", service)],
            cpu_pprof(now, &[(&stack.split(';').collect::<Vec<_>>(), 10 * MS)]).encode_to_vec(),
            "",
        );
        let r = post(
            &server.url("/push.v1.PusherService/Push"),
            &[
                ("content-type", "application/proto"),
                ("authorization", &format!("Bearer {token}")),
            ],
            body.encode_to_vec(),
            false,
        );
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let now_ms = now / MS;
    let out = tempfile::tempdir().unwrap();
    let scenario = json!({
        "mode": "auth",
        "credentials": {"username": "team-a", "password": a_read},
        "single": query_string(&[("query", format!("{CPU}{{}}")), ("from", (now_ms - 3_600_000).to_string()),
            ("until", (now_ms + 60_000).to_string())]),
    });
    let report = browse(&clients, &chromium, &server, out.path(), &scenario);
    assert_eq!(report["without_credentials"]["status"], 401);
    assert!(
        report["without_credentials"]["challenge"]
            .as_str()
            .unwrap()
            .starts_with("Basic "),
        "{report}"
    );
    assert_eq!(report["services"], json!(["", "shop-a"]));
    assert_eq!(
        report["table"],
        json!([["a_work", 10 * MS, 10 * MS], ["main", 0, 10 * MS]])
    );

    // With multi-tenancy and no access control, the tenant field is the X-Scope-OrgID header.
    let server = TestServer::configure()
        .data_dir(dir.path().join("open"))
        .args(&["--auth.multitenancy-enabled"])
        .spawn();
    for (tenant, service, stack) in [
        ("team-a", "shop-a", "main;a_work"),
        ("team-b", "shop-b", "main;b_work"),
    ] {
        push_cpu_as(
            &server,
            Some(tenant),
            &[("__name__", "process_cpu"), ("service_name", service)],
            &[(stack, 10 * MS)],
            now,
        );
    }
    let scenario = json!({
        "mode": "tenant",
        "single": format!("{}&tenant=team-b", scenario["single"].as_str().unwrap()),
    });
    let report = browse(&clients, &chromium, &server, out.path(), &scenario);
    assert_eq!(report["tenant_field"], "team-b");
    assert_eq!(report["services"], json!(["", "shop-b"]));
    assert_eq!(
        report["table"],
        json!([["b_work", 10 * MS, 10 * MS], ["main", 0, 10 * MS]])
    );
}

/// A flame graph of 16,384 nodes (the UI's limit) renders, with the table capped; the time of
/// one draw is printed, not asserted (speed is measured, not tested).
#[test]
fn the_web_ui_draws_a_16384_node_flame_graph() {
    let Some((clients, chromium)) = chromium("the_web_ui_draws_a_16384_node_flame_graph") else {
        return;
    };
    let server = TestServer::start(&[]);
    let now = now_nanos();
    let names: Vec<(String, i64)> = (0..20_000)
        .map(|i| {
            (
                format!("main;module_{};function_{i}", i % 64),
                1_000 + i as i64,
            )
        })
        .collect();
    for chunk in names.chunks(10_000) {
        let stacks: Vec<(&str, i64)> = chunk.iter().map(|(s, v)| (s.as_str(), *v)).collect();
        push_cpu_as(
            &server,
            None,
            &[("__name__", "process_cpu"), ("service_name", "big")],
            &stacks,
            now,
        );
    }
    let now_ms = now / MS;
    let out = tempfile::tempdir().unwrap();
    let scenario = json!({
        "mode": "large",
        "single": query_string(&[("query", format!("{CPU}{{service_name=\"big\"}}")),
            ("from", (now_ms - 3_600_000).to_string()), ("until", (now_ms + 60_000).to_string())]),
    });
    let report = browse(&clients, &chromium, &server, out.path(), &scenario);
    // 16,384 frames kept, and the frames standing for what was cut.
    let nodes = report["nodes"].as_i64().unwrap();
    assert!((16_384..17_000).contains(&nodes), "{nodes} nodes");
    assert!(report["drawn"].as_i64().unwrap() > 0);
    assert_eq!(report["table_rows"], 1000);
    eprintln!(
        "a {nodes}-node flame graph: one draw {} ms, layout and draw {} ms",
        report["draw_ms"], report["layout_and_draw_ms"]
    );
}
