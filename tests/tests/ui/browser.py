"""Drives the web UI in Debian's headless Chromium with playwright and reports what the page
rendered, as JSON on stdout: the flame graph's drawn frames (name, row, x, width, colour, and
the canvas pixel under each), the top table, zoom, search, keyboard focus, the diff's colours,
the tag explorer, the SQL page, the exports (saved to the output directory) and a link
reopened in a new page. Screenshots go to the output directory.

Usage: browser.py <chromium> <base url> <output dir> <scenario json>
"""

import json
import os
import sys

from playwright.sync_api import sync_playwright

chromium, base, out, scenario = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
report = {}


def ready(page):
    page.wait_for_function("document.body.dataset.state === 'ready' || document.body.dataset.state === 'error'")
    state = page.evaluate("document.body.dataset.state")
    if state != "ready":
        raise SystemExit("the UI reported an error: " + page.inner_text("#error"))


def drawn(page, canvas="flamegraph", graph="flamegraph"):
    """The frames the last draw put on the canvas, each with the pixel at its centre."""
    return page.evaluate(
        """([canvasId, graph]) => {
            const canvas = document.getElementById(canvasId);
            const ctx = canvas.getContext('2d');
            const ratio = canvas.width / canvas.clientWidth;
            return window.profusionUI[graph].drawn.map((d) => {
                // Inside the frame's top-left corner: clear of its text.
                const px = ctx.getImageData(Math.floor((d.x + 1) * ratio),
                                            Math.floor((d.depth * 18 + 1) * ratio), 1, 1).data;
                return {name: d.name, depth: d.depth, x: d.x, width: d.width, color: d.color,
                        pixel: [px[0], px[1], px[2]]};
            });
        }""",
        [canvas, graph],
    )


def table(page, selector):
    return page.eval_on_selector_all(
        selector + " tbody tr",
        "rows => rows.map(r => [...r.cells].map(c => c.dataset.value !== undefined ? Number(c.dataset.value) : c.textContent))",
    )


