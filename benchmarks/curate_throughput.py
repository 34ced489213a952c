"""Curation throughput: 100,000 synthetic ticket records (with duplicates, near-duplicates,
conflicts, PII and malformed lines) through `run_curation`; prints wall time, records/s and the
curation process's peak RSS.

    python benchmarks/curate_throughput.py [--n 100000] [--threads 2] [--keep DIR]

The quality bar is <= 60 s for 100k records on 2 cores.  The curation runs in a child process
(pinned to --threads cores where the OS allows it) so its peak RSS is measured on its own.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from figures import record

CATEGORIES = ["network", "hardware", "software", "access", "email", "security", "printing", "other"]
WORDS = ("laptop printer vpn outlook teams password account screen keyboard mouse wifi network server "
         "drive folder share license install update crash error freeze slow login token badge phone "
         "monitor dock cable office floor building meeting deadline manager urgent please help again "
         "today yesterday morning since cannot unable broken stuck keeps showing message window app").split()
NAMES = ["Ana", "Ben", "Chen", "Dara", "Eli", "Femi", "Gus", "Hana", "Ivo", "Jun"]


def luhn_complete(prefix: str) -> str:
    digits = [int(c) for c in prefix + "0"]
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2 == 1:
            d = d * 2 - 9 if d * 2 > 9 else d * 2
        total += d
    return prefix + str((10 - total % 10) % 10)


def generate(path: Path, n: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    made: list[str] = []
    with open(path, "wb") as f:
        for i in range(n):
            r = rng.random()
            if r < 0.002:
                f.write(b"{not json at all\n")
                continue
            if r < 0.004:
                f.write(b'{"ticket": "caf\xe9 latin-1 bytes", "response": "{}"}\n')
                continue
            if r < 0.005:
                f.write(json.dumps({"ticket": f"no response {i}"}).encode() + b"\n")
                continue
            if r < 0.015 and made:  # exact duplicate of an earlier line
                f.write(made[rng.randrange(len(made))].encode() + b"\n")
                continue
            words = rng.choices(WORDS, k=rng.randint(10, 30))
            if r < 0.035 and made:  # near-duplicate: an earlier ticket with one word changed
                words = json.loads(made[rng.randrange(len(made))])["ticket"].split()
                words[rng.randrange(len(words))] = rng.choice(WORDS)
            text = " ".join(words).capitalize() + f". Ref {i}."
            if rng.random() < 0.03:
                text += rng.choice([
                    f" Mail me at {rng.choice(NAMES).lower()}.{i}@example.com",
                    f" Call +44 20 7946 {rng.randint(1000, 9999)}",
                    f" Card {luhn_complete(str(4000000000000000 + rng.randrange(10**12))[:15])}",
                    " IBAN GB82 WEST 1234 5698 7654 32",
                    f" Server 10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)} is down",
                ])
            cat = CATEGORIES[len(words[0]) % 8]
            action = rng.choices(["resolve", "escalate", "refuse"], weights=[80, 10, 10])[0]
            resp = json.dumps({"category": cat, "priority": rng.choice(["low", "medium", "high"]), "action": action})
            line = json.dumps({"ticket": text, "response": resp})
            made.append(line)
            if len(made) > 5000:
                made.pop(rng.randrange(len(made)))
            f.write(line.encode() + b"\n")


def config(src: Path) -> dict:
    import yaml

    cfg = yaml.safe_load((Path(__file__).resolve().parents[1] / "conf/data/it_tickets.yaml").read_text())
    cfg["source"] = str(src)
    return cfg


def child(src: Path, out: Path) -> None:
    from slmake.data.curate import run_curation

    t = time.perf_counter()
    report = run_curation(config(src), out / "data", out / "reports/curation.json")
    wall = time.perf_counter() - t
    print(json.dumps({"wall_s": wall, "input": report["input"], "kept": report["kept"],
                      "dropped_total": report["dropped_total"], "quarantined_total": report["quarantined_total"],
                      "pii": report["pii"]["counts"], "near_clusters": report["dedup"]["near_clusters"]}))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--keep", type=Path, default=None, help="keep the generated data and outputs here")
    ap.add_argument("--child", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return 0
    work = args.keep or Path(tempfile.mkdtemp(prefix="curate_bench_"))
    work.mkdir(parents=True, exist_ok=True)
    src = work / "synthetic.jsonl"
    t = time.perf_counter()
    generate(src, args.n)
    print(f"generated {args.n} records ({src.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - t:.1f} s")
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "OPENBLAS_NUM_THREADS": str(args.threads)}
    cmd = [sys.executable, __file__, "--child", str(src), str(work / "out")]
    if hasattr(os, "sched_setaffinity"):
        cores = sorted(os.sched_getaffinity(0))[: args.threads]
        cmd = ["taskset", "-c", ",".join(map(str, cores)), *cmd] if shutil_which("taskset") else cmd
    res = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if res.returncode != 0:
        print(res.stdout, res.stderr, file=sys.stderr)
        return res.returncode
    stats = json.loads(res.stdout.strip().splitlines()[-1])
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    rss_mb, cpu_s = usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime
    print(f"curated {stats['input']} records in {stats['wall_s']:.1f} s = {stats['input'] / stats['wall_s']:,.0f} "
          f"records/s, peak RSS {rss_mb:.0f} MB ({args.threads} cores; child CPU time {cpu_s:.1f} s incl. imports)")
    print(f"kept {stats['kept']}, dropped {stats['dropped_total']}, quarantined {stats['quarantined_total']}, "
          f"near-dup clusters {stats['near_clusters']}, PII {stats['pii']}")
    ok = stats["wall_s"] <= 60
    record("curate_throughput", {
        "records": stats["input"], "wall s": round(stats["wall_s"], 1),
        "records/s": round(stats["input"] / stats["wall_s"]), "peak RSS MB": round(rss_mb),
        "cores": args.threads,
        "kept": stats["kept"], "dropped": stats["dropped_total"], "quarantined": stats["quarantined_total"],
        "near-duplicate clusters": stats["near_clusters"], "PII found": stats["pii"], "goal s": 60},
        variant=None if args.n == 100_000 else f"n{args.n}")
    print("PASS" if ok else "FAIL", "(bar: <= 60 s per 100k records)")
    return 0 if ok else 1


def shutil_which(name: str) -> str | None:
    import shutil

    return shutil.which(name)


if __name__ == "__main__":
    sys.exit(main())
