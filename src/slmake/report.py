"""One table of every artifact's figures (Markdown), the CSV that DVC plots draws, and the cost table
(owned box vs cloud API per artifact, from the measured speed and token counts)."""

from __future__ import annotations

import csv
import io
import json
import statistics
from pathlib import Path

from .cost import cost_row, request_seconds
from .gate import verdict
from .io import read_jsonl

COLUMNS = [("target", "target"), ("artifact", "artifact"), ("runtime", "runtime"), ("status", "status"),
           ("size_mb", "size MB"), ("load_s", "load s"), ("ttft_ms", "TTFT ms"), ("decode_tok_s", "tok/s"),
           ("request_ms_p50", "request ms p50"), ("request_ms_p95", "p95"),
           ("peak_rss_mb", "RSS MB"), ("exact_match", "accuracy"), ("val_exact_match", "val accuracy"),
           ("exact_match_free", "accuracy free"),
           ("delta", "Δ vs fp32"), ("valid", "valid JSON"), ("valid_free", "valid free"), ("parity", "parity"),
           ("n", "n")]


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: not readable JSON ({e})") from None


def load_bench(bench_dir: Path, target: str) -> dict[str, dict] | None:
    """{artifact: figures} of one target, or None when it has no bench file. The figures are
    reports/bench/<target>.json (the numbers DVC shows) merged over <target>.details.json
    (status, reasons, runtimes: not metrics) when that exists; either file alone is read too."""
    merged: dict[str, dict] = {}
    for path in (Path(bench_dir) / f"{target}.details.json", Path(bench_dir) / f"{target}.json"):
        if path.exists():
            data = _read_json(path)
            data = data.get(target, data) if isinstance(data, dict) else {}
            for name, figures in data.items():
                if isinstance(figures, dict):
                    merged.setdefault(name, {}).update(figures)
    return merged or None


def collect(bench_dir: Path, targets: list[str]) -> list[dict]:
    rows = []
    for t in targets:
        found = load_bench(bench_dir, t)
        if found is None:
            rows.append({"target": t, "artifact": "-", "status": "missing",
                         "reason": f"{bench_dir / f'{t}.json'} not found"})
            continue
        rows.extend({"target": t, "artifact": name, **r} for name, r in found.items())
    return rows


def _cell(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.3f}" if v < 10 else f"{v:.1f}"
    return str(v)


def gate_markdown(rows: list[dict], max_drop: float | None) -> str:
    """The quality gate's section: which artifacts deploy refused (slmake.gate), with their Δ and interval."""
    verdicts = {f"{r['target']}/{r['artifact']}": verdict(r, max_drop) for r in rows
                if r.get("status") in ("ok", "failed")}
    if not verdicts:
        return ""
    bar = "no gate (`bench.max_drop: null`)" if max_drop is None else (
        f"an artifact ships when the lower bound of its Δ-vs-fp32 95 % interval is ≥ −{max_drop:.3f} "
        "(`bench.max_drop`), on the validation split: the test split decides nothing")
    out = [f"## Quality gate\n\nDeploy packages what passes: {bar}.\n"]
    bad = {k: v for k, v in verdicts.items() if v["verdict"] == "refused"}
    if not bad:
        out.append(f"Every benchmarked artifact passed ({len(verdicts)}).\n")
        return "\n".join(out)
    out.append("**Refused** (no package; `build/deploy/<target>/refused.json` lists them too):\n\n"
               "| artifact | split | Δ vs fp32 | 95 % interval | reason |\n|---|---|---|---|---|")
    for k, v in bad.items():
        d, ci = v["delta"], v["delta_ci95"]
        cells = (f"{d:+.3f}", f"[{d - ci:+.3f}, {d + ci:+.3f}]") if d is not None else ("–", "–")
        out.append(f"| {k} | {v['split'] or '–'} | {cells[0]} | {cells[1]} | {v['reason']} |")
    return "\n".join(out) + "\n"


