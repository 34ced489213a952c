"""`slmake doctor` (issue 17.6): a dvc.lock or .dvc/tmp/rwlock half-written by a killed `dvc` is
found, and `--fix` restores a state in which `dvc status` and `dvc repro` work again.

The kill test kills a real `dvc repro` (SIGKILL, from inside, at the worst moment: DVC has
truncated the file and written half of it) through a sitecustomize hook, then repairs."""

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from slmake.doctor import lock_problem, salvage

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ENV = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "PYTHONUNBUFFERED": "1"}

# A lock as DVC writes it (three stages, the middle one with a folder output).
LOCK = textwrap.dedent("""\
    schema: '2.0'
    stages:
      a:
        cmd: python -c "open('a.txt','w').write('a')"
        outs:
        - path: a.txt
          hash: md5
          md5: 0cc175b9c0f1b6a831c399e269772661
          size: 1
      b@x:
        cmd: python make_b.py
        deps:
        - path: a.txt
          hash: md5
          md5: 0cc175b9c0f1b6a831c399e269772661
          size: 1
        params:
          params.yaml:
            b.n: 3
            b.name: x
        outs:
        - path: out/b
          hash: md5
          md5: 5f1a3b8e0e3c2a9f0a7a7b0c1d2e3f40.dir
          size: 20
          nfiles: 2
      c:
        cmd: python make_c.py
        deps:
        - path: out/b
          hash: md5
          md5: 5f1a3b8e0e3c2a9f0a7a7b0c1d2e3f40.dir
          size: 20
          nfiles: 2
        outs:
        - path: c.txt
          hash: md5
          md5: 187ef4436122d1cc2f40dc2b92f0eba0
          size: 2
    """)


def test_the_whole_lock_is_fine_and_every_cut_is_caught_or_harmless():
    """Cut at every byte: either doctor flags it, or it is a cut at a line end that DVC reads as a
    lock with fewer or shorter entries (it reruns those stages; nothing to repair). What salvage
    keeps is always an entry exactly as DVC wrote it."""
    whole = yaml.safe_load(LOCK)["stages"]
    assert lock_problem(LOCK) is None
    flagged = harmless = 0
    for n in range(len(LOCK)):
        cut = LOCK[:n]
        why = lock_problem(cut)
        if why is None:
            assert cut.endswith("\n"), repr(cut[-40:])
            harmless += 1
            continue
        flagged += 1
        entries, kept, dropped = salvage(cut)
        assert list(entries) == kept and not set(kept) & set(dropped)
        for name, entry in entries.items():
            assert entry == whole[name], (n, name)
        assert len(kept) <= max(0, sum(f"\n  {s}:" in cut for s in whole) - 1)  # the last one never
    assert flagged > 0.9 * len(LOCK) and harmless > 10, (flagged, harmless)
    assert "empty" in lock_problem("")
    assert "mid-line" in lock_problem(LOCK[:-1]) or "parse" in lock_problem(LOCK[:-1])
    assert "cut hash" in lock_problem(LOCK[: LOCK.index("0cc175b9") + 10] + "\n")


def test_salvage_keeps_whole_entries_and_drops_broken_ones():
    broken = LOCK.replace("md5: 5f1a3b8e0e3c2a9f0a7a7b0c1d2e3f40.dir\n      size: 20\n      nfiles: 2\n  c:",
                          "md5: 5f1a3b8e\n  c:")
    _, kept, dropped = salvage(broken[: broken.index("python make_c.py")])
    assert kept == ["a"] and dropped == ["b@x", "c"]
    assert salvage("schema: '2.0'\nstag") == ({}, [], [])


# --- real DVC -------------------------------------------------------------------------------------

DVC_YAML = textwrap.dedent("""\
    stages:
      a:
        cmd: python -c "open('a.txt','w').write('a' * 100)"
        outs: [a.txt]
      b:
        cmd: python -c "open('b.txt','w').write(open('a.txt').read() + 'b')"
        deps: [a.txt]
        outs: [b.txt]
      c:
        cmd: python -c "open('c.txt','w').write(open('b.txt').read() + 'c')"
        deps: [b.txt]
        outs: [c.txt]
    """)

# Loaded by every Python of the killed run (PYTHONPATH); acts only inside `dvc`: at the N-th write
# of dvc.lock (or of the rwlock), DVC has truncated the file; write half of it and SIGKILL self.
KILLER = textwrap.dedent("""\
    import os, signal, sys
    from pathlib import Path

    if Path(sys.argv[0]).name == "dvc" and os.environ.get("KILL_AT"):
        what, n = os.environ["KILL_AT"].split(":")
        seen = [0]

        def _half_and_die(fd, text):
            seen[0] += 1
            if seen[0] < int(n):
                return False
            fd.write(text[: len(text) // 2])
            fd.flush()
            os.kill(os.getpid(), signal.SIGKILL)

        if what == "lock":
            from dvc.utils.serialize import _common, _yaml

            real = _common._dump_data

            def _dump_data(path, data, dumper, fs=None, **kw):
                if Path(path).name == "dvc.lock":
                    import io
                    buf = io.StringIO()
                    dumper(data, buf, **kw)
                    with open(path, "w+", encoding="utf-8") as fd:
                        if _half_and_die(fd, buf.getvalue()) is False:
                            fd.write(buf.getvalue())
                    return
                return real(path, data, dumper, fs=fs, **kw)

            _common._dump_data = _yaml._dump_data = _dump_data
        else:
            import json
            from dvc import rwlock

            class _Json:
                loads, load, JSONDecodeError = json.loads, json.load, json.JSONDecodeError

                @staticmethod
                def dump(obj, fobj):
                    text = json.dumps(obj)
                    if _half_and_die(fobj, text) is False:
                        fobj.write(text)

                dumps = staticmethod(json.dumps)

            rwlock.json = _Json
    """)


