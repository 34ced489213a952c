"""Clean recovery (issue 9.6): SIGKILL `dvc repro` (its whole process group) at seeded random
points of each stage of the real pipeline, re-run it, and check that it recovers (a) with the
hashes of an uninterrupted build (b) and no temp litter under build/ or reports/ (c).

Per stage: a kill while the stage script runs (`dvc repro -f -s S`, delay a seeded fraction of
the stage's duration in the uninterrupted build), one after the script ended (in DVC's hashing,
caching and dvc.lock writing), `dvc repro`; then a kill while it runs and `dvc repro` again, as a
user would (DVC restores base..compile from its run cache: the check stage sweeps the kill's
litter; curate and bench it reruns, and that rerun is killed too before the last `dvc repro`).
What slmake guarantees is asserted; DVC's part is not: it rewrites dvc.lock and .dvc/tmp/rwlock
in place, so a kill in its own phase can half-write them and every later dvc command fails until
`slmake doctor --fix` repairs them (counted, and the doctor's dry run must have flagged each such
case).
"""

import copy
import hashlib
import json
import os
import random
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import yaml

from e2e_utils import MICRO, make_project, merge, micro_tickets, ran_stages, sh
from slmake.io import sweep_litter

STAGES = ("curate", "base", "train", "evaluate", "compile@cpu", "bench@cpu")
SEED = 9
# Timings and load times: these uncached reports differ between any two runs, killed or not.
TIMING_OUTS = {"reports/bench/cpu.json", "reports/bench/cpu.details.json"}
# What a killed writer leaves: temp siblings (atomic_dir, write_text_atomic, curate's work folder),
# a half-swapped .<name>.old, a GGUF being written.
LITTER = re.compile(r"^\..+\.(tmp|old)$|\.partial$")
# DVC's own temp name (dvc_objects tmp_fname: "." + token_urlsafe(16) + ".tmp"), left beside an
# output when a kill stops DVC linking it from the cache; the check stage sweeps these too.
DVC_TMP = re.compile(r"^\.[A-Za-z0-9_-]{22}\.tmp$")

# MICRO, smaller still: the model still decodes real tokens (non-empty reference outputs), in
# ~40 s for the uninterrupted build on 2 cores.
SPEC = copy.deepcopy(MICRO)
merge(SPEC, {
    "model": {"scratch": {"hidden_size": 64, "intermediate_size": 128, "num_layers": 1,
                          "pretrain": {"steps": 150}}},
    "train": {"max_steps": 40},
    "eval": {"limit": 6, "max_new_tokens": 12},
    "targets": {"cpu": {"gguf": {"quants": ["f16", "q8_0"]}, "onnx_genai": {"precisions": ["int4"]}}},
    "bench": {"speed_prompts": 1, "limit": 4},
})


class Repro:
    """`dvc repro` in its own session (so one killpg takes DVC, the stage and its tools), every
    output line time-stamped as it arrives."""

    def __init__(self, repo: Path, *args: str, env: dict):
        self.proc = subprocess.Popen(["dvc", "repro", *args], cwd=repo, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, start_new_session=True)
        self.lines: list[tuple[float, str]] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append((time.monotonic(), line.rstrip("\n")))

    def wait_line(self, text: str, timeout: float = 300) -> float | None:
        """When ``text`` was printed, or None if the run ended without printing it."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for t, line in list(self.lines):
                if line.startswith(text):
                    return t
            if self.proc.poll() is not None:
                self.reader.join()
                return next((t for t, line in self.lines if line.startswith(text)), None)
            time.sleep(0.005)
        raise TimeoutError(f"no {text!r} after {timeout} s:\n{self.output[-3000:]}")

    def finish(self, timeout: float = 600) -> int:
        rc = self.proc.wait(timeout)
        self.reader.join()
        return rc

    @property
    def output(self) -> str:
        return "\n".join(line for _, line in self.lines)


def _group_cmdlines(pgid: int) -> list[str]:
    """Command lines of the live processes in process group ``pgid``."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                found.append((stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except (OSError, IndexError, ValueError):
            pass
    return found


def _script_alive(run: Repro, stage: str) -> bool:
    return any(f"stages/{stage.split('@')[0]}.py" in c for c in _group_cmdlines(run.proc.pid))


