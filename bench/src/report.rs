//! The Markdown summary and the SVG plots of a run, from its `report.json` value.

use std::fmt::Write;
use std::path::Path;

use serde_json::Value;

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

fn ms(v: &Value) -> String {
    format!("{:.1}", f(v) * 1e3)
}

fn ratio(v: &Value) -> String {
    v.as_f64().map_or("–".into(), |r| format!("{r:.2}"))
}

/// The latency table of one set of query measurements.
fn query_table(md: &mut String, queries: &Value) {
    let _ = writeln!(
        md,
        "| window | CPU samples | flame graph | one service | SelectSeries | LabelValues | Series | DuckDB p50: flame / series / label values / series sets | ratios to DuckDB: flame / series / label values / series sets | ratios to ClickHouse (chdb): flame / series / label values / series sets |\n|---|---:|---|---|---|---|---|---|---|---|"
    );
    for q in queries.as_array().into_iter().flatten() {
        let pair = |v: &Value| format!("{} / {}", ms(&v["p50_s"]), ms(&v["p95_s"]));
        let duck = &q["duckdb"];
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} / {} / {} / {} | {} / {} / {} / {} | {} / {} / {} / {} |",
            q["window"].as_str().unwrap_or("?"),
            q["cpu_samples"],
            pair(&q["flame_graph"]),
            pair(&q["flame_graph_one_service"]),
            pair(&q["select_series"]),
            pair(&q["label_values"]),
            pair(&q["series"]),
            ms(&duck["flame_p50_s"]),
            ms(&duck["series_p50_s"]),
            ms(&duck["label_values_p50_s"]),
            ms(&duck["series_sets_p50_s"]),
            ratio(&q["ratio_flame_graph_to_duckdb"]),
            ratio(&q["ratio_series_to_duckdb"]),
            ratio(&q["ratio_label_values_to_duckdb"]),
            ratio(&q["ratio_series_sets_to_duckdb"]),
            ratio(&q["ratio_flame_graph_to_chdb"]),
            ratio(&q["ratio_series_to_chdb"]),
            ratio(&q["ratio_label_values_to_chdb"]),
            ratio(&q["ratio_series_sets_to_chdb"])
        );
    }
}

/// The SQL analyses and the export (`sql.rs`), after compaction.
pub(crate) fn sql_section(md: &mut String, sql: &Value) {
    let _ = writeln!(
        md,
        "\n## SQL analyses and export\n\nThe same questions three ways (ms, p50 / p95): as SQL table functions through Flight SQL, through the querier API (a whole flame graph whose top table the client derives; `SelectSeries` by service) and of DuckDB over the block files. `agree`: the querier API's and DuckDB's answers equal Flight SQL's, function by function and service by service.\n\n| window | analysis | Flight SQL | querier API | DuckDB | Flight SQL / querier API | Flight SQL / DuckDB | agree (API, DuckDB) |\n|---|---|---|---|---|---:|---:|---|"
    );
    let pair = |v: &Value| format!("{} / {}", ms(&v["p50_s"]), ms(&v["p95_s"]));
    for w in sql["analyses"].as_array().into_iter().flatten() {
        for (name, a) in [
            ("top functions", &w["top_functions"]),
            ("totals over time", &w["totals_over_time"]),
        ] {
            let _ = writeln!(
                md,
                "| {} | {name} | {} | {} | {} | {} | {} | {}, {} |",
                w["window"].as_str().unwrap_or("?"),
                pair(&a["flight_sql"]),
                pair(&a["querier_api"]),
                pair(&a["duckdb"]),
                ratio(&a["ratio_flight_sql_to_querier_api"]),
                ratio(&a["ratio_flight_sql_to_duckdb"]),
                a["querier_api_agrees"],
                a["duckdb_agrees"]
            );
        }
    }
    let e = &sql["export"];
    let _ = writeln!(
        md,
        "\n`profusion export` of one day from the blocks (its own CPU time):\n\n| format | rows | files | s | rows/s per core | MB/s per core written | block MB/s per core read | bytes per row | block bytes per row | exported / block |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for x in e["formats"].as_array().into_iter().flatten() {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {:.1} | {:.0} | {:.1} | {:.1} | {:.1} | {:.1} | {} |",
            x["format"].as_str().unwrap_or("?"),
            x["rows"],
            x["files"],
            f(&x["wall_s"]),
            f(&x["rows_per_s_per_core"]),
            f(&x["exported_mb_per_s_per_core"]),
            f(&x["block_mb_per_s_per_core"]),
            f(&x["exported_bytes_per_row"]),
            f(&x["block_bytes_per_row"]),
            ratio(&x["ratio_exported_to_block_bytes"])
        );
    }
}

