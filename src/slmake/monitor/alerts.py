"""Compare a window of served traffic with the build's baseline and decide what to flag.

``analyse`` is pure: it takes what inputs.py read and returns numbers (the DVC metrics), the
tables behind the plots, and one alert per crossed threshold. Drift in the inputs or outputs
and lost accuracy say "retrain"; invalid outputs, server errors and latency say "check serving".

A drift (input length, labels) is flagged when its size crosses its threshold (PSI, share change)
and its test says it is more than the window's sampling noise (p < thresholds.drift_p_value):
small windows move PSI a lot by chance, large ones make tiny shifts "significant". Latency is
judged on service time; time queued for the runner is load, reported apart.
"""

from __future__ import annotations

import json
import statistics
from datetime import datetime

from ..data.normalize import normalize
from ..metrics import score
from . import stats
from .inputs import match_key

DRIFT, SERVING = "retrain recommended", "check serving"


def _r(x: float | None, nd: int = 4) -> float | None:
    return None if x is None else round(float(x), nd)


def _p(p: float) -> float:
    """A p-value for the metrics: 3 significant digits (4 decimals would turn 2e-7 into 0)."""
    return float(f"{p:.3g}")


def _noise(what: str, p: float, alpha: float, n_live: int, n_base: int, base: str) -> str:
    return (f"{what}, but p {p:.2g} ≥ {alpha:g}: within the sampling noise of {n_live} requests vs "
            f"{n_base} {base}; not flagged")


def _concurrency(served: list[dict]) -> float | None:
    """Requests in flight on average over the window (Little's law: total time in the server /
    the span from the first arrival to the last answer); ``ts`` is when a request was answered."""
    spans, busy = [], 0.0
    for r in served:
        if not isinstance(r.get("latency_ms"), (int, float)):
            continue
        try:
            end = datetime.fromisoformat(str(r.get("ts", "")).replace("Z", "+00:00")).timestamp()
        except ValueError:
            continue
        spans += [end - r["latency_ms"] / 1000, end]
        busy += r["latency_ms"] / 1000
    if len(spans) < 4 or max(spans) - min(spans) <= 0:
        return None
    return busy / (max(spans) - min(spans))


def _derived(split: dict, key: str, compute):
    """What is derived from a baseline split (its vocabulary, its lengths), computed once per split
    dict and kept in it: many windows checked against one build pay for it once."""
    cache = split.setdefault("_derived", {})
    if key not in cache:
        cache[key] = compute()
    return cache[key]


def _length(text: str, unit: str) -> int:
    return len(stats.words(text)) if unit == "words" else len(text)


