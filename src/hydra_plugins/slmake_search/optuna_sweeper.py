"""A Hydra sweeper driving Optuna (TPE, NSGA-II, random; one or several objectives) with its study in
a journal file, for `slmake search` (docs/guide/search.md).

Why not hydra-optuna-sweeper: its last release (1.2.0) requires optuna<3, whose storages are
in-memory or SQL (the SQL one predates SQLAlchemy 2, which the pinned stack resolves to); Optuna's
JournalStorage -- an append-only file a killed search resumes from -- came in 3.1. This sweeper
reads the same `hydra.sweeper.params` syntax (``choice(a,b)``, ``a,b``, ``range(1,4)``,
``interval(1e-4,1e-2)``, ``tag(log, interval(...))``, a single value = fixed for every trial).

Hydra imports this module when it scans hydra_plugins (every compose, `dvc exp run -S` too): Optuna
is imported only when a sweep starts.
"""

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional  # noqa: UP035 (OmegaConf reads these annotations)

from hydra.core.config_store import ConfigStore
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper

log = logging.getLogger(__name__)

# objective name -> optuna direction; the figures a trial returns (slmake.search.rows.OBJECTIVES)
DIRECTIONS = {"val_exact_match": "maximize", "size_mb": "minimize", "decode_tok_s": "maximize"}
SAMPLERS = ("tpe", "nsga2", "random")


@dataclass
class SlmakeOptunaSweeperConf:
    _target_: str = "hydra_plugins.slmake_search.optuna_sweeper.SlmakeOptunaSweeper"
    sampler: str = "tpe"                                # tpe | nsga2 | random
    seed: int = 0                                       # the sampler's seed: same trials in the same order
    objectives: List[str] = field(default_factory=lambda: ["val_exact_match"])  # noqa: UP006
    n_trials: int = 8                                   # trials in the whole study, resumed ones included
    n_jobs: int = 1                                     # trials asked and launched together (search.parallel)
    timeout: Optional[float] = None                     # noqa: UP045 -- seconds of this run: no new trial after it
    storage: Optional[str] = None                       # noqa: UP045 -- the journal file (slmake search sets it)
    study_name: Optional[str] = None                    # noqa: UP045
    params: Dict[str, str] = field(default_factory=dict)  # noqa: UP006


ConfigStore.instance().store(group="hydra/sweeper", name="slmake_optuna", node=SlmakeOptunaSweeperConf,
                             provider="slmake")


def distributions(params: list[str]) -> tuple[dict[str, Any], dict[str, str]]:
    """Parse `key=value` overrides in Hydra's sweep grammar into ({key: optuna distribution},
    {key: fixed value})."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import Transformer
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    space, fixed = {}, {}
    for o in OverridesParser.create().parse_overrides(params):
        key = o.get_key_element()
        if not o.is_sweep_override():
            fixed[key] = o.get_value_element_as_str()
            continue
        v = o.value()
        if o.is_choice_sweep() or (o.is_range_sweep() and v.shuffle):
            choices = list(o.sweep_iterator(transformer=Transformer.encode))
            space[key] = CategoricalDistribution(choices)
        elif o.is_range_sweep():
            if any(isinstance(x, float) for x in (v.start, v.stop, v.step)):
                # range() excludes stop: the last grid point below it
                n = int((v.stop - v.start) / v.step - 1e-9)
                space[key] = FloatDistribution(v.start, v.start + n * v.step, step=v.step)
            else:
                n = (int(v.stop) - int(v.start) - 1) // int(v.step)
                space[key] = IntDistribution(int(v.start), int(v.start) + n * int(v.step), step=int(v.step))
        elif o.is_interval_sweep():
            log_scale = "log" in v.tags
            if isinstance(v.start, int) and isinstance(v.end, int):
                space[key] = IntDistribution(v.start, v.end, log=log_scale)
            else:
                space[key] = FloatDistribution(float(v.start), float(v.end), log=log_scale)
        else:
            raise ValueError(f"hydra.sweeper.params.{key}: {o.input_line!r} is not a sweep Optuna can sample "
                             "(use choice(...), a,b,c, range(...) or interval(...))")
    return space, fixed


def make_sampler(name: str, seed: int):
    import optuna

    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise ValueError(f"hydra.sweeper.sampler: {name!r} is not one of {', '.join(SAMPLERS)}")


def open_study(storage: str, study_name: str, sampler, objectives: list[str]):
    """The study in the journal file ``storage`` (created, or loaded to resume)."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    bad = [o for o in objectives if o not in DIRECTIONS]
    if bad or not objectives:
        raise ValueError(f"hydra.sweeper.objectives: {bad or objectives} not among {sorted(DIRECTIONS)}")
    return optuna.create_study(storage=JournalStorage(JournalFileBackend(storage)), study_name=study_name,
                               sampler=sampler, directions=[DIRECTIONS[o] for o in objectives],
                               load_if_exists=True)


STOPPED = ("interrupted", "timeout")  # reasons of trials the search stopped: not a verdict on their parameters


def stopped(trial) -> bool:
    return str(trial.user_attrs.get("reason", "")).startswith(STOPPED)


