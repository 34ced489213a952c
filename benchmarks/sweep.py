"""A K-target sweep trains once: DVC's cache serves every experiment the stages already built.

In a fresh copy of the project: build the baseline (`dvc repro`), queue one experiment per target
list with Hydra's sweep syntax, run the queue with `dvc queue start -j J` and print, per experiment,
which stages ran, which were up to date (a queued experiment starts from its baseline's outputs,
checked out of DVC's cache) or restored from the run cache (built by another experiment), and its
wall time. Only the stages of a target new to the sweep (compile/bench/deploy@<target>), report
and monitor should run; curate, base, train and evaluate never do. With J > 1 each stage's unset (null) thread keys take
cores // J (process_setup.py).

    python benchmarks/sweep.py [--targets '[cpu],[cpu,intel_npu]'] [-j J] [--keep DIR] [-S key=value ...]

-S overrides (Hydra syntax) apply to the baseline and to every experiment, e.g. a quick run:
-S train.max_steps=20 -S model.scratch.pretrain.steps=50 -S eval.limit=8 -S bench.limit=4
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from figures import record, variant_of
from pipeline import copy_project, sh

LINE = re.compile(r"^(?:Running stage '(?P<ran>[^']+)'|Stage '(?P<cached>[^']+)' is cached"
                  r"|Stage '(?P<same>[^']+)' didn't change)")


def stages_of(log: str) -> tuple[list[str], list[str], list[str]]:
    """(stages run, restored from the run cache, up to date) in a `dvc exp run` log. A queued
    experiment starts from its baseline's outputs (checked out of DVC's cache), so a stage whose
    inputs did not change is up to date; one whose inputs another experiment built comes from the
    run cache."""
    ran, cached, same = [], [], []
    for line in log.splitlines():
        m = LINE.match(line.strip())
        if m:
            (ran if m["ran"] else cached if m["cached"] else same).append(m["ran"] or m["cached"] or m["same"])
    return ran, cached, same


def queue_states(work: Path) -> dict[str, str]:
    """{experiment name: Queued | Running | Success | Failed} from `dvc queue status`."""
    rows = [r.split() for r in sh("dvc queue status", work)[1].splitlines()[1:]]
    return {r[1]: r[-1] for r in rows if len(r) >= 4 and r[-1] in ("Queued", "Running", "Success", "Failed")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--targets", default="[cpu],[cpu,intel_npu]", help="Hydra sweep over the targets list")
    ap.add_argument("-j", "--jobs", type=int, default=1, help="queue workers (dvc queue start -j)")
    ap.add_argument("--keep", type=Path, help="build in this folder and keep it (default: a temp dir)")
    ap.add_argument("-S", dest="overrides", action="append", default=[], help="spec override (Hydra syntax)")
    args = ap.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="slmake_sweep_"))
    copy_project(work)
    overrides = " ".join(f"-S {shlex.quote(o)}" for o in args.overrides)
    sh(f"slmake check --write params.yaml {' '.join(shlex.quote(o) for o in args.overrides)}", work)
    sh("git init -q && git add -A && git -c user.email=b@b -c user.name=b commit -qm sweep", work)
    base_s, base_out = sh("dvc repro", work)
    sh("git add -A && git -c user.email=b@b -c user.name=b commit -qm baseline", work)

    sh(f"dvc exp run --queue {overrides} -S {shlex.quote('targets=' + args.targets)}", work)
    t0 = time.perf_counter()
    # the workers it spawns inherit its stdout: captured, the call would wait for the queue to drain
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    subprocess.run(["dvc", "queue", "start", "-j", str(args.jobs)], cwd=work, check=True, env=env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    started, ended = {}, {}
    while True:
        now, states = time.perf_counter() - t0, queue_states(work)
        for name, state in states.items():
            if state != "Queued":
                started.setdefault(name, now)
            if state in ("Success", "Failed"):
                ended.setdefault(name, now)
        if states and all(s in ("Success", "Failed") for s in states.values()):
            break
        time.sleep(2)
    sweep_s = time.perf_counter() - t0

    params = {}
    for row in json.loads(sh("dvc exp show --json", work)[1]):
        for exp in row.get("experiments") or []:
            for rev in exp["revs"]:
                p = rev["data"]["params"]["params.yaml"]["data"]
                params[rev.get("name")] = list(p["targets"])
    print(f"baseline `dvc repro`: {base_s:.1f} s (stages run: {', '.join(stages_of(base_out)[0])})")
    print(f"sweep --targets {args.targets} on {args.jobs} queue worker(s): {sweep_s:.1f} s in all (polled every 2 s)")
    for name in sorted(started, key=started.get):
        ran, cached, same = stages_of(sh(f"dvc queue logs {name}", work)[1])
        print(f"  {name:<14} targets={params.get(name)}  {ended[name] - started[name]:6.1f} s  {states[name]}\n"
              f"    ran:          {', '.join(ran) or 'nothing'}\n"
              f"    run cache:    {', '.join(cached) or 'nothing'}\n"
              f"    up to date:   {', '.join(same) or 'nothing'}")
    trained = sum("train" in stages_of(sh(f"dvc queue logs {n}", work)[1])[0] for n in started)
    print(f"train ran in {trained} of {len(started)} experiments (the baseline trained once)")
    experiments = []
    for name in sorted(started, key=started.get):
        ran, cached, same = stages_of(sh(f"dvc queue logs {name}", work)[1])
        experiments.append({"targets": params.get(name), "seconds": round(ended[name] - started[name], 1),
                            "state": states[name], "ran": ran, "run cache": cached, "up to date": same})
    record("sweep", {"baseline dvc repro s": round(base_s, 1), "sweep s": round(sweep_s, 1),
                     "queue workers": args.jobs, "experiments that ran train": trained,
                     "experiments": experiments},
           variant=variant_of(args.overrides))
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
