"""Where a search's trials run: Hydra's launchers (docs/guide/search.md, "Launchers").

- Hydra's basic launcher (the default): one trial at a time, `dvc exp run --temp` in the project.
- ``search.parallel: N`` (or ``--parallel N``) on this machine: Hydra's joblib launcher runs N
  trials at once, each a `dvc exp run --temp` (its own temporary copy of the workspace, so DVC's
  repository lock is never shared); every trial's null thread keys get cores // N (rounded down to
  a power of two: SLMAKE_PARALLEL_JOBS=N, as a `dvc queue start -j N` worker's stages do).
- Launchers whose jobs may run elsewhere (hydra-submitit-launcher's ``submitit_local`` and
  ``submitit_slurm``, slmake's Ray launcher ``slmake_ray``): each trial runs in its own clone. It clones the project from
  ``search.git_remote`` (a git remote of the project, default ``origin``), pulls the build's
  outputs and DVC's run cache from ``search.dvc_remote`` (default: the project's default DVC
  remote), runs `dvc exp run -n NAME -S ...` there and `dvc exp push`es the experiment (its git
  ref to the git remote, its outputs and run cache to the DVC remote). The driver first pushes its
  own build (`dvc push --run-cache`) and, at the end, `dvc exp pull`s every trial, so `dvc exp
  show` lists them all and the pick's artifacts are in its cache for `dvc exp apply`.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..process_setup import JOBS_ENV, cores
from ..spec import SpecError


def launcher_kind(target: str) -> str:
    """basic | joblib | submitit_local | submitit_slurm | ray | other, from hydra.launcher._target_."""
    t = str(target or "")
    if t.endswith("BasicLauncher"):
        return "basic"
    if "joblib" in t:
        return "joblib"
    if "submitit" in t:
        return "submitit_slurm" if t.endswith("SlurmLauncher") else "submitit_local"
    if "ray" in t.lower():
        return "ray"
    return "other"


@dataclass(frozen=True)
class Plan:
    kind: str              # launcher_kind after the plan (basic with parallel > 1 becomes joblib)
    parallel: int          # trials at once
    overrides: tuple       # Hydra overrides that make the launcher and sweeper run them so
    jobs: int              # trials sharing one machine's cores (each trial's SLMAKE_PARALLEL_JOBS)
    clone: bool            # each trial in its own clone, through the git + DVC remotes


def plan(target: str, parallel: int | None, optuna: bool, n_jobs: int | None = None) -> Plan:
    """How to run ``parallel`` trials at once with the launcher ``target`` (hydra.launcher._target_).
    ``n_jobs``: a joblib launcher's own n_jobs, taken when ``parallel`` is not given."""
    kind = launcher_kind(target)
    if parallel is None:
        parallel = (n_jobs if n_jobs and n_jobs > 0 else cores()) if kind == "joblib" else 1
    if not isinstance(parallel, int) or isinstance(parallel, bool) or parallel < 1:
        raise SpecError(f"search.parallel: {parallel!r}: expected a positive integer (trials run at once)")
    over: list[str] = [f"hydra.sweeper.n_jobs={parallel}"] if optuna else []
    if kind == "basic" and parallel > 1:
        kind = "joblib"
        over.insert(0, "hydra/launcher=joblib")
    if kind == "joblib":
        # processes: each job sets Hydra's global job config (HydraConfig), which threads would share
        over += [f"hydra.launcher.n_jobs={parallel}", "hydra.launcher.prefer=processes"]
    elif kind in ("submitit_local", "ray") and not optuna:
        over.append(f"hydra.sweeper.max_batch_size={parallel}")  # they start a whole launch at once
    if str(target).endswith("SlmakeRayLauncher"):
        over.append(f"hydra.launcher.num_cpus={parallel}")  # a local Ray instance runs N trials at once
    elif kind == "submitit_slurm":
        over.append(f"hydra.launcher.array_parallelism={parallel}")
    # SLURM gives each job its own allocation (its affinity mask is its cores); every other launcher
    # here puts the trials on this machine (Ray: a local cluster), sharing its cores
    jobs = 1 if kind == "submitit_slurm" else parallel
    return Plan(kind, parallel, tuple(over), jobs, kind not in ("basic", "joblib"))


@dataclass(frozen=True)
class Remotes:
    """What a trial in its own clone reaches: the git remote it clones and pushes its experiment to,
    the DVC remote it pulls inputs from and pushes outputs to."""
    git: str               # the git remote's name in the driver's project
    git_url: str
    dvc: str               # the DVC remote's name
    dvc_url: str


def _venv_env(env: dict | None) -> dict:
    """``env`` (default: this process's environment) with this venv's bin first on PATH."""
    env = dict(os.environ if env is None else env)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env


