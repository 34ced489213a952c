"""Process settings every stage applies first: offline by default, deterministic, quiet, and
threads that share the cores with the other experiments of a sweep."""

from __future__ import annotations

import json
import os
import platform
import random
import sys
from pathlib import Path

from slmake import mkl_vendor

# Every switch that keeps a library in this stack from reaching the network on its own: hub
# downloads and update checks, and telemetry pings (huggingface_hub, trl, datasets, DVC/dvclive,
# NNCF, OpenVINO's tools, wandb, gradio). Set in the environment, so the tools stages run as
# subprocesses (optimum-cli, llama.cpp's converter, ORT GenAI's builder) inherit them too.
OFFLINE = {
    "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_EVALUATE_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_UPDATE_CHECK": "1", "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1",
    "DO_NOT_TRACK": "1", "DISABLE_TELEMETRY": "1",                      # the cross-tool conventions
    "DVC_NO_ANALYTICS": "1", "DVC_STUDIO_OFFLINE": "1", "ITERATIVE_DO_NOT_TRACK": "1",  # dvc, dvclive
    "NNCF_CI": "1",            # NNCF replaces its telemetry with a stub
    "CI": "true",              # openvino_telemetry (ovc, optimum-intel) declines in CI; trl skips its ping
    "WANDB_MODE": "disabled", "GRADIO_ANALYTICS_ENABLED": "False",
}


# Same bytes on any x86-64 CPU of one vendor: torch's ATen, oneDNN and MKL pick kernels by CPU
# (AVX-512, AMX), whose float results differ in the last bits, and training amplifies that into
# different weights. ATen is capped at AVX2 (honoured on every vendor); MKL is put in its conditional
# numerical reproducibility mode (CNR) on the AVX2 branch, STRICT. Measured on an AVX-512 EPYC: uncapped
# vs an emulated AVX2-only CPU differed from `base` on; capped they are identical. oneDNN is NOT capped:
# ONEDNN_MAX_CPU_ISA=AVX2 made a SmolLM2-135M train step ~47 s instead of ~1 s, and fp32 training never
# reaches a oneDNN kernel whose rounding differs (tests/test_portable_numerics.py, levels up to AMX).
# A value the user exported wins.
#
# ACROSS VENDORS (Intel vs AMD): MKL's CNR branches other than AUTO and COMPATIBLE "are available only
# for Intel processors" and are silently replaced by AUTO on others (Intel MKL developer guide,
# "Specifying code branches"): an AMD EPYC ran MKL's own AMD path, and its lock matched an Intel Xeon's
# for curate only. COMPATIBLE (the one vendor-neutral branch) cost 2.4x in base and train and is not
# thread-count independent. So mkl_vendor.load() answers MKL's vendor question ("Intel") with a
# two-line shared library, and MKL takes the AVX2 STRICT branch on both vendors (see mkl_vendor.py);
# `benchmarks/lock_diff.py` is the cross-CPU oracle.
#
# THREAD-COUNT NUMERICS: with these settings base, train and evaluate give the same bytes at 1, 2, 4,
# 8 and 16 threads (MKL's STRICT sgemm is thread-count independent; measured on the default build at
# 1 and 2, on a tiny Llama with grad clipping up to 16), but not at 3 or 6: ATen splits an element-wise
# kernel's range per thread, and a split that is not a multiple of the SIMD width sends a few elements
# through the scalar path, whose exp rounds differently (SiLU in the MLP, first seen at 3 threads). So
# a null thread key resolves to a power of two (resolve_threads); an explicit count is taken as given
# and recorded in dvc.lock like every param.
PORTABLE_NUMERICS = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2,STRICT"}


def portable_numerics() -> None:
    """Cap the CPU kernels' ISA and make MKL honour the cap on every vendor (must run before torch is
    imported)."""
    if platform.machine().lower() in ("x86_64", "amd64"):
        for k, v in PORTABLE_NUMERICS.items():
            os.environ.setdefault(k, v)
        mkl_vendor.load()


def offline(allow_network: bool = False) -> None:
    """Turn every library's network access off unless the spec allows it (model.allow_network);
    hub caches stay in the project (.hf_home) either way."""
    os.environ.setdefault("HF_HOME", str(Path(".hf_home").resolve()))
    if not allow_network:
        os.environ.update(OFFLINE)


# How many experiments run at once on this machine (sweeps): an explicit SLMAKE_PARALLEL_JOBS, else
# the live workers of a `dvc queue start -j J` (+1 for a run outside the queue beside them).
JOBS_ENV = "SLMAKE_PARALLEL_JOBS"
# The env vars thread pools of subprocess tools read (OpenMP, MKL, OpenBLAS, NumExpr).
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS")


class ThreadsError(ValueError):
    """SLMAKE_PARALLEL_JOBS is not a positive integer."""