/// JFR ingest next to pprof (`jfr.rs`).
pub(crate) fn jfr_section(md: &mut String, jfr: &Value) {
    let (j, p) = (&jfr["jfr"], &jfr["pprof"]);
    if j.is_null() {
        let _ = writeln!(md, "\n## JFR ingest\n\n{jfr}\n");
        return;
    }
    let _ = writeln!(
        md,
        "\n## JFR ingest\n\nA JDK 17 recording of {:.2} MB ({} mapped events) pushed raw to `/ingest?format=jfr` from {} connections: {} uploads, **{:.1} MB/s and {:.0} events/s per core** of the server; pprof pushes to the same server: {:.1} MB/s of pprof per core. JFR / pprof: **{} ×** per core.\n",
        f(&jfr["recording_bytes"]) / 1e6,
        jfr["recording_events"],
        jfr["concurrency"],
        j["uploads"],
        f(&j["mb_per_s_per_core"]),
        f(&j["events_per_s_per_core"]),
        f(&p["mb_per_s_per_core"]),
        ratio(&jfr["ratio_jfr_to_pprof_mb_per_core"])
    );
}

/// The history at agent cadence (`cadence.rs`): its size, then each window's latencies next
/// to DuckDB's and ClickHouse's over the same block files.
pub(crate) fn cadence_section(md: &mut String, cadence: &Value) {
    let h = &cadence["history"];
    let _ = writeln!(
        md,
        "\n## A history at agent cadence\n\n{} services × {} pods, each sending every profile kind every {} s for {} h: {} profiles ({:.1} M CPU samples) pushed in {:.0} s, compacted in {:.0} s into {} blocks of {:.1} MB ({:.1} M sample rows).\n\nms, p50 / p95 (cold); ratios are Profusion's p50 over the other engine's; `agree`: the flame graph's and the series' totals equal DuckDB's and ClickHouse's.\n\n| window | flame graph | one service | SelectSeries | DuckDB flame / series | chdb flame / series | flame ratio DuckDB / chdb | series ratio DuckDB / chdb | agree |\n|---|---|---|---|---|---|---:|---:|---|",
        h["services"],
        h["pods"],
        h["every_s"],
        h["hours"],
        h["profiles"],
        f(&h["cpu_samples"]) / 1e6,
        f(&h["load_s"]),
        f(&h["compaction_s"]),
        h["blocks"],
        f(&h["block_bytes"]) / 1e6,
        f(&h["sample_rows"]) / 1e6,
    );
    for q in cadence["queries"].as_array().into_iter().flatten() {
        let timed = |v: &Value| {
            format!(
                "{} / {} ({})",
                ms(&v["p50_s"]),
                ms(&v["p95_s"]),
                ms(&v["cold_s"])
            )
        };
        let other = |e: &Value| format!("{} / {}", ms(&e["flame_p50_s"]), ms(&e["series_p50_s"]));
        let agree = |engine: &str| match q[format!("agrees_with_{engine}")].as_bool() {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "–",
        };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} / {} | {} / {} | {}, {} |",
            q["window"].as_str().unwrap_or("?"),
            timed(&q["flame_graph"]),
            timed(&q["flame_graph_one_service"]),
            timed(&q["select_series"]),
            other(&q["duckdb"]),
            other(&q["chdb"]),
            ratio(&q["ratio_flame_graph_to_duckdb"]),
            ratio(&q["ratio_flame_graph_to_chdb"]),
            ratio(&q["ratio_series_to_duckdb"]),
            ratio(&q["ratio_series_to_chdb"]),
            agree("duckdb"),
            agree("chdb"),
        );
    }
}

/// The ingest phases: the decode-only reference and the concurrency sweep.
pub(crate) fn ingest_section(md: &mut String, r: &Value) {
    let d = &r["decode_only"];
    let i = &r["ingest"];
    let b = &i["best"];
    let _ = writeln!(md, "## Ingest over loopback\n");
    let _ = writeln!(
        md,
        "Reference (decode only: gunzip + protobuf parse, one core): {:.0} profiles/s, {:.1} MB/s of pprof.\n",
        f(&d["profiles_per_s_per_core"]),
        f(&d["mb_per_s_per_core"])
    );
    let _ = writeln!(
        md,
        "| concurrency | profiles/s | profiles/s per core | MB/s per core | reference just before, MB/s | ratio | server cores busy | p50 ms | p99 ms |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for s in i["steps"].as_array().into_iter().flatten() {
        let _ = writeln!(
            md,
            "| {} | {:.0} | {:.0} | {:.1} | {:.1} | {} | {:.2} | {:.1} | {:.1} |",
            s["concurrency"],
            f(&s["profiles_per_s"]),
            f(&s["profiles_per_s_per_core"]),
            f(&s["mb_per_s_per_core"]),
            f(&s["reference_mb_per_s_per_core"]),
            ratio(&s["ratio_to_reference"]),
            f(&s["server_cores_busy"]),
            f(&s["p50_ms"]),
            f(&s["p99_ms"])
        );
    }
    let _ = writeln!(
        md,
        "\nBest per core: {:.1} MB/s of pprof, **{} × the decode-only reference** (its best of three); \
         best step against the reference run just before it: **{} ×**. Peak RSS {:.0} MB.\n",
        f(&b["mb_per_s_per_core"]),
        ratio(&i["ratio_mb_per_core_to_decode_only"]),
        ratio(&i["best_ratio_to_step_reference"]),
        f(&i["peak_rss_bytes"]) / 1e6
    );
}

