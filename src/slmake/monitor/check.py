"""Compare a window of served traffic with the build's baseline and decide what to flag.

``analyse`` is pure: it takes what inputs.py read and returns numbers (the DVC metrics), the
tables behind the plots, and one alert per crossed threshold. Drift in the inputs or outputs
and lost accuracy say "retrain"; invalid outputs, server errors and latency say "check serving".
"""

from __future__ import annotations

import json
import statistics

from ..metrics import score
from . import stats
from .inputs import match_key

DRIFT, SERVING = "retrain recommended", "check serving"


def _r(x: float | None, nd: int = 4) -> float | None:
    return None if x is None else round(float(x), nd)


def _length(text: str, unit: str) -> int:
    return len(stats.words(text)) if unit == "words" else len(text)


def analyse(cfg: dict, window: list[dict], train: dict, val: dict | None, bench: dict | None,
            feedback: list[dict] | None, response_schema: dict, label_field: str | None,
            baseline_labels: list | None = None) -> dict:
    """{"metrics": numbers only, "alerts": [(kind, text)], "tables": {...}, "notes": [...]}.
    Served labels are compared with ``baseline_labels`` (default: the train split's labels)."""
    th, unit = cfg["thresholds"], cfg["length"]["unit"]
    served = [r for r in window if isinstance(r.get("status"), int) and r["status"] < 400]
    m: dict = {"requests": len(window), "traffic": int(bool(window))}
    alerts: list[tuple[str, str]] = []
    notes: list[str] = []
    tables: dict = {}
    if not window:
        return {"metrics": {**m, "alerts": 0, "retrain": 0}, "alerts": [], "tables": {}, "notes": ["no traffic"]}
    judged = len(window) >= cfg["min_requests"]
    if not judged:
        notes.append(f"{len(window)} requests < monitor.min_requests = {cfg['min_requests']}: figures only, "
                     "nothing is flagged")

    # ---- server errors and schema validity (over every request)
    m["server_error_rate"] = _r(sum(1 for r in window if (r.get("status") or 0) >= 500) / len(window))
    invalid, n_known = stats.rate(None if r.get("schema_valid") is None else not r["schema_valid"] for r in window)
    if invalid is not None:
        m["invalid_rate"] = _r(invalid)
        if judged and invalid > th["invalid_rate"]:
            alerts.append((SERVING, f"invalid outputs {invalid:.1%} of {n_known} > {th['invalid_rate']:.1%}"))
    if judged and m["server_error_rate"] > th["server_error_rate"]:
        alerts.append((SERVING, f"server errors (5xx) {m['server_error_rate']:.1%} > {th['server_error_rate']:.1%}"))

    inputs = [r.get("input") or "" for r in served]
    # ---- input drift: length PSI on the train split's quantile bins, unseen words
    if inputs:
        base_len = [_length(t, unit) for t in train["inputs"]]
        live_len = [_length(t, unit) for t in inputs]
        value, edges, b, l = stats.length_psi(base_len, live_len, cfg["length"]["bins"])
        m["input_length_psi"] = _r(value)
        m["input_length_median_train"] = float(statistics.median(base_len))
        m["input_length_median_live"] = float(statistics.median(live_len))
        tables["input_length"] = _length_table(edges, b, l)
        if judged and value > th["input_length_psi"]:
            alerts.append((DRIFT, f"input length ({unit}) median {m['input_length_median_train']:.0f} → "
                                  f"{m['input_length_median_live']:.0f}, PSI {value:.2f} > {th['input_length_psi']}"))
        vocab = {w for t in train["inputs"] for w in stats.words(t)}
        live_unseen, _ = stats.unseen_share(inputs, vocab)
        base_unseen = stats.unseen_share(val["inputs"], vocab)[0] if val else 0.0
        m["unseen_word_share"], m["unseen_word_share_val"] = _r(live_unseen), _r(base_unseen)
        if judged and live_unseen - base_unseen > th["unseen_words_increase"]:
            alerts.append((DRIFT, f"unseen words {live_unseen:.1%} of live input vs {base_unseen:.1%} in the "
                                  f"val split (+{(live_unseen - base_unseen) * 100:.1f} points > "
                                  f"{th['unseen_words_increase'] * 100:g})"))

    # ---- output drift: label distribution of the served answers vs the train split
    live_labels = [r.get("label") for r in served if r.get("label") is not None]
    if label_field and live_labels:
        drift = stats.label_drift(train["labels"] if baseline_labels is None else baseline_labels, live_labels)
        per = drift["labels"]
        top = max(per, key=lambda x: (round(abs(per[x]["change"]), 9), per[x]["change"]))  # ties: the one that grew
        m["label_psi"], m["label_max_share_change"] = _r(drift["psi"]), _r(abs(per[top]["change"]))
        tables["labels"] = per
        crossed = []
        if drift["psi"] > th["label_psi"]:
            crossed.append(f"PSI {drift['psi']:.2f} > {th['label_psi']}")
        if abs(per[top]["change"]) > th["label_share_change"]:
            crossed.append(f"{per[top]['change'] * 100:+.1f} points > ±{th['label_share_change'] * 100:g}")
        if judged and crossed:
            alerts.append((DRIFT, f"label '{top}' share {per[top]['baseline'] * 100:.1f} % → "
                                  f"{per[top]['live'] * 100:.1f} %, " + ", ".join(crossed)))

    # ---- latency vs the bench of the served artifact
    lat = [r["latency_ms"] for r in served if isinstance(r.get("latency_ms"), (int, float))]
    ttft = [r["ttft_ms"] for r in served if isinstance(r.get("ttft_ms"), (int, float))]
    if lat:
        m["latency_p50_ms"], m["latency_p95_ms"] = _r(stats.percentile(lat, 50), 3), _r(stats.percentile(lat, 95), 3)
    if ttft:
        m["ttft_p50_ms"], m["ttft_p95_ms"] = _r(stats.percentile(ttft, 50), 3), _r(stats.percentile(ttft, 95), 3)
    if bench and bench.get("status") == "ok" and bench.get("ttft_ms"):
        completion = [r["completion_tokens"] for r in served if isinstance(r.get("completion_tokens"), int)]
        mean_ct = statistics.fmean(completion) if completion else 1.0
        expected = bench["ttft_ms"] + (max(mean_ct - 1, 0) / bench["decode_tok_s"] * 1000 if bench.get("decode_tok_s") else 0)
        m["latency_bench_ms"], m["ttft_bench_ms"] = _r(expected, 3), _r(bench["ttft_ms"], 3)
        for name, p95, base, key in (("latency", m.get("latency_p95_ms"), expected, "latency_p95_ratio"),
                                     ("time to first token", m.get("ttft_p95_ms"), bench["ttft_ms"], "ttft_p95_ratio")):
            if p95 is None or not base:
                continue
            m[key] = _r(p95 / base, 3)
            if judged and m[key] > th[key]:
                alerts.append((SERVING, f"{name} p95 {p95:.1f} ms = {m[key]:.1f}× the bench's {base:.1f} ms "
                                        f"> {th[key]}×"))
    elif lat:
        notes.append("no bench figures for the served artifact: latency is reported, not judged")

    # ---- accuracy on labelled feedback: the logged answers vs the corrected ones
    if feedback:
        m.update(_feedback(cfg, served, feedback, bench, response_schema, label_field, alerts, notes))
    m["alerts"] = len(alerts)
    m["retrain"] = int(any(kind == DRIFT for kind, _ in alerts))
    return {"metrics": m, "alerts": alerts, "tables": tables, "notes": notes}


