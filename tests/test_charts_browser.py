"""The pictures in a real browser, with the network off: headless Chromium (Debian's `chromium`,
driven by playwright without its own browser download) opens the page `dvc plots show` writes, the
page `dvc plots diff` writes and report.md rendered to HTML. Every plot must have drawn, nothing
may be requested from outside the files, and the console must stay free of errors. Screenshots are
kept under the test's tmp dir (their paths are printed and recorded as test properties)."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (Debian: apt-get install chromium; "
                                                  ".ci/run installs it)"),
]
# the plot data the default build committed (reports/ are DVC outs kept in git)
PLOT_FILES = ["reports/plots/artifacts.csv", "reports/train/plots/metrics", "reports/monitor/plots"]

# per plot div: did Vega draw? (a canvas with painted pixels, or an SVG with marks)
DRAWN = """() => [...document.querySelectorAll('body > div[id]')].map(d => {
  const c = d.querySelector('canvas.marks'), s = d.querySelector('svg.marks');
  let painted = 0;
  if (c && c.width && c.height) {
    const px = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    for (let i = 0; i < px.length; i += 4)
      if (px[i + 3] > 0 && px[i] + px[i + 1] + px[i + 2] < 600) painted++;
  } else if (s) painted = s.querySelectorAll('path, line, rect, text').length;
  return {id: d.id, painted};
})"""
IMAGES = """() => [...document.images].map(i => ({src: i.getAttribute('src'),
                                               ok: i.complete && i.naturalWidth > 0, w: i.naturalWidth}))"""


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM)
        yield b
        b.close()


def open_offline(browser, url: str, shot: Path, ready: str | None = None) -> tuple:
    """Open ``url`` with the network off; return (page, problems). Any request that is not a local
    file is aborted and counted, as are failed requests, console errors and uncaught exceptions."""
    ctx = browser.new_context(offline=True, viewport={"width": 1280, "height": 900})
    problems: list[str] = []
    def route(r):
        if r.request.url.startswith(("file:", "data:")):
            return r.continue_()
        problems.append(f"network request: {r.request.url}")
        return r.abort()

    ctx.route("**/*", route)
    page = ctx.new_page()
    page.on("console", lambda m: m.type == "error" and problems.append(f"console error: {m.text}"))
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: problems.append(f"failed: {r.url} {r.failure}"))
    page.goto(url, wait_until="load")
    if ready:
        page.wait_for_function(ready, timeout=60_000)
    page.screenshot(path=str(shot), full_page=True)
    print(f"screenshot: {shot}")
    return page, problems


def _dvc(args: str, cwd: Path) -> None:
    res = subprocess.run([sys.executable, "-m", "dvc", *args.split()], cwd=cwd, capture_output=True,
                         text=True)
    assert res.returncode == 0, f"dvc {args}: {res.stdout[-2000:]}{res.stderr[-2000:]}"


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """dvc.yaml, params.yaml, .dvc/config, the offline page and the build's plot files in a git repo."""
    if not (ROOT / "reports/plots/artifacts.csv").exists():
        pytest.skip("no reports/ from the default build to plot")
    work = tmp_path_factory.mktemp("plots_project")
    for item in ["dvc.yaml", "params.yaml", ".dvc/config", "third_party/vega/dvc_plots.html", *PLOT_FILES]:
        src, dst = ROOT / item, work / item
        dst.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if src.is_dir() else shutil.copy)(src, dst)
    # the default build has no served traffic (header-only monitor CSVs: DVC leaves such a plot empty);
    # a window's worth here, so that every plot on the page has data to draw
    (work / "reports/monitor/plots/input_length.csv").write_text(
        "bin,range,train,live\n1,≤ 9,0.3,0.1\n2,9–14,0.4,0.3\n3,> 14,0.3,0.6\n", encoding="utf-8")
    (work / "reports/monitor/plots/label_share.csv").write_text(
        "label,train,live\nhardware,0.5,0.3\nnetwork,0.5,0.7\n", encoding="utf-8")
    subprocess.run("git init -q && git add -A && git -c user.email=t@t -c user.name=t commit -qm plots",
                   cwd=work, shell=True, check=True)
    return work