def confidence_markdown(rows: list[dict]) -> str:
    """What ``serve.min_confidence`` does, per benchmarked artifact (bench's ``confidence``: the test
    split's answers, their label probability as serve reports it): at each threshold, the share of
    prompts answered (coverage) and the accuracy of those answers; the rest would be "needs review".
    Reporting only; "" when no artifact has label probabilities."""
    have = [r for r in rows if r.get("status") == "ok" and isinstance(r.get("confidence"), dict)
            and r["confidence"].get("rows")]
    if not have:
        return ""
    field = have[0]["confidence"].get("label_field")
    out = ["## Confidence routing\n",
           f"`serve.min_confidence: t` answers \"needs review\" instead of a guess whose label "
           f"({'`' + field + '`' if field else 'the answer'}) has a probability below t. On the test split, "
           "per artifact: coverage (share of prompts still answered) · accuracy of those answers "
           "(exact match). The label probability is the product of the probabilities of the tokens that "
           "spell it, as `slmake serve` reports it in `slmake.confidence`. Reporting only: a threshold is "
           "yours to choose, on data other than this split.\n",
           "| min_confidence | " + " | ".join(f"{r['target']}/{r['artifact']}" for r in have) + " |",
           "|---|" + "---|" * len(have)]
    thresholds = [row["min_confidence"] for row in have[0]["confidence"]["rows"]]
    for i, t in enumerate(thresholds):
        cells = []
        for r in have:
            row = (r["confidence"]["rows"] + [{}] * len(thresholds))[i]
            cells.append(f"{_cell(row.get('coverage'))} · {_cell(row.get('accuracy'))}")
        out.append(f"| {'off' if t <= 0 else t} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def markdown(rows: list[dict], evaluation: dict, curation: dict, model: str, data: str, cost: str = "") -> str:
    out = io.StringIO()
    out.write(f"# slmake report: {model} on {data}\n\n")
    out.write(f"Data: {curation.get('input')} rows in, {curation.get('kept')} kept, "
              f"splits {curation.get('splits')}.\n\n")
    b, f = evaluation["base"], evaluation["finetuned"]
    # decoded as served (eval.constrained): under the schema's grammar, the free decode beside it
    out.write("| model (fp32, transformers) | accuracy | accuracy free | valid JSON | valid free | n |\n"
              "|---|---|---|---|---|---|\n")
    for name, m in (("base", b), ("fine-tuned", f)):
        out.write(f"| {name} | {m['exact_match']:.3f} | {_cell(m.get('exact_match_free'))} | {m['valid']:.3f} "
                  f"| {_cell(m.get('valid_free'))} | {m['n']} |\n")
    if f.get("val_exact_match") is not None:   # what selection reads; the table above is the test split
        out.write(f"\nValidation split (what a search or `slmake serve`'s pick decides on): base "
                  f"{_cell(b.get('val_exact_match'))}, fine-tuned {_cell(f['val_exact_match'])} "
                  f"(valid {_cell(f.get('val_valid'))}, n {f.get('val_n')}).\n")
    out.write("\n")
    out.write("| " + " | ".join(h for _, h in COLUMNS) + " |\n")
    out.write("|" + "---|" * len(COLUMNS) + "\n")
    for r in rows:   # delta: accuracy minus the fine-tuned fp32 model's, what compiling cost
        if isinstance(r.get("delta"), (int, float)):   # bench's: on the same rows, with its 95 % interval
            ci = r.get("delta_ci95")
            r = {**r, "delta": f"{r['delta']:+.3f}" + (f" ±{ci:.3f}" if isinstance(ci, (int, float)) else "")}
        elif isinstance(r.get("exact_match"), (int, float)):   # a bench file from before the paired delta
            r = {**r, "delta": f"{r['exact_match'] - f['exact_match']:+.3f}"}
        out.write("| " + " | ".join(_cell(r.get(k)) for k, _ in COLUMNS) + " |\n")
    notes = [r for r in rows if r.get("reason")]
    if notes:
        out.write("\n**Not benchmarked here:**\n\n")
        for r in notes:
            out.write(f"- {r['target']}/{r['artifact']}: {r['status']} — {r['reason']}\n")
    out.write("\nAccuracy = exact match of the parsed JSON response on the test split, decoded as served: "
              "under the response schema's grammar where serve enforces it (`eval.constrained`; accuracy "
              "free / valid free = the same model decoded without it, – when decoding was free anyway); "
              "val accuracy = the same on the validation split (what selection reads); "
              "Δ vs fp32 = accuracy "
              "minus the fine-tuned fp32 model's on the same prompts, ± the half-width of its 95 % interval "
              "(paired: only prompts one of the two got right count; a Δ inside it is not distinguishable "
              "from none on this many prompts); parity = share of "
              "test prompts whose greedy tokens equal the fp32 reference; tok/s = decode speed, timed "
              "apart from the task's answers as llama-bench does (`bench.decode_tokens` tokens per speed "
              "prompt with end-of-generation suppressed, median; the details file's decode_method says "
              "how); request ms = prompt in to whole answer out at the task's own answer lengths (p50 / p95 "
              "over the speed prompts x repeats; for a one-label answer this is about TTFT); n = test "
              "prompts scored (a slow simulator scores an evenly spaced subset, e.g. "
              "`targets.qualcomm_npu.simulator_prompts`: compare its accuracy with care).\n")
    if cost:
        out.write("\n" + cost)
    return out.getvalue()


def plot_csv(rows: list[dict]) -> str:
    out = io.StringIO()
    fields = ["artifact", "target", "size_mb", "exact_match", "parity", "decode_tok_s", "ttft_ms"]
    w = csv.DictWriter(out, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        if r.get("status") == "ok":
            w.writerow({**r, "artifact": f"{r['target']}/{r['artifact']}"})
    return out.getvalue()


# ---------------------------------------------------------------- cost table (arithmetic: slmake.cost)

def token_counts(evaluate_dir: Path, bench_out_dir: Path) -> tuple[float | None, float | None, dict[str, float]]:
    """Measured tokens per request: (mean prompt tokens, mean completion tokens of the fp32 reference,
    {target/artifact: mean completion tokens of that artifact's bench outputs})."""
    prompt = ref = None
    path = Path(evaluate_dir) / "reference.jsonl"
    if path.exists():
        refs = read_jsonl(path)
        if refs:
            prompt = statistics.fmean(len(r["prompt_ids"]) for r in refs)
            ref = statistics.fmean(len(r["tokens"]) for r in refs)
    per: dict[str, list[int]] = {}
    for f in sorted(Path(bench_out_dir).glob("*/outputs.jsonl")):
        for r in read_jsonl(f):
            per.setdefault(f"{f.parent.name}/{r['artifact']}", []).append(len(r.get("tokens") or []))
    return prompt, ref, {k: statistics.fmean(v) for k, v in per.items() if v}


def end_shares(bench_out_dir: Path) -> dict[str, float]:
    """{target/artifact: share of its bench answers that ended on an end-of-generation token}: the model
    computes that token too (one decode step each), though it is not billed as completion."""
    per: dict[str, list[bool]] = {}
    for f in sorted(Path(bench_out_dir).glob("*/outputs.jsonl")):
        for r in read_jsonl(f):
            per.setdefault(f"{f.parent.name}/{r['artifact']}", []).append(r.get("finish_reason") == "stop")
    return {k: statistics.fmean(v) for k, v in per.items() if v}


def load_rps(path: str | Path | None) -> dict[str, float]:
    """Requests/s per artifact from a load-test report (``cost.load_report``): a JSON list of rows, or
    {"results": [...]}, each row with "artifact" (target/name) and "requests_per_s"; the best
    concurrency counts. A missing file is no load test."""
    if not path or not Path(path).exists():
        return {}
    data = _read_json(Path(path))
    rows = data.get("results", []) if isinstance(data, dict) else data
    best: dict[str, float] = {}
    for r in rows if isinstance(rows, list) else []:
        if isinstance(r, dict) and r.get("artifact") and isinstance(r.get("requests_per_s"), (int, float)):
            best[r["artifact"]] = max(best.get(r["artifact"], 0.0), float(r["requests_per_s"]))
    return best


def cost_rows(rows: list[dict], cost: dict, prompt_tokens: float | None, ref_completion: float | None,
              completion: dict[str, float], load: dict[str, float],
              ends: dict[str, float] | None = None) -> list[dict]:
    """One cost line per benchmarked artifact; a line says why when it has no figure. A request takes
    TTFT + the artifact's mean answer (+ its end token, ``ends``: end_shares) at the decode rate; a bench
    file without a decode rate falls back on its measured request latency (p50)."""
    out = []
    for r in rows:
        name = f"{r['target']}/{r['artifact']}"
        line = {"artifact": name}
        hw = cost["hardware"].get(r["target"])
        ct = completion.get(name, ref_completion)
        if r.get("status") != "ok":
            continue
        if hw is None:
            line["why"] = f"no hardware in cost.hardware.{r['target']}"
        elif r.get("hardware_present") is False:
            line["why"] = "measured off the target's hardware (proxy/simulator): its speed is not the box's"
        elif prompt_tokens is None or ct is None:
            line["why"] = "no measured token counts (build/evaluate/reference.jsonl missing)"
        else:
            source = "load test" if name in load else "bench"
            try:
                if name in load:
                    rps = load[name]
                elif not r.get("decode_tok_s") and (r.get("request_ms_p50") or 0) > 0:
                    rps, source = 1000 / r["request_ms_p50"], "bench latency"
                else:
                    end = (ends or {}).get(name, 0.0)
                    rps = 1 / request_seconds(r.get("ttft_ms"), r.get("decode_tok_s"), ct, end)
            except ValueError as e:
                line["why"] = str(e)
            else:
                line.update(hardware=hw["name"], prompt_tokens=prompt_tokens, completion_tokens=ct, source=source,
                            **cost_row(rps, prompt_tokens, ct, hw, cost["api"], cost["monthly_requests"]))
        out.append(line)
    return out


def _usd(v: float) -> str:
    return f"${v:,.2f}" if v < 100 else f"${v:,.0f}"


def cost_markdown(lines: list[dict], cost: dict) -> str:
    v, api = cost["monthly_requests"], cost["api"]
    out = io.StringIO()
    out.write(f"## Cost: owned box vs {api['name']}\n\n")
    out.write(f"| artifact | box | tokens in / out | req/s per box | requests/month per box | box $/month | "
              f"on-prem $ per 1M req | API $ per 1M req | at {v:,} req/month: on-prem | API | break-even req/month |\n")
    out.write("|" + "---|" * 11 + "\n")
    for c in lines:
        if "why" in c:
            out.write(f"| {c['artifact']} | – | – | – | – | – | – | – | – | – | {c['why']} |\n")
            continue
        even = c["break_even_requests_per_month"]
        out.write(f"| {c['artifact']} | {c['hardware']} | {c['prompt_tokens']:.0f} / {c['completion_tokens']:.1f} | "
                  f"{c['box_rps']:,.1f} ({c['source']}) | {c['box_requests_per_month']:,.0f} | "
                  f"{_usd(c['box_usd_per_month'])} | {_usd(c['onprem_usd_per_1m'])} | {_usd(c['api_usd_per_1m'])} | "
                  f"{_usd(c['onprem_usd_per_month'])} ({c['boxes']} box{'es' if c['boxes'] > 1 else ''}) | "
                  f"{_usd(c['api_usd_per_month'])} | "
                  f"{'never: the API is cheaper per request' if even is None else f'{even:,.0f}'} |\n")
    out.write(f"\nAPI: {api['name']}, ${api['usd_per_1m_input_tokens']} / ${api['usd_per_1m_output_tokens']} per 1M "
              "input / output tokens, at this model's measured token counts (an API's own tokenizer counts "
              "differently). Boxes:\n\n")
    for target, hw in sorted(cost["hardware"].items()):
        out.write(f"- {target}: {hw['name']}: ${hw['purchase_usd']:,} over {hw['years']} years, {hw['watts']} W at "
                  f"${hw['usd_per_kwh']}/kWh, +${hw.get('ops_usd_per_month', 0)}/month operations; "
                  f"{hw['streams']} model instance(s) in parallel, {hw['utilisation']:.0%} average utilisation.\n")
    out.write("\nreq/s per box = instances / (TTFT + (completion tokens − 1 + end token) / decode tok/s) "
              "from the bench (the end token: the share of answers that stop on an end-of-generation token, "
              "which the model computes though it is not billed; one greedy stream on the bench machine; "
              "decode tok/s timed at a fixed length, so one-label answers have one too; a load test's "
              "measured requests/s replaces it where "
              "`cost.load_report` has the artifact); requests/month = req/s × 2,629,800 s × utilisation. "
              "Break-even = box $/month ÷ API $ per request, when one box can serve that volume. Settings: "
              "`conf/cost/`.\n")
    return out.getvalue()
