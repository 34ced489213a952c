"""`slmake doctor [--fix]`: find, and repair, what a killed `dvc` leaves half-written.

DVC rewrites two files in place (``open(path, "w")``, then dump): ``dvc.lock`` (after every stage,
in ``dvc.utils.serialize._common._dump_data``) and ``.dvc/tmp/rwlock`` (on entering and leaving a
stage, ``dvc.rwlock._edit_rwlock``). A kill between the truncation and the last flush of the
write buffer leaves an empty file or a prefix cut anywhere (at a buffer boundary), and from then
on every ``dvc`` command fails ("unable to read: 'dvc.lock', YAML file structure is corrupted",
"Unable to read RWLock-file ... JSON structure is corrupted"). Re-running does not help.

What ``doctor`` checks (read only, by default):

* ``dvc.lock``: readable UTF-8, not empty, ends with a newline (DVC's YAML writer always ends
  with one: no final newline means a cut write), parses as YAML, passes DVC's own lockfile schema
  (``dvc.schema.COMPILED_LOCKFILE_SCHEMA``), and every ``md5`` is a whole MD5 (32 hex digits,
  ``.dir`` for folders).
* ``.dvc/tmp/rwlock``: valid JSON in DVC's schema (``dvc.rwlock.SCHEMA``), and no entry held by a
  process that is gone, or by a live process that is not DVC (a reused pid: DVC itself only drops
  entries of dead pids, and waits forever on a reused one).
* whether a ``dvc`` command runs now (it holds ``.dvc/tmp/lock``): then nothing is touched.

What ``--fix`` does, holding DVC's repo lock so that no ``dvc`` starts meanwhile:

* ``dvc.lock`` is rebuilt from the entries that can be trusted, and written atomically: each
  stage entry of the broken file that is whole (parses on its own, passes the schema, whole
  hashes; the last entry of a cut file is never trusted) and, for the stages it lost, the entry
  of the last committed lock (``git show HEAD:dvc.lock``). A lock entry only says "this stage,
  run with these dependencies and parameters, produced these outputs"; any entry DVC ever wrote
  was true when written, and DVC compares it with the workspace, so a stage whose files no longer
  match it is simply rerun by the next ``dvc repro`` (or restored from DVC's run cache). Nothing
  is recomputed (no ``dvc commit``). The broken file is kept as ``.dvc/tmp/dvc.lock.broken``.
* ``.dvc/tmp/rwlock`` is deleted when it is corrupt (it only records commands in flight, and none
  is), or rewritten without its stale entries.

Exit status: 0 when nothing is wrong (or all was fixed), 1 when problems remain (always so in a
dry run that found some), 2 when the folder is not a DVC project.

Making DVC write atomically without a fork is not possible through its configuration (no option
touches how dvc.lock or the rwlock are written); only monkeypatching the private
``_dump_data``/``_edit_rwlock`` at interpreter start (a ``.pth`` file) would do it, which would
silently break on a DVC upgrade, so the repair is a command instead.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .io import write_text_atomic

LOCK = "dvc.lock"
RWLOCK = ".dvc/tmp/rwlock"
REPO_LOCK = ".dvc/tmp/lock"
BROKEN_COPY = ".dvc/tmp/dvc.lock.broken"
_MD5 = re.compile(r"^[0-9a-f]{32}(\.dir)?$")
_STAGE_KEY = re.compile(r"^  (?! )\S.*:\s*$")   # a stage name under `stages:` (DVC indents by 2)


@dataclass
class Problem:
    path: str
    what: str
    fix: str
    fixed: bool = False


@dataclass
class Report:
    root: Path
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    busy: str | None = None       # a running dvc command, when one holds the repo lock

    @property
    def remaining(self) -> list[Problem]:
        return [p for p in self.problems if not p.fixed]


# --- dvc.lock ------------------------------------------------------------------------------------

def _parse_yaml(text: str):
    from ruamel.yaml import YAML

    return YAML(typ="safe").load(text)


def _bad_hashes(entry: dict) -> list[str]:
    """Paths whose md5 is not a whole MD5 (a cut value still parses as a string)."""
    bad = []
    for kind in ("deps", "outs"):
        for item in entry.get(kind) or []:
            if isinstance(item, dict) and "md5" in item and not _MD5.match(str(item["md5"])):
                bad.append(f"{kind} {item.get('path')}: md5 {item['md5']!r}")
    return bad


def _stage_problem(name, entry) -> str | None:
    """Why one stage entry cannot be trusted, or None."""
    import voluptuous as vol
    from dvc.schema import COMPILED_LOCK_FILE_STAGE_SCHEMA

    if not isinstance(name, str) or not isinstance(entry, dict):
        return "not a stage entry"
    try:
        COMPILED_LOCK_FILE_STAGE_SCHEMA(entry)
    except vol.Invalid as e:
        return f"fails DVC's lockfile schema ({e})"
    bad = _bad_hashes(entry)
    return f"cut hash: {bad[0]}" if bad else None


def lock_problem(text: str) -> str | None:
    """Why the text of a dvc.lock is not one DVC wrote whole, or None."""
    import voluptuous as vol
    from dvc.schema import COMPILED_LOCKFILE_SCHEMA

    if not text.strip():
        return "is empty (DVC never writes an empty lock: a kill right after it truncated the file)"
    try:
        data = _parse_yaml(text)
    except Exception as e:  # noqa: BLE001 - ruamel raises many kinds; any is "does not parse"
        where = getattr(e, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        return f"does not parse as YAML{line} ({type(e).__name__}: {getattr(e, 'problem', None) or e})"
    try:
        COMPILED_LOCKFILE_SCHEMA(data)
    except vol.Invalid as e:
        return f"fails DVC's lockfile schema: {e}"
    for name, entry in (data.get("stages") or {}).items():
        why = _stage_problem(name, entry)
        if why:
            return f"stage '{name}': {why}"
    if not text.endswith("\n"):
        return "ends mid-line (DVC always ends it with a newline: the write was cut)"
    return None


def salvage(text: str) -> tuple[dict, list[str], list[str]]:
    """The whole stage entries of a (possibly cut) dvc.lock text, in order: (entries, kept names,
    dropped names). Called on a broken lock: its last entry is dropped even if it looks whole (a
    cut at a line end can leave a stage with fewer outputs that still parses)."""
    lines = text.splitlines(keepends=True)
    try:
        start = next(i for i, ln in enumerate(lines) if ln.rstrip() == "stages:") + 1
    except StopIteration:
        return {}, [], []
    end = next((i for i in range(start, len(lines)) if lines[i][:1] not in ("", " ", "\n", "#")), len(lines))
    heads = [i for i in range(start, end) if _STAGE_KEY.match(lines[i])]
    bounds = [*heads, end]
    chunks = [lines[bounds[k]:bounds[k + 1]] for k in range(len(heads))]
    cut = end == len(lines)  # the stages block runs to the end of the file, where a kill cuts it
    entries, kept, dropped = {}, [], []
    for n, chunk in enumerate(chunks):
        name = chunk[0].strip()[:-1].strip().strip("'\"")
        try:
            parsed = _parse_yaml("stages:\n" + "".join(chunk))
            (name, entry), = parsed["stages"].items()
        except Exception:  # noqa: BLE001 - an unparsable chunk is simply not salvaged
            dropped.append(name)
            continue
        if (cut and n == len(chunks) - 1) or _stage_problem(name, entry):
            dropped.append(name)
            continue
        entries[name] = entry
        kept.append(name)
    return entries, kept, dropped


def committed_lock(root: Path) -> tuple[dict | None, str]:
    """The stages of dvc.lock at git HEAD (None if there is none usable), and where it came from."""
    try:
        out = subprocess.run(["git", "-C", str(root), "show", f"HEAD:./{LOCK}"], capture_output=True,
                             text=True, encoding="utf-8", timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, f"git unavailable ({e})"
    if out.returncode != 0:
        return None, "no dvc.lock in git HEAD"
    if lock_problem(out.stdout) is not None:
        return None, f"git HEAD's dvc.lock is broken too ({lock_problem(out.stdout)})"
    return (_parse_yaml(out.stdout) or {}).get("stages") or {}, "git HEAD"


def check_lock(root: Path, report: Report) -> dict | None:
    """Diagnose dvc.lock; return the repaired content (a dict for DVC's dumper) when it is broken."""
    path = root / LOCK
    if not path.exists():
        return None
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        text, why = raw.decode("utf-8", errors="replace"), f"is not valid UTF-8 (byte {e.start})"
    else:
        why = lock_problem(text)
    if why is None:
        return None
    entries, kept, dropped = salvage(text)
    head, origin = committed_lock(root)
    stages = dict(entries)
    from_head = [n for n in (head or {}) if n not in stages]
    for n in from_head:
        stages[n] = head[n]
    rerun = [n for n in dropped if n not in stages]
    fix = (f"rewrite it ({len(raw)} bytes now) from {len(kept)} whole entr{'y' if len(kept) == 1 else 'ies'} "
           f"of its own{' (' + ', '.join(kept) + ')' if kept else ''}")
    if from_head:
        fix += f" and {len(from_head)} from {origin} ({', '.join(from_head)})"
    elif head is None:
        fix += f"; {origin}"
    if rerun:
        fix += f"; `dvc repro` reruns {', '.join(rerun)}"
    report.problems.append(Problem(LOCK, why, fix + f"; the broken file is kept as {BROKEN_COPY}"))
    data = {"schema": "2.0"}
    if stages:
        data["stages"] = stages
    return data


# --- .dvc/tmp/rwlock -----------------------------------------------------------------------------

def _looks_like_dvc(cmdline: list[str]) -> bool:
    """`dvc ...`, `/path/.venv/bin/dvc ...`, `python /path/bin/dvc ...`, `python -m dvc ...`."""
    return any(Path(c).name in ("dvc", "dvc.exe") for c in cmdline[:2]) or cmdline[1:3] == ["-m", "dvc"]


def _is_dvc(pid: int) -> bool:
    """Whether pid is a live DVC process (a reused pid of something else is not)."""
    import psutil

    try:
        return _looks_like_dvc(psutil.Process(pid).cmdline())
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return False
    except psutil.AccessDenied:
        return True  # alive and not ours to inspect: assume it holds the lock


def dvc_processes(root: Path) -> list[str]:
    """Live dvc commands working in this project (DVC releases its repo lock while a stage's
    command runs, so the repo lock alone does not tell)."""
    import psutil

    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "cwd"]):
        info = proc.info
        if proc.pid == os.getpid() or not info.get("cmdline") or not _looks_like_dvc(info["cmdline"]):
            continue
        cwd = info.get("cwd")
        if cwd and (Path(cwd) == root or root in Path(cwd).parents):
            found.append(f"pid {proc.pid} ({' '.join(info['cmdline'][:4])})")
    return found