def _kill_at(run: Repro, stage: str, delay: float, after_script: bool = False) -> dict | None:
    """SIGKILL ``run``'s process group ``delay`` s after it starts ``stage`` (or, ``after_script``,
    after the stage script has exited: DVC is hashing, caching, writing dvc.lock, git-adding it);
    None if the run never started the stage or ended first (no kill; it must have succeeded)."""
    start = run.wait_line(f"Running stage '{stage}'")
    if start is not None and after_script:
        seen = False
        while run.proc.poll() is None:
            alive = _script_alive(run, stage)
            if seen and not alive:
                break
            seen |= alive
            time.sleep(0.01)
        start = time.monotonic()
    if start is not None:
        time.sleep(max(0.0, start + delay - time.monotonic()))
    if start is None or run.proc.poll() is not None:
        assert run.finish() == 0, run.output[-3000:]
        return None
    in_script = _script_alive(run, stage)
    os.killpg(run.proc.pid, signal.SIGKILL)
    rc = run.finish()
    if rc == 0:  # it ended between the check and the kill
        return None
    assert rc == -signal.SIGKILL, (rc, run.output[-3000:])
    return {"stage": stage, "delay_s": round(delay, 2), "phase": "stage script" if in_script else "dvc"}


def _litter(repo: Path, dvc: bool = True) -> list[str]:
    """Litter under build/ and reports/ (``dvc=False``: slmake's writers' only)."""
    return sorted(str(p.relative_to(repo)) for top in ("build", "reports") for p in (repo / top).rglob("*")
                  if LITTER.search(p.name) and (dvc or not DVC_TMP.match(p.name)))


def _outs(repo: Path) -> dict:
    """Every stage's outputs in dvc.lock (path -> md5), less the uncached timing reports."""
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    return {name: {o["path"]: o["md5"] for o in st.get("outs", []) if o["path"] not in TIMING_OUTS}
            for name, st in lock.items()}


def _lock_paths(repo: Path) -> dict | None:
    """Each stage's output paths in dvc.lock; None if it does not parse (a half-written lock)."""
    try:
        lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
        return {name: sorted(o["path"] for o in st["outs"]) for name, st in lock.items() if "outs" in st}
    except (yaml.YAMLError, KeyError, TypeError, AttributeError):
        return None


def _bad_json(path: Path) -> bool:
    try:
        json.loads(path.read_text())
    except FileNotFoundError:
        return False
    except ValueError:
        return True
    return False


def _cache(repo: Path) -> set[str]:
    return {str(p.relative_to(repo)) for p in (repo / ".dvc/cache").rglob("*") if p.is_file()}


def _cached(repo: Path, md5: str) -> Path | None:
    """Object ``md5`` in DVC's cache (files/md5/, or the legacy layout at the cache's top), or None."""
    for top in (repo / ".dvc/cache/files/md5", repo / ".dvc/cache"):
        if (top / md5[:2] / md5[2:]).is_file():
            return top / md5[:2] / md5[2:]
    return None


def _unsound(repo: Path, objects: list[str]) -> list[str]:
    """Cache objects that are not whole: a file whose md5 is not its name, a tree that does not
    parse or names an object the cache lacks."""
    bad = []
    for rel in objects:
        path = repo / rel
        digest = path.parent.name + path.name.removesuffix(".dir")
        if not rel.endswith(".dir"):
            if hashlib.md5(path.read_bytes()).hexdigest() != digest:
                bad.append(f"{rel}: content md5 differs")
            continue
        try:
            entries = json.loads(path.read_text())
        except ValueError:
            bad.append(f"{rel}: not JSON")
            continue
        if any(_cached(repo, e["md5"]) is None for e in entries):
            bad.append(f"{rel}: names objects the cache lacks")
    return bad


def _describe_objects(repo: Path, objects: list[str]) -> str:
    """What each new cache object is: a .dir manifest set against the known tree it is closest to
    (an output's in dvc.lock, or one DVC stored earlier), a file by its size and first bytes."""
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    known = {f"{o['path']} ({name})": o["md5"] for name, st in lock.items()
             for o in st.get("outs", []) + st.get("deps", []) if str(o.get("md5", "")).endswith(".dir")}
    trees = {}
    for label, md5 in known.items():
        if (ref := _cached(repo, md5)) is not None:
            trees[label] = {e["relpath"]: e["md5"] for e in json.loads(ref.read_text())}
    lines = []
    for rel in objects:
        path = repo / rel
        if not rel.endswith(".dir"):
            lines.append(f"{rel}: file, {path.stat().st_size} B, {path.read_bytes()[:80]!r}")
            continue
        got = {e["relpath"]: e["md5"] for e in json.loads(path.read_text())}
        label, ref = max(trees.items(), key=lambda kv: len(kv[1].keys() & got.keys()), default=("?", {}))
        if not ref.keys() & got.keys():
            label, ref = "no tree in dvc.lock", {}
        lines.append(f"{rel}: closest to {label}: added {sorted(got.keys() - ref.keys())}, missing "
                     f"{sorted(ref.keys() - got.keys())}, changed {sorted(k for k in got.keys() & ref.keys() if got[k] != ref[k])}"
                     f"; {len(got)} entries: {sorted(got)[:12]}")
    return "\n".join(lines)


