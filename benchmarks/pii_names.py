"""Person-name scrubbing (pii type `person`, slmake.data.ner): precision and recall on the default
data's names, and the time it adds per request (serve's request log) and per 1,000 rows (curation).

    python benchmarks/pii_names.py [--model PATH_OR_PACKAGE] [--requests 300] [--json OUT]

Gold: tests/fixtures/pii/it_tickets_names.jsonl (573 name spans in 550 of the 2,000 tickets of
data/it_tickets/tickets.jsonl; how they were labelled: tests/fixtures/pii/label_names.py). Every
ticket is scored, so the 1,450 without a name count for precision too.

* overlap P/R: a predicted span is right if it overlaps a gold name; a gold name is found if a
  predicted span overlaps it (what matters for scrubbing: the name is no longer readable whole).
* exact P/R: the spans match to the character.
* name characters scrubbed: the share of all gold name characters that were replaced (a leak
  measure: "<NAME> Novak" found the name but leaked 5 of its 11 characters).
* time: model load; one ticket at a time (the request log) and batched (`spans_many`); the
  request log's `Telemetry.record` with and without names, per request (the model's answer
  repeats, so its spans come from a cache after the first; every input is new); `Scrubber.scrub`
  over 1,000 tickets with and without `person` (curation's per-record path). Each timing starts
  with an empty cache.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data/it_tickets/tickets.jsonl"
GOLD = ROOT / "tests/fixtures/pii/it_tickets_names.jsonl"


def header() -> str:
    try:
        commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "src", "benchmarks"],
                               capture_output=True, text=True).stdout.strip()
    except OSError:
        commit, dirty = "?", ""
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else "?"
    return (f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.node()}: {cpu}, {os.cpu_count()} cores "
            f"(load {os.getloadavg()[0]:.1f}), Python {platform.python_version()}, commit {commit}"
            f"{' + uncommitted changes' if dirty else ''}")


def overlaps(a, b) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def score(texts, gold, pred) -> dict:
    n_pred = sum(len(p) for p in pred)
    n_gold = sum(len(g) for g in gold)
    tp_p = sum(any(overlaps(s, g) for g in gold[i]) for i, p in enumerate(pred) for s in p)
    tp_r = sum(any(overlaps(g, s) for s in pred[i]) for i, gs in enumerate(gold) for g in gs)
    exact = sum(len(set(p) & set(gold[i])) for i, p in enumerate(pred))
    chars = sum(e - s for gs in gold for s, e in gs)
    covered = sum(sum(1 for c in range(s, e) if any(a <= c < b for a, b in pred[i]))
                  for i, gs in enumerate(gold) for s, e in gs)
    div = lambda a, b: round(a / b, 3) if b else None  # noqa: E731
    return {"precision": div(tp_p, n_pred), "recall": div(tp_r, n_gold), "exact_precision": div(exact, n_pred),
            "exact_recall": div(exact, n_gold), "name_chars_scrubbed": div(covered, chars),
            "predicted": n_pred, "gold": n_gold, "false_positives": n_pred - tp_p, "missed": n_gold - tp_r}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="a spaCy model folder or package (default: as slmake finds it)")
    ap.add_argument("--requests", type=int, default=300, help="requests timed through Telemetry.record")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args(argv)
    if args.model:
        os.environ["SLMAKE_NER_MODEL"] = args.model
    sys.path.insert(0, str(ROOT / "src"))
    from slmake.data.ner import PersonNames
    from slmake.data.pii import TYPES, Scrubber
    from slmake.telemetry import Telemetry

    texts = [json.loads(line)["ticket"] for line in DATA.read_text(encoding="utf-8").splitlines()]
    gold: list[list[tuple[int, int]]] = [[] for _ in texts]
    for line in GOLD.read_text(encoding="utf-8").splitlines():
        d = json.loads(line)
        for s, e, name in d["spans"]:
            assert texts[d["line"]][s:e] == name, (d["line"], name)
            gold[d["line"]].append((s, e))
    print(header())

    t0 = time.perf_counter()
    ner = PersonNames.load()
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    pred = [ner.spans(t) for t in texts]
    single_ms = (time.perf_counter() - t0) * 1000 / len(texts)
    ner._cache.clear()  # every timing below starts cold: unique texts, as real tickets are
    t0 = time.perf_counter()
    batched = ner.spans_many(texts)
    batch_ms = (time.perf_counter() - t0) * 1000 / len(texts)
    assert batched == pred, "batched and one-at-a-time spans differ"

    figures = {"model": ner.source, "tickets": len(texts), "all": score(texts, gold, pred)}
    for name, keep in (("mixed case", lambda t: t != t.lower() and t != t.upper()),
                       ("lower case", lambda t: t == t.lower()), ("UPPER CASE", lambda t: t == t.upper())):
        idx = [i for i, t in enumerate(texts) if keep(t)]
        figures[name] = score([texts[i] for i in idx], [gold[i] for i in idx], [pred[i] for i in idx])
        figures[name]["tickets"] = len(idx)

    # The request log: one record per request, as `slmake serve` writes it.
    def record_ms(scrub_names: bool) -> list[float]:
        ner._cache.clear()
        with tempfile.TemporaryDirectory() as d:
            tel = Telemetry("cpu/bench", Path(d) / "requests.jsonl", pii=None, label_field="category",
                            scrub_names=scrub_names)
            times = []
            for i in range(args.requests):
                t = texts[i % len(texts)]
                parsed = {"category": "access", "priority": "high", "action": "resolve"}
                t0 = time.perf_counter()
                tel.record(endpoint="chat", input_text=t, output_text=json.dumps(parsed), prompt_tokens=40,
                           completion_tokens=12, latency_s=0.2, ttft_s=0.05, schema_valid=True, parsed=parsed,
                           status=200)
                times.append((time.perf_counter() - t0) * 1000)
            tel.close()
        return times

    with_names, without = record_ms(True), record_ms(False)
    p95 = lambda xs: sorted(xs)[int(0.95 * (len(xs) - 1))]  # noqa: E731

    def scrub_s(types) -> float:
        s = Scrubber(types=types)
        ner._cache.clear()
        t0 = time.perf_counter()
        for t in texts[:1000]:
            s.scrub(t)
        return time.perf_counter() - t0

    base_1k, person_1k = scrub_s(TYPES), scrub_s((*TYPES, "person"))
    figures["time"] = {
        "model_load_s": round(load_s, 2), "ner_ms_per_ticket": round(single_ms, 2),
        "ner_ms_per_ticket_batched": round(batch_ms, 2),
        "request_log_ms_per_request": {"names": round(statistics.mean(with_names), 2),
                                       "no_names": round(statistics.mean(without), 2),
                                       "added_mean": round(statistics.mean(with_names) - statistics.mean(without), 2),
                                       "added_p95": round(p95(with_names) - p95(without), 2)},
        "curation_s_per_1000_rows": {"regex_types": round(base_1k, 2), "with_person": round(person_1k, 2),
                                     "added": round(person_1k - base_1k, 2),
                                     "added_batched_estimate": round(batch_ms, 2)},
    }

    a = figures["all"]
    print(f"model: {ner.source}")
    print(f"names: {a['gold']} gold spans in {len(texts)} tickets; {a['predicted']} predicted")
    print(f"  overlap precision {a['precision']}  recall {a['recall']}   exact precision {a['exact_precision']}  "
          f"recall {a['exact_recall']}   name characters scrubbed {a['name_chars_scrubbed']}")
    for name in ("mixed case", "lower case", "UPPER CASE"):
        f = figures[name]
        print(f"  {name:10s} ({f['tickets']:4d} tickets, {f['gold']:3d} names): precision {f['precision']}  "
              f"recall {f['recall']}")
    tm = figures["time"]
    rl, cu = tm["request_log_ms_per_request"], tm["curation_s_per_1000_rows"]
    print(f"time: model load {tm['model_load_s']} s; NER {tm['ner_ms_per_ticket']} ms/ticket one at a time, "
          f"{tm['ner_ms_per_ticket_batched']} ms batched")
    print(f"  request log: {rl['names']} ms/request with names vs {rl['no_names']} without "
          f"(+{rl['added_mean']} ms mean, +{rl['added_p95']} ms p95) over {args.requests} requests")
    print(f"  curation scrub: {cu['with_person']} s per 1,000 rows with person vs {cu['regex_types']} s "
          f"without (+{cu['added']} s; +{cu['added_batched_estimate']} s if batched)")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
