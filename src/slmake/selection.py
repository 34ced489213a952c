"""Which artifact to ship, from validation figures only: the Pareto front and the pick.

A row is one (experiment, artifact) with the figures a decision may use::

    {experiment, artifact, val_exact_match, size_mb, decode_tok_s, delta, delta_low, refused}

``delta`` / ``delta_low`` are the artifact's accuracy minus the fp32 reference's **on the validation
split** and the lower bound of its paired 95 % interval (``rows_from_bench`` fills them from bench's
``val_delta`` / ``val_delta_low``); ``refused`` says the deploy quality gate kept it out.

Nothing here reads a test-split figure: every function first projects a row onto ``ROW_KEYS``, so a
row may carry ``exact_match`` (the test split's accuracy) and still no decision can depend on it
(tests/test_selection.py guards that). The test split is scored for the pick and reported once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

ROW_KEYS = ("experiment", "artifact", "val_exact_match", "size_mb", "decode_tok_s", "delta", "delta_low",
            "refused")
CONSTRAINTS = ("max_size_mb", "min_decode_tok_s", "max_drop")


@dataclass(frozen=True)
class Pick:
    """``row``: the chosen row (the caller's own dict) or None; ``why``: one sentence saying why it
    won (or why nothing could); ``excluded``: one line per row a constraint ruled out."""
    row: dict | None
    why: str
    excluded: list[str] = field(default_factory=list)


def _view(row: dict) -> dict:
    """The row as a decision may see it: ROW_KEYS only (never a test-split key)."""
    return {k: row.get(k) for k in ROW_KEYS}


def _num(v) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def label(row: dict) -> str:
    v = _view(row)
    return f"{v['experiment']}:{v['artifact']}" if v["experiment"] else str(v["artifact"])


def _key(v: dict) -> tuple:
    """Sort key, best first: higher val accuracy, then smaller, then faster, then by name (stable)."""
    acc, size, tps = _num(v["val_exact_match"]), _num(v["size_mb"]), _num(v["decode_tok_s"])
    return (-(acc if acc is not None else -math.inf), size if size is not None else math.inf,
            -(tps if tps is not None else -math.inf), str(v["experiment"] or ""), str(v["artifact"]))


def _dominates(a: dict, b: dict) -> bool:
    """a is at least as good as b on val accuracy (max), size (min) and decode tok/s (max), and
    better on one. A missing figure counts as the worst value."""
    def fig(v, k, sign):
        x = _num(v[k])
        return sign * x if x is not None else -math.inf
    axes = (("val_exact_match", 1), ("size_mb", -1), ("decode_tok_s", 1))
    av = [fig(a, k, s) for k, s in axes]
    bv = [fig(b, k, s) for k, s in axes]
    return all(x >= y for x, y in zip(av, bv)) and any(x > y for x, y in zip(av, bv))


def pareto(rows: list[dict]) -> list[dict]:
    """Copies of ``rows`` with ``pareto``: True on the non-dominated ones (val accuracy max, size MB
    min, decode tok/s max). A row without a val accuracy is never on the front."""
    views = [_view(r) for r in rows]
    out = []
    for r, v in zip(rows, views):
        front = _num(v["val_exact_match"]) is not None and not any(
            _dominates(w, v) for w in views if w is not v and _num(w["val_exact_match"]) is not None)
        out.append({**r, "pareto": front})
    return out


def _why_not(v: dict, constraints: dict) -> str | None:
    """Why a row is not allowed under ``constraints``, or None when it is."""
    if v["refused"]:
        return "refused by the quality gate (bench.max_drop)"
    if _num(v["val_exact_match"]) is None:
        return "no validation accuracy"
    size, tps, low = _num(v["size_mb"]), _num(v["decode_tok_s"]), _num(v["delta_low"])
    cap = constraints.get("max_size_mb")
    if cap is not None and (size is None or size > cap):
        return f"size {size if size is not None else 'unknown'} MB > max_size_mb {cap}"
    floor = constraints.get("min_decode_tok_s")
    if floor is not None and (tps is None or tps < floor):
        return f"decode {tps if tps is not None else 'unknown'} tok/s < min_decode_tok_s {floor}"
    drop = constraints.get("max_drop")
    if drop is not None and (low is None or low < -drop - 1e-9):
        return (f"val Δ lower bound {low:+.3f} < -max_drop {-drop:+.3f}" if low is not None
                else "no val Δ interval (max_drop set)")
    return None


def pick(rows: list[dict], constraints: dict | None = None) -> Pick:
    """The best row allowed by ``constraints`` (max_size_mb, min_decode_tok_s, max_drop: each None =
    no limit), ranked by val accuracy, then smaller size, then faster decode; refused rows never
    qualify. No row allowed: Pick(None, ...) whose ``excluded`` says why each was ruled out."""
    constraints = {k: v for k, v in (constraints or {}).items() if v is not None}
    unknown = sorted(set(constraints) - set(CONSTRAINTS))
    if unknown:
        raise ValueError(f"unknown selection constraint(s) {unknown}; allowed: {list(CONSTRAINTS)}")
    allowed, excluded = [], []
    for r in rows:
        v = _view(r)
        why = _why_not(v, constraints)
        if why:
            excluded.append(f"{label(r)}: {why}")
        else:
            allowed.append((r, v))
    said = ", ".join(f"{k} {v}" for k, v in sorted(constraints.items())) or "no constraints"
    if not allowed:
        why = f"no artifact meets the constraints ({said})" if constraints else "no artifact qualifies"
        return Pick(None, f"{why} out of {len(rows)}", excluded)
    best, v = min(allowed, key=lambda rv: _key(rv[1]))
    tps = _num(v["decode_tok_s"])
    why = (f"highest validation accuracy {_num(v['val_exact_match']):.3f} of {len(allowed)} allowed "
           f"({said}); {v['size_mb']} MB, {tps if tps is not None else '?'} tok/s")
    return Pick(best, why, excluded)


def rows_from_bench(figures: dict[str, dict], experiment: str | None = None,
                    refused: set[str] | frozenset = frozenset()) -> list[dict]:
    """Selection rows from one target's bench figures ({artifact: merged metrics + details}, as
    report.load_bench gives them): the validation figures only."""
    rows = []
    for name, f in sorted(figures.items()):
        delta, ci, low = _num(f.get("val_delta")), _num(f.get("val_delta_ci95")), _num(f.get("val_delta_low"))
        if low is None and delta is not None and ci is not None:
            low = round(delta - ci, 4)
        rows.append({"experiment": experiment, "artifact": name, "val_exact_match": f.get("val_exact_match"),
                     "size_mb": f.get("size_mb"), "decode_tok_s": f.get("decode_tok_s"), "delta": delta,
                     "delta_low": low, "refused": name in refused})
    return rows
