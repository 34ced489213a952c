"""Monitor's outputs: metrics JSON (numbers only, so `dvc exp show` shows them), the CSVs behind
`dvc plots`, and a Markdown report a person reads."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from ..charts import monitor_charts  # matplotlib loads only when a chart has data
from ..io import write_json_atomic, write_text_atomic
from .alerts import reason


def _csv(rows: list[dict], fields: list[str]) -> str:
    out = io.StringIO()
    w = csv.DictWriter(out, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return out.getvalue()


def _bar(share: float, width: int = 20) -> str:
    return "█" * round(share * width)


def _with_p(m: dict, key: str, p_key: str) -> str | None:
    return None if m.get(key) is None else f"{m[key]} ({m.get(p_key, '–')})"


def markdown(result: dict, context: dict) -> str:
    m, t = result["metrics"], result["tables"]
    out = io.StringIO()
    out.write("# slmake monitor\n\n")
    out.write(f"Request log: `{context['log']}` ({context.get('files', 0)} file(s), {m['requests']} requests in the "
              f"window, {context.get('malformed', 0)} unreadable lines); served artifact: "
              f"`{context.get('artifact') or '?'}`; baseline: `{context['baseline']}`.\n\n")
    if result["alerts"]:
        out.write(f"**{reason(result['alerts'])}**\n\n")
    elif m["requests"]:
        out.write("**No threshold crossed.**\n\n")
    for note in result["notes"]:
        out.write(f"- {note}\n")
    if result["notes"]:
        out.write("\n")
    if not m["requests"]:
        return out.getvalue()
    th = context["thresholds"]
    out.write("| check | live | baseline | threshold |\n|---|---|---|---|\n")
    rows = [
        ("input length PSI (p)", _with_p(m, "input_length_psi", "input_length_p_value"),
         f"median {m.get('input_length_median_train', '–')} → {m.get('input_length_median_live', '–')}",
         f"> {th['input_length_psi']}, p < {th['drift_p_value']}"),
        ("unseen words", m.get("unseen_word_share"), f"{m.get('unseen_word_share_val', '–')} (val split)",
         f"+{th['unseen_words_increase']}"),
        ("label PSI (p)", _with_p(m, "label_psi", "label_p_value"), context["label_baseline"],
         f"> {th['label_psi']}, p < {th['drift_p_value']}"),
        ("largest label share change (p)", _with_p(m, "label_max_share_change", "label_share_p_value"),
         context["label_baseline"], f"> {th['label_share_change']}, p < {th['drift_p_value']}"),
        ("invalid outputs", m.get("invalid_rate"), "0", f"> {th['invalid_rate']}"),
        ("server errors", m.get("server_error_rate"), "0", f"> {th['server_error_rate']}"),
        ("service time p50 / p95 ms" if "service_p95_ms" in m else "latency p50 / p95 ms",
         f"{m.get('service_p50_ms', m.get('latency_p50_ms', '–'))} / {m.get('service_p95_ms', m.get('latency_p95_ms', '–'))}",
         f"{m.get('latency_bench_ms', '–')} (bench)", f"p95 > {th['latency_p95_ratio']}×"),
        ("queue wait p50 / p95 ms", f"{m.get('queue_p50_ms', '–')} / {m.get('queue_p95_ms', '–')}",
         f"{m.get('concurrency_mean', '–')} in flight on average", "reported, not flagged"),
        ("TTFT p50 / p95 ms", f"{m.get('ttft_p50_ms', '–')} / {m.get('ttft_p95_ms', '–')}",
         f"{m.get('ttft_bench_ms', '–')} (bench)", f"p95 > {th['ttft_p95_ratio']}×"),
    ]
    if "feedback_n" in m:
        rows.append(("accuracy on feedback", m.get("feedback_accuracy", "–"),
                     f"{m.get('bench_accuracy', '–')} (bench), {m.get('feedback_matched')}/{m['feedback_n']} matched",
                     f"< bench − {th['feedback_accuracy_drop']}"))
    for name, live, base, limit in rows:
        out.write(f"| {name} | {'–' if live is None else live} | {base} | {limit} |\n")
    if "labels" in t:
        out.write(f"\n## Label shares (served answers vs {context['label_baseline']})\n\n| label | baseline | live | "
                  "change | |\n"
                  "|---|---|---|---|---|\n")
        for label, r in sorted(t["labels"].items(), key=lambda kv: -abs(kv[1]["change"])):
            out.write(f"| {label} | {r['baseline']:.1%} | {r['live']:.1%} | {r['change'] * 100:+.1f} | "
                      f"`{_bar(r['live'])}` |\n")
    if "input_length" in t:
        out.write(f"\n## Input length ({context['unit']}), on the train split's quantile bins\n\n"
                  "| bin | train | live | |\n|---|---|---|---|\n")
        for r in t["input_length"]:
            out.write(f"| {r['range']} | {r['train']:.1%} | {r['live']:.1%} | `{_bar(r['live'])}` |\n")
    out.write("\nPSI = Σ (live − train) · ln(live / train) over bins (shares floored at 1e-4): < 0.1 stable, "
              "0.1–0.2 moderate, > 0.2 significant; a drift is flagged only when its p-value (chi-square over the "
              "bins, Fisher's exact per label) also says it is more than the window's sampling noise. "
              "Labels are the served model's answers, not ground truth; "
              "accuracy needs labelled feedback (`--feedback`). Plots: `dvc plots show`.\n")
    return out.getvalue()


def write(result: dict, context: dict, out_dir: str | Path, window: list[dict] | None = None) -> None:
    """metrics.json, report.md, plots/input_length.csv, plots/label_share.csv under ``out_dir``.
    Both CSVs are always written (header only without traffic) so DVC's plots are never missing.
    The report's charts (plots/*.svg, slmake.charts) are drawn from ``result`` and ``window``."""
    out_dir = Path(out_dir)
    t = result["tables"]
    write_json_atomic(out_dir / "metrics.json", result["metrics"])
    charts = monitor_charts(result, context, window or [], out_dir / "plots")
    write_text_atomic(out_dir / "report.md", markdown(result, context) + charts)
    write_text_atomic(out_dir / "plots" / "input_length.csv",
                      _csv(t.get("input_length", []), ["bin", "range", "train", "live"]))
    labels = [{"label": k, "train": round(v["baseline"], 4), "live": round(v["live"], 4)}
              for k, v in sorted(t.get("labels", {}).items())]
    write_text_atomic(out_dir / "plots" / "label_share.csv", _csv(labels, ["label", "train", "live"]))
