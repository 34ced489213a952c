"""`slmake search` on three launchers: one 4-trial grid on the micro spec, run one trial at a time,
two at once on this machine (Hydra's joblib launcher, `--parallel 2`), and two at once as
hydra-submitit-launcher local jobs, each in its own clone through a local-path git remote and DVC
remote (`--launcher submitit_local --parallel 2`); `--modes ray`: two at once as Ray tasks on a
local Ray instance, in clones (`--launcher slmake_ray --parallel 2`, the ray extra).

The grid: targets.cpu.gguf.quants [q8_0],[q4_k_m] (outer) x train.lr 0.004,0.008 (inner), 10
training steps, GGUF only. The first two trials train (two learning rates); the next two change
only the quantization and should restore training from DVC's run cache: in the project's cache
(sequential, joblib) or pulled from the DVC remote where the first two pushed it (submitit). Each
mode starts from its own copy of one micro build (the same run cache). Per mode: wall time of the
search, stages run / restored from the run cache, and the threads each trial's bench used (x trials
at once <= cores: no oversubscription).

    python benchmarks/search_launchers.py [--micro DIR] [--modes sequential,joblib,submitit,ray] [--keep DIR]

--micro: an already built micro project (tests/e2e_utils.build_micro) to copy, else one is built
(~1.5 min on 2 cores).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT / "tests"))
from figures import commit, machine, record  # noqa: E402
from pipeline import sh  # noqa: E402

GIT = "git -c user.email=b@b -c user.name=b"
GRID = """# @package _global_
hydra:
  sweeper:
    params:
      targets.cpu.gguf.quants: "[q8_0],[q4_k_m]"
      train.lr: 0.004,0.008
      train.max_steps: 10
      targets.cpu.onnx_genai.precisions: "[]"
"""
NOTES = ("search s: wall time of `slmake search grid` (for submitit also the driver's dvc push of the build, each "
         "trial's clone + dvc pull, dvc exp push, and the driver's dvc exp pull). Trials at once share the cores: "
         "each trial's null thread keys get cores // 2. In a fresh clone DVC restores a stage from the run cache only "
         "when all its outputs are in the cache, and `dvc push/exp push --run-cache` does not push a run's "
         "`cache: false` outputs (train's and evaluate's metrics): so the submitit trials of the second batch "
         "retrain, where the in-project trials restore train and evaluate from the project's own cache.")
MODES = {"sequential": [], "joblib": ["--parallel", "2"], "submitit": ["--launcher", "submitit_local", "--parallel", "2"],
         "ray": ["--launcher", "slmake_ray", "--parallel", "2"]}
DEFAULT = "sequential,joblib,submitit"  # ray: only where the ray extra is installed (requirements/ray.txt)


def prepare(micro: Path, work: Path, mode: str) -> Path:
    repo = work / mode / "project"
    shutil.copytree(micro, repo, symlinks=True)
    sh("git checkout -q -- . && git clean -fdq && dvc checkout -q", repo)
    (repo / "conf/search").mkdir(exist_ok=True)
    (repo / "conf/search/grid.yaml").write_text(GRID)
    if mode in ("submitit", "ray"):  # trials in clones: a git remote and a DVC remote
        sh(f"git init -q --bare {work / mode / 'hub.git'} && git remote add origin {work / mode / 'hub.git'}", repo)
        sh(f"dvc remote add -d store {work / mode / 'store'}", repo)
    sh(f"git add -A && {GIT} commit -qm 'search grid'", repo)
    if mode in ("submitit", "ray"):
        sh("git push -q origin HEAD:refs/heads/main", repo)
    return repo


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--micro", type=Path, help="a built micro project to copy (default: build one)")
    ap.add_argument("--modes", default=DEFAULT, help="comma-separated: " + ", ".join(MODES) + f" (default {DEFAULT}; "
                    "another set is recorded as its own variant, e.g. search_launchers.ray.json)")
    ap.add_argument("--keep", type=Path, help="work in this (new) folder and keep it (default: a temp dir, removed)")
    args = ap.parse_args()
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    m = machine()
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {m['machine']}; {m['cpu']}; commit {commit()}")
    work = args.keep or Path(tempfile.mkdtemp(prefix="slmake_search_launchers_"))
    work.mkdir(parents=True, exist_ok=True)
    micro = args.micro
    if micro is None:
        from e2e_utils import build_micro

        t0 = time.perf_counter()
        micro = build_micro(work / "micro")
        print(f"micro build: {time.perf_counter() - t0:.0f} s")
    cores = len(os.sched_getaffinity(0))
    results = {}
    modes = args.modes.split(",")
    if "ray" in modes and importlib.util.find_spec("ray") is None:
        sys.exit("--modes ray: Ray is not installed (.venv/bin/pip install -r requirements/ray.txt "
                 "-c requirements/constraints.txt)")
    for mode in modes:
        repo = prepare(micro, work, mode)
        seconds, _ = sh(f"slmake search grid {' '.join(MODES[mode])}", repo)
        records = [json.loads(ln) for ln in (repo / ".slmake/search/grid/trials.jsonl").read_text().splitlines()]
        at_once = 2 if MODES[mode] else 1
        trials = []
        for r in records:
            threads = None
            if r.get("commit"):
                details = json.loads(sh(f"git show {r['commit']}:reports/bench/cpu.details.json", repo)[1])["cpu"]
                threads = max((d.get("threads") or 0) for d in details.values() if isinstance(d, dict))
            trials.append({"overrides": " ".join(r["overrides"][:2]), "status": r["status"], "seconds": r.get("seconds"),
                           "ran": r.get("stages_run"), "run cache": r.get("stages_cached"), "bench threads": threads})
        trained = sum("train" in (t["ran"] or []) for t in trials)
        restored = sum("train" in (t["run cache"] or []) for t in trials)
        worst = max((t["bench threads"] or 0) for t in trials) * at_once
        results[mode] = {"launcher": " ".join(MODES[mode]) or "(basic, one at a time)", "search s": round(seconds, 1),
                         "trials ok": sum(t["status"] == "ok" for t in trials), "trials that trained": trained,
                         "train restored from run cache": restored,
                         "stages run": sum(len(t["ran"] or []) for t in trials),
                         "stages from run cache": sum(len(t["run cache"] or []) for t in trials),
                         "bench threads x trials at once": f"{worst} on {cores} cores", "trials": trials}
        print(f"{mode:<10} {seconds:6.1f} s  trained {trained}, train from run cache {restored}, "
              f"stages run {results[mode]['stages run']} / from run cache {results[mode]['stages from run cache']}, "
              f"bench threads x trials at once {worst} on {cores} cores")
        for t in trials:
            print(f"    {t['overrides']:<48} {t['status']:<7} {t['seconds']} s  ran {t['ran']}  "
                  f"run cache {t['run cache']}  bench threads {t['bench threads']}")
    record("search_launchers", results, variant=None if args.modes == DEFAULT else "-".join(modes),
           title="slmake search: a 4-trial grid on the micro spec, one at a time vs 2 at once (joblib) vs 2 "
           "submitit-local jobs in clones" if args.modes == DEFAULT else
           f"slmake search: the same 4-trial micro grid, launchers: {', '.join(' '.join(MODES[m]) for m in modes)}",
           notes=NOTES + (" Ray: slmake's launcher (hydra/launcher=slmake_ray) on a local Ray instance, "
               + ", ".join(f"{d} {importlib.metadata.version(d)}" for d in ("ray", "joblib", "cloudpickle"))
               + " (the lock's joblib and cloudpickle, requirements/ray.txt on top)." if "ray" in modes else ""))
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