def _plot_ids() -> set[str]:
    """The named top-level plots of dvc.yaml (their div ids in DVC's page)."""
    import yaml

    plots = yaml.safe_load((ROOT / "dvc.yaml").read_text()).get("plots", [])
    return {k for p in plots if isinstance(p, dict) for k in p if "/" not in k}


def _assert_page_drew(page, problems, expect_ids: set[str]) -> None:
    drawn = page.evaluate(DRAWN)
    assert len(drawn) >= len(expect_ids) and expect_ids <= {d["id"] for d in drawn}, drawn
    blank = [d["id"] for d in drawn if d["painted"] < 50]
    assert not blank, f"plots that did not draw: {blank}"
    assert not problems, problems


def test_dvc_plots_show_and_diff_render_offline(browser, project, record_property):
    ids = _plot_ids()
    ready = f"() => document.querySelectorAll('canvas.marks, svg.marks').length >= {len(ids)}"
    _dvc("plots show -o show", project)
    page = (project / "show" / "index.html").read_text()
    assert "cdn.jsdelivr.net" not in page and "{plot_divs}" not in page and "var spec = {};" not in page
    shot = project / "dvc_plots_show.png"
    p, problems = open_offline(browser, (project / "show" / "index.html").as_uri(), shot, ready)
    _assert_page_drew(p, problems, ids)
    record_property("screenshot_plots_show", str(shot))

    # `dvc plots diff`: the workspace against the commit, two revisions in one chart
    csv = project / "reports/plots/artifacts.csv"
    lines = csv.read_text().splitlines()
    head, first = lines[0].split(","), lines[1].split(",")
    first[head.index("exact_match")] = str(round(float(first[head.index("exact_match")]) + 0.05, 3))
    csv.write_text("\n".join([lines[0], ",".join(first), *lines[2:]]) + "\n")
    _dvc("plots diff HEAD -o diff", project)
    shot = project / "dvc_plots_diff.png"
    p, problems = open_offline(browser, (project / "diff" / "index.html").as_uri(), shot, ready)
    _assert_page_drew(p, problems, ids)
    page = (project / "diff" / "index.html").read_text()
    assert '"rev": "HEAD"' in page and '"rev": "workspace"' in page
    record_property("screenshot_plots_diff", str(shot))


def test_report_html_shows_its_charts_offline(browser, tmp_path, record_property):
    """report.md with the charts drawn by this code from the build's figures, as HTML."""
    from markdown_it import MarkdownIt

    from slmake.charts import report_charts
    from slmake.report import collect

    if not (ROOT / "reports/report.md").exists():
        pytest.skip("no reports/ from the default build")
    bench = ROOT / "reports/bench"
    targets = sorted(p.stem for p in bench.glob("*.json") if not p.name.endswith(".details.json"))
    rows = collect(bench, targets)
    reference = json.loads((ROOT / "reports/evaluate.json").read_text())["finetuned"]["exact_match"]
    section = report_charts(rows, reference, ROOT / "reports/train/plots/metrics", tmp_path / "charts")
    md = (ROOT / "reports/report.md").read_text()
    if "](charts/accuracy_size.svg)" not in md:     # a report from before the charts: add their section
        md += "\n" + section
    body = MarkdownIt("commonmark").enable("table").render(md)
    (tmp_path / "report.html").write_text(f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>report"
                                          f"</title></head><body>{body}</body></html>", encoding="utf-8")
    shot = tmp_path / "report.png"
    page, problems = open_offline(browser, (tmp_path / "report.html").as_uri(), shot,
                                  "() => [...document.images].every(i => i.complete)")
    images = page.evaluate(IMAGES)
    assert {i["src"] for i in images} >= {"charts/accuracy_size.svg", "charts/delta.svg", "charts/loss.svg"}
    assert all(i["ok"] and i["w"] >= 300 for i in images), images
    assert not problems, problems
    record_property("screenshot_report", str(shot))