def check_rwlock(root: Path, report: Report) -> dict | bool | None:
    """Diagnose the rwlock; return what --fix writes (a dict), True to delete it, None if fine."""
    import voluptuous as vol
    from dvc.rwlock import SCHEMA

    path = root / RWLOCK
    if not path.exists():
        return None
    try:
        lock = SCHEMA(json.loads(path.read_text(encoding="utf-8")))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        size = path.stat().st_size
        report.problems.append(Problem(RWLOCK, f"is not valid JSON ({size} bytes; {e}): a kill cut DVC's "
                                       "write", "delete it (it lists dvc commands in flight; none runs)"))
        return True
    except vol.Invalid as e:
        report.problems.append(Problem(RWLOCK, f"fails DVC's rwlock schema ({e})", "delete it"))
        return True
    stale, live = [], []
    clean = {"read": {}, "write": {}}
    for mode in ("read", "write"):
        for target, infos in lock[mode].items():
            keep = []
            for info in infos if isinstance(infos, list) else [infos]:
                alive = _is_dvc(int(info["pid"]))
                (live if alive else stale).append((target, info))
                if alive:
                    keep.append(info)
            if keep:
                clean[mode][target] = keep if mode == "read" else keep[0]
    if live:
        report.notes.append(f"{RWLOCK}: held by running dvc commands: "
                            + "; ".join(f"pid {i['pid']} ({i['cmd']}) on {t}" for t, i in live[:3]))
    if not stale:
        return None
    pids = sorted({i["pid"] for _, i in stale})
    report.problems.append(Problem(
        RWLOCK, f"{len(stale)} entr{'y' if len(stale) == 1 else 'ies'} held by pid(s) {pids}, no longer a "
        f"dvc process (e.g. {stale[0][1]['cmd']!r} on {stale[0][0]})",
        "remove those entries"))
    return {k: v for k, v in clean.items() if v}