def _run(args, cwd, env=ENV, check=False):
    res = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    if check and res.returncode != 0:
        raise AssertionError(f"{args} failed ({res.returncode}):\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}")
    return res


def _doctor(repo, *args):
    return _run([sys.executable, "-m", "slmake.cli", "doctor", *args], repo)


def _outs(repo):
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    return {n: [o["md5"] for o in st["outs"]] for n, st in lock.items()}


@pytest.fixture
def built(tmp_path):
    """A git + DVC project with three chained stages, built and committed."""
    repo = tmp_path / "proj"
    repo.mkdir()
    (repo / "dvc.yaml").write_text(DVC_YAML)
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"], ["dvc", "repro", "-q"], ["git", "add", "-A"],
                ["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "built"]):
        _run(cmd, repo, check=True)
    return repo


@pytest.mark.slow
@pytest.mark.parametrize("what,n", [("lock", 2), ("lock", 3), ("rwlock", 3)])
def test_dvc_repro_killed_while_writing_is_repaired_by_doctor(built, tmp_path, what, n):
    repo, hook = built, tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(KILLER)
    reference = _outs(repo)
    env = {**ENV, "KILL_AT": f"{what}:{n}", "PYTHONPATH": os.pathsep.join(filter(None, [str(hook), os.environ.get("PYTHONPATH")]))}
    killed = _run(["dvc", "repro", "-f"], repo, env=env)
    assert killed.returncode == -signal.SIGKILL, (killed.returncode, killed.stderr[-2000:])
    broken = "dvc.lock" if what == "lock" else ".dvc/tmp/rwlock"
    size = (repo / broken).stat().st_size
    assert size > 0, "the hook wrote half the file"

    # Every later run stops at a cut rwlock; a cut dvc.lock fails to parse, or reads as other hashes.
    if what == "rwlock":
        stuck = _run(["dvc", "repro"], repo)
        assert stuck.returncode != 0 and "RWLock" in stuck.stderr, stuck.stdout + stuck.stderr

    dry = _doctor(repo)
    assert dry.returncode == 1 and "PROBLEM" in dry.stdout and broken in dry.stdout, dry.stdout + dry.stderr
    assert (repo / broken).stat().st_size == size  # a dry run changes nothing
    fixed = _doctor(repo, "--fix")
    assert fixed.returncode == 0 and "fixed" in fixed.stdout, fixed.stdout + fixed.stderr
    again = _doctor(repo)
    assert again.returncode == 0 and "nothing to do" in again.stdout, again.stdout

    assert _run(["dvc", "status"], repo).returncode == 0
    rerun = _run(["dvc", "repro"], repo)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    status = _run(["dvc", "status"], repo, check=True)
    assert "up to date" in status.stdout, status.stdout
    assert _outs(repo) == reference
    assert (repo / "c.txt").read_text() == "a" * 100 + "bc"
    if what == "lock":
        assert lock_problem((repo / ".dvc/tmp/dvc.lock.broken").read_text()) is not None


@pytest.mark.slow
def test_stale_rwlock_entries_and_a_running_dvc(built):
    repo = built
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:  # a live pid that is not dvc (a reused pid) and a dead one: both stale
        (repo / ".dvc/tmp/rwlock").write_text(json.dumps({
            "write": {"b.txt": {"pid": sleeper.pid, "cmd": "dvc repro"}},
            "read": {"a.txt": [{"pid": 2 ** 22 + 12345, "cmd": "dvc repro"}]}}))
        dry = _doctor(repo)
        assert dry.returncode == 1 and "2 entries" in dry.stdout, dry.stdout + dry.stderr
        assert _doctor(repo, "--fix").returncode == 0
        assert not (repo / ".dvc/tmp/rwlock").exists()
    finally:
        sleeper.kill()
        sleeper.wait()
    assert _run(["dvc", "repro"], repo).returncode == 0

    # While a dvc command runs here, doctor only reads.
    (repo / "dvc.lock").write_text("")
    fake = Path(repo / "bin")
    fake.mkdir()
    (fake / "dvc").write_text("import time\ntime.sleep(60)\n")
    running = subprocess.Popen([sys.executable, str(fake / "dvc"), "repro"], cwd=repo)
    try:
        busy = _doctor(repo, "--fix")
        assert busy.returncode == 1 and "dvc is running here" in busy.stdout, busy.stdout + busy.stderr
        assert (repo / "dvc.lock").read_text() == ""
    finally:
        running.kill()
        running.wait()
    assert _doctor(repo, "--fix").returncode == 0
    assert _run(["dvc", "status"], repo).returncode == 0


def test_not_a_dvc_project(tmp_path):
    res = _doctor(tmp_path, "--repo", str(tmp_path))
    assert res.returncode == 2 and "not inside a DVC project" in res.stderr
