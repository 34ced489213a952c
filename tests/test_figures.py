"""benchmarks/figures.py: every benchmark records its figures as JSON with date, machine, CPU, commit
and command, and the docs' figures page is rendered from those records (and kept in step with them)."""

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import figures  # noqa: E402

# benchmarks/ modules that are libraries of other benchmarks, not benchmarks themselves
HELPERS = {"figures.py", "ort_int4_posthoc.py"}


def test_record_carries_provenance_and_renders(tmp_path):
    path = figures.record("curate_throughput", {"wall s": 10.25, "records": 100000, "pii": {"email": 3},
                                                "rows": [{"artifact": "gguf_f16", "size MB": 6.33},
                                                         {"artifact": "a|b", "parity": 1.0}]},
                          command="python benchmarks/curate_throughput.py --n 100000", notes="A *note*.",
                          directory=tmp_path)
    assert path == tmp_path / "curate_throughput.json"
    rec = json.loads(path.read_text())
    for key in figures.REQUIRED:
        assert rec[key], key
    assert rec["command"] == "python benchmarks/curate_throughput.py --n 100000"
    assert rec["commit"].split("+")[0] == figures.commit().split("+")[0] != ""
    assert rec["machine"].split()[1].startswith("cores") and rec["cpu"]

    page = figures.render(tmp_path)
    assert page.startswith("# Figures\n")
    assert f"- **measured**: {rec['date']}" in page
    assert f"- **commit**: `{rec['commit']}`" in page
    assert "- **command**: `python benchmarks/curate_throughput.py --n 100000`" in page
    assert "| wall s | 10.25 |" in page and "| records | 100,000 |" in page and "| pii.email | 3 |" in page
    assert "| artifact | size MB | parity |" in page          # columns: the union of the rows' keys, in order
    assert "| gguf_f16 | 6.33 |  |" in page and "| a\\|b |  | 1 |" in page   # a pipe in a cell is escaped
    assert page.rstrip().endswith("A *note*.")
    assert '<a id="curate-throughput"></a>' in page and "(#curate-throughput)" in page


def test_variant_gets_its_own_record_and_order_follows_the_builds(tmp_path):
    figures.record("serve_load", {"req/s": 1.0}, command="x", directory=tmp_path)
    figures.record("pipeline", {"s": 1}, command="x", variant="smollm2_135m_gguf", directory=tmp_path)
    figures.record("pipeline", {"s": 2}, command="x", directory=tmp_path)
    figures.record("pipeline", {"s": 3}, command="x", directory=tmp_path)      # a rerun replaces its record
    names = sorted(p.name for p in tmp_path.glob("*.json"))
    assert names == ["pipeline.json", "pipeline.smollm2_135m_gguf.json", "serve_load.json"]
    assert [r["_file"] for r in figures.load(tmp_path)] == [
        "pipeline.json", "pipeline.smollm2_135m_gguf.json", "serve_load.json"]
    assert json.loads((tmp_path / "pipeline.json").read_text())["figures"] == {"s": 3}
    assert not list(tmp_path.glob(".*"))                                         # no temp file left behind


def test_variant_of_names_the_group_choices_only():
    assert figures.variant_of([]) is None
    assert figures.variant_of(["train.lr=0.001", "model.hf.path=/m"]) is None
    assert figures.variant_of(["model=smollm2_135m_gguf", "model.hf.path=/m", "data=banking77"]) == \
        "banking77-smollm2_135m_gguf"
    assert figures.variant_of(["targets=[cpu,intel_npu]"]) == "cpu-intel_npu"


def test_render_check_fails_on_a_stale_page(tmp_path, capsys):
    recs, page = tmp_path / "recs", tmp_path / "figures.md"
    figures.record("ddp", {"wall ratio": 1.06}, command="python benchmarks/ddp.py", directory=recs)
    assert figures.main(["render", "--check", "--dir", str(recs), "--out", str(page)]) == 1   # no page yet
    assert figures.main(["render", "--dir", str(recs), "--out", str(page)]) == 0
    assert "| wall ratio | 1.06 |" in page.read_text()
    assert figures.main(["render", "--check", "--dir", str(recs), "--out", str(page)]) == 0
    figures.record("ddp", {"wall ratio": 1.10}, command="python benchmarks/ddp.py", directory=recs)
    assert figures.main(["render", "--check", "--dir", str(recs), "--out", str(page)]) == 1
    assert "run `python benchmarks/figures.py render`" in capsys.readouterr().err


def test_a_record_missing_a_field_names_the_file_and_field(tmp_path):
    (tmp_path / "bad.json").write_text(json.dumps({"name": "bad", "figures": {}}))
    with pytest.raises(ValueError, match=r"bad\.json: missing field\(s\) \['title', 'date'"):
        figures.render(tmp_path)
    (tmp_path / "bad.json").write_text("{\n  oops")
    with pytest.raises(ValueError, match=r"bad\.json: not JSON: line 2"):
        figures.render(tmp_path)


def test_the_committed_figures_page_is_rendered_from_the_records():
    assert figures.PAGE.read_text() == figures.render(figures.FIGURES_DIR), \
        "docs/figures.md is stale: run `python benchmarks/figures.py render`"


def test_every_benchmark_records_its_figures():
    scripts = [p for p in sorted((ROOT / "benchmarks").glob("*.py")) if p.name not in HELPERS]
    assert scripts
    missing = [p.name for p in scripts if "record(" not in p.read_text()]
    assert not missing, f"benchmarks that do not call figures.record: {missing}"
