"""What `slmake search` leaves: reports/search/<name>.md (trials, Pareto table, the pick),
reports/search/<name>.csv (every trial x artifact, the non-dominated marked) and
reports/search/dvc.yaml (its `dvc plots show` definitions)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import yaml

from ..io import write_text_atomic

COLUMNS = ("experiment", "target", "artifact", "val_exact_match", "size_mb", "decode_tok_s", "delta", "delta_low",
           "refused", "pareto", "pick")


def _cell(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else ""
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _sorted(rows: list[dict]) -> list[dict]:
    return sorted(rows, key=lambda r: (-(r.get("val_exact_match") or 0), r.get("size_mb") or 0, r["experiment"],
                                       r["artifact"]))


def csv_text(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in _sorted(rows):
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in COLUMNS})
    return buf.getvalue()


def pareto_table(rows: list[dict]) -> str:
    """Markdown: every trial x artifact, best validation accuracy first; ★ = non-dominated."""
    head = "| | experiment | artifact | val exact match | size MB | decode tok/s | val Δ (low) |\n|---|---|---|---|---|---|---|\n"
    lines = []
    for r in _sorted(rows):
        mark = ("★" if r.get("pareto") else "") + (" ← pick" if r.get("pick") else "")
        delta = "–" if r.get("delta") is None else f"{r['delta']:+.3f} ({_cell(r.get('delta_low'))})"
        lines.append(f"| {mark} | {r['experiment']} | {r['target']}/{r['artifact']} | {_cell(r.get('val_exact_match'))} "
                     f"| {_cell(r.get('size_mb'))} | {_cell(r.get('decode_tok_s'))} | {delta} |")
    return head + "\n".join(lines) + "\n"


def trials_table(records: list[dict]) -> str:
    head = "| trial | experiment | overrides | status | objective | stages run / from cache | s | reason |\n|---|---|---|---|---|---|---|---|\n"
    lines = []
    for r in records:
        values = r.get("values") or {}
        obj = ", ".join(f"{k} {_cell(v)}" for k, v in values.items()) or "–"
        stages = f"{len(r.get('stages_run') or [])} / {len(r.get('stages_cached') or [])}" if "stages_run" in r else "–"
        lines.append(f"| {r['trial']} | {r['experiment']} | `{' '.join(r['overrides'])}` | {r['status']} | {obj} "
                     f"| {stages} | {_cell(r.get('seconds'))} | {r.get('reason') or ''} |")
    return head + "\n".join(lines) + "\n"


def plots_yaml(folder: Path) -> str:
    """dvc.yaml plot definitions for every <search>.csv in reports/search (paths relative to it)."""
    plots = []
    for f in sorted(Path(folder).glob("*.csv")):
        name = f.stem
        plots.append({f"search_{name}_accuracy_vs_size": {
            "template": "scatter", "x": "size_mb", "y": {f.name: "val_exact_match"},
            "title": f"Search {name}: validation exact match vs size MB (every trial x artifact)"}})
        plots.append({f"search_{name}_accuracy_vs_speed": {
            "template": "scatter", "x": "decode_tok_s", "y": {f.name: "val_exact_match"},
            "title": f"Search {name}: validation exact match vs decode tok/s"}})
    return ("# written by `slmake search`: the Pareto plots of each search (`dvc plots show`)\n"
            + yaml.safe_dump({"plots": plots}, sort_keys=False))


def write(folder: Path, name: str, *, records: list[dict], rows: list[dict], summary: list[str]) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_text_atomic(folder / f"{name}.csv", csv_text(rows))
    md = (f"# Search `{name}`\n\n" + "\n".join(summary) + "\n\n## Pareto front\n\nEvery trial × artifact on "
          "validation exact match (max), size MB (min) and decode tok/s (max); ★ = non-dominated. Selection "
          "reads the validation split only; the test split is reported once, for the pick, above.\n\n"
          + pareto_table(rows) + "\n## Trials\n\n" + trials_table(records))
    write_text_atomic(folder / f"{name}.md", md)
    write_text_atomic(folder / "dvc.yaml", plots_yaml(folder))
    return folder / f"{name}.md"
