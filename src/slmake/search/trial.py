"""One search trial = one `dvc exp run`: the Hydra job function of `slmake search`, and the ledger
of what each trial did (.slmake/search/<name>/trials.jsonl).

A trial runs ``dvc exp run --temp -n <search>-<n> -S <override> ...`` in the project: DVC composes
params.yaml from conf/ with the overrides (its Hydra integration), stages whose inputs did not
change come from the run cache, and the result is an ordinary experiment (`dvc exp show` lists it,
`dvc exp apply` takes it). Its figures are read back from the experiment's commit. A trial that
fails (a bad value the check stage refuses, a stage that crashes) is recorded with its reason and
the search goes on.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..io import write_text_atomic
from ..selection import pick
from . import launch
from .rows import objective_values, trial_rows

RAN = re.compile(r"^Running stage '([^']+)'", re.M)
CACHED = re.compile(r"^Stage '([^']+)' is cached", re.M)


def git(repo: Path, *args: str, check: bool = True) -> str:
    res = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True)
    if check and res.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)}: {res.stderr.strip()}")
    return res.stdout


def exp_ref(repo: Path, baseline: str, name: str) -> str | None:
    """The commit of experiment ``name`` of ``baseline`` (DVC keeps it at refs/exps/ab/cdef.../name)."""
    out = git(repo, "rev-parse", "--verify", "-q", f"refs/exps/{baseline[:2]}/{baseline[2:]}/{name}", check=False)
    return out.strip() or None


def exp_run(repo: Path, name: str, overrides: list[str], log: Path, force: bool = False, temp: bool = True,
            env: dict | None = None, deadline: float | None = None) -> tuple[int, str]:
    """`dvc exp run --temp -n name -S ...` in ``repo`` (the DVC boundary; without --temp in a trial's
    own clone). ``env``: added to the environment (a parallel trial's SLMAKE_PARALLEL_JOBS);
    ``deadline``: time.time() at which the run is stopped (launch.run_until: exit code
    launch.TIMEOUT, no experiment). Returns (exit code, output); the output goes to ``log`` as it comes
    (`tail -f` follows a trial), then the command line is put first."""
    cmd = [launch.dvc_path(), "exp", "run"] + (["--temp"] if temp else []) + ["-n", name]
    cmd += ["--force"] if force else []
    for o in overrides:
        cmd += ["-S", o]
    res = launch.run_until(cmd, repo, env={**os.environ, **(env or {})}, deadline=deadline, log=log)
    out = res.stdout + res.stderr
    write_text_atomic(log, "$ " + " ".join(cmd) + "\n" + out)
    return res.returncode, out


def read_params(repo: Path, commit: str) -> dict:
    """An experiment's params.yaml, as its commit holds it."""
    import yaml

    return yaml.safe_load(git(repo, "show", f"{commit}:params.yaml")) or {}


def read_bench(repo: Path, commit: str, params: dict | None = None) -> dict[str, dict]:
    """{target: {"metrics": reports/bench/<target>.json, "details": <target>.details.json}} of an
    experiment's commit, for the targets its params.yaml (``params``, read when not given) names."""
    params = read_params(repo, commit) if params is None else params
    out = {}
    for target in params.get("targets") or {}:
        files = {}
        for part, suffix in (("metrics", ".json"), ("details", ".details.json")):
            text = git(repo, "show", f"{commit}:reports/bench/{target}{suffix}", check=False)
            if text:
                files[part] = json.loads(text)
        if files:
            out[target] = files
    return out


def failure_reason(output: str) -> str:
    """The lines of a failed `dvc exp run` that say why: the failing stage's last words before DVC's
    first ERROR line (check's "- train.lr: ..." for a spec error, a stage's exception), then DVC's
    ERROR lines (once each); without an ERROR line, the last lines."""
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    first = next((i for i, ln in enumerate(lines) if ln.startswith("ERROR")), None)
    if first is None:
        errors = [ln for ln in lines if "Error" in ln or "error:" in ln]
        return " | ".join((errors or lines)[-3:])[:600] or "dvc exp run failed without output"
    why = [ln for ln in lines[max(0, first - 3):first] if not ln.startswith(("Running stage", "> ", "Reproducing"))]
    errors = list(dict.fromkeys(ln for ln in lines if ln.startswith("ERROR")))
    return " | ".join(why + errors[:2])[:600]


class Ledger:
    """Append-only JSON lines, one per trial outcome; the latest line per trial number wins. A line
    a kill cut short is ignored."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def records(self, baseline: str | None = None) -> list[dict]:
        if not self.path.exists():
            return []
        latest: dict[int, dict] = {}
        for line in self.path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if baseline is None or rec.get("baseline") == baseline:
                latest[rec["trial"]] = rec
        return [latest[k] for k in sorted(latest)]

    def append(self, rec: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(json.dumps(rec, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())


@dataclass
class TrialRunner:
    """The Hydra task function: ``runner(cfg)`` runs the job's overrides as one experiment.
    ``max_trials``/``deadline`` bound a basic-sweeper grid (the Optuna sweeper counts its own);
    ``stop_at`` (--timeout, either sweeper) stops a trial still running then: it is recorded as
    failed, reason "timeout", and leaves no experiment."""

    repo: Path
    search: str
    baseline: str
    state: Path                        # .slmake/search/<name>
    constraints: dict = field(default_factory=dict)
    max_trials: int | None = None
    deadline: float | None = None      # time.time() after which no trial starts
    stop_at: float | None = None       # time.time() at which a running trial is stopped (--timeout)
    run_exp: object = None             # the DVC boundary (exp_run); a unit test replaces it
    jobs: int = 1                      # trials sharing this machine's cores (slmake.search.launch.Plan)
    remotes: object = None             # launch.Remotes: each trial in its own clone (launch.Plan.clone)

    @property
    def ledger(self) -> Ledger:
        return Ledger(self.state / "trials.jsonl")

    def __call__(self, cfg) -> dict:
        from hydra.core.hydra_config import HydraConfig

        hc = HydraConfig.get()
        overrides = [o for o in hc.overrides.task if not re.match(r"^\+?search=", o)]
        return self.run(int(hc.job.num), overrides)

    def run(self, number: int, overrides: list[str]) -> dict:
        name = f"{self.search}-{number:03d}"
        rec = {"search": self.search, "baseline": self.baseline, "trial": number, "experiment": name,
               "overrides": list(overrides)}
        for prev in self.ledger.records(self.baseline):
            if (prev["overrides"] == rec["overrides"] and prev["status"] in ("ok", "infeasible")
                    and exp_ref(self.repo, self.baseline, prev["experiment"])):
                # the same spec again (a resumed grid, or a sampler proposing it twice): its experiment's figures
                print(f"[slmake search] trial {number}: same overrides as {prev['experiment']}, its result reused",
                      flush=True)
                if prev["trial"] == number:
                    return prev
                return self._record({**prev, "trial": number, "same_as": prev["trial"]}, status=prev["status"],
                                    reason=prev.get("reason"))
        if self.max_trials is not None and number >= self.max_trials:
            return self._record(rec, status="skipped", reason=f"budget: --trials {self.max_trials}")
        if self.deadline is not None and time.time() >= self.deadline:
            return self._record(rec, status="skipped", reason="budget: --timeout spent before this trial")
        print(f"[slmake search] trial {number} ({name}): {' '.join(overrides)} "
              f"(follow it: tail -f {self.state / 'logs' / (name + '.log')})", flush=True)
        t0 = time.perf_counter()
        if self.remotes is None:
            return self._finish(rec, self.repo, *self._run_here(name, overrides), t0)
        where = Path(tempfile.mkdtemp(prefix=f"slmake-{name}-")) / "project"
        try:  # its own clone (launch.py): pull, run, read its figures, push the experiment
            code, out = launch.prepare_clone(where, self.baseline, self.remotes)
            if code == 0:
                code, more = self._run_exp(where, name, overrides, temp=False)
                out += "\n" + more
            rec = self._finish(rec, where, code, out, t0, record=False)
            if rec["status"] in ("ok", "infeasible"):  # the experiment reaches the driver through the remotes
                code, more = launch.push_experiment(where, name, self.remotes)
                out += "\n" + more
                rec["seconds"] = round(time.perf_counter() - t0, 1)
                if code != 0:
                    rec.update(status="failed", reason=failure_reason(more))
            write_text_atomic(self.state / "logs" / f"{name}.log", out)
            return self._record(rec, status=rec.pop("status"), reason=rec.pop("reason", None))
        finally:
            launch.remove(where.parent)

    def _run_exp(self, where: Path, name: str, overrides: list[str], temp: bool = True,
                 force: bool = False) -> tuple[int, str]:
        run = self.run_exp or exp_run
        kwargs = {"force": force} if temp else {"temp": False}
        env = launch.trial_env(self.jobs)
        if env:
            kwargs["env"] = env
        if self.stop_at is not None:
            if time.time() >= self.stop_at:
                return launch.TIMEOUT, "ERROR: timeout: the search's wall-time budget (--timeout) ran out before it ran"
            kwargs["deadline"] = self.stop_at
        try:
            return run(where, name, overrides, self.state / "logs" / f"{name}.log", **kwargs)
        except Exception as e:
            return 1, f"ERROR: {type(e).__name__}: {e}"

    def _run_here(self, name: str, overrides: list[str]) -> tuple[int, str]:
        force = exp_ref(self.repo, self.baseline, name) is not None  # a kill left it without a ledger line
        return self._run_exp(self.repo, name, overrides, force=force)

    def _finish(self, rec: dict, where: Path, code: int, out: str, t0: float, record: bool = True) -> dict:
        """The trial's record from its `dvc exp run` (exit code, output) and the experiment it made in
        ``where``; ``record``: append it to the ledger (else its status/reason are left in it)."""
        done = self._record if record else (lambda r, status, reason=None, **extra: {**r, "status": status,
                                                                                      "reason": reason, **extra})
        name = rec["experiment"]
        rec.update(seconds=round(time.perf_counter() - t0, 1), stages_run=RAN.findall(out),
                   stages_cached=CACHED.findall(out))
        if code == launch.TIMEOUT:
            return done(rec, status="failed", reason=f"timeout: stopped after {rec['seconds']:g} s, when the search's "
                        "wall-time budget (--timeout) ran out")
        if code != 0:
            return done(rec, status="failed", reason=failure_reason(out))
        commit = exp_ref(where, self.baseline, name)
        if commit is None:
            return done(rec, status="failed", reason=f"dvc exp run succeeded but no experiment {name!r} exists")
        try:
            params = read_params(where, commit)
            rows = trial_rows(name, read_bench(where, commit, params), (params.get("bench") or {}).get("max_drop"))
        except (RuntimeError, ValueError) as e:
            return done(rec, status="failed", reason=f"reading its figures: {e}")
        rec.update(commit=commit, rows=rows)
        if not rows:
            return done(rec, status="failed", reason="no artifact has a validation figure (bench skipped them all?)")
        best = pick(rows, self.constraints)
        if best.row is None:
            return done(rec, status="infeasible", reason=best.why)
        return done(rec, status="ok", best=best.row["artifact"], values=objective_values(best.row))

    def _record(self, rec: dict, *, status: str, reason: str | None = None, **extra) -> dict:
        rec.update(status=status, reason=reason, **extra)
        self.ledger.append(rec)
        if status != "ok":
            print(f"[slmake search] trial {rec['trial']} {status}: {reason}", flush=True)
        return rec