# --- the command ---------------------------------------------------------------------------------

def find_root(start: Path) -> Path | None:
    for d in (start, *start.parents):
        if (d / ".dvc").is_dir():
            return d
    return None


def _repo_lock(root: Path):
    """DVC's own repo lock (zc.lockfile on .dvc/tmp/lock), or None when a dvc command holds it."""
    import zc.lockfile

    (root / ".dvc/tmp").mkdir(parents=True, exist_ok=True)
    try:
        return zc.lockfile.LockFile(str(root / REPO_LOCK))
    except zc.lockfile.LockError:
        return None


def diagnose(root: Path, fix: bool = False) -> Report:
    """Check dvc.lock and the rwlock; with ``fix``, repair them unless a dvc command runs here."""
    report = Report(root)
    guard = _repo_lock(root)
    running = dvc_processes(root)
    if guard is None or running:
        report.busy = "; ".join(running) or f"a process holds {REPO_LOCK}"
        report.notes.append(f"dvc is running here ({report.busy}): checked read-only; nothing is changed "
                            "while it runs")
        fix = False
    try:
        new_lock = check_lock(root, report)
        new_rw = check_rwlock(root, report)
        if fix:
            _apply(root, report, new_lock, new_rw)
        return report
    finally:
        if guard is not None:
            guard.close()


