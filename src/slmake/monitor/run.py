"""One monitor run: read the window and the baseline, analyse, write the outputs. The CLI and the
DVC stage both come through here."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from ..chat_template import resolved
from ..io import read_jsonl
from ..report import load_bench
from .alerts import analyse
from .inputs import MonitorError, read_feedback, read_split, read_window
from .render import write


def served_artifact(window: list[dict], configured: str | None) -> str | None:
    """The configured artifact, else the one most of the window's requests name."""
    if configured:
        return configured
    names = Counter(r.get("artifact") for r in window if r.get("artifact"))
    return names.most_common(1)[0][0] if names else None


def bench_figures(bench_dir: Path, artifact: str | None) -> dict | None:
    """Bench figures of ``target/artifact`` (a bare artifact name is looked up in every target)."""
    if not artifact:
        return None
    if "/" in artifact:
        target, name = artifact.split("/", 1)
        return (load_bench(bench_dir, target) or {}).get(name)
    for path in sorted(Path(bench_dir).glob("*.json")):
        if not path.name.endswith(".details.json"):
            found = (load_bench(bench_dir, path.stem) or {}).get(artifact)
            if found:
                return found
    return None


def bench_answer_labels(outputs_dir: Path, artifact: str | None, label_field: str | None) -> list | None:
    """Labels of the served artifact's own answers on the test split (bench's outputs.jsonl), or None.
    A bare artifact name is looked up in every target's outputs."""
    if not artifact or not label_field:
        return None
    target, _, name = artifact.rpartition("/")
    paths = [Path(outputs_dir) / target / "outputs.jsonl"] if target else sorted(Path(outputs_dir).glob("*/outputs.jsonl"))
    for path in paths:
        rows = [r for r in read_jsonl(path) if r.get("artifact") == name] if path.exists() else []
        if rows:
            labels = [_label_of(r.get("text"), label_field) for r in rows]
            return labels if any(x is not None for x in labels) else None
    return None


def _label_of(text: str | None, label_field: str) -> str | None:
    try:
        value = json.loads(text or "")
    except ValueError:
        return None
    return str(value[label_field]) if isinstance(value, dict) and value.get(label_field) is not None else None


def run_monitor(cfg: dict, data_cfg: dict, out_dir: str | Path, *, data_dir: str | Path = "build/data",
                bench_dir: str | Path = "reports/bench", outputs_dir: str | Path = "build/bench") -> tuple[dict, dict]:
    """Analyse ``cfg['request_log']`` (a `monitor` slice) against the build in data_dir/bench_dir,
    write metrics/report/plots to out_dir; returns (result, context). Raises MonitorError."""
    data_dir, log = Path(data_dir), Path(cfg["request_log"])
    template, label_field = resolved(data_cfg), data_cfg.get("label_field")   # chat_template: as curate rendered it
    window, info = read_window(log, cfg["window"]["last"], cfg["window"]["since"])
    context = {"log": str(log), **info, "baseline": str(data_dir / "train.jsonl"),
               "thresholds": cfg["thresholds"], "unit": cfg["length"]["unit"]}
    if info["lines"] and info["malformed"] == info["lines"]:
        raise MonitorError(f"{log}: none of its {info['lines']} lines is a request record (JSON object per line)")
    train = val = bench = feedback = baseline = None
    context["label_baseline"] = "train split"
    if window:
        train = read_split(data_dir / "train.jsonl", template, label_field)
        val_path = data_dir / "val.jsonl"
        val = read_split(val_path, template, label_field) if val_path.exists() else None
        context["artifact"] = served_artifact(window, cfg["artifact"])
        bench = bench_figures(Path(bench_dir), context["artifact"])
        if cfg["feedback"]:
            feedback = read_feedback(cfg["feedback"], data_cfg)
        if cfg["label_baseline"] == "bench":
            baseline = bench_answer_labels(Path(outputs_dir), context["artifact"], label_field)
            context["label_baseline"] = (f"the artifact's answers on the test split (n={len(baseline)})" if baseline
                                         else "train split (no bench answers of the served artifact)")
    result = analyse(cfg, window, train or {}, val, bench, feedback, data_cfg["response_schema"], label_field,
                     baseline)
    if window and label_field and cfg["label_baseline"] == "bench" and not baseline:
        result["notes"].append(f"no bench answers of {context['artifact'] or 'the served artifact'} under "
                               f"{outputs_dir}: served labels are compared with the train split's true labels, so "
                               "the model's own bias reads as drift (run `dvc repro bench@<target>`)")
    write(result, context, out_dir, window)
    return result, context


__all__ = ["MonitorError", "run_monitor"]
