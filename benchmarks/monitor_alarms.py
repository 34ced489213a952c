"""`slmake monitor` on the default build: false alarms on in-distribution traffic, detections on shifted
traffic, and the latency check under queueing, each for the monitor as it is and as it was.

    python benchmarks/monitor_alarms.py [--artifact cpu/gguf_q4_k_m] [--windows 100] [--sizes 50,100,200,500]

Needs a finished default build (build/data, build/bench, build/deploy, reports/bench). Traffic pools,
each answered by the served artifact itself:
- test split: the artifact's own greedy answers from bench (build/bench/<target>/outputs.jsonl), as
  the issue's "held-out test split sent through slmake serve";
- val split and fresh tickets (data/generate_it_tickets.py --seed 1, none in the data): answered by
  the deploy package through slmake serve's Engine and logged by its Telemetry (real request log);
- out of domain: banking questions; label shift: printing (6.5 % of the data) or security made 40 % of
  the fresh tickets.
Random windows (requests sampled without replacement, `--windows` per pool and size) are checked with
monitor's own analyse() under three rules: "now" (conf/monitor/default.yaml: the artifact's answers as
label reference, PSI and a p-value), "PSI only" (same reference, drift_p_value 1: no test), and "before"
(the train split's true labels as reference, PSI only: the monitor before issue 17). Latency: the val
split sent by 8 concurrent clients; alarms judged on service time (now) vs whole latency (before).
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from figures import record

ROOT = Path(__file__).resolve().parents[1]
BANKING = [
    "How do I dispute a card payment of £{n} at {shop}?", "What is the overdraft fee on my current account?",
    "Can I raise my contactless limit to £{n}?", "Why was my mortgage repayment of £{n} taken twice?",
    "Where is my refund from {shop}? It has been {d} days.", "How long does an international transfer to {c} take?",
    "My savings interest was not credited this month", "What exchange rate do you use for {c}?",
    "Is there a fee for topping up with Apple Pay?", "Please cancel the standing order to {shop}",
    "A cheque deposit of £{n} is still pending after {d} days", "What is the APR on your personal loans?",
    "I was charged twice by {shop} for the same purchase", "Can I get a replacement debit card sent abroad?",
    "Why did my salary of £{n} not arrive yet?", "How do I add my partner as a joint account holder?",
]


def banking(n: int, rng: random.Random) -> list[str]:
    return [rng.choice(BANKING).format(n=rng.randint(5, 2500), d=rng.randint(2, 20),
                                       shop=rng.choice(["Tesco", "Argos", "Boots", "Lidl", "Amazon", "Uber"]),
                                       c=rng.choice(["Mexico", "Chile", "Poland", "India", "Kenya"]))
            for _ in range(n)]


def fresh_tickets(n: int) -> list[dict]:
    """Tickets from the data's own generator with another seed that the build never saw."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "t.jsonl"
        subprocess.run([sys.executable, str(ROOT / "data/generate_it_tickets.py"), "--seed", "1", "--n", str(n),
                        "--out", str(out)], check=True, capture_output=True)
        rows = [json.loads(x) for x in out.read_text().splitlines()]
    seen = {json.loads(x)["ticket"] for x in (ROOT / "data/it_tickets/tickets.jsonl").read_text().splitlines()}
    unique: dict[str, dict] = {}
    for r in rows:
        if r["ticket"] not in seen:
            unique.setdefault(r["ticket"], r)
    return list(unique.values())


def serve(engine, telemetry, texts: list[str], concurrency: int = 1) -> None:
    """What slmake serve does per request (engine answer, telemetry record), without HTTP."""
    def one(text):
        arrived = time.perf_counter()
        a = engine.answer(text, engine.contract["max_new_tokens"], arrived)
        telemetry.record(endpoint="completions", input_text=text, output_text=a.text, prompt_tokens=a.prompt_tokens,
                         completion_tokens=a.completion_tokens, latency_s=a.latency_s, ttft_s=a.ttft_s,
                         schema_valid=a.schema_valid, parsed=a.parsed, status=422 if a.error else 200,
                         error=a.error, queue_s=a.queue_s)
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, texts))


def logged(run, name: str, texts: list[str], concurrency: int = 1) -> list[dict]:
    from slmake.monitor.inputs import read_window
    from slmake.telemetry import Telemetry

    log = run["tmp"] / f"{name}.jsonl"
    telemetry = Telemetry(run["artifact"], log, pii=run["data"]["pii"], label_field=run["data"]["label_field"])
    try:
        serve(run["engine"], telemetry, texts, concurrency)
    finally:
        telemetry.close()
    return read_window(log)[0]