def _apply(root: Path, report: Report, new_lock: dict | None, new_rw: dict | bool | None) -> None:
    by_path = {p.path: p for p in report.problems}
    if new_lock is not None:
        from dvc.utils.serialize import dumps_yaml

        (root / BROKEN_COPY).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(root / LOCK, root / BROKEN_COPY)
        write_text_atomic(root / LOCK, dumps_yaml(new_lock))
        by_path[LOCK].fixed = lock_problem((root / LOCK).read_text(encoding="utf-8")) is None
    if new_rw is not None:
        if new_rw is True or not new_rw:
            (root / RWLOCK).unlink(missing_ok=True)
        else:
            write_text_atomic(root / RWLOCK, json.dumps(new_rw))
        by_path[RWLOCK].fixed = True


def cmd_doctor(args) -> int:
    root = find_root(Path(args.repo).resolve())
    if root is None:
        print(f"slmake doctor: {args.repo}: not inside a DVC project (no .dvc folder)", file=sys.stderr)
        return 2
    report = diagnose(root, fix=args.fix)
    for note in report.notes:
        print(f"slmake doctor: note: {note}")
    if not report.problems:
        print(f"slmake doctor: {root}: dvc.lock and {RWLOCK} are consistent; nothing to do")
        return 1 if report.busy else 0
    for p in report.problems:
        if p.fixed:
            print(f"fixed    {p.path}: {p.what}\n         did: {p.fix}")
        else:
            print(f"PROBLEM  {p.path}: {p.what}\n         --fix would: {p.fix}")
    left = report.remaining
    if left and not args.fix and not report.busy:
        print(f"slmake doctor: {len(left)} problem(s); run `slmake doctor --fix` to repair")
    elif not left:
        print("slmake doctor: repaired; `dvc status` shows what `dvc repro` will rerun")
    return 1 if left else 0


def add_parser(sub) -> None:
    p = sub.add_parser("doctor", help="find (and --fix) a dvc.lock or rwlock half-written by a killed dvc",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("--fix", action="store_true", help="repair what is found (default: report only)")
    p.add_argument("--repo", default=".", help="the DVC project (default: the current folder)")
    p.set_defaults(func=cmd_doctor)


if __name__ == "__main__":  # python -m slmake.doctor
    import argparse

    _parser = argparse.ArgumentParser(prog="slmake doctor")
    add_parser(_parser.add_subparsers(dest="command", required=True))
    sys.exit(cmd_doctor(_parser.parse_args(["doctor", *sys.argv[1:]])))
