"""LoRA fine-tuning with peft through trl's SFTTrainer: completion-only loss, fp32 on CPU.

Byte-reproducible: same spec + data => identical adapter and merged safetensors (seeded,
PYTHONHASHSEED=0 so peft writes target_modules in a stable order, and the few fields that
embed paths or versions are normalised before the files are hashed).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from .io import read_jsonl


class TrainError(Exception):
    pass


class _DVCLiveLogger:
    """A TrainerCallback that logs loss/lr per logging step to dvclive (plots + metrics)."""

    def __new__(cls, live):
        from transformers import TrainerCallback

        class Callback(TrainerCallback):
            def on_log(self, args, state, control, logs=None, **kwargs):
                logs = logs or {}
                logged = False
                for key in ("loss", "eval_loss", "learning_rate", "grad_norm", "mean_token_accuracy", "eval_mean_token_accuracy"):
                    if key in logs:
                        live.log_metric(f"train/{key}" if not key.startswith("eval_") else f"val/{key[5:]}", float(logs[key]))
                        logged = True
                if logged:
                    live.step = state.global_step
                    live.next_step()

        return Callback()


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _dataset(rows: list[dict]):
    from datasets import Dataset

    return Dataset.from_list([{"prompt": r["prompt"], "completion": r["response"]} for r in rows])


def train_lora(cfg: dict, base_dir: Path, splits: Path, out_dir: Path, live, seed: int) -> dict:
    if os.environ.get("PYTHONHASHSEED") != "0":
        raise TrainError("train must run with PYTHONHASHSEED=0 (dvc.yaml sets it) for byte-reproducible adapters")
    import torch
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, set_seed
    from trl import SFTConfig, SFTTrainer

    from .base_model import load_tokenizer

    set_seed(seed, deterministic=True)
    tok = load_tokenizer(base_dir)
    if cfg["method"] == "qlora":
        model = _load_4bit(base_dir, cfg["quant"])
    else:
        model = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
    model.config.use_cache = False
    train_rows, val_rows = read_jsonl(splits / "train.jsonl"), read_jsonl(splits / "val.jsonl")
    if not train_rows:
        raise TrainError(f"{splits / 'train.jsonl'}: the train split is empty")

    lora = cfg["lora"]
    peft_config = LoraConfig(r=lora["r"], lora_alpha=lora["alpha"], lora_dropout=lora["dropout"],
                             target_modules=sorted(lora["target_modules"]), task_type="CAUSAL_LM", bias="none")
    work = out_dir / "_trainer"
    args = SFTConfig(
        output_dir=str(work), seed=seed, data_seed=seed, use_cpu=not _cuda(), fp16=False,
        gradient_checkpointing=False, num_train_epochs=cfg["epochs"], max_steps=cfg["max_steps"],
        bf16=cfg["method"] == "qlora" and cfg["quant"]["compute_dtype"] == "bfloat16" and _cuda(),
        per_device_train_batch_size=cfg["batch_size"], per_device_eval_batch_size=cfg["batch_size"],
        gradient_accumulation_steps=cfg["grad_accum"], learning_rate=cfg["lr"],
        warmup_ratio=cfg["warmup_ratio"], lr_scheduler_type="cosine", max_length=cfg["max_length"],
        completion_only_loss=True, logging_steps=10, eval_strategy="epoch" if val_rows else "no",
        save_strategy="no", report_to="none", dataloader_num_workers=0, disable_tqdm=False,
        dataset_num_proc=None,
    )
    trainer = SFTTrainer(model=model, args=args, train_dataset=_dataset(train_rows),
                         eval_dataset=_dataset(val_rows) if val_rows else None,
                         processing_class=tok, peft_config=peft_config,
                         callbacks=[_DVCLiveLogger(live)])
    result = trainer.train()
    metrics = {"train_loss": round(float(result.training_loss), 4), "steps": int(result.global_step)}
    if val_rows:
        ev = trainer.evaluate()
        metrics["val_loss"] = round(float(ev["eval_loss"]), 4)

    adapter_dir, merged_dir = out_dir / "adapter", out_dir / "merged"
    trainer.model.save_pretrained(str(adapter_dir), safe_serialization=True)
    if cfg["method"] == "qlora":
        # merge into the full-precision base, not the nf4 copy: the usual QLoRA deployment path
        from peft import PeftModel

        full = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
        merged = PeftModel.from_pretrained(full, str(adapter_dir)).merge_and_unload()
    else:
        merged = trainer.model.merge_and_unload()
    merged.config.use_cache = True
    merged.save_pretrained(str(merged_dir), safe_serialization=True)
    tok.save_pretrained(str(merged_dir))
    for extra in ("tokenizer.model",):
        if (base_dir / extra).exists():
            shutil.copy(base_dir / extra, merged_dir / extra)
    shutil.rmtree(work, ignore_errors=True)
    normalise(adapter_dir, merged_dir)
    return metrics


def _load_4bit(base_dir: Path, q: dict):
    """QLoRA: the frozen base in bitsandbytes nf4/fp4 (double quantisation and compute dtype from
    the spec), prepared for k-bit training. bitsandbytes also runs this on CPU (slowly), so the
    path is testable without a GPU."""
    import torch
    from peft import prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    try:
        import bitsandbytes  # noqa: F401
    except ImportError as e:
        raise TrainError(f"train.method=qlora needs bitsandbytes: {e}") from None
    bnb = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=q["type"],
                             bnb_4bit_use_double_quant=q["double_quant"],
                             # bf16/fp16 compute is a GPU setting: on CPU it is ~5x slower, so fp32 there
                             bnb_4bit_compute_dtype=getattr(torch, q["compute_dtype"]) if _cuda() else torch.float32)
    device_map = {"": 0} if torch.cuda.is_available() else {"": "cpu"}
    model = AutoModelForCausalLM.from_pretrained(str(base_dir), quantization_config=bnb, device_map=device_map,
                                                 dtype=torch.float32)
    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)


def normalise(adapter_dir: Path, merged_dir: Path) -> None:
    """Drop what would change an artifact's hash without changing the model: absolute base
    paths, library versions, the auto-generated model card."""
    cfg_path = adapter_dir / "adapter_config.json"
    if cfg_path.exists():
        cfg = json.loads(cfg_path.read_text())
        cfg["base_model_name_or_path"] = "base"
        cfg.pop("peft_version", None)
        cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    (adapter_dir / "README.md").unlink(missing_ok=True)
    for name in ("config.json", "generation_config.json"):
        p = merged_dir / name
        if p.exists():
            c = json.loads(p.read_text())
            c.pop("transformers_version", None)
            c.pop("_name_or_path", None)
            p.write_text(json.dumps(c, indent=2, sort_keys=True) + "\n")
