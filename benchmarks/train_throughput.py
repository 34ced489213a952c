"""Train tokens/s of slmake's train stage against a bare TRL SFTTrainer script, in one run.

    python benchmarks/train_throughput.py [--steps N] [--build DIR] [--keep DIR] [-S key=value ...]

Both sides train the same base model on the same curated split with the spec's train settings
(SmolLM2-135M, 1 epoch's settings, 2 threads, lr 1e-3 by default, as in the SmolLM2
build of docs/figures.md; ``--steps`` caps the run): slmake runs ``stages/train.py`` itself (its process settings
included: portable AVX2 numerics, deterministic algorithms, dvclive logging); the bare script is
what a user would write with TRL alone (SFTConfig + LoRA, nothing else), with the spec's fp32
precision and no gradient checkpointing stated (TRL's own defaults on CPU are bf16 autocast and
checkpointing: a different numerics, not the same settings). Each side runs in a
fresh process, one after the other. Tokens are counted the same way for both: non-padding tokens
of every training batch (the attention mask's sum), after the first step (warm-up), over the wall
time of those steps with any evaluation in between subtracted. Goal: slmake / bare >= 0.95.

``--build DIR`` reuses a build folder holding ``base/`` and ``data/`` (e.g. a kept stage_times
build); without it, ``dvc repro base`` builds them in the work folder first (not timed).
"""

from __future__ import annotations

import argparse
import json
import os
import runpy
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from figures import record, variant_of  # noqa: E402
from pipeline import copy_project  # noqa: E402

SMOLLM2 = ["model=smollm2_135m_gguf", f"model.hf.path={ROOT}/.venv/share/slmake/models/smollm2-135m",
           "train.epochs=1", "train.threads=2", "train.lr=0.001"]


def counting_trainer(base, out: Path):
    """``base`` (an SFTTrainer class) that counts non-pad tokens per step and times the steps."""
    from transformers import TrainerCallback

    stats = {"tokens": 0, "steps": 0, "t_first": None, "t_last": None, "evals": [], "warm_tokens": 0}

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            now = time.perf_counter()
            stats["steps"] += 1
            if stats["t_first"] is None:
                stats["t_first"], stats["warm_tokens"] = now, stats["tokens"]
            stats["t_last"] = now

        def on_train_end(self, args, state, control, **kwargs):
            counted = stats["tokens"] - stats["warm_tokens"]
            # only evaluations between the timed steps: the one after the last step is not in the window
            inside = sum(e - b for b, e in stats["evals"] if stats["t_first"] <= b and e <= stats["t_last"])
            secs = stats["t_last"] - stats["t_first"] - inside if stats["steps"] > 1 else float("nan")
            out.write_text(json.dumps({"tokens": counted, "steps": stats["steps"] - 1, "seconds": secs,
                                       "tokens_per_s": counted / secs, "total_tokens": stats["tokens"]}))

    class Counting(base):
        def __init__(self, *a, callbacks=None, **kw):
            super().__init__(*a, callbacks=[*(callbacks or []), Clock()], **kw)

        def training_step(self, model, inputs, *a, **kw):
            mask = inputs.get("attention_mask")
            stats["tokens"] += int(mask.sum()) if mask is not None else int(inputs["input_ids"].numel())
            return super().training_step(model, inputs, *a, **kw)

        def evaluate(self, *a, **kw):
            t0 = time.perf_counter()
            try:
                return super().evaluate(*a, **kw)
            finally:
                stats["evals"].append((t0, time.perf_counter()))

    return Counting


def worker_slmake(work: Path, out: Path) -> None:
    """slmake's own train stage, with trl's SFTTrainer swapped for the counting subclass."""
    import trl

    trl.SFTTrainer = counting_trainer(trl.SFTTrainer, out)
    os.chdir(work)
    sys.argv = ["stages/train.py"]
    runpy.run_path("stages/train.py", run_name="__main__")


def worker_bare(work: Path, out: Path) -> None:
    """The TRL script a user would write: the same model, split and train.* settings."""
    import torch
    import yaml
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed
    from trl import SFTConfig, SFTTrainer

    spec = yaml.safe_load((work / "params.yaml").read_text())
    cfg, seed = spec["train"], spec["seed"]
    torch.set_num_threads(cfg["threads"])
    set_seed(seed)
    base, data = work / "build/base", work / "build/data"

    def rows(name):
        lines = (data / name).read_text(encoding="utf-8").splitlines()
        return Dataset.from_list([{"prompt": r["prompt"], "completion": r["response"]} for r in map(json.loads, lines)])

    lora = cfg["lora"]
    args = SFTConfig(output_dir=str(work / "bare_trl"), seed=seed, use_cpu=True, num_train_epochs=cfg["epochs"],
                     max_steps=cfg["max_steps"], per_device_train_batch_size=cfg["batch_size"],
                     per_device_eval_batch_size=cfg["batch_size"], gradient_accumulation_steps=cfg["grad_accum"],
                     learning_rate=cfg["lr"], warmup_ratio=cfg["warmup_ratio"], lr_scheduler_type="cosine",
                     max_length=cfg["max_length"], completion_only_loss=True, logging_steps=10,
                     eval_strategy="epoch", save_strategy="no", report_to="none",
                     # the spec's precision and memory settings, which TRL's defaults differ from: on
                     # CPU, SFTConfig turns bf16 autocast and gradient checkpointing on by default
                     bf16=False, gradient_checkpointing=False,
                     # train.group_by_length: TRL's own length grouping (the same grouping in one process)
                     train_sampling_strategy="group_by_length" if cfg.get("group_by_length") else "random")
    trainer = counting_trainer(SFTTrainer, out)(
        model=AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32), args=args,
        train_dataset=rows("train.jsonl"), eval_dataset=rows("val.jsonl"),
        processing_class=AutoTokenizer.from_pretrained(str(base)),
        peft_config=LoraConfig(r=lora["r"], lora_alpha=lora["alpha"], lora_dropout=lora["dropout"],
                               target_modules=lora["target_modules"], task_type="CAUSAL_LM"))
    trainer.train()