/// Writes `report.md`, `ingest-throughput.svg` and `query-latency.svg` into `dir`.
pub(crate) fn write(dir: &Path, r: &Value) {
    let mut md = String::new();
    let m = &r["machine"];
    let _ = writeln!(md, "# Profusion benchmark\n");
    let _ = writeln!(
        md,
        "Machine: {} cores ({}), {}, {}. Workload: {}.\n",
        m["cores"],
        m["cpu"].as_str().unwrap_or("?"),
        m["memory"].as_str().unwrap_or("?"),
        m["os"].as_str().unwrap_or("?"),
        r["workload"]
    );
    ingest_section(&mut md, r);
    let s = &r["storage"];
    let _ = writeln!(md, "## Storage\n");
    let _ = writeln!(
        md,
        "{} profiles ({} pprof samples, {:.1} MB gzipped) became {} blocks of {:.1} MB: {:.2} bytes per stored sample row, {:.2} bytes per pprof sample against {:.2} gzipped, **{} × the gzipped input**. Peak RSS while loading {:.0} MB, with the head flushing at {:.0} MB.\n",
        s["profiles"],
        s["pprof_samples"],
        f(&s["gzipped_input_bytes"]) / 1e6,
        s["blocks"],
        f(&s["block_bytes"]) / 1e6,
        f(&s["block_bytes_per_stored_sample"]),
        f(&s["block_bytes_per_pprof_sample"]),
        f(&s["gzipped_input_bytes_per_pprof_sample"]),
        ratio(&s["ratio_block_bytes_to_gzipped_input"]),
        f(&s["peak_rss_bytes_while_loading"]) / 1e6,
        f(&s["max_head_bytes"]) / 1e6
    );
    let _ = writeln!(md, "## Queries (ms; p50 / p95)\n");
    query_table(&mut md, &r["queries"]);
    let c = &r["after_compaction"];
    let _ = writeln!(
        md,
        "\n## After compaction\n\n{} blocks became {} ({:.1} MB) in {:.0} s. The same queries, from a restarted server:\n",
        s["blocks"],
        c["blocks"],
        f(&c["block_bytes"]) / 1e6,
        f(&c["compaction_s"])
    );
    query_table(&mut md, &c["queries"]);
    let _ = writeln!(
        md,
        "\n### Blocks read and object-store requests per flame graph\n\nBlocks and their bytes as the catalog lists them for the window; requests the store-gateway sent for the first flame graph of the window after a restart (cold; earlier windows may have warmed part of it) and for the second (warm).\n\n| window | blocks before / after compaction | MB before / after | requests cold / warm before | requests cold / warm after |\n|---|---:|---:|---:|---:|"
    );
    let before = r["queries"].as_array().cloned().unwrap_or_default();
    let after = c["queries"].as_array().cloned().unwrap_or_default();
    for (b, a) in before.iter().zip(&after) {
        let _ = writeln!(
            md,
            "| {} | {} / {} | {:.1} / {:.1} | {} / {} | {} / {} |",
            b["window"].as_str().unwrap_or("?"),
            b["blocks"],
            a["blocks"],
            f(&b["block_bytes"]) / 1e6,
            f(&a["block_bytes"]) / 1e6,
            b["object_store_requests"]["cold"],
            b["object_store_requests"]["warm"],
            a["object_store_requests"]["cold"],
            a["object_store_requests"]["warm"]
        );
    }
    let fl = &r["push_during_flush"];
    let _ = writeln!(
        md,
        "\n## Push latency while the head flushes\n\nFour pushers against a head flushing at {:.0} MB ({} flushes): p99 **{:.1} ms** for the {} pushes that overlapped a flush, {:.1} ms for the {} others (p50 {:.1} / {:.1} ms), **{} ×**.\n",
        f(&fl["max_head_bytes"]) / 1e6,
        fl["flushes"],
        f(&fl["p99_ms_during_flush"]),
        fl["pushes_during_flush"],
        f(&fl["p99_ms_otherwise"]),
        fl["pushes_otherwise"],
        f(&fl["p50_ms_during_flush"]),
        f(&fl["p50_ms_otherwise"]),
        ratio(&fl["ratio_p99_during_flush_to_otherwise"])
    );
    sql_section(&mut md, &r["sql"]);
    jfr_section(&mut md, &r["jfr"]);
    if !r["cadence"].is_null() {
        cadence_section(&mut md, &r["cadence"]);
    }
    let p = &r["peak_rss_bytes"];
    let _ = writeln!(
        md,
        "\nRatios are Profusion / DuckDB p50 over the same block files (lower is better for Profusion). Peak RSS during queries {:.0} MB.\n\n![ingest](ingest-throughput.svg) ![queries](query-latency.svg)",
        f(&p["queries"]) / 1e6
    );
    std::fs::write(dir.join("report.md"), md).expect("write report.md");

    let ingest: Vec<(f64, f64)> = r["ingest"]["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| (f(&s["concurrency"]), f(&s["profiles_per_s"])))
        .collect();
    std::fs::write(
        dir.join("ingest-throughput.svg"),
        chart(
            "Ingest throughput against concurrency",
            "concurrent pushers",
            "profiles/s",
            &[("Profusion", &ingest)],
        ),
    )
    .expect("write svg");
    let queries: Vec<&Value> = r["queries"].as_array().into_iter().flatten().collect();
    let series = |pick: &dyn Fn(&Value) -> f64| -> Vec<(f64, f64)> {
        queries
            .iter()
            .map(|q| (f(&q["cpu_samples"]) / 1e6, pick(q) * 1e3))
            .filter(|(_, y)| y.is_finite())
            .collect()
    };
    let ours = series(&|q| f(&q["flame_graph"]["p50_s"]));
    let duck = series(&|q| f(&q["duckdb"]["flame_p50_s"]));
    let sel = series(&|q| f(&q["select_series"]["p50_s"]));
    std::fs::write(
        dir.join("query-latency.svg"),
        chart(
            "Query latency (p50) against data size",
            "CPU samples in the range (millions)",
            "ms",
            &[
                ("flame graph", &ours),
                ("DuckDB merge", &duck),
                ("SelectSeries", &sel),
            ],
        ),
    )
    .expect("write svg");
}

/// A small line chart with labelled axes.
fn chart(title: &str, x_label: &str, y_label: &str, lines: &[(&str, &[(f64, f64)])]) -> String {
    let (w, h, left, bottom, top, right) = (640.0, 400.0, 70.0, 50.0, 40.0, 150.0);
    let points = lines.iter().flat_map(|(_, p)| p.iter());
    let x_max = points.clone().map(|p| p.0).fold(0.0, f64::max).max(1e-9);
    let y_max = points.map(|p| p.1).fold(0.0, f64::max).max(1e-9) * 1.1;
    let sx = |x: f64| left + x / x_max * (w - left - right);
    let sy = |y: f64| h - bottom - y / y_max * (h - bottom - top);
    let colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"];
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{}" y="22" font-size="15" text-anchor="middle">{title}</text>
<line x1="{left}" y1="{}" x2="{}" y2="{}" stroke="black"/>
<line x1="{left}" y1="{top}" x2="{left}" y2="{}" stroke="black"/>
<text x="{}" y="{}" text-anchor="middle">{x_label}</text>
<text x="16" y="{}" text-anchor="middle" transform="rotate(-90 16 {})">{y_label}</text>
"#,
        w / 2.0,
        h - bottom,
        w - right,
        h - bottom,
        h - bottom,
        (left + w - right) / 2.0,
        h - 12.0,
        h / 2.0,
        h / 2.0,
    );
    for k in 0..=4 {
        let (xv, yv) = (x_max * k as f64 / 4.0, y_max * k as f64 / 4.0);
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{}" text-anchor="middle">{}</text><text x="{}" y="{:.1}" text-anchor="end">{}</text>"#,
            sx(xv),
            h - bottom + 16.0,
            short(xv),
            left - 6.0,
            sy(yv) + 4.0,
            short(yv)
        );
    }
    for (n, (name, pts)) in lines.iter().enumerate() {
        let color = colors[n % colors.len()];
        let path: Vec<String> = pts
            .iter()
            .map(|(x, y)| format!("{:.1},{:.1}", sx(*x), sy(*y)))
            .collect();
        let _ = writeln!(
            svg,
            r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
            path.join(" ")
        );
        for (x, y) in pts.iter() {
            let _ = writeln!(
                svg,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{color}"/>"#,
                sx(*x),
                sy(*y)
            );
        }
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{}" fill="{color}">{name}</text>"#,
            w - right + 10.0,
            top + 18.0 * n as f64 + 10.0
        );
    }
    svg.push_str("</svg>\n");
    svg
}

fn short(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}
