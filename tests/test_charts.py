"""Static charts (slmake.charts) and the offline `dvc plots` page (third_party/vega): what they draw,
that the same data gives the same bytes, and that the page DVC is told to use loads nothing from a
network. The page in a real browser: tests/test_charts_browser.py."""

import configparser
import os
import re
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from slmake import charts

ROOT = Path(__file__).resolve().parents[1]
ROWS = [
    {"target": "cpu", "artifact": "gguf_f16", "status": "ok", "size_mb": 6.3, "exact_match": 0.38,
     "decode_tok_s": 6894.0, "delta": 0.015, "delta_ci95": 0.01},
    {"target": "cpu", "artifact": "gguf_q4_k_m", "status": "ok", "size_mb": 1.97, "exact_match": 0.37,
     "decode_tok_s": 8240.3, "delta": 0.005, "delta_ci95": 0.026},
    {"target": "cpu", "artifact": "onnx_int4", "status": "ok", "size_mb": 3.6, "exact_match": 0.30,
     "decode_tok_s": None, "delta": -0.065, "delta_ci95": 0.02},
    {"target": "cuda", "artifact": "-", "status": "missing", "reason": "reports/bench/cuda.json not found"},
]


def _texts(svg: str) -> list[str]:
    """The strings a matplotlib SVG draws (as glyph paths, each string preceded by a comment)."""
    return re.findall(r"<!-- (.*?) -->", svg, re.S)


def _train_tsv(root: Path) -> Path:
    for split, rows in (("train", [(10, 1.1), (20, 0.5), (30, 0.3)]), ("val", [(30, 0.35)])):
        (root / split).mkdir(parents=True)
        (root / split / "loss.tsv").write_text("step\tloss\n" + "".join(f"{s}\t{v}\n" for s, v in rows))
    return root


def test_pareto_front_keeps_only_points_nothing_beats():
    pts = [(6.3, 0.365), (1.97, 0.37), (3.4, 0.365), (3.6, 0.37), (8.0, 0.5), (1.97, 0.2)]
    assert charts.pareto(pts) == [(1.97, 0.37), (8.0, 0.5)]
    assert charts.pareto([]) == []


def test_accuracy_size_labels_every_measured_artifact_with_its_speed():
    svg = charts.accuracy_size(ROWS, reference=0.365, highlight="cpu/gguf_q4_k_m")
    texts = _texts(svg)
    assert svg.startswith("<?xml") and "<svg" in svg
    for name in ("cpu/gguf_f16", "cpu/gguf_q4_k_m", "cpu/onnx_int4"):
        assert any(t.startswith(name) for t in texts), (name, texts)
    assert any("8,240 tok/s" in t for t in texts)
    assert not any("cuda" in t for t in texts)          # not benchmarked: not a point
    assert "decode tok/s" in texts and "fine-tuned fp32: 0.365" in texts and "this artifact" in texts
    assert "Pareto front (smaller and at least as accurate)" in texts


def test_delta_shows_each_interval_and_marks_a_real_loss():
    svg = charts.delta(ROWS)
    texts = _texts(svg)
    assert "+0.005 ±0.026" in texts and "-0.065 ±0.020" in texts
    assert "cpu/onnx_int4" in texts and not any("cuda" in t for t in texts)
    assert charts.BAD in svg          # -0.065 ± 0.02 lies wholly below 0: drawn as a loss


def test_loss_curves_from_dvclive_files(tmp_path):
    texts = _texts(charts.loss_curves(_train_tsv(tmp_path / "metrics")))
    assert {"train", "val", "step", "loss"} <= set(texts)
    empty = _texts(charts.loss_curves(tmp_path / "nothing"))
    assert any(t.startswith("no loss curves in") for t in empty)
    bad = tmp_path / "bad" / "train"
    bad.mkdir(parents=True)
    (bad / "loss.tsv").write_text("step\tloss\n10\tnan-ish\n")
    with pytest.raises(ValueError, match=r"bad/train/loss.tsv: expected the columns 'step' and 'loss'"):
        charts.loss_curves(tmp_path / "bad")