def _feedback(cfg, served, feedback, bench, response_schema, label_field, alerts, notes) -> dict:
    latest = {match_key(r.get("input") or ""): r for r in served}  # the window is oldest first
    pairs = [(latest[f["key"]], f) for f in feedback if f["key"] in latest]
    out = {"feedback_n": len(feedback), "feedback_matched": len(pairs)}
    if not pairs:
        notes.append(f"none of the {len(feedback)} feedback records matches a request in the window")
        return out
    got = [r.get("output") or "" for r, _ in pairs]
    want = [json.dumps(f["response"], ensure_ascii=False) if not isinstance(f["response"], str) else f["response"]
            for _, f in pairs]
    sc = score(got, want, response_schema)
    out["feedback_accuracy"] = _r(sc["exact_match"])
    if label_field and label_field in sc.get("field_accuracy", {}):
        out["feedback_label_accuracy"] = _r(sc["field_accuracy"][label_field])
    if bench and bench.get("exact_match") is not None:
        out["bench_accuracy"] = _r(bench["exact_match"])
        drop = cfg["thresholds"]["feedback_accuracy_drop"]
        if len(pairs) >= cfg["min_feedback"] and sc["exact_match"] < bench["exact_match"] - drop:
            alerts.append((DRIFT, f"accuracy on {len(pairs)} feedback answers {sc['exact_match']:.1%} < the "
                                  f"bench's {bench['exact_match']:.1%} − {drop * 100:g} points"))
    return out


def _length_table(edges: list[float], base: list[int], live: list[int]) -> list[dict]:
    bs, ls = stats.shares(base), stats.shares(live)
    rows = []
    for i in range(len(base)):
        lo = "" if i == 0 else f"{edges[i - 1]:g}"
        hi = "" if i == len(edges) else f"{edges[i]:g}"
        span = f"≤ {hi}" if not lo else (f"> {lo}" if not hi else f"{lo}–{hi}")
        rows.append({"bin": i + 1, "range": span, "train": round(bs[i], 4), "live": round(ls[i], 4)})
    return rows


def reason(alerts: list[tuple[str, str]]) -> str:
    """The one line the CLI exits with: drift first, then serving problems."""
    parts = []
    for kind in (DRIFT, SERVING):
        texts = [t for k, t in alerts if k == kind]
        if texts:
            parts.append(f"{kind}: " + "; ".join(texts))
    return " | ".join(parts)