def sh(cmd: list[str], cwd: Path, env: dict) -> None:
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        sys.exit(f"`{' '.join(cmd)}` failed:\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}")


def prepare(work: Path, overrides: list[str], build: Path | None, env: dict) -> None:
    copy_project(work, untracked=True)  # the working tree as it is
    sh([str(Path(sys.executable).parent / "slmake"), "check", "--write", "params.yaml", *overrides], work, env)
    if build is not None:
        for name in ("base", "data"):
            if not (build / name).is_dir():
                sys.exit(f"--build {build}: no {name}/ folder (expected a build folder with base/ and data/)")
            (work / "build").mkdir(exist_ok=True)
            (work / "build" / name).symlink_to((build / name).resolve())
        return
    sh(["sh", "-c", "git init -q && git add -A && git -c user.email=b@b -c user.name=b commit -qm tput"], work, env)
    print("building base and data (dvc repro base; not timed) ...", flush=True)
    sh(["dvc", "repro", "base"], work, env)


def run_side(side: str, work: Path, env: dict) -> dict:
    out = work / f"{side}.json"
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, __file__, "--worker", side, "--work", str(work)], env=env,
                         capture_output=True, text=True, check=False)
    if res.returncode != 0 or not out.exists():
        sys.exit(f"{side} training failed:\n{res.stdout[-2000:]}\n{res.stderr[-3000:]}")
    return {**json.loads(out.read_text()), "wall_s": time.perf_counter() - t0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=30, help="train.max_steps for both sides (0: the spec's epochs)")
    ap.add_argument("--build", type=Path, help="reuse this build folder's base/ and data/")
    ap.add_argument("--keep", type=Path, help="work in this folder and keep it (default: a temp dir)")
    ap.add_argument("-S", dest="overrides", action="append", default=[],
                    help="spec override (Hydra syntax); default: the SmolLM2 build of docs/figures.md")
    ap.add_argument("--worker", choices=["slmake", "bare"], help=argparse.SUPPRESS)
    ap.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        (worker_slmake if args.worker == "slmake" else worker_bare)(args.work, args.work / f"{args.worker}.json")
        return

    work = (args.keep or Path(tempfile.mkdtemp(prefix="slmake_tput_"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    overrides = (args.overrides or SMOLLM2) + ([f"train.max_steps={args.steps}"] if args.steps > 0 else [])
    from slmake.process_setup import OFFLINE, PORTABLE_NUMERICS

    # PYTHONPATH: the copy's own slmake, not the editable install's live tree
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "PYTHONHASHSEED": "0", "PYTHONPATH": str(work / "src"), **OFFLINE}
    prepare(work, overrides, args.build, env)
    # slmake's numerics caps must be in the environment before torch is imported (the stage's own
    # process_setup.setup comes after this worker imported trl); the bare script runs without them
    bare_env = {k: v for k, v in env.items() if k not in PORTABLE_NUMERICS}
    slmake_env = {**PORTABLE_NUMERICS, **env}
    print(f"spec overrides: {' '.join(overrides)}", flush=True)
    res = {"bare": run_side("bare", work, bare_env), "slmake": run_side("slmake", work, slmake_env)}
    print(f"\n{'side':<28} {'steps':>6} {'tokens':>9} {'seconds':>8} {'tokens/s':>9} {'process s':>10}")
    for side, label in (("bare", "bare TRL SFTTrainer script"), ("slmake", "slmake train stage")):
        r = res[side]
        print(f"{label:<28} {r['steps']:>6} {r['tokens']:>9} {r['seconds']:>8.1f} {r['tokens_per_s']:>9.1f} {r['wall_s']:>10.1f}")
    if res["bare"]["total_tokens"] != res["slmake"]["total_tokens"]:
        print(f"note: the two sides saw different token counts ({res['bare']['total_tokens']} vs "
              f"{res['slmake']['total_tokens']}): the data order or truncation differs")
    print(f"ratio slmake / bare: {res['slmake']['tokens_per_s'] / res['bare']['tokens_per_s']:.3f}  (goal >= 0.95)")
    mine, bare = res["slmake"]["tokens_per_s"], res["bare"]["tokens_per_s"]
    record("train_throughput", {
        "slmake tokens/s": round(mine, 1), "bare TRL tokens/s": round(bare, 1),
        "ratio slmake / bare": round(mine / bare, 3), "goal": ">= 0.95",
        "tokens seen (slmake, bare)": [res["slmake"]["total_tokens"], res["bare"]["total_tokens"]],
        "steps timed": res["slmake"]["steps"], "spec overrides": " ".join(overrides)},
        variant=variant_of(args.overrides))
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
