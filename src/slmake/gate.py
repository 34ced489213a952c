"""The quality gate on what ships: an artifact is packaged only when what compiling it cost is bounded.

Bench measures each artifact's accuracy minus the fp32 reference's on the same prompts (``delta``)
with the half-width of its paired 95 % interval (``delta_ci95``, metrics.paired_delta). The gate
passes an artifact when the interval's lower bound ``delta - delta_ci95`` stays >= ``-bench.max_drop``:
with 95 % confidence it lost at most ``max_drop`` (0.02 = 2 points). A drop the rows cannot resolve
is not a pass: on few rows the interval is wide, and only a near-identical artifact passes.

The gate reads the **validation** split's interval (``val_delta`` / ``val_delta_ci95``), so that what
ships — and what ``slmake serve`` picks among — is decided without the test split (issue 19); a build
whose curate wrote no validation rows is gated on the test split's interval, and the verdict says so.
An artifact bench could not run here (``skipped``: no hardware) is packaged unmeasured, the verdict
saying so; one whose bench ``failed`` (the runtime crashed on it) is refused.
"""

from __future__ import annotations

DEFAULT_MAX_DROP = 0.02
# the split whose interval the gate reads, first that bench measured: (split, delta key, half-width key)
SPLITS = (("val", "val_delta", "val_delta_ci95"), ("test", "delta", "delta_ci95"))


def _num(v):
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def verdict(figures: dict, max_drop: float | None) -> dict:
    """One artifact's verdict from its bench figures (metrics merged with details):
    {"verdict": "pass" | "refused" | "unmeasured", "split", "delta", "delta_ci95", "delta_low",
    "max_drop", "reason"}. ``max_drop`` None: no gate (every measured artifact passes)."""
    out = {"max_drop": max_drop}
    if figures.get("status") == "failed":
        return {**out, "verdict": "refused", "split": None, "delta": None, "delta_ci95": None, "delta_low": None,
                "reason": f"bench failed on it: {figures.get('reason') or 'no reason given'}"}
    measured = [(split, _num(figures.get(d)), _num(figures.get(c))) for split, d, c in SPLITS
                if _num(figures.get(d)) is not None]
    if not measured:
        return {**out, "verdict": "unmeasured", "split": None, "delta": None, "delta_ci95": None,
                "delta_low": None, "reason": f"not benchmarked here ({figures.get('status') or 'no figures'}"
                                             f"{': ' + figures['reason'] if figures.get('reason') else ''})"}
    split, delta, ci = measured[0]
    ci = ci or 0.0
    low = round(delta - ci, 4)
    out.update({"split": split, "delta": delta, "delta_ci95": ci, "delta_low": low})
    if max_drop is None:
        return {**out, "verdict": "pass", "reason": "no gate (bench.max_drop: null)"}
    if low < -max_drop:
        return {**out, "verdict": "refused",
                "reason": f"{split} Δ vs fp32 {delta:+.3f} ±{ci:.3f}: lower bound {low:+.3f} < -{max_drop:.3f} "
                          f"(bench.max_drop)"}
    return {**out, "verdict": "pass",
            "reason": f"{split} Δ vs fp32 {delta:+.3f} ±{ci:.3f}: lower bound {low:+.3f} >= -{max_drop:.3f}"}


def gate(figures: dict[str, dict], max_drop: float | None) -> dict[str, dict]:
    """{artifact: verdict} for one target's bench figures ({artifact: metrics merged with details})."""
    return {name: verdict(f, max_drop) for name, f in sorted(figures.items())}


def refused(verdicts: dict[str, dict]) -> dict[str, dict]:
    return {n: v for n, v in verdicts.items() if v["verdict"] == "refused"}