def test_report_charts_write_the_files_report_md_links(tmp_path):
    section = charts.report_charts(ROWS, 0.365, _train_tsv(tmp_path / "metrics"), tmp_path / "charts")
    for name in charts.REPORT_CHARTS:
        assert (tmp_path / "charts" / name).read_text().startswith("<?xml")
        assert f"](charts/{name})" in section
    # nothing benchmarked: the files still exist (they are DVC outs), saying so
    section = charts.report_charts([ROWS[-1]], None, tmp_path / "none", tmp_path / "empty")
    assert "no benchmarked artifact" in _texts((tmp_path / "empty" / "accuracy_size.svg").read_text())


def _draw_all(tmp: Path) -> dict[str, str]:
    metrics = tmp / "metrics"
    if not metrics.exists():
        _train_tsv(metrics)
    t0 = datetime(2026, 11, 28, 9, tzinfo=timezone.utc)
    series = [(t0 + timedelta(minutes=i), 10.0 + i % 7, 2.0, 8.0 + i % 5) for i in range(40)]
    return {"accuracy_size": charts.accuracy_size(ROWS, 0.365, "cpu/gguf_f16"), "delta": charts.delta(ROWS),
            "loss": charts.loss_curves(metrics), "latency": charts.latency(series, 12.0, 3.0),
            "labels": charts.label_shares({"a": {"baseline": 0.5, "live": 0.2},
                                           "b": {"baseline": 0.5, "live": 0.8}}, "train split"),
            "input": charts.input_length([{"range": "≤ 5", "train": 0.5, "live": 0.1},
                                          {"range": "> 5", "train": 0.5, "live": 0.9}], 0.88, "words")}


@pytest.mark.slow
def test_same_data_same_bytes_in_any_process_whatever_the_users_matplotlibrc(tmp_path):
    first = _draw_all(tmp_path)
    assert first == _draw_all(tmp_path)
    for svg in first.values():
        assert "<dc:date>" not in svg and "<text" not in svg      # no build date; glyphs as paths
    # a fresh interpreter, another hash seed, a matplotlibrc that changes fonts, sizes and the id salt
    rc = tmp_path / "mplconfig"
    rc.mkdir()
    (rc / "matplotlibrc").write_text("font.size: 20\nfont.family: serif\nsvg.hashsalt: other\n"
                                     "svg.fonttype: none\naxes.grid: False\n")
    code = ("import json, sys; sys.path.insert(0, sys.argv[1]); from test_charts import _draw_all; "
            "from pathlib import Path; print(json.dumps(_draw_all(Path(sys.argv[2]))))")
    env = {**os.environ, "MPLCONFIGDIR": str(rc), "PYTHONHASHSEED": "123"}
    out = subprocess.run([sys.executable, "-c", code, str(Path(__file__).parent), str(tmp_path)], env=env,
                         capture_output=True, text=True, check=True).stdout
    import json

    assert json.loads(out) == first


def test_text_uses_matplotlibs_own_font_not_a_system_one():
    import matplotlib
    from matplotlib import font_manager

    with matplotlib.rc_context(charts.RC):
        path = font_manager.findfont(font_manager.FontProperties(family=charts.RC["font.family"]))
    assert Path(path).resolve().is_relative_to(Path(matplotlib.get_data_path()).resolve()), path