def analyse(cfg: dict, window: list[dict], train: dict, val: dict | None, bench: dict | None,
            feedback: list[dict] | None, response_schema: dict, label_field: str | None,
            baseline_labels: list | None = None) -> dict:
    """{"metrics": numbers only, "alerts": [(kind, text)], "tables": {...}, "notes": [...]}.
    Served labels are compared with ``baseline_labels`` (default: the train split's labels)."""
    th, unit = cfg["thresholds"], cfg["length"]["unit"]
    alpha = th["drift_p_value"]
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

    inputs = [normalize(r.get("input") or "") for r in served]   # as curation normalised the train split
    # ---- input drift: length PSI on the train split's quantile bins, unseen words
    if inputs:
        base_len = _derived(train, f"lengths_{unit}", lambda: [_length(t, unit) for t in train["inputs"]])
        live_len = [_length(t, unit) for t in inputs]
        value, edges, b, l = stats.length_psi(base_len, live_len, cfg["length"]["bins"])
        p_len = stats.homogeneity(b, l)["p"]
        m["input_length_psi"], m["input_length_p_value"] = _r(value), _p(p_len)
        m["input_length_median_train"] = float(statistics.median(base_len))
        m["input_length_median_live"] = float(statistics.median(live_len))
        tables["input_length"] = _length_table(edges, b, l)
        if judged and value > th["input_length_psi"]:
            what = f"input length ({unit}) PSI {value:.2f} > {th['input_length_psi']}"
            if p_len < alpha:
                alerts.append((DRIFT, f"input length ({unit}) median {m['input_length_median_train']:.0f} → "
                                      f"{m['input_length_median_live']:.0f}, PSI {value:.2f} > "
                                      f"{th['input_length_psi']} (p {p_len:.1g} < {alpha:g})"))
            else:
                notes.append(_noise(what, p_len, alpha, len(live_len), len(base_len), "train inputs"))
        vocab = _derived(train, "vocab", lambda: {w for t in train["inputs"] for w in stats.words(t)})
        live_unseen, _ = stats.unseen_share(inputs, vocab)
        base_unseen = (_derived(train, ("unseen", id(val)), lambda: stats.unseen_share(val["inputs"], vocab)[0])
                       if val else 0.0)
        m["unseen_word_share"], m["unseen_word_share_val"] = _r(live_unseen), _r(base_unseen)
        if judged and live_unseen - base_unseen > th["unseen_words_increase"]:
            alerts.append((DRIFT, f"unseen words {live_unseen:.1%} of live input vs {base_unseen:.1%} in the "
                                  f"val split (+{(live_unseen - base_unseen) * 100:.1f} points > "
                                  f"{th['unseen_words_increase'] * 100:g})"))

    # ---- output drift: label distribution of the served answers vs the baseline's (by default the
    # served artifact's own answers on the test split, so the model's bias is not read as drift)
    live_labels = [r.get("label") for r in served if r.get("label") is not None]
    if label_field and live_labels:
        drift = stats.label_drift(train["labels"] if baseline_labels is None else baseline_labels, live_labels)
        per, counts = drift["labels"], drift["counts"]
        n_base, n_live = sum(c[0] for c in counts.values()), sum(c[1] for c in counts.values())
        order = sorted(per, key=lambda x: (-round(abs(per[x]["change"]), 9), -per[x]["change"]))  # ties: it grew
        top = order[0]
        p_all = stats.homogeneity([c[0] for c in counts.values()], [c[1] for c in counts.values()])["p"]

        def p_share(x):   # Fisher's exact test of one label's share, Bonferroni over the labels
            return min(1.0, stats.share_test(counts[x][0], n_base, counts[x][1], n_live) * len(per))
        moved = [x for x in order if abs(per[x]["change"]) > th["label_share_change"]]
        p_moved = {x: p_share(x) for x in moved}
        shown = next((x for x in moved if p_moved[x] < alpha), top)
        p_shown = p_moved[shown] if shown in p_moved else p_share(shown)
        m["label_psi"], m["label_max_share_change"] = _r(drift["psi"]), _r(abs(per[top]["change"]))
        m["label_p_value"], m["label_share_p_value"] = _p(p_all), _p(p_shown)
        tables["labels"] = per
        crossed, noise = [], []
        if drift["psi"] > th["label_psi"]:
            (crossed if p_all < alpha else noise).append(
                (f"PSI {drift['psi']:.2f} > {th['label_psi']}", p_all))
        if moved:
            (crossed if p_shown < alpha else noise).append(
                (f"{per[shown]['change'] * 100:+.1f} points > ±{th['label_share_change'] * 100:g}", p_shown))
        if judged and crossed:
            alerts.append((DRIFT, f"label '{shown}' share {per[shown]['baseline'] * 100:.1f} % → "
                                  f"{per[shown]['live'] * 100:.1f} %, "
                                  + ", ".join(f"{t} (p {p:.1g} < {alpha:g})" for t, p in crossed)))
        elif judged and noise:
            notes.append(_noise(f"label '{shown}' share {per[shown]['baseline'] * 100:.1f} % → "
                                f"{per[shown]['live'] * 100:.1f} % (" + ", ".join(t for t, _ in noise) + ")",
                                min(p for _, p in noise), alpha, n_live, n_base, "baseline answers"))

    # ---- latency vs the bench of the served artifact: judged on service time (the runner's own
    # work); the time a request waited for the runner is load, reported apart and never flagged
    def ms(key):
        return [r[key] for r in served if isinstance(r.get(key), (int, float))]
    lat, ttft, svc, queue = ms("latency_ms"), ms("ttft_ms"), ms("service_ms"), ms("queue_ms")
    for key, vals in (("latency", lat), ("ttft", ttft), ("service", svc), ("queue", queue)):
        if vals:
            m[f"{key}_p50_ms"], m[f"{key}_p95_ms"] = _r(stats.percentile(vals, 50), 3), _r(stats.percentile(vals, 95), 3)
    judged_name, judged_p95 = ("service time", m.get("service_p95_ms")) if svc else ("latency", m.get("latency_p95_ms"))
    if lat and not svc:
        notes.append("the log has no service_ms (an older slmake serve): latency is judged whole, queueing included")
    in_flight = _concurrency(served)
    if in_flight is not None:
        m["concurrency_mean"] = _r(in_flight, 2)
    if queue and svc and m["queue_p95_ms"] > m["service_p95_ms"]:
        notes.append(f"requests waited for the runner (queue p95 {m['queue_p95_ms']:.1f} ms vs service p95 "
                     f"{m['service_p95_ms']:.1f} ms"
                     + (f", {in_flight:.1f} in flight on average" if in_flight is not None else "")
                     + "): load, not a fault; latency is judged on service time")
    if bench and bench.get("status") == "ok" and bench.get("ttft_ms"):
        completion = [r["completion_tokens"] for r in served if isinstance(r.get("completion_tokens"), int)]
        mean_ct = statistics.fmean(completion) if completion else 1.0
        expected = bench["ttft_ms"] + (max(mean_ct - 1, 0) / bench["decode_tok_s"] * 1000 if bench.get("decode_tok_s") else 0)
        m["latency_bench_ms"], m["ttft_bench_ms"] = _r(expected, 3), _r(bench["ttft_ms"], 3)
        for name, p95, base, key in ((judged_name, judged_p95, expected, "latency_p95_ratio"),
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
