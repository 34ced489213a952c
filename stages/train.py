"""train: splits + build/base + train.* -> build/train/{adapter,merged}, dvclive metrics/plots"""

import sys
from pathlib import Path

from slmake import runtime_env
from slmake.spec import stage_params

params = stage_params("train", "seed")
cfg, seed = params["train"], params["seed"]
runtime_env.setup(threads=cfg["threads"], seed=seed)

from dvclive import Live  # noqa: E402

from slmake.io import atomic_dir, write_json_atomic  # noqa: E402
from slmake.train import TrainError, train_lora  # noqa: E402

try:
    with Live(dir="reports/train", dvcyaml=None, save_dvc_exp=False, report=None) as live:
        with atomic_dir("build/train") as tmp:
            metrics = train_lora(cfg, Path("build/base"), Path("build/data"), tmp, live, seed)
        for k, v in metrics.items():
            live.summary[k] = v
except TrainError as e:
    sys.exit(f"slmake train: {e}")
write_json_atomic("reports/train/summary.json", metrics)
print(f"train: {metrics}")
