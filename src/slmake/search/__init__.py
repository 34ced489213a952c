"""`slmake search [NAME]`: a Hydra multirun whose jobs are DVC experiments (docs/guide/search.md).

conf/search/<NAME>.yaml is a Hydra config (package _global_) that sets `hydra.sweeper`: the basic
sweeper's grid (`params: {train.lr: 0.001,0.005}`) or slmake's Optuna sweeper (`override
/hydra/sweeper: slmake_optuna`: TPE / NSGA-II / random, one objective or several, its study in a
journal file so a stopped search resumes). Each job is one `dvc exp run --temp -n <NAME>-<n> -S ...`
(slmake.search.trial). The search decides on validation figures only; at the end it builds the
Pareto front of every trial x artifact, picks under `search.constraints`, reads the pick's test
figure (once), writes reports/search/<NAME>.{md,csv} and says how to apply the pick. Where trials
run is Hydra's launcher (slmake.search.launch): one at a time, N at once on this machine sharing its
cores (--parallel), or each in its own clone through the git + DVC remotes (submitit, Ray).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from ..selection import pareto, pick
from ..spec import SpecError, load_yaml
from . import launch, report
from .rows import pick_test_figure
from .trial import Ledger, TrialRunner, exp_ref, git, read_bench

STATE = Path(".slmake/search")
ALLOWED_TOP = {"defaults", "hydra", "search"}
SEARCH_KEYS = {"constraints", "parallel", "git_remote", "dvc_remote"}  # a search file's `search:` block


def search_file(conf: Path, name: str | None) -> tuple[str, Path]:
    folder = conf / "search"
    found = sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []
    if name is None:
        if len(found) != 1:
            raise SpecError(f"{folder}: name the search to run ({', '.join(found) or 'none defined'})")
        name = found[0]
    path = folder / f"{name}.yaml"
    if not path.exists():
        raise SpecError(f"{path}: no such search (defined: {', '.join(found) or 'none'})")
    data = load_yaml(path) or {}
    extra = sorted(set(data) - ALLOWED_TOP) if isinstance(data, dict) else ["<not a mapping>"]
    if extra:
        raise SpecError(f"{path}: top-level key(s) {extra}: a search file sets only hydra.sweeper (a spec key "
                        "every trial shares goes in hydra.sweeper.params as a single value) and search.constraints")
    block = data.get("search") or {}
    extra = sorted(set(block) - SEARCH_KEYS) if isinstance(block, dict) else ["<not a mapping>"]
    if extra:
        raise SpecError(f"{path}: search.{extra[0]}: unknown key (a search file's search block holds "
                        f"{', '.join(sorted(SEARCH_KEYS))})")
    return name, path


def _quote(v: str) -> str:
    return "'" + str(v).replace("\\", "\\\\").replace("'", "\\'") + "'"


def run_search(repo: Path, name: str | None = None, trials: int | None = None, timeout: float | None = None,
               run_exp=None, parallel: int | None = None, launcher: str | None = None) -> int:
    """Run (or resume) search ``name`` in ``repo``; ``run_exp`` replaces `dvc exp run` (unit tests only).
    ``parallel``: trials at once (else search.parallel, else 1); ``launcher``: a hydra/launcher option
    (joblib, submitit_local, submitit_slurm, ...) instead of the search file's (slmake.search.launch)."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    repo = Path(repo).resolve()
    conf = repo / "conf"
    name, _ = search_file(conf, name)
    baseline = git(repo, "rev-parse", "HEAD").strip()
    state = repo / STATE / name
    state.mkdir(parents=True, exist_ok=True)
    overrides = [f"+search={name}", f"hydra.sweep.dir={_quote(state / 'hydra')}", "hydra.job.chdir=False"]
    overrides += [f"hydra/launcher={launcher}"] if launcher else []
    t_start = time.time()
    with initialize_config_dir(config_dir=str(conf), version_base=None, job_name=f"search_{name}"):
        hydra = GlobalHydra.instance().hydra
        cfg = hydra.compose_config("config", overrides, run_mode=RunMode.MULTIRUN, with_log_configuration=False)
        optuna = str(cfg.hydra.sweeper.get("_target_", "")).endswith("SlmakeOptunaSweeper")
        search_cfg = OmegaConf.to_container(cfg.search, resolve=True) if "search" in cfg else {}
        constraints = {k: v for k, v in ((search_cfg or {}).get("constraints") or {}).items() if v is not None}
        target = str(cfg.hydra.launcher.get("_target_", ""))
        how = launch.plan(target, parallel if parallel is not None else (search_cfg or {}).get("parallel"), optuna,
                          n_jobs=cfg.hydra.launcher.get("n_jobs") if "n_jobs" in cfg.hydra.launcher else None)
        overrides += list(how.overrides)
        remotes = None
        if how.clone:
            remotes = launch.resolve_remotes(repo, (search_cfg or {}).get("git_remote"),
                                             (search_cfg or {}).get("dvc_remote"), how.kind)
            launch.publish_baseline(repo, remotes, baseline)
            _sync(repo, remotes, Ledger(state / "trials.jsonl").records(baseline), baseline)  # a resumed search's
        if optuna:
            overrides += [f"hydra.sweeper.storage={_quote(state / 'optuna.journal')}",
                          f"hydra.sweeper.study_name={name}-{baseline[:12]}"]
            overrides += [f"hydra.sweeper.n_trials={trials}"] if trials is not None else []
            # what is left of the budget (publishing the baseline took some): the runner stops at the same instant
            overrides += [f"hydra.sweeper.timeout={max(0.0, timeout - (time.time() - t_start)):.3f}"] if timeout is not None else []
        runner = TrialRunner(repo=repo, search=name, baseline=baseline, state=state, constraints=constraints,
                             max_trials=None if optuna else trials,
                             deadline=None if optuna or timeout is None else t_start + timeout,
                             stop_at=None if timeout is None else t_start + timeout,
                             run_exp=run_exp, jobs=how.jobs, remotes=remotes)
        where = (f"each in its own clone (git {remotes.git} {remotes.git_url}, DVC {remotes.dvc} {remotes.dvc_url})"
                 if remotes else "in this project (dvc exp run --temp)")
        print(f"[slmake search] {name}: {'Optuna' if optuna else 'basic'} sweeper, baseline {baseline[:7]}, "
              f"constraints {constraints or 'none'}; {how.kind} launcher, {how.parallel} trial(s) at once "
              f"({how.jobs} per machine's cores), {where}; trials log to {state.relative_to(repo)}", flush=True)
        hydra.multirun("config", runner, overrides)
    if remotes:
        _sync(repo, remotes, Ledger(state / "trials.jsonl").records(baseline), baseline)
    return conclude(repo, name, baseline, constraints, time.time() - t_start, remotes=remotes)


