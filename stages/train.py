"""train: splits + build/base + train.* -> build/train/{adapter,merged}, dvclive metrics/plots

train.processes > 1 relaunches this script under torchrun (one machine, N data-parallel
processes: gloo on CPU, nccl on GPU); launched by torchrun / accelerate yourself (multi-node),
it runs as it is. Only rank 0 writes build/train and reports/train. Checkpoints go to
build/.checkpoints/train/<key> (outside DVC's output, which DVC deletes before a rerun) and are
removed once the stage succeeded; a killed run resumes from there.
"""

import os
import sys
from contextlib import nullcontext
from pathlib import Path

from slmake import process_setup
from slmake.checks import stage_params

params = stage_params("train", "seed")
cfg, seed = params["train"], params["seed"]
if cfg["method"] != "qlora":
    # Only QLoRA uses bitsandbytes, but peft and trl import it whenever it is installed, and its import
    # wraps kernels in torch.compile: 2.4 s of every train process (`from trl import SFTTrainer`
    # 10.2 s -> 7.8 s on the 2-core dev VM). None in sys.modules makes find_spec() report it absent.
    sys.modules.setdefault("bitsandbytes", None)
n = cfg.get("processes", 1)
if n > 1 and "LOCAL_RANK" not in os.environ:  # not launched by torchrun/accelerate: launch ourselves
    sys.stdout.flush()
    if sys.platform == "linux":  # --standalone is one machine: gloo over loopback, whatever the host's name
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    os.execv(sys.executable, [sys.executable, "-m", "torch.distributed.run", "--standalone",
                              f"--nproc_per_node={n}", *sys.argv])
process_setup.setup(threads=cfg["threads"], seed=seed)

import torch  # noqa: E402
from dvclive import Live  # noqa: E402

from slmake import checkpoints  # noqa: E402
from slmake.io import atomic_dir, write_json_atomic  # noqa: E402
from slmake.train import TrainError, rank, train, world_size  # noqa: E402

if "LOCAL_RANK" in os.environ and world_size() != n:
    sys.exit(f"slmake train: launched with {world_size()} processes but train.processes is {n}: "
             "set train.processes to the launcher's total process count (it decides the global batch)")
base, splits = Path("build/base"), Path("build/data")
ckpt = checkpoints.ROOT / checkpoints.key(cfg, seed, base, splits, world_size(), torch.get_num_threads())
main = rank() == 0
try:
    live = Live(dir="reports/train", dvcyaml=None, save_dvc_exp=False, report=None) if main else None
    with live if main else nullcontext():
        with atomic_dir("build/train") if main else nullcontext() as tmp:
            metrics = train(cfg, base, splits, tmp, live, seed, checkpoints=ckpt)
        if main:
            for k, v in metrics.items():
                live.summary[k] = v
except TrainError as e:
    sys.exit(f"slmake train: {e}")
if main:
    write_json_atomic("reports/train/summary.json", metrics)
    checkpoints.remove(ckpt)
    print(f"train: {metrics}")
