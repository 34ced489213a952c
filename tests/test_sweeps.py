"""Sweeps that fit the machine: a stage of one of J parallel experiments takes cores // J threads
unless the spec sets them; with one experiment, unset threads stay the library's default (the
default build's bytes do not move). The last test runs a real `dvc queue start -j 2` sweep."""

import json
import os
import subprocess
import sys
import time

import pytest

from slmake import process_setup as rt


def _worker(root, n, pid, returncode=None):
    d = root / ".dvc/tmp/exps/celery"
    d.mkdir(parents=True, exist_ok=True)
    (d / f"dvc-exp-worker-{n}.json").write_text(json.dumps(
        {"pid": pid, "stdin": None, "stdout": None, "stderr": None, "returncode": returncode}))


def _dead_pid():
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_jobs_from_live_queue_workers(tmp_path):
    _worker(tmp_path, 1, os.getpid())
    _worker(tmp_path, 2, os.getppid())
    _worker(tmp_path, 3, _dead_pid())            # killed: no returncode, pid gone
    _worker(tmp_path, 4, os.getpid(), 0)         # exited normally
    assert rt.queue_workers(tmp_path) == 2
    queued = tmp_path / ".dvc/tmp/exps/tmpabc123"
    queued.mkdir()
    env = {"DVC_ROOT": str(tmp_path)}
    assert rt.parallel_jobs(env, cwd=queued) == 2          # one of the two workers
    assert rt.parallel_jobs(env, cwd=tmp_path) == 3        # `dvc repro` beside them
    assert rt.parallel_jobs({}, cwd=queued) == 1           # not run by DVC
    assert rt.parallel_jobs({"DVC_ROOT": str(tmp_path / "none")}, cwd=tmp_path) == 1


def test_explicit_jobs_env_wins_and_bad_values_are_named():
    assert rt.parallel_jobs({rt.JOBS_ENV: "4", "DVC_ROOT": "/nowhere"}) == 4
    for bad in ("0", "two", "-1"):
        with pytest.raises(rt.ThreadsError, match=f"SLMAKE_PARALLEL_JOBS='{bad}': expected a positive integer"):
            rt.parallel_jobs({rt.JOBS_ENV: bad})


def test_threads_explicit_win_unset_share_the_cores(monkeypatch):
    monkeypatch.setattr(rt, "cores", lambda: 16)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert rt.resolve_threads(3, jobs=4) == 3               # the spec's value, sweep or not
    assert rt.resolve_threads(None, jobs=1) == 16           # every core this process may use
    assert rt.resolve_threads(None, jobs=4) == 4
    assert rt.resolve_threads(None, jobs=5) == 2            # 16 // 5 = 3, rounded down to a power of two
    assert rt.resolve_threads(None, jobs=3) == 4            # 5 -> 4: same bytes as 1, 2, 8, 16 threads
    assert rt.resolve_threads(None, jobs=32) == 1
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")              # one of 2 torchrun processes
    assert rt.resolve_threads(None, jobs=1) == 8
    assert rt.resolve_threads(None, jobs=4) == 2
    assert rt.resolve_threads(1, jobs=4) == 1


def test_limit_threads_exports_to_subprocess_tools(monkeypatch, capsys):
    monkeypatch.setattr(rt, "cores", lambda: 8)
    for k in rt.THREAD_ENV:
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("MKL_NUM_THREADS", "1")              # a user's export wins
    assert rt.limit_threads(None, jobs=1) == 8              # all cores, outside a sweep too
    assert os.environ["OMP_NUM_THREADS"] == "8" and os.environ["MKL_NUM_THREADS"] == "1"
    for k in rt.THREAD_ENV:
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("MKL_NUM_THREADS", "1")
    assert rt.limit_threads(None, jobs=2) == 4
    assert os.environ["OMP_NUM_THREADS"] == "4" and os.environ["MKL_NUM_THREADS"] == "1"
    assert capsys.readouterr().err == ""
    assert rt.limit_threads(6, jobs=2) == 6                 # explicit: kept, but said
    assert "6 threads x 2 parallel experiments > 8 cores" in capsys.readouterr().err
    monkeypatch.setenv(rt.JOBS_ENV, "x")
    with pytest.raises(SystemExit, match="SLMAKE_PARALLEL_JOBS='x'"):
        rt.limit_threads(None)


STAGE = """\
import json, os, time
from slmake import process_setup as rt
time.sleep(1)
json.dump({"jobs": rt.parallel_jobs(), "threads": rt.limit_threads(None), "omp": int(os.environ["OMP_NUM_THREADS"]),
           "explicit": rt.resolve_threads(1)}, open("threads.json", "w"))
"""


@pytest.mark.e2e
def test_dvc_queue_sweep_of_two_workers_splits_the_cores(tmp_path):
    """Two queued experiments under `dvc queue start -j 2`: each stage sees J = 2."""
    def sh(cmd):
        env = {k: v for k, v in os.environ.items() if k not in rt.THREAD_ENV + (rt.JOBS_ENV,)}
        res = subprocess.run(cmd, cwd=tmp_path, shell=True, capture_output=True, text=True, env=env)
        assert res.returncode == 0, f"`{cmd}`:\n{res.stdout}\n{res.stderr}"
        return res.stdout

    (tmp_path / "stage.py").write_text(STAGE)
    (tmp_path / "params.yaml").write_text("lr: 0.1\n")
    (tmp_path / "dvc.yaml").write_text("stages:\n  s:\n    cmd: python stage.py\n    deps: [stage.py]\n"
                                       "    params: [lr]\n    metrics:\n      - threads.json:\n          cache: false\n")
    sh("git init -q && dvc init -q && git add -A && git -c user.email=t@t -c user.name=t commit -qm init")
    sh("dvc exp run --queue -S 'lr=0.2,0.3'")                     # Hydra sweep syntax: 2 experiments
    # its workers inherit stdout: captured, the call would wait for them to drain the queue and idle out
    env = {k: v for k, v in os.environ.items() if k not in rt.THREAD_ENV + (rt.JOBS_ENV,)}
    subprocess.run(["dvc", "queue", "start", "-j", "2"], cwd=tmp_path, env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:
        status = sh("dvc queue status")
        if "Queued" not in status and "Running" not in status:
            break
        time.sleep(1)
    rows = json.loads(sh("dvc exp show --json"))
    got = [e["data"]["metrics"]["threads.json"]["data"] for row in rows for exps in row.get("experiments") or []
           for e in exps["revs"] if e.get("data", {}).get("metrics")]
    cores = rt.cores()
    assert len(got) == 2, status
    for g in got:
        share = 1 << (max(1, cores // 2).bit_length() - 1)      # a power of two (same bytes at any)
        assert g == {"jobs": 2, "threads": share, "omp": share, "explicit": 1}
