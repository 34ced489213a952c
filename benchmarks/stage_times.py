"""Wall time of every stage of a fresh build, read off `dvc repro`'s own output as it streams.

    python benchmarks/stage_times.py [--keep DIR] [-S key=value ...]   (overrides go to slmake check)

Copies the tracked project into a clean folder (no dvc.lock, no reports), composes the spec,
runs one `dvc repro` and prints a table: stage, seconds, share of the total. A stage's time runs
from DVC's "Running stage" line to the next one (or the end), so it includes DVC's own hashing of
that stage's outputs -- what a user waits for.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from figures import record, variant_of
from pipeline import copy_project


def run(cmd: list[str], cwd: Path, env: dict) -> None:
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if res.returncode != 0:
        sys.exit(f"`{' '.join(cmd)}` failed:\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}")


def timed_repro(work: Path, env: dict, log: Path, cmd: tuple[str, ...] = ("dvc", "repro")
                ) -> tuple[list[tuple[str, float]], float]:
    """Stream ``cmd`` (a `dvc repro`, maybe with a target or a lock prefix) to ``log``, stamping each
    "Running stage 'x'" line; returns [(stage, seconds)] and the total. On failure: exits naming
    the failing stage, with its output's tail."""
    starts: list[tuple[str, float, int]] = []
    lines: list[str] = []
    t0 = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(list(cmd), cwd=work, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, bufsize=1)
        for line in proc.stdout:
            out.write(line)
            lines.append(line.rstrip("\n"))
            if line.startswith("Running stage '"):
                starts.append((line.split("'")[1], time.perf_counter(), len(lines)))
                print(f"  {time.perf_counter() - t0:7.1f} s  {starts[-1][0]}", flush=True)
        rc = proc.wait()
    end = time.perf_counter()
    if rc != 0:
        stage, _, at = starts[-1] if starts else ("(before any stage)", 0, 0)
        tail = "\n".join(lines[max(at - 1, len(lines) - 60):])
        sys.exit(f"`{' '.join(cmd)}` failed (rc {rc}) in stage {stage!r}; full log {log}; tail:\n{tail}")
    times = [(name, (starts[i + 1][1] if i + 1 < len(starts) else end) - t)
             for i, (name, t, _) in enumerate(starts)]
    return times, end - t0


def accuracy(work: Path) -> dict:
    """What the build scored: fp32 (evaluate) and every cpu artifact (bench), validation and test."""
    out = {}
    ev = work / "reports" / "evaluate.json"
    if ev.exists():
        ft = json.loads(ev.read_text()).get("finetuned", {})
        out["fine-tuned fp32"] = {"test exact match": ft.get("exact_match"), "val exact match": ft.get("val_exact_match"),
                                  "test prompts": ft.get("n")}
    bench = work / "reports" / "bench" / "cpu.json"
    if bench.exists():
        out["cpu artifacts"] = [{"artifact": name, "test exact match": row.get("exact_match"),
                                 "val exact match": row.get("val_exact_match"), "size MB": row.get("size_mb"),
                                 "decode tok/s": row.get("decode_tok_s")}
                                for name, row in sorted(json.loads(bench.read_text()).get("cpu", {}).items())
                                if isinstance(row, dict)]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keep", type=Path, help="build in this folder and keep it (default: a temp dir)")
    ap.add_argument("-S", dest="overrides", action="append", default=[], help="spec override (Hydra syntax)")
    args = ap.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="slmake_stages_"))
    work.mkdir(parents=True, exist_ok=True)
    copy_project(work)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    run([str(Path(sys.executable).parent / "slmake"), "check", "--write", "params.yaml", *args.overrides], work, env)
    run(["sh", "-c", "git init -q && git add -A && git -c user.email=b@b -c user.name=b commit -qm stages"], work, env)
    times, total = timed_repro(work, env, work / "stage_times.log")
    print(f"\n{'stage':<24} {'seconds':>8} {'share':>6}")
    for name, s in times:
        print(f"{name:<24} {s:8.1f} {s / total:6.1%}")
    print(f"{'total':<24} {total:8.1f}")
    (work / "stage_times.json").write_text(json.dumps({"total_s": round(total, 1),
                                                       "stages": {n: round(s, 1) for n, s in times}}, indent=2))
    stages = [{"stage": n, "seconds": round(s, 1), "share": f"{s / total:.1%}"} for n, s in times]
    record("stage_times", {"stages": stages, "total s": round(total, 1), **accuracy(work)},
           variant=variant_of(args.overrides))
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
