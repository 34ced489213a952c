"""Does this machine build the same bytes as the committed `dvc.lock`? (the cross-CPU oracle)

    python benchmarks/lock_diff.py [--keep DIR] [--lock dvc.lock] [--until evaluate]

Copies the tracked project (no dvc.lock, no reports) into a clean folder, runs `dvc repro` there
with the committed params.yaml, and diffs every stage's output hashes against the committed lock
(or --lock). Prints one row per stage output with the CPU it ran on, so a run on an Intel Xeon with
AMX, an AMD EPYC with AVX-512 and a plain AVX2 box can be compared side by side. Stages whose outputs
carry timings (bench, deploy, report, monitor) are listed but not expected to match; every stage up
to compile must. Exit status 1 when an expected-identical output differs.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from figures import record
from pipeline import ROOT, copy_project
from stage_times import run, timed_repro

TIMED = ("bench", "deploy", "report", "monitor")   # outputs hold measured seconds: never byte-stable


def cpu() -> tuple[str, str]:
    """The CPU model and the ISA extensions that pick different kernels (AVX-512, AMX, VNNI, BF16)."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")),
                 platform.processor() or "unknown")
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
    isa = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "avx_vnni") if f in flags]
    return model, " ".join(isa)


def mkl_branch() -> str:
    """The MKL code branch a stage runs here after process setup (e.g. "AVX2,STRICT")."""
    code = ("from slmake import process_setup; process_setup.portable_numerics(); "
            "from slmake.mkl_vendor import effective_branch; print(effective_branch())")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    return res.stdout.strip() or f"unknown ({res.stderr.strip()[-200:]})"


def outputs(lock: dict) -> dict[tuple[str, str], str]:
    """(stage, path) -> content hash for every out and metric of every stage in a dvc.lock."""
    rows = {}
    for stage, entry in lock.get("stages", {}).items():
        for out in entry.get("outs", []):
            rows[(stage, out["path"])] = out.get("md5") or out.get("hash") or "?"
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keep", type=Path, help="build in this folder and keep it (default: a temp dir)")
    ap.add_argument("--lock", type=Path, default=ROOT / "dvc.lock", help="the lock to compare with")
    ap.add_argument("--until", help="build only up to this stage (dvc repro <stage>), e.g. evaluate")
    args = ap.parse_args()
    committed = yaml.safe_load(args.lock.read_text())
    work = args.keep or Path(tempfile.mkdtemp(prefix="slmake_lockdiff_"))
    work.mkdir(parents=True, exist_ok=True)
    copy_project(work)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    run(["sh", "-c", "git init -q && git add -A && git -c user.email=b@b -c user.name=b commit -qm lockdiff"],
        work, env)
    _, total = timed_repro(work, env, work / "lock_diff.log",
                               ("dvc", "repro", *([args.until] if args.until else [])))
    fresh = outputs(yaml.safe_load((work / "dvc.lock").read_text()))
    model, isa = cpu()
    branch = mkl_branch()
    print(f"\nCPU: {model} ({isa}), MKL branch {branch}; built in {total:.0f} s; compared with {args.lock}")
    print(f"{'stage':<22} {'output':<40} {'committed':<12} {'here':<12} result")
    rows, bad = [], 0
    for (stage, path), want in sorted(outputs(committed).items()):
        got = fresh.get((stage, path))
        if got is None:
            continue  # not built (--until) or a target this spec does not enable
        timed = stage.split("@")[0] in TIMED
        verdict = "same" if got == want else ("differs (timings)" if timed else "DIFFERS")
        bad += verdict == "DIFFERS"
        rows.append({"stage": stage, "output": path, "committed": want[:10], "here": got[:10], "result": verdict})
        print(f"{stage:<22} {path:<40} {want[:10]:<12} {got[:10]:<12} {verdict}")
    record("lock_diff", {"cpu": model, "isa": isa, "mkl branch": branch, "outputs": rows, "differing": bad,
                         "build s": round(total, 1)}, variant=model)  # one record per CPU model
    print(f"\n{bad} output(s) that must be byte-identical differ" if bad else
          "\nevery output that must be byte-identical matches the committed lock")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