with sync_playwright() as p:
    browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
    context = browser.new_context(
        viewport={"width": 1400, "height": 900},
        accept_downloads=True,
        http_credentials=scenario.get("credentials"),
    )
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))

    if scenario["mode"] == "auth":
        # Without credentials: the page is refused with a Basic challenge (which a browser
        # with nothing to answer it with turns into a navigation error; ask as a client).
        bare = p.request.new_context()
        response = bare.get(base + "/")
        report["without_credentials"] = {"status": response.status,
                                         "challenge": response.headers.get("www-authenticate", "")}
        page.goto(base + "/?" + scenario["single"])
        ready(page)
        report["services"] = page.eval_on_selector_all("#service option", "os => os.map(o => o.value)")
        report["table"] = table(page, "#top-table")
        page.screenshot(path=os.path.join(out, "auth.png"))
        report["errors"] = errors
        print(json.dumps(report))
        sys.exit(0)

    if scenario["mode"] == "tenant":
        page.goto(base + "/?" + scenario["single"])
        ready(page)
        report["services"] = page.eval_on_selector_all("#service option", "os => os.map(o => o.value)")
        report["tenant_field"] = page.input_value("#tenant")
        report["table"] = table(page, "#top-table")
        report["errors"] = errors
        print(json.dumps(report))
        sys.exit(0)

    if scenario["mode"] == "large":
        page.goto(base + "/?" + scenario["single"])
        ready(page)
        report["nodes"] = page.evaluate("window.profusionUI.flamegraph.rows.reduce((n, r) => n + r.length, 0)")
        report["draw_ms"] = page.evaluate("""() => {
            const fg = window.profusionUI.flamegraph;
            const t0 = performance.now();
            for (let i = 0; i < 5; i++) fg.draw();
            return (performance.now() - t0) / 5;
        }""")
        # Laying out the answer and drawing it, as a new answer costs.
        report["layout_and_draw_ms"] = page.evaluate("""() => {
            const fg = window.profusionUI.flamegraph;
            const t0 = performance.now();
            for (let i = 0; i < 5; i++) fg.setData(fg.source, fg.unit);
            return (performance.now() - t0) / 5;
        }""")
        report["drawn"] = len(page.evaluate("window.profusionUI.flamegraph.drawn.map(d => d.width)"))
        report["table_rows"] = page.eval_on_selector_all("#top-table tbody tr", "rows => rows.length")
        report["errors"] = errors
        print(json.dumps(report))
        sys.exit(0)

    # The single view: flame graph, top table, timeline.
    page.goto(base + "/?" + scenario["single"])
    ready(page)
    report["canvas_width"] = page.evaluate("document.getElementById('flamegraph').clientWidth")
    report["frames"] = drawn(page)
    report["table"] = table(page, "#top-table")
    report["timeline_points"] = page.evaluate("window.profusionUI.timeline.series[0].points")
    report["label_suggestions"] = []
    page.click("#selector")
    page.fill("#selector", "en")
    page.wait_for_function("document.querySelectorAll('#selector-suggestions option').length > 0")
    report["label_suggestions"].append(page.eval_on_selector_all("#selector-suggestions option", "os => os.map(o => o.value)"))
    page.fill("#selector", 'env="')
    page.wait_for_function("[...document.querySelectorAll('#selector-suggestions option')].some(o => o.value.includes('prod'))")
    report["label_suggestions"].append(page.eval_on_selector_all("#selector-suggestions option", "os => os.map(o => o.value)"))
    page.fill("#selector", "")
    page.screenshot(path=os.path.join(out, "flamegraph.png"))

    # A drag across the middle half of the timeline picks that range; the link keeps it.
    before = [page.input_value("#from"), page.input_value("#until")]
    box = page.locator("#timeline").bounding_box()
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] * 0.25, y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.5, y, steps=4)
    page.mouse.move(box["x"] + box["width"] * 0.75, y, steps=4)
    page.mouse.up()
    ready(page)
    report["dragged"] = {"before": before, "after": [page.input_value("#from"), page.input_value("#until")],
                         "url": page.url}
    page.goto(base + "/?" + scenario["single"])
    ready(page)

    # Sorting the table by total, then filtering it.
    page.click("#top-table thead button[data-sort='total']")
    report["table_by_total"] = table(page, "#top-table")
    report["aria_sort"] = page.eval_on_selector_all("#top-table thead th", "ths => ths.map(t => t.getAttribute('aria-sort'))")
    page.fill("#table-filter", "check")
    report["table_filtered"] = table(page, "#top-table")
    page.fill("#table-filter", "")

    # Keyboard: into the canvas, down from the root, then Enter zooms.
    page.focus("#flamegraph")
    page.keyboard.press("ArrowDown")
    report["focus_announced"] = page.inner_text("#flame-focus")
    page.keyboard.press("ArrowDown")
    page.keyboard.press("Enter")
    report["keyboard_zoom"] = drawn(page)
    page.keyboard.press("Escape")

    # Clicking a frame zooms to it.
    target = next(f for f in drawn(page) if f["name"] == scenario["zoom"])
    box = page.locator("#flamegraph").bounding_box()
    page.mouse.click(box["x"] + target["x"] + target["width"] / 2, box["y"] + target["depth"] * 18 + 9)
    report["zoomed"] = drawn(page)

    # Search highlights matches and fades the rest; the link keeps it and the zoom.
    page.fill("#search", scenario["search"])
    report["searched"] = drawn(page)
    link = page.url
    report["link"] = link
    page.screenshot(path=os.path.join(out, "search.png"))
    reopened = context.new_page()
    reopened.goto(link)
    ready(reopened)
    report["reopened_search"] = reopened.input_value("#search")
    report["reopened"] = drawn(reopened)
    reopened.close()
    page.fill("#search", "")
    page.dispatch_event("#search", "input")
    page.click("#reset-zoom")
    report["unzoomed_url"] = page.url

    # Exports: each saved where the test reads it.
    for fmt in ["pprof", "json", "svg", "png"]:
        with page.expect_download() as info:
            page.select_option("#export", fmt)
        info.value.save_as(os.path.join(out, "export." + fmt))
    report["exported"] = sorted(os.listdir(out))

    # Comparison: two ranges as a diff flame graph.
    page.goto(base + "/?" + scenario["diff"])
    ready(page)
    report["diff_frames"] = drawn(page, "diff-flamegraph", "diffGraph")
    page.screenshot(path=os.path.join(out, "diff.png"))
    page.goto(base + "/?" + scenario["diff_selectors"])
    ready(page)
    report["diff_selector_frames"] = drawn(page, "diff-flamegraph", "diffGraph")

    # The tag explorer.
    page.goto(base + "/?" + scenario["tags"])
    ready(page)
    report["tags"] = table(page, "#tag-table")
    page.screenshot(path=os.path.join(out, "tags.png"))
    page.click("#tag-table tbody tr:first-child")
    ready(page)
    report["tag_drilldown"] = {"selector": page.input_value("#selector"), "table": table(page, "#top-table")}

    # SQL.
    page.goto(base + "/?view=sql")
    ready(page)
    page.fill("#sql-query", scenario["sql"])
    page.click("#sql-run")
    ready(page)
    report["sql"] = {
        "columns": page.eval_on_selector_all("#sql-table thead th", "ths => ths.map(t => t.textContent)"),
        "rows": page.eval_on_selector_all("#sql-table tbody tr", "rows => rows.map(r => [...r.cells].map(c => c.textContent))"),
    }
    page.screenshot(path=os.path.join(out, "sql.png"))
    report["errors"] = errors
    browser.close()

print(json.dumps(report))