def _sync(repo: Path, remotes, records: list[dict], baseline: str) -> None:
    """`dvc exp pull` (refs only) the experiments of trials that ran in their own clones and are not
    here yet: `dvc exp show` lists them, the Pareto front and the pick read their commits."""
    names = sorted({r["experiment"] for r in records if r["status"] in ("ok", "infeasible")
                    and exp_ref(repo, baseline, r["experiment"]) is None})
    err = launch.pull_experiments(repo, remotes, names, cache=False)
    if err:
        print(f"[slmake search] pulling the trials' experiments failed: {err}", flush=True)


def conclude(repo: Path, name: str, baseline: str, constraints: dict, seconds: float, remotes=None) -> int:
    """Pareto front and pick over every trial of this search (this run's and a resumed run's), the
    pick's test figure, the report. Returns the exit code: 0 with a pick, 1 without."""
    records = Ledger(repo / STATE / name / "trials.jsonl").records(baseline)
    rows = list({(r["experiment"], r["target"], r["artifact"]): r for rec in records  # a reused result once
                 if rec["status"] in ("ok", "infeasible") for r in rec.get("rows", [])}.values())
    rows = pareto(rows)
    chosen = pick(rows, constraints)
    counts = {s: sum(1 for r in records if r["status"] == s) for s in ("ok", "infeasible", "failed", "skipped")}
    summary = [f"Baseline `{baseline[:7]}`; {len(records)} trials ({', '.join(f'{v} {k}' for k, v in counts.items() if v)}), "
               f"{len(rows)} artifacts, {sum(1 for r in rows if r['pareto'])} non-dominated; this run {seconds:.0f} s.",
               f"Constraints (search.constraints): {constraints or 'none'}."]
    code = 1
    if chosen.row is not None:
        best = chosen.row
        best["pick"] = True
        rec = next(r for r in records if r["experiment"] == best["experiment"])
        if remotes is not None:  # a trial run elsewhere: the pick's outputs into this cache, for dvc exp apply
            err = launch.pull_experiments(repo, remotes, [best["experiment"]], cache=True)
            summary += [f"Pulling the pick's outputs failed ({err}): `dvc exp pull {remotes.git} "
                        f"{best['experiment']}` before applying it."] if err else []
        # the test split, read once: for the pick, after it is made
        test = pick_test_figure(read_bench(repo, rec["commit"]), best["target"], best["artifact"])
        summary += [f"**Pick: `{best['experiment']}` {best['target']}/{best['artifact']}** — {chosen.why}.",
                    f"Its overrides: `{' '.join(rec['overrides'])}`.",
                    f"Test split exact match of the pick (scored once, after the pick): **{test}**.",
                    f"Apply it: `dvc exp apply {best['experiment']}` (then `dvc checkout` / commit)."]
        code = 0
    else:
        summary += [f"No pick: {chosen.why}."] + [f"- {line}" for line in chosen.excluded[:20]]
    failed = [r for r in records if r["status"] == "failed"]
    summary += [f"Failed trial {r['trial']} ({r['experiment']}): {r['reason']}" for r in failed]
    path = report.write(repo / "reports/search", name, records=records, rows=rows, summary=summary)
    print("\n" + report.pareto_table(rows))
    print("\n".join(summary))
    print(f"\nreport: {path.relative_to(repo)}; plots: dvc plots show reports/search/dvc.yaml")
    return code