def cores() -> int:
    """CPUs this process may run on (its affinity mask: taskset, cgroup cpusets), not the host's."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def queue_workers(root: str | Path) -> int:
    """Live DVC experiment-queue workers of the repo at ``root``. `dvc queue start -j J` spawns J
    workers (each runs one experiment at a time) as dvc-task managed processes, which record
    {pid, returncode} in .dvc/tmp/exps/celery/dvc-exp-worker-<n>.json."""
    n = 0
    for info in Path(root, ".dvc", "tmp", "exps", "celery").glob("dvc-exp-worker-*.json"):
        try:
            d = json.loads(info.read_text())
        except (OSError, ValueError):
            continue  # being rewritten (dvc-task replaces it atomically) or gone
        if isinstance(d, dict) and d.get("returncode") is None and isinstance(d.get("pid"), int) and _alive(d["pid"]):
            n += 1
    return n


def parallel_jobs(env: dict | None = None, cwd: str | Path | None = None) -> int:
    """Experiments sharing this machine's cores now. DVC runs each stage with DVC_ROOT set to the
    project root (also for a queued experiment, whose cwd is a temp copy under
    <root>/.dvc/tmp/exps/): a queued stage is one of the live workers, a stage outside the queue
    (`dvc repro`, `dvc exp run`) one more beside them."""
    env = os.environ if env is None else env
    if env.get(JOBS_ENV):
        try:
            jobs = int(env[JOBS_ENV])
            if jobs < 1:
                raise ValueError
        except ValueError:
            raise ThreadsError(f"{JOBS_ENV}={env[JOBS_ENV]!r}: expected a positive integer "
                               "(the number of experiments run at once on this machine)") from None
        return jobs
    root = env.get("DVC_ROOT")
    if not root:
        return 1
    root, here = Path(root).resolve(), Path(cwd or os.getcwd()).resolve()
    queued = here.is_relative_to(root / ".dvc" / "tmp" / "exps")
    return max(1, queue_workers(root) + (0 if queued else 1))


def resolve_threads(threads: int | None, jobs: int | None = None) -> int:
    """A spec thread key -> the count to use. An integer is explicit and wins. null (the default of
    every thread key) is every core this process may use (its affinity mask, not the host's count,
    nor torch's guess of physical cores), divided by the experiments sharing them (J queue workers,
    a data-parallel training's torchrun processes), rounded down to a power of two: the fp32 bytes
    are the same at 1, 2, 4, 8, 16 ... threads but not at 3 or 6 (THREAD-COUNT NUMERICS above)."""
    if threads is not None:
        return int(threads)
    jobs = parallel_jobs() if jobs is None else jobs
    jobs *= int(os.environ.get("LOCAL_WORLD_SIZE") or 1)  # torchrun's processes on this machine share them too
    share = max(1, cores() // jobs)
    return 1 << (share.bit_length() - 1)


def limit_threads(threads: int | None, jobs: int | None = None) -> int:
    """Resolve ``threads`` and export it to the thread pools of subprocess tools (OpenMP, MKL, ...)
    unless the user exported them; warn when explicit threads x jobs oversubscribe the cores."""
    try:
        jobs = parallel_jobs() if jobs is None else jobs
    except ThreadsError as e:
        sys.exit(f"slmake: {e}")
    n = resolve_threads(threads, jobs)
    for k in THREAD_ENV:
        os.environ.setdefault(k, str(n))
    if n * jobs > cores():
        print(f"slmake: warning: {n} threads x {jobs} parallel experiments > {cores()} cores "
              "(the spec sets threads explicitly; set it to null to share the cores)", file=sys.stderr)
    return n


def deterministic_algorithms(torch) -> None:
    """torch.use_deterministic_algorithms(True, warn_only=True) without its first line: that function
    imports torch._inductor.config, and with it inductor and dynamo (1.7 s of every stage's start;
    6 of the 32 s a micro build spent importing). Inductor's flag matters only to torch.compile, which
    slmake never calls; it is still set where inductor is already loaded. Eager kernels read only the
    global flag set here, so the numerics are those of the public call."""
    torch._C._set_deterministic_algorithms(True, warn_only=True)
    if "torch._inductor.config" in sys.modules:
        sys.modules["torch._inductor.config"].deterministic = True


def setup(threads: int | None = None, seed: int | None = None, allow_network: bool = False) -> int:
    """Every stage's first call. Returns the thread count used."""
    offline(allow_network)
    portable_numerics()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    import torch

    threads = limit_threads(threads)  # the env is for subprocess tools; torch is set directly below
    torch.set_num_threads(threads)
    if seed is not None:
        random.seed(seed)
        torch.manual_seed(seed)
        deterministic_algorithms(torch)
    return threads
