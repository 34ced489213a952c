"""A trial's figures as selection rows (slmake.selection): validation-split figures only.

Bench writes, per artifact, the validation split's exact match (`val_exact_match`, and `val_delta`
vs fp32) beside the test split's (`exact_match`). Every search decision (Optuna's objective, the
Pareto front, the pick) is made on rows that selection.rows_from_bench builds from validation
figures, size and speed; the test split is read once, for the pick, by ``pick_test_figure`` after
the pick is made (tests/test_search.py permutes the test figures and gets the same decisions).
"""

from __future__ import annotations

from ..gate import gate, refused
from ..selection import rows_from_bench

OBJECTIVES = ("val_exact_match", "size_mb", "decode_tok_s")


def merged_figures(files: dict[str, dict], target: str) -> dict[str, dict]:
    """{artifact: figures} of one target from its parsed bench files ({"details": ..., "metrics": ...}:
    reports/bench/<target>.details.json and <target>.json), the metrics over the details, as
    report.load_bench merges them."""
    merged: dict[str, dict] = {}
    for part in ("details", "metrics"):
        data = files.get(part) or {}
        data = data.get(target, data) if isinstance(data, dict) else {}
        for name, figures in data.items():
            if isinstance(figures, dict):
                merged.setdefault(name, {}).update(figures)
    return merged


def trial_rows(experiment: str, bench: dict[str, dict], max_drop: float | None = None) -> list[dict]:
    """One row per benchmarked artifact of one trial. ``bench``: {target: {"details": ..., "metrics":
    ...}}; ``max_drop``: the trial's bench.max_drop, so a row is refused exactly when the trial's
    deploy refused its artifact (slmake.gate). An artifact bench skipped (no validation figure) has no row."""
    rows = []
    for target in sorted(bench):
        figures = merged_figures(bench[target], target)
        for row in rows_from_bench(figures, experiment, set(refused(gate(figures, max_drop)))):
            if row["val_exact_match"] is not None:
                rows.append({**row, "target": target})
    return rows


def objective_values(row: dict | None) -> dict | None:
    """A trial's objective figures: those of the artifact picked among its own rows."""
    return None if row is None else {k: row[k] for k in OBJECTIVES}


def pick_test_figure(bench: dict[str, dict], target: str, artifact: str) -> float | None:
    """The test split's exact match of one artifact: read for the pick only, after it is made."""
    return merged_figures(bench.get(target) or {}, target).get(artifact, {}).get("exact_match")