def bench_records(artifact: str, data_dir: Path, outputs: Path, template: str, label_field: str) -> list[dict]:
    """The test split as served by the artifact, from bench's answers (no latency: not judged)."""
    from slmake.monitor.inputs import instruction_of

    target, name = artifact.split("/", 1)
    test = {}
    for line in (data_dir / "test.jsonl").read_text().splitlines():
        r = json.loads(line)
        test[r["id"]] = instruction_of(r["prompt"], template)
    out = []
    for line in (outputs / target / "outputs.jsonl").read_text().splitlines():
        r = json.loads(line)
        if r["artifact"] != name or r["id"] not in test:
            continue
        try:
            parsed = json.loads(r["text"])
        except ValueError:
            parsed = None
        label = parsed.get(label_field) if isinstance(parsed, dict) else None
        out.append({"artifact": artifact, "input": test[r["id"]], "output": r["text"], "status": 200,
                    "schema_valid": isinstance(parsed, dict), "parsed": parsed,
                    "label": None if label is None else str(label)})
    return out


def rates(check, windows: list[list[dict]]) -> dict:
    """Share of windows with a drift alarm, and how often each check fired."""
    fired, alarmed = Counter(), 0
    for w in windows:
        alerts = [t for k, t in check(w)["alerts"] if k == "retrain recommended"]
        alarmed += bool(alerts)
        for t in alerts:
            fired[next(k for k in ("input length", "unseen words", "label", "accuracy", "") if t.startswith(k))
                  or t] += 1
    return {"alarm rate": round(alarmed / len(windows), 3), "windows": len(windows), "fired": dict(fired)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--artifact", help="target/name (default: the one `slmake serve` picks)")
    ap.add_argument("--windows", type=int, default=100, help="random windows per pool and size")
    ap.add_argument("--sizes", default="50,100,200,500", help="window sizes (requests)")
    ap.add_argument("--fresh", type=int, default=1200, help="fresh in-distribution tickets to serve")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from slmake.chat_template import resolved
    from slmake.monitor.alerts import DRIFT, SERVING, analyse
    from slmake.monitor.inputs import read_split
    from slmake.monitor.run import bench_answer_labels, bench_figures
    from slmake.serve.engine import Engine
    from slmake.serve.package import resolve
    from slmake.spec import load_params

    spec = load_params(ROOT / "params.yaml")
    data, cfg = spec["data"], spec["monitor"]
    template, label_field = resolved(data), data["label_field"]
    package = resolve(args.artifact, ROOT / "build/deploy")
    artifact = package.name
    train = read_split(ROOT / "build/data/train.jsonl", template, label_field)
    val = read_split(ROOT / "build/data/val.jsonl", template, label_field)
    reference = bench_answer_labels(ROOT / "build/bench", artifact, label_field)
    bench = bench_figures(ROOT / "reports/bench", artifact)
    if not reference or not bench:
        raise SystemExit(f"no bench answers/figures for {artifact}: run the default build (`dvc repro`) first")
    rng = random.Random(args.seed)
    sizes = [int(s) for s in args.sizes.split(",")]

    t0 = time.perf_counter()
    engine = Engine(package)
    tmp = tempfile.TemporaryDirectory()
    run = {"engine": engine, "tmp": Path(tmp.name), "artifact": artifact, "data": data}
    try:
        fresh = fresh_tickets(args.fresh * 6)
        by_label = {}
        for r in fresh:
            by_label.setdefault(json.loads(r["response"])[label_field], []).append(r["ticket"])
        natural = [r["ticket"] for r in fresh[:args.fresh]]
        unused = set(r["ticket"] for r in fresh[args.fresh:])
        pools = {
            "test split (bench answers)": bench_records(artifact, ROOT / "build/data", ROOT / "build/bench", template,
                                                       label_field),
            "val split (served)": logged(run, "val", val["inputs"]),
            "fresh tickets (served)": logged(run, "fresh", natural),
        }
        shifted = {"out of domain: banking (served)": logged(run, "banking", banking(max(sizes) * 2, rng))}
        for label in ("printing", "security"):
            heavy = logged(run, label, [t for t in by_label[label] if t in unused][:max(sizes)])
            shifted[f"label shift: {label} 40 % (served)"] = (heavy, pools["fresh tickets (served)"])
        # the latency check under load: the val split from 8 clients at once
        loaded = logged(run, "loaded", val["inputs"], concurrency=8)
    finally:
        engine.close()
        tmp.cleanup()
    serve_s = time.perf_counter() - t0

    def rule(name):
        th = {**cfg["thresholds"], **({} if name == "now" else {"drift_p_value": 1.0})}
        ref = None if name == "before" else reference
        c = {**cfg, "thresholds": th}
        return lambda w: analyse(c, w, train, val, bench, None, data["response_schema"], label_field, ref)
    rules = {name: rule(name) for name in ("now", "PSI only", "before")}

    shares = ", ".join(f"{k} {v / len(reference):.1%}" for k, v in sorted(Counter(reference).items()))
    figures: dict = {"artifact": artifact, "train inputs": len(train["inputs"]),
                     "label reference": f"its {len(reference)} answers on the test split: {shares}",
                     "drift_p_value": cfg["thresholds"]["drift_p_value"], "windows per cell": args.windows,
                     "serving s": round(serve_s, 1)}
    totals = {r: [0, 0] for r in ("now", "PSI only", "before")}
    served = (sum(len(p) for name, p in pools.items() if "served" in name) + len(loaded)
              + sum(len(p[0]) if isinstance(p, tuple) else len(p) for p in shifted.values()))
    figures["served requests"] = served
    print(f"monitor_alarms: {artifact}, {args.windows} random windows per cell; reference: its {len(reference)} "
          f"answers on the test split; served {served} requests in {serve_s:.0f} s")
    print(f"\n{'traffic':<36}{'size':>6}  " + "".join(f"{r:>18}" for r in rules))

    def cell(kind, pool_name, size, windows):
        res = {r: rates(check, windows) for r, check in rules.items()}
        fired = ", ".join(f"{k} {v}" for k, v in res["now"]["fired"].items())
        figures.setdefault(f"{kind} (now / PSI only / before)", {})[f"{pool_name}, {size} requests"] = (
            " / ".join(f"{v['alarm rate']:.2f}" for v in res.values()) + (f"; now fired: {fired}" if fired else ""))
        if kind == "false alarm rate":
            for r, v in res.items():
                totals[r][0] += round(v["alarm rate"] * v["windows"])
                totals[r][1] += v["windows"]
        print(f"{pool_name:<36}{size:>6}  " + "".join(f"{v['alarm rate']:>18.3f}" for v in res.values())
              + (f"   now fired: {res['now']['fired']}" if res["now"]["fired"] else ""))

    print("-- false alarm rate (in-distribution: should be 0)")
    for pool_name, pool in pools.items():
        for size in sizes:
            if size <= len(pool):
                cell("false alarm rate", pool_name, size, [rng.sample(pool, size) for _ in range(args.windows)])
    figures["false alarms, all in-distribution windows"] = {r: f"{a} of {n}" for r, (a, n) in totals.items()}
    print("false alarms, all in-distribution windows: "
          + ", ".join(f"{r} {a} of {n}" for r, (a, n) in totals.items()))
    print("-- detection rate (shifted: should be 1)")
    for pool_name, pool in shifted.items():
        for size in sizes:
            if isinstance(pool, tuple):   # 40 % of the window from the heavy label, the rest natural
                heavy, base = pool
                k = size * 2 // 5
                if k > len(heavy):
                    continue
                windows = [rng.sample(heavy, k) + rng.sample(base, size - k) for _ in range(args.windows)]
            else:
                if size > len(pool):
                    continue
                windows = [rng.sample(pool, size) for _ in range(args.windows)]
            cell("detection rate", pool_name, size, windows)

    print("-- latency: the val split from 1 client, then from 8 at once")
    for clients, records in ((1, pools["val split (served)"]), (8, loaded)):
        old_log = [{k: v for k, v in r.items() if k not in ("queue_ms", "service_ms")} for r in records]
        for name, log in (("now (service time)", records), ("before (whole latency)", old_log)):
            res = rules["now"](log)
            m = res["metrics"]
            serving = [t for k, t in res["alerts"] if k == SERVING]
            p95 = m.get("service_p95_ms", m.get("latency_p95_ms"))
            figures.setdefault("latency p95 vs the bench's", {})[f"{clients} client(s), {name}"] = (
                f"{p95} ms = {m.get('latency_p95_ratio')}x the bench's {m.get('latency_bench_ms')} ms, queue p95 "
                f"{m.get('queue_p95_ms', '–')} ms, {m.get('concurrency_mean')} in flight: "
                + ("ALARM" if serving else "no alarm")
                + (" (and a drift alarm)" if any(k == DRIFT for k, _ in res["alerts"]) else ""))
            print(f"  {clients} client(s), {name:<24} p95 {p95} ms vs bench {m.get('latency_bench_ms')} ms = "
                  f"{m.get('latency_p95_ratio')}x, queue p95 {m.get('queue_p95_ms')} ms, {m.get('concurrency_mean')} "
                  f"in flight: {'ALARM ' + serving[0] if serving else 'no alarm'}")
    record("monitor_alarms", figures, title="monitor: false alarms and detections (issue 17)", notes=(
        "Windows are random samples of each pool (test split answered by bench; val split and fresh tickets "
        "answered by the deploy package through serve's Engine and Telemetry). 'now': label reference = the "
        "artifact's answers on the test split, drift flagged when PSI/share change AND p < drift_p_value; 'PSI "
        "only': same reference, no test; 'before': the train split's true labels, no test (the monitor before "
        "issue 17). The printing shift moves this model's answers little (it answers printing tickets "
        "'network' 55 %, 'printing' 9 %): +14 points of 'network' against a 200-answer reference needs ~500 "
        "requests. Latency 'before' judges the same log the old way (whole latency); the server itself now runs "
        "every generation on one runner thread (before that fix: 8 clients, whole p95 1006 ms = 92.8x, "
        "service p95 92 ms)."))


if __name__ == "__main__":
    main()