def cmd_search(args) -> int:
    try:
        return run_search(Path(args.repo), args.name, trials=args.trials, timeout=args.timeout,
                          parallel=args.parallel, launcher=args.launcher)
    except SpecError as e:
        print(f"slmake search: {e}", file=sys.stderr)
        return 2
    except subprocess.CalledProcessError as e:
        print(f"slmake search: {e}", file=sys.stderr)
        return 2


def add_parser(sub) -> None:
    p = sub.add_parser("search", help="search recipes: a Hydra multirun of DVC experiments, a Pareto pick")
    p.add_argument("name", nargs="?", help="conf/search/<name>.yaml (optional when there is only one)")
    p.add_argument("--trials", type=int, default=None, help="at most N trials in the search (resumed ones count)")
    p.add_argument("--timeout", type=float, default=None, help="wall-time budget in seconds: no trial starts after it, a running one is stopped "
                        "(recorded as failed: timeout) and the pick is made among the finished ones")
    p.add_argument("--parallel", type=int, default=None,
                   help="trials at once (default: search.parallel, else 1); on one machine they share its cores")
    p.add_argument("--launcher", default=None,
                   help="Hydra launcher (hydra/launcher option): joblib, submitit_local, submitit_slurm, ... "
                        "(default: the search file's, else one process)")
    p.add_argument("--repo", default=".", help="the project (default: the current folder)")
    p.set_defaults(func=cmd_search)