def run_venv(cmd: list[str], cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """``cmd`` in ``cwd`` with this venv's bin first on PATH (its dvc, git hooks' python), output
    captured; ``env``: the whole environment (default: this process's)."""
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=_venv_env(env), stdin=subprocess.DEVNULL)


TIMEOUT = 124          # a trial's exit code when the search's wall-time budget stopped it (as timeout(1))
GRACE_S = 15.0         # after SIGINT, how long a stopped trial has to clean up before SIGKILL


# A process started as a background job (`slmake search ... &`, nohup, many CI runners) has SIGINT
# ignored, and an ignored signal stays ignored across exec: DVC (Python) then never raises
# KeyboardInterrupt, and --timeout's SIGINT would do nothing until the SIGKILL. The trial runs in a
# session of its own, where no terminal's Ctrl-C reaches it, so it gets SIGINT's default back.
_SIGINT_DEFAULT = ("import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
                   "os.execvp(sys.argv[1], sys.argv[1:])")


def run_until(cmd: list[str], cwd: Path, env: dict | None = None, deadline: float | None = None,
              grace: float | None = None, log: Path | None = None) -> subprocess.CompletedProcess:
    """``cmd`` as :func:`run_venv` runs it, in its own process group, stopped at ``deadline``
    (time.time()): the whole group (dvc and its stages' commands) gets SIGINT, as Ctrl-C would
    give it (DVC removes its temporary workspace and releases its locks; no experiment is
    committed), then SIGKILL after ``grace`` seconds. Returns exit code :data:`TIMEOUT` when stopped
    so. The driver interrupted (Ctrl-C, a signal Python raises) stops the group the same way.
    ``log``: stdout and stderr go to this file as they come (a trial of an hour can be followed
    with ``tail -f``) and come back together as the result's stdout."""
    grace = GRACE_S if grace is None else grace
    env = _venv_env(env)
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:   # inherited as ignored: give the child the default
        cmd = [sys.executable, "-c", _SIGINT_DEFAULT, *cmd]
    sink = None
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        sink = open(log, "w", encoding="utf-8")  # closed below, once the process has ended
    try:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=sink or subprocess.PIPE,
                                stderr=subprocess.STDOUT if sink else subprocess.PIPE, text=True,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            out, err = proc.communicate(timeout=None if deadline is None else max(0.0, deadline - time.time()))
            timed_out = False
        except subprocess.TimeoutExpired:
            out, err = _stop_group(proc, grace)
            timed_out = True
        except BaseException:
            _stop_group(proc, grace)
            raise
    finally:
        if sink is not None:
            sink.close()
    if sink is not None:
        out, err = log.read_text(encoding="utf-8", errors="replace"), ""
    if timed_out:
        err += (f"\nERROR: timeout: the search's wall-time budget (--timeout) ran out during this trial; "
                f"stopped (exit {proc.returncode})\n")
        return subprocess.CompletedProcess(cmd, TIMEOUT, out, err)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _stop_group(proc: subprocess.Popen, grace: float) -> tuple[str, str]:
    """SIGINT to ``proc``'s process group, SIGKILL after ``grace`` s; its output so far."""
    _signal_group(proc.pid, signal.SIGINT)
    try:
        out, err = proc.communicate(timeout=grace)
    except subprocess.TimeoutExpired:
        _signal_group(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
    _signal_group(proc.pid, signal.SIGKILL)  # a stage's child its parent left behind (the group outlives dvc)
    return out or "", err or ""


def dvc_path() -> str:
    """This venv's dvc."""
    return str(Path(sys.executable).parent / "dvc")


def _local(url: str, base: Path) -> str:
    """A relative local path made absolute (a clone elsewhere must reach it)."""
    if "://" in url or (":" in url.split("/", 1)[0] and not Path(url).exists()):
        return url  # a URL or scp-like host:path
    return str((base / url).resolve())


def resolve_remotes(repo: Path, git_remote: str | None, dvc_remote: str | None, kind: str) -> Remotes:
    """The remotes of the driver's project that trials of launcher ``kind`` use; a missing one is
    an error naming the setting."""
    name = git_remote or "origin"
    res = run_venv(["git", "remote", "get-url", name], repo)
    if res.returncode != 0:
        raise SpecError(f"search.git_remote: the project has no git remote {name!r}; with the {kind} launcher each "
                        f"trial clones the project from it and pushes its experiment there (`git remote add {name} "
                        "<url>`, or set search.git_remote)")
    git_url = _local(res.stdout.strip(), repo)
    from dvc.repo import Repo

    with Repo(str(repo)) as r:
        conf = r.config
        dname = dvc_remote or conf["core"].get("remote")
        if not dname:
            raise SpecError(f"search.dvc_remote: the project has no default DVC remote; with the {kind} launcher each "
                            "trial pulls the build and the run cache from it and pushes its outputs there "
                            "(`dvc remote add -d NAME URL`, or set search.dvc_remote)")
        if dname not in conf["remote"]:
            raise SpecError(f"search.dvc_remote: no DVC remote named {dname!r} (defined: "
                            f"{', '.join(conf['remote']) or 'none'})")
        dvc_url = _local(str(conf["remote"][dname]["url"]), repo / ".dvc")
    return Remotes(name, git_url, dname, dvc_url)


def publish_baseline(repo: Path, remotes: Remotes, baseline: str) -> None:
    """Make the search's commit and build reachable from a trial's clone: the commit must be on the
    git remote (checked, not pushed: the user's branches are theirs), the build's outputs and run
    cache are pushed to the DVC remote (`dvc push --run-cache`, a no-op for what is there)."""
    res = run_venv(["git", "fetch", "-q", remotes.git], repo)
    if res.returncode != 0:
        raise SpecError(f"search.git_remote: `git fetch {remotes.git}` failed: {res.stderr.strip()[-400:]}")
    held = run_venv(["git", "for-each-ref", "--contains", baseline, "--format=%(refname)", f"refs/remotes/{remotes.git}/"],
                repo).stdout.strip()
    if not held:
        raise SpecError(f"search.git_remote: the search's commit {baseline[:7]} is not on git remote {remotes.git!r} "
                        f"({remotes.git_url}); trials clone it from there: `git push {remotes.git} HEAD` first")
    res = run_venv([dvc_path(), "push", "-q", "--run-cache", "-r", remotes.dvc], repo)
    if res.returncode != 0:
        raise SpecError(f"search.dvc_remote: `dvc push --run-cache -r {remotes.dvc}` failed (trials pull the build from "
                        f"it): {(res.stdout + res.stderr).strip()[-600:]}")


def prepare_clone(where: Path, baseline: str, remotes: Remotes) -> tuple[int, str]:
    """A trial's own workspace: a clone at ``baseline`` with the build's outputs and the run cache
    pulled from the DVC remote. Returns (exit code, output)."""
    steps = [(["git", "clone", "-q", "--no-checkout", remotes.git_url, str(where)], where.parent),
             (["git", "checkout", "-q", "-B", "slmake-search-trial", baseline], where),
             ([dvc_path(), "remote", "add", "--local", "-f", "-d", remotes.dvc, remotes.dvc_url], where),
             ([dvc_path(), "pull", "--run-cache", "-r", remotes.dvc], where)]
    out = []
    for cmd, cwd in steps:
        res = run_venv(cmd, cwd)
        out.append("$ " + " ".join(cmd) + "\n" + res.stdout + res.stderr)
        if res.returncode != 0:
            return res.returncode, "\n".join(out) + f"\nERROR: preparing the trial's clone: `{' '.join(cmd[:3])}` failed"
    return 0, "\n".join(out)


def push_experiment(where: Path, name: str, remotes: Remotes) -> tuple[int, str]:
    """`dvc exp push`: the experiment's git ref to the git remote, its outputs and the run cache
    (so a later trial restores the stages this one ran) to the DVC remote."""
    cmd = [dvc_path(), "exp", "push", "-f", "--run-cache", "-r", remotes.dvc, remotes.git_url, name]
    res = run_venv(cmd, where)
    out = "$ " + " ".join(cmd) + "\n" + res.stdout + res.stderr
    if res.returncode != 0:
        out += f"\nERROR: dvc exp push to {remotes.git_url} failed"
    return res.returncode, out


def pull_experiments(repo: Path, remotes: Remotes, names: list[str], cache: bool) -> str | None:
    """`dvc exp pull` the trials ``names`` into the driver's project (their refs; their outputs too
    with ``cache``). Returns None, or the error."""
    if not names:
        return None
    cmd = [dvc_path(), "exp", "pull", "-f", "-r", remotes.dvc] + ([] if cache else ["--no-cache"]) + [remotes.git, *names]
    res = run_venv(cmd, repo)
    return None if res.returncode == 0 else f"`{' '.join(cmd[1:])}`: {(res.stdout + res.stderr).strip()[-400:]}"


def trial_env(jobs: int) -> dict:
    """The environment of a trial's `dvc exp run`: its share of the machine's cores."""
    return {JOBS_ENV: str(jobs)} if jobs > 1 else {}


def remove(where: Path) -> None:
    shutil.rmtree(where, ignore_errors=True)