def _stage_durations(run: Repro) -> dict[str, float]:
    """Seconds from "Running stage 'S'" to the next "Updating lock file" (command + DVC's commit)."""
    out, current = {}, None
    for t, line in run.lines:
        if m := re.match(r"Running stage '(.+)':", line):
            current = (m.group(1), t)
        elif line.startswith("Updating lock file") and current:
            out[current[0]] = t - current[1]
            current = None
    return out


def test_sweep_removes_litter_at_any_depth_and_nothing_else(tmp_path):
    """What the check stage runs on every repro (DVC may restore a killed stage from its run cache,
    so the stage's own cleanup never runs)."""
    keep = ["build/base/model.safetensors", "build/.hash_cache.json", "build/compile/cpu/artifacts.json",
            "reports/bench/cpu.json", "build/x.tmp", "build/.tmp"]
    litter = ["build/.base.ab12.tmp/model.safetensors", "build/compile/.cpu.x1.tmp/gguf_f16/model.gguf.partial",
              "build/bench/.cpu.old/outputs.jsonl", "reports/.curation.json.q9.tmp", "build/.data.curate-z.tmp/a"]
    for rel in keep + litter:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")
    gone = sweep_litter(tmp_path / "build", tmp_path / "reports", tmp_path / "missing")
    assert sorted(p.relative_to(tmp_path).as_posix() for p in gone) == sorted(
        ["build/.base.ab12.tmp", "build/compile/.cpu.x1.tmp", "build/bench/.cpu.old",
         "reports/.curation.json.q9.tmp", "build/.data.curate-z.tmp"])
    assert all((tmp_path / k).is_file() for k in keep)
    assert not _litter(tmp_path)