def test_importing_charts_does_not_load_matplotlib():
    code = ("import sys; import slmake.charts, slmake.deploy, slmake.monitor.render; "
            "print('matplotlib' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_monitor_charts_draw_what_has_data_and_drop_stale_ones(tmp_path):
    result = {"metrics": {"input_length_psi": 0.4, "latency_bench_ms": 12.0},
              "tables": {"input_length": [{"range": "≤ 5", "train": 0.5, "live": 0.1},
                                          {"range": "> 5", "train": 0.5, "live": 0.9}],
                         "labels": {"hardware": {"baseline": 0.6, "live": 0.3},
                                    "network": {"baseline": 0.4, "live": 0.7}}}}
    context = {"unit": "words", "label_baseline": "train split", "thresholds": {"latency_p95_ratio": 3.0}}
    window = [{"ts": f"2026-11-28T09:{i:02d}:00.000Z", "latency_ms": 10 + i, "ttft_ms": 2,
               "service_ms": 9 + i} for i in range(30)]
    window.append({"ts": "not a time", "latency_ms": 5})       # skipped, not fatal
    section = charts.monitor_charts(result, context, window, tmp_path / "plots")
    for name in charts.MONITOR_CHARTS:
        assert f"](plots/{name})" in section
    texts = _texts((tmp_path / "plots" / "latency.svg").read_text())
    assert {"Latency over time", "bench: 12.0 ms", "service time p95 alert: 3 × bench", "service time",
            "TTFT", "request latency"} <= set(texts)
    assert "Input length drift (PSI 0.400)" in _texts((tmp_path / "plots" / "input_length.svg").read_text())
    # a window without traffic: no section, and no chart left from the earlier window
    assert charts.monitor_charts({"metrics": {}, "tables": {}}, context, [], tmp_path / "plots") == ""
    assert not any((tmp_path / "plots" / name).exists() for name in charts.MONITOR_CHARTS)


def test_model_card_links_the_chart_deploy_draws():
    from slmake.deploy import _accuracy_size_chart

    figures = {r["artifact"]: {k: r[k] for k in ("size_mb", "exact_match", "decode_tok_s")} for r in ROWS[:3]}
    svg = _accuracy_size_chart("cpu", figures, {"gguf_f16": {"status": "ok"}}, "gguf_f16")
    assert "this artifact" in _texts(svg)
    assert _accuracy_size_chart("cpu", {}, {}, "gguf_f16") is None


# ---------------------------------------------------------------- the offline dvc plots page

TEMPLATE = ROOT / "third_party" / "vega" / "dvc_plots.html"


def test_dvc_config_points_at_the_offline_page():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / ".dvc" / "config")
    # DVC resolves a relative plots.html_template against .dvc/ (dvc/commands/plots.py)
    assert (ROOT / ".dvc" / cfg["plots"]["html_template"]).resolve() == TEMPLATE.resolve()


def test_offline_page_inlines_the_libraries_dvc_would_fetch():
    from dvc_render.vega import VegaRenderer

    page = TEMPLATE.read_text(encoding="utf-8")
    assert "{plot_divs}" in page
    assert "{scripts}" not in page       # DVC puts its CDN <script src=...> tags there
    assert not re.search(r"<script[^>]*\bsrc=", page) and "<link" not in page
    cdn = re.findall(r"npm/(vega(?:-lite|-embed)?)@([\d.]+)", VegaRenderer.SCRIPTS)
    assert len(cdn) == 3
    for name, version in cdn:            # the versions DVC's own page loads, so charts render alike
        assert f"/* {name}@{version} (BSD-3-Clause) */" in page, (name, version)
        lic = (TEMPLATE.parent / f"LICENSE-{name}").read_text()
        assert "Redistribution and use in source and binary forms" in lic


def test_offline_page_is_what_the_builder_makes_from_the_npm_tarballs():
    """The pins in build_template.py are the page's versions (rebuilding needs npm: not run here)."""
    sys.path.insert(0, str(TEMPLATE.parent))
    try:
        import build_template
    finally:
        sys.path.pop(0)
    page = TEMPLATE.read_text(encoding="utf-8")
    for name, (version, integrity) in build_template.PINS.items():
        assert f"/* {name}@{version} (BSD-3-Clause) */" in page
        assert integrity.startswith("sha512-")
    assert "sourceMappingURL" not in page
