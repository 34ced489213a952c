"""How long CI takes, and where the time goes: `.ci/run` on a fresh clone of the current commit.

    python benchmarks/ci_time.py [--work DIR] [--keep] [--pip-cache]

Clones HEAD (committed work only) into a scratch folder beside a link to ../shared (as CI's checkout
has it), runs `bash .ci/run` there with pip's cache off (a clean machine downloads everything), and
records the wall time of each phase (`.ci/run: phase ... took` lines), the install's own steps
(`install.sh: [Ns]` stamps), each test tier's pytest summary and the slow tier's slowest tests in
docs/figures/ci_time.json. Run it alone: it takes both cores for ~30 minutes, and any other job on
the machine lengthens every phase.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from figures import ROOT, command_line, commit, record

PHASE = re.compile(r"^\.ci/run: phase (\w+) took (\d+) s")
STAMP = re.compile(r"^install\.sh: \[(\d+)s\] (.+)$")
SUMMARY = re.compile(r"^=*\s*(\d+ passed.*) in ([\d.]+)s")
SLOW = re.compile(r"^([\d.]+)s (setup|call|teardown)\s+(\S+)")


def parse(lines: list[str], arrived: list[float] | None = None) -> dict:
    """The figures in a `.ci/run` log: phases, install steps, tier summaries, the slowest tests.
    ``arrived``: each line's arrival, in monotonic seconds since .ci/run started; phases and install
    steps are then timed by it, not by the seconds .ci/run and install.sh print (bash's SECONDS and
    install.sh's stamps follow the wall clock, which a time sync can move by a minute mid-run)."""
    phases, install, tiers, slowest, tier, last_phase = {}, [], [], [], None, 0.0
    for i, line in enumerate(lines):
        if m := PHASE.match(line):
            if arrived is None:
                phases[m.group(1)] = int(m.group(2))
            else:
                phases[m.group(1)], last_phase = round(arrived[i] - last_phase), arrived[i]
        elif m := STAMP.match(line):
            install.append(f"{m.group(1) if arrived is None else round(arrived[i])} s: {m.group(2)}")
        elif m := SUMMARY.match(line):
            tiers.append({"summary": m.group(1).strip(" ="), "pytest s": float(m.group(2))})
        elif "slowest" in line and "durations" in line:
            tier = len(tiers)   # durations print before their tier's summary line
        elif (m := SLOW.match(line)) and tier is not None:
            slowest.append((tier, f"{float(m.group(1)):.0f} s {m.group(2)} {m.group(3)}"))
    names = ("unit", "slow")
    return {"phases s": phases, "install steps (elapsed at each)": install,
            "test tiers": {names[i] if i < len(names) else str(i): t for i, t in enumerate(tiers)},
            "slow tier's 15 slowest": [s for i, s in slowest if i == len(tiers) - 1][:15]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, help="scratch folder (default: a new temp folder)")
    ap.add_argument("--keep", action="store_true", help="keep the clone (its .venv, build and log)")
    ap.add_argument("--pip-cache", action="store_true", help="let pip use its cache (default: off, as on CI)")
    args = ap.parse_args()
    work = (args.work or Path(tempfile.mkdtemp(prefix="slmake-ci-"))).resolve()
    clone = work / "main"
    if clone.exists():
        sys.exit(f"ci_time: {clone} exists: give an empty --work folder")
    work.mkdir(parents=True, exist_ok=True)
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    measured = commit(clone)   # what runs: HEAD's committed work, whatever the workspace holds
    if (ROOT.parent / "shared").is_dir() and not (work / "shared").exists():
        (work / "shared").symlink_to(ROOT.parent / "shared")
    env = {**os.environ, **({} if args.pip_cache else {"PIP_NO_CACHE_DIR": "1"})}
    env.pop("VIRTUAL_ENV", None)   # the clone makes its own .venv from the system's python3
    env["PATH"] = os.pathsep.join(d for d in env.get("PATH", "").split(os.pathsep) if "/.venv/" not in d + "/")
    log = work / "ci.log"
    t0 = time.perf_counter()
    lines, arrived = [], []
    with log.open("w") as out:
        proc = subprocess.Popen(["bash", ".ci/run"], cwd=clone, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, bufsize=1)
        for line in proc.stdout:
            out.write(line)
            lines.append(line.rstrip("\n"))
            arrived.append(time.perf_counter() - t0)
            if PHASE.match(line) or STAMP.match(line) or SUMMARY.match(line):
                print(f"[{time.perf_counter() - t0:6.0f} s] {line.rstrip()}", flush=True)
        rc = proc.wait()
    wall = time.perf_counter() - t0
    print(f"ci_time: .ci/run exited {rc} after {wall:.0f} s (log: {log})")
    if rc != 0:
        print("\n".join(lines[-40:]))
        return rc
    figures = {"total s": round(wall), **parse(lines, arrived)}
    record("ci_time", figures, command_line(), commit_id=measured,
           title="CI: .ci/run on a fresh clone",
           notes="A fresh clone of the commit, pip's cache off; Chromium already installed (the apt "
                 "step runs beside install.sh on CI). The 30-minute goal is for the total.")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
