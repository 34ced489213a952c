"""Pipeline figures (docs/figures/pipeline*.json), measured in a fresh copy of the project.

Prints: wall time of a clean default `dvc repro`, of a no-op `dvc repro` beside a `dvc status` of the
same pipeline, of `dvc pull` into a fresh clone (vs the rebuild), which stages rerun after a
bench-only edit, and the default spec's accuracy: base vs fine-tuned vs each artifact.

    python benchmarks/pipeline.py [--keep DIR] [-S key=value ...]   (overrides go to slmake check)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from figures import record, variant_of

ROOT = Path(__file__).resolve().parents[1]


def sh(cmd: str, cwd: Path) -> tuple[float, str]:
    t0 = time.perf_counter()
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    res = subprocess.run(cmd, cwd=cwd, shell=True, capture_output=True, text=True, env=env)
    if res.returncode != 0:
        sys.exit(f"`{cmd}` failed:\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}")
    return time.perf_counter() - t0, res.stdout


def ran(out: str) -> list[str]:
    return [line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage '")]


def pull_from_remote(work: Path) -> float:
    """Push the build to a local-path DVC remote, git-clone the project and time `dvc pull` there:
    what a second machine pays instead of rebuilding (docs/guide/sweeps.md). The clone must be clean."""
    store, clone = work.parent / f"{work.name}.store", work.parent / f"{work.name}.clone"
    try:
        sh(f"dvc remote add -d store {store} && dvc push -q && git add -A && "
           "git -c user.email=b@b -c user.name=b commit -qm built", work)
        sh(f"git clone -q {work} {clone}", work.parent)
        pull_s, _ = sh("dvc pull -q", clone)
        status = sh("dvc status", clone)[1].split()
        if status not in ([], ["check:", "always", "changed"]):
            sys.exit(f"the fresh clone is not up to date after `dvc pull`: {' '.join(status)}")
        return pull_s
    finally:
        sh(f"dvc remote remove store && rm -rf {store} {clone}", work)


def copy_project(work: Path, untracked: bool = False) -> None:
    """The tracked project without previous results (reports/, dvc.lock): a clean build.
    ``untracked``: the working tree as it is (new files not yet added, too)."""
    ls = ["git", "ls-files", *(["--cached", "--others", "--exclude-standard"] if untracked else [])]
    files = subprocess.run(ls, cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for f in files:
        if not f.startswith(("reports/", "dvc.lock")) and (ROOT / f).is_file():
            (work / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, work / f)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keep", type=Path, help="build in this folder and keep it (default: a temp dir)")
    ap.add_argument("-S", dest="overrides", action="append", default=[], help="spec override (Hydra syntax)")
    args = ap.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="slmake_bench_"))
    copy_project(work)
    overrides = " ".join(f"'{o}'" for o in args.overrides)
    sh(f"slmake check --write params.yaml {overrides}", work)
    sh("git init -q && git add -A && git -c user.email=b@b -c user.name=b commit -qm bench", work)

    clean_s, out = sh("dvc repro", work)
    _, noop_out = sh("dvc repro", work)  # the check stage's first fast pass (it just ran in full)
    noops, statuses = [], []
    for _ in range(5):  # interleaved, median: the same page cache and load for both
        statuses.append(sh("dvc status", work)[0])
        noops.append(sh("dvc repro", work)[0])
    noop_s, status_s = statistics.median(noops), statistics.median(statuses)
    pull_s = pull_from_remote(work)
    params = yaml.safe_load((work / "params.yaml").read_text())
    params["bench"]["repeats"] += 1
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    edit_s, edit_out = sh("dvc repro", work)

    ev = json.loads((work / "reports/evaluate.json").read_text())
    print(f"clean `dvc repro`:             {clean_s:7.1f} s  (stages: {', '.join(ran(out))})")
    print(f"no-op `dvc repro`:             {noop_s:7.2f} s  (median of 5; stages run: {ran(noop_out) or 'none'})")
    print(f"`dvc status`, same pipeline:   {status_s:7.2f} s  (median of 5; no-op repro / status = {noop_s / status_s:.2f}x)")
    print(f"fresh clone + `dvc pull`:      {pull_s:7.1f} s  (a local-path DVC remote; vs {clean_s:.1f} s to rebuild)")
    print(f"after a bench-only edit:       {edit_s:7.1f} s  (stages rerun: {', '.join(ran(edit_out))})")
    print()
    print(f"{'model / artifact':<34} {'accuracy':>8} {'valid':>6} {'parity':>6} {'size MB':>8} {'tok/s':>8} {'TTFT ms':>8} {'RSS MB':>7} {'n':>4}")
    artifacts = []
    for name in ("base", "finetuned"):
        m = ev[name]
        print(f"{name + ' (fp32, transformers)':<34} {m['exact_match']:>8.3f} {m['valid']:>6.3f} {'':>6} {'':>8} {'':>8} {'':>8} {'':>7} {m['n']:>4}")
    for bench_file in sorted(f for f in (work / "reports/bench").glob("*.json") if not f.name.endswith(".details.json")):
        details = json.loads(bench_file.with_suffix(".details.json").read_text())  # status, reason, n
        for target, arts in json.loads(bench_file.read_text()).items():
            for art, r in arts.items():
                r = {**details.get(target, {}).get(art, {}), **r}
                label = f"{target}/{art}"
                if r.get("status") != "ok":
                    print(f"{label:<34} {r.get('status')}: {r.get('reason', '')[:80]}")
                    artifacts.append({"artifact": label, "status": r.get("status"),
                                      "reason": r.get("reason", "")})
                    continue
                artifacts.append({"artifact": label, "size MB": r["size_mb"], "TTFT ms": r["ttft_ms"],
                                  "decode tok/s": r["decode_tok_s"], "peak RSS MB": r.get("peak_rss_mb"),
                                  "exact match": r["exact_match"], "parity": r["parity"], "n": r["n"],
                                  "Δ vs fp32": r.get("delta"), "Δ 95 % half-width": r.get("delta_ci95")})
                print(f"{label:<34} {r['exact_match']:>8.3f} {r['valid']:>6.3f} {r['parity']:>6.3f} {r['size_mb']:>8.2f} "
                      f"{r['decode_tok_s'] or 0:>8.1f} {r['ttft_ms'] or 0:>8.1f} {r.get('peak_rss_mb', 0):>7.1f} {r['n']:>4}")
    record("pipeline", {
        "clean dvc repro s": round(clean_s, 1), "no-op dvc repro s (median of 5)": round(noop_s, 2),
        "dvc status s (median of 5)": round(status_s, 2), "dvc pull into a fresh clone s": round(pull_s, 1),
        "bench-only edit s": round(edit_s, 1), "stages rerun after a bench-only edit": ran(edit_out),
        "base exact match (fp32)": ev["base"]["exact_match"],
        "fine-tuned exact match (fp32)": ev["finetuned"]["exact_match"],
        "fine-tuned valid JSON": ev["finetuned"]["valid"], "artifacts": artifacts},
        variant=variant_of(args.overrides))
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
