"""One table of every artifact's figures (Markdown) plus the CSV that DVC plots draws."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

COLUMNS = [("target", "target"), ("artifact", "artifact"), ("runtime", "runtime"), ("status", "status"),
           ("size_mb", "size MB"), ("load_s", "load s"), ("ttft_ms", "TTFT ms"), ("decode_tok_s", "tok/s"),
           ("peak_rss_mb", "RSS MB"), ("exact_match", "accuracy"), ("valid", "valid JSON"), ("parity", "parity"),
           ("n", "n")]


def collect(bench_dir: Path, targets: list[str]) -> list[dict]:
    rows = []
    for t in targets:
        path = bench_dir / f"{t}.json"
        if not path.exists():
            rows.append({"target": t, "artifact": "-", "status": "missing", "reason": f"{path} not found"})
            continue
        for name, r in json.loads(path.read_text())[t].items():
            rows.append({"target": t, "artifact": name, **r})
    return rows


def _cell(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.3f}" if v < 10 else f"{v:.1f}"
    return str(v)


def markdown(rows: list[dict], evaluation: dict, curation: dict, model: str, data: str) -> str:
    out = io.StringIO()
    out.write(f"# slmake report: {model} on {data}\n\n")
    out.write(f"Data: {curation.get('input')} rows in, {curation.get('kept')} kept, "
              f"splits {curation.get('splits')}.\n\n")
    b, f = evaluation["base"], evaluation["finetuned"]
    out.write("| model (fp32, transformers) | accuracy | valid JSON | n |\n|---|---|---|---|\n")
    out.write(f"| base | {b['exact_match']:.3f} | {b['valid']:.3f} | {b['n']} |\n")
    out.write(f"| fine-tuned | {f['exact_match']:.3f} | {f['valid']:.3f} | {f['n']} |\n\n")
    out.write("| " + " | ".join(h for _, h in COLUMNS) + " |\n")
    out.write("|" + "---|" * len(COLUMNS) + "\n")
    for r in rows:
        out.write("| " + " | ".join(_cell(r.get(k)) for k, _ in COLUMNS) + " |\n")
    notes = [r for r in rows if r.get("reason")]
    if notes:
        out.write("\n**Not benchmarked here:**\n\n")
        for r in notes:
            out.write(f"- {r['target']}/{r['artifact']}: {r['status']} — {r['reason']}\n")
    out.write("\nAccuracy = exact match of the parsed JSON response on the test split; parity = share of "
              "test prompts whose greedy tokens equal the fp32 reference; tok/s = median decode speed; n = test "
              "prompts scored (a slow simulator scores an evenly spaced subset, e.g. "
              "`targets.qualcomm_npu.simulator_prompts`: compare its accuracy with care).\n")
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