@pytest.mark.e2e
def test_kills_at_random_points_recover_with_identical_hashes_and_no_litter(tmp_path):
    began = time.monotonic()
    repo, tmpdir = tmp_path / "proj", tmp_path / "tmpdir"
    tmpdir.mkdir()
    micro_tickets(repo, 300)
    make_project(repo, SPEC)
    # TMPDIR: what killed stages leave in the system temp folder is counted too (reported, not
    # asserted: it is outside the project and the OS clears it).
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TMPDIR": str(tmpdir)}

    # The uninterrupted build: reference hashes and each stage's duration.
    ref = Repro(repo, "bench@cpu", env=env)
    assert ref.finish() == 0, ref.output[-3000:]
    sh("git add -A && git -c user.email=t@t -c user.name=t commit -qm built", repo)  # the last good dvc.lock
    reference, ref_paths, cache_before, durations = _outs(repo), _lock_paths(repo), _cache(repo), _stage_durations(ref)
    assert set(STAGES) <= set(durations), durations
    assert any(json.loads(r)["tokens"] for r in (repo / "build/evaluate/reference.jsonl").read_text().splitlines())
    assert not _litter(repo)
    build_s = time.monotonic() - began

    rng = random.Random(SEED)
    kills, recoveries = [], []

    def forced(stage: str) -> tuple[str, ...]:
        return ("-f", "-s", stage)

    def kill(stage: str, args: tuple[str, ...], after_script: bool = False) -> dict | None:
        for attempt in range(3):  # the run ended before the kill (faster than measured): again, sooner
            span = (0.3 if after_script else durations[stage]) / 2 ** attempt
            delay = rng.uniform(0.0 if after_script else 0.05, 0.9) * span
            k = _kill_at(Repro(repo, *args, env=env), stage, delay, after_script)
            if k or args[0] != "-f":
                break
        if k:
            k["run"] = " ".join(args)
            k["litter_after_kill"] = len(_litter(repo, dvc=False))
            k["dvc_tmp_after_kill"] = len(_litter(repo)) - k["litter_after_kill"]
            kills.append(k)
            repair_dvc(k)
            assert _outs(repo) == reference, (k, _outs(repo))  # a killed run never records another hash
        return k

    def repair_dvc(k: dict) -> None:
        """DVC's part: it rewrites dvc.lock and .dvc/tmp/rwlock in place (open "w", then dump), so
        a kill in its own bookkeeping can leave either half-written, and then every dvc command
        fails (re-running does not help). The remedy is `slmake doctor --fix` (slmake.doctor:
        whole entries of the cut lock plus git HEAD's for the rest; a corrupt rwlock deleted)."""
        broken = [name for name, bad in (("dvc.lock", _lock_paths(repo) != ref_paths),
                                         (".dvc/tmp/rwlock", _bad_json(repo / ".dvc/tmp/rwlock"))) if bad]
        if broken:
            assert k["phase"] == "dvc", k  # DVC waits while the stage script runs: only its own phase
            again = Repro(repo, "bench@cpu", env=env)
            rc = again.finish()
            k["dvc_half_written"] = broken
            k["rerun_alone"] = "ok" if rc == 0 else next(
                (ln for ln in again.output.splitlines() if "dvc.lock" in ln or "RWLock" in ln), "failed")[:120]
            if rc:  # every dvc command fails now: `slmake doctor` must see it, and `--fix` repair it
                dry = sh("slmake doctor", repo, check=False)
                assert dry.returncode == 1 and "PROBLEM" in dry.stdout, (k, dry.stdout, dry.stderr)
                fixed = sh("slmake doctor --fix", repo, check=False)
                assert fixed.returncode == 0, (k, fixed.stdout, fixed.stderr)
                k["doctor"] = [ln.split(":")[0].split()[-1] for ln in fixed.stdout.splitlines()
                               if ln.startswith("fixed")]

    def recover(stage: str) -> None:
        run = Repro(repo, "bench@cpu", env=env)
        rc = run.finish()
        with open(tmp_path / "recoveries.log", "a") as f:
            f.write(run.output + "\n\n")
        assert rc == 0, f"`dvc repro` after kills in {stage} failed:\n{run.output[-3000:]}"  # (a)
        ran = ran_stages(run.output)
        assert ran <= {stage}, ran  # the rerun gave the same hash: nothing downstream reran
        assert _outs(repo) == reference  # (b)
        assert not _litter(repo), _litter(repo)  # (c)
        how = "reran" if ran else "run cache" if f"Stage '{stage}' is cached" in run.output else "up to date"
        recoveries.append({"stage": stage, "how": how})

    for stage in STAGES:
        # A kill while the stage builds, then a run that completes the stage's script (with the
        # litter of that kill present) and is killed in DVC's commit (hashing, caching, dvc.lock,
        # git add): its outputs are complete, so `dvc repro` must find them up to date (bench's
        # timings aside), identical to the uninterrupted build.
        kill(stage, forced(stage))
        kill(stage, forced(stage), after_script=True)
        assert not _litter(repo, dvc=False), _litter(repo)  # the stage's own cleanup (atomic_dir, curate)
        recover(stage)
        assert stage == "bench@cpu" or recoveries[-1]["how"] == "up to date", recoveries[-1]
        # A kill while it builds, then recover as a user would. base..compile: DVC restores the
        # stage from its run cache, so the script never runs and never cleans the kill's litter:
        # the check stage must sweep it. curate and bench (their uncached reports keep them out of
        # the run cache): a `dvc repro` reruns them, and a kill in that rerun is a kill in a
        # user's `dvc repro` (not a forced one), with the first kill's litter still there.
        kill(stage, forced(stage))
        if stage in ("curate", "bench@cpu"):
            kill(stage, ("bench@cpu",)) or kill(stage, forced(stage))
        recover(stage)

    new_files = _cache(repo) - cache_before  # DVC's own temp files (a kill in its phase) aside:
    # A new object is a state some killed run hashed and cached before its lock was written (seen
    # once in CI: a tree in DVC's legacy cache, where it keeps uncached outputs for its run cache).
    # What must hold is that the cache stays sound: every object whole, every tree's entries present.
    new_objects = sorted(f for f in new_files if re.fullmatch(r"[0-9a-f]{30}(\.dir)?", Path(f).name))
    assert not _unsound(repo, new_objects), (_unsound(repo, new_objects), _describe_objects(repo, new_objects))
    per_stage = {s: sum(k["stage"] == s for k in kills) for s in STAGES}
    tmp_left = sorted(p.name for p in tmpdir.iterdir())
    print(f"\nkill recovery: reference build {build_s:.0f} s, stage durations "
          f"{ {s: round(durations[s], 1) for s in STAGES} }\n"
          f"  kills per stage {per_stage} ({len(kills)} in all; "
          f"{sum(k['phase'] == 'dvc' for k in kills)} after the stage script), {len(recoveries)} recoveries "
          f"{ {h: sum(r['how'] == h for r in recoveries) for h in ('reran', 'run cache', 'up to date')} }, "
          f"0 differing hashes, 0 litter after recovery (litter right after kills: "
          f"{sum(k['litter_after_kill'] for k in kills)} entries, and {sum(k['dvc_tmp_after_kill'] for k in kills)} "
          f"DVC temp files)\n"
          f"  DVC's files half-written by kills in its own phase: "
          f"{[(k['stage'], k['dvc_half_written']) for k in kills if 'dvc_half_written' in k]}\n"
          f"  new files in .dvc/cache: {sorted(new_files)}\n"
          f"  {_describe_objects(repo, new_objects)}\n"
          f"  left in TMPDIR by killed stages: {len(tmp_left)} {tmp_left[:6]}\n"
          f"  wall {time.monotonic() - began:.0f} s")
    for line in kills + recoveries:
        print("  ", line)
    assert len(kills) >= 18 and min(per_stage.values()) >= 3, per_stage