def recover_interrupted(study) -> list[int]:
    """Trials a killed search left RUNNING: recorded as failed ("interrupted"), their parameters
    queued again so the resumed search runs them first; so are those the last run's wall-time
    budget stopped ("timeout"). Returns their numbers."""
    from optuna.trial import TrialState

    stale = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for t in stale:
        study._storage.set_trial_user_attr(t._trial_id, "reason", "interrupted: the search was stopped during this trial")
        study.tell(t.number, state=TrialState.FAIL)
    retried = {t.user_attrs.get("retry_of") for t in study.get_trials(deepcopy=False)}
    again = [t for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
             if stopped(t) and t.number not in retried]
    for t in again:
        if t.params:
            study.enqueue_trial(t.params, user_attrs={"retry_of": t.number})
    return [t.number for t in again]


def counted(study) -> int:
    """Trials that count against the budget: finished ones, except those a kill interrupted or the
    wall-time budget stopped (run again when the search resumes)."""
    from optuna.trial import TrialState

    done = (TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED)
    return sum(1 for t in study.get_trials(deepcopy=False, states=done) if not stopped(t))


def tell(study, trial, result: Any, objectives: list[str]) -> str:
    """Record one trial's outcome (what slmake.search.trial.TrialRunner returned, or the exception
    its job raised) in the study. Returns the state's name."""
    from optuna.trial import TrialState

    if isinstance(result, BaseException) or not isinstance(result, dict):
        trial.set_user_attr("reason", f"{type(result).__name__}: {result}" if isinstance(result, BaseException)
                            else f"the job returned {result!r}")
        study.tell(trial, state=TrialState.FAIL)
        return "FAIL"
    for k in ("experiment", "reason", "status"):
        if result.get(k) is not None:
            trial.set_user_attr(k, result[k])
    values = result.get("values") or {}
    if result.get("status") == "ok" and all(values.get(o) is not None for o in objectives):
        study.tell(trial, values=[float(values[o]) for o in objectives])
        return "COMPLETE"
    if result.get("status") == "infeasible":
        study.tell(trial, state=TrialState.PRUNED)
        return "PRUNED"
    if result.get("status") == "ok":
        trial.set_user_attr("reason", f"no figure for objectives {objectives}: {values}")
    study.tell(trial, state=TrialState.FAIL)
    return "FAIL"


class SlmakeOptunaSweeper(Sweeper):
    def __init__(self, sampler: str = "tpe", seed: int = 0, objectives: list[str] | None = None, n_trials: int = 8,
                 timeout: float | None = None, storage: str | None = None, study_name: str | None = None,
                 params: dict[str, str] | None = None, n_jobs: int = 1) -> None:
        self.sampler_name, self.seed = sampler, seed
        self.objectives = list(objectives or ["val_exact_match"])
        self.n_trials, self.timeout, self.n_jobs = int(n_trials), timeout, max(1, int(n_jobs))
        self.storage, self.study_name = storage, study_name
        self.params = dict(params or {})
        self.launcher = self.config = self.hydra_context = None

    def setup(self, *, hydra_context, task_function, config) -> None:
        self.config, self.hydra_context = config, hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(config=config, hydra_context=hydra_context,
                                                                task_function=task_function)

    def sweep(self, arguments: list[str]) -> list[Any]:
        if not self.storage or not self.study_name:
            raise ValueError("hydra.sweeper.storage and study_name: unset (`slmake search` sets them)")
        space, fixed = distributions([f"{k}={v}" for k, v in self.params.items()] + list(arguments))
        if not space:
            raise ValueError("hydra.sweeper.params: no key to search (give at least one choice/range/interval)")
        for key in fixed:
            space.pop(key, None)
        study = open_study(self.storage, self.study_name, None, self.objectives)
        # seeded by the history too: a resumed search goes on where it was instead of replaying its start
        study.sampler = make_sampler(self.sampler_name, self.seed + len(study.trials))
        retried = recover_interrupted(study)
        if retried:
            log.info(f"resuming {self.study_name}: trial(s) {retried} were interrupted and run again")
        start, results = time.monotonic(), []
        while counted(study) < self.n_trials:
            if self.timeout is not None and time.monotonic() - start >= self.timeout:
                log.info(f"wall-time budget of {self.timeout:g} s spent: no new trial")
                break
            # n_jobs trials at once (the launcher runs them in parallel); their numbers are consecutive,
            # which is how the launcher numbers the jobs of one launch
            batch = [study.ask(fixed_distributions=space) for _ in range(min(self.n_jobs, self.n_trials - counted(study)))]
            jobs = []
            for trial in batch:
                overrides = [f"{k}={v}" for k, v in trial.params.items()] + [f"{k}={v}" for k, v in fixed.items()]
                trial.set_user_attr("overrides", overrides)
                jobs.append(overrides)
            assert [t.number for t in batch] == list(range(batch[0].number, batch[0].number + len(batch)))
            rets = self.launcher.launch(jobs, initial_job_idx=batch[0].number)
            for trial, ret in zip(batch, rets):
                try:
                    result = ret.return_value
                except Exception as e:  # the job raised: a failed trial, recorded, the search goes on
                    result = e
                state = tell(study, trial, result, self.objectives)
                log.info(f"trial {trial.number}: {state}")
                results.append(result)
            if any(isinstance(r, dict) and str(r.get("reason") or "").startswith("timeout") for r in results[-len(batch):]):
                log.info("wall-time budget spent during a trial (--timeout): no new trial")
                break
        return results
