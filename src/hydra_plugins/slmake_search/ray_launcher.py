"""A Hydra launcher running each job as a Ray task (`hydra/launcher=slmake_ray`), for `slmake search`
on a Ray instance of this machine or a Ray cluster (docs/guide/search.md, "Ray").

Why not hydra-ray-launcher: its last release (1.2.2) requires ``cloudpickle<3`` (and ray[default],
boto3, aiohttp<4 for its AWS launcher), while the pinned stack's joblib 1.6.0 requires
``cloudpickle>=3.0``: installing it downgrades joblib and cloudpickle under the whole stack, or
(with --no-deps) leaves `pip check` failing. Its local launcher is ``ray.remote`` around Hydra's
``run_job``; this is the same, with Ray's own (vendored) cloudpickle and nothing else. Ray is the
optional extra requirements/ray.txt.

Hydra imports this module when it scans hydra_plugins (every compose): Ray is imported only when a
launch starts.
"""

import logging
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Sequence  # noqa: UP035 (OmegaConf reads these annotations)

from hydra.core.config_store import ConfigStore
from hydra.plugins.launcher import Launcher

log = logging.getLogger(__name__)


@dataclass
class SlmakeRayLauncherConf:
    _target_: str = "hydra_plugins.slmake_search.ray_launcher.SlmakeRayLauncher"
    address: Optional[str] = None       # noqa: UP045 -- a Ray cluster to join ("auto", "ray://host:10001"); null: start one here
    num_cpus: Optional[int] = None      # noqa: UP045 -- the local instance's CPUs = trials at once (slmake search sets it)
    init: Dict[str, Any] = field(default_factory=dict)    # noqa: UP006 -- more ray.init() arguments
    remote: Dict[str, Any] = field(default_factory=dict)  # noqa: UP006 -- ray.remote() options of a trial's task


ConfigStore.instance().store(group="hydra/launcher", name="slmake_ray", node=SlmakeRayLauncherConf, provider="slmake")


def _run_job(hydra_context, sweep_config, task_function, singleton_state):
    """One job in a Ray worker: Hydra's globals as the driver had them, then Hydra's run_job."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.singleton import Singleton
    from hydra.core.utils import run_job, setup_globals

    setup_globals()
    Singleton.set_state(singleton_state)
    HydraConfig.instance().set_config(sweep_config)
    return run_job(hydra_context=hydra_context, task_function=task_function, config=sweep_config,
                   job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")


def start(address: str | None, num_cpus: int | None, init: dict) -> None:
    """ray.init once per driver: join ``address``, or start a local instance of ``num_cpus`` CPUs
    (no dashboard, a small object store: a job returns a small dict)."""
    import ray

    if ray.is_initialized():
        return
    kwargs: dict[str, Any] = {"address": address, "log_to_driver": True}
    if address is None:
        kwargs.update(include_dashboard=False, object_store_memory=80 * 1024 * 1024)
        if num_cpus is not None:
            kwargs["num_cpus"] = int(num_cpus)
    kwargs.update(init)
    log.info(f"ray.init({kwargs})")
    ray.init(**kwargs)


class SlmakeRayLauncher(Launcher):
    def __init__(self, address: str | None = None, num_cpus: int | None = None, init: dict | None = None,
                 remote: dict | None = None) -> None:
        from omegaconf import OmegaConf

        plain = lambda d: OmegaConf.to_container(d, resolve=True) if OmegaConf.is_config(d) else dict(d or {})  # noqa: E731
        self.address, self.num_cpus = address, num_cpus
        self.init, self.remote = plain(init), plain(remote)
        self.config = self.hydra_context = self.task_function = None

    def setup(self, *, hydra_context, task_function, config) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int):
        import ray
        from hydra.core.singleton import Singleton
        from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, setup_globals
        from omegaconf import open_dict

        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        start(self.address, self.num_cpus, self.init)
        task = ray.remote(**self.remote)(_run_job) if self.remote else ray.remote(_run_job)
        refs = []
        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
            log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
            sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
            with open_dict(sweep_config):
                sweep_config.hydra.job.id = f"ray_{idx}"
                sweep_config.hydra.job.num = idx
            refs.append(task.remote(self.hydra_context, sweep_config, self.task_function, Singleton.get_state()))
        results = []
        for ref, overrides in zip(refs, job_overrides):
            try:
                results.append(ray.get(ref))
            except Exception as e:  # the task's worker died (Ray's error): the job failed, with its reason
                results.append(JobReturn(overrides=list(overrides), status=JobStatus.FAILED, _return_value=e))
        return results
