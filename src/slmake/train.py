"""Fine-tuning through trl's SFTTrainer, completion-only loss, fp32 on CPU: LoRA / QLoRA (peft)
or full fine-tuning (every weight), one or N data-parallel processes, resumable.

Byte-reproducible: same spec + data => identical adapter and merged safetensors (seeded,
PYTHONHASHSEED=0 so peft writes target_modules in a stable order, and the few fields that
embed paths or versions are normalised before the files are hashed). A run killed half-way
resumes from its last checkpoint (see `checkpoints`) with the Trainer's own
`resume_from_checkpoint` (weights, optimizer, scheduler, RNG states, data order) and ends with
the same bytes as an uninterrupted run.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

from .base_model import load_tokenizer
from .checkpoints import COMPLETE, complete_checkpoints, prune_incomplete
from .io import read_jsonl, write_json_atomic


class TrainError(Exception):
    pass


def rank() -> int:
    """This process's rank under torchrun / accelerate launch (0 when not distributed)."""
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


_LOGGED = ("loss", "eval_loss", "learning_rate", "grad_norm", "mean_token_accuracy", "eval_mean_token_accuracy")


def _log(live, logs: dict, step: int) -> None:
    """One dvclive step per Trainer log, at the Trainer's global step (dvclive writes a metric
    at the step set when it is logged)."""
    found = [k for k in _LOGGED if k in logs]
    if found:
        live.step = step
        for key in found:
            live.log_metric(f"train/{key}" if not key.startswith("eval_") else f"val/{key[5:]}", float(logs[key]))
        live.next_step()


def _callbacks(live) -> list:
    """A dvclive logger: loss/lr per logging step; on a resumed run it first replays the
    checkpoint's log history, so the curves are those of an uninterrupted run."""
    from transformers import TrainerCallback

    class DVCLiveLogger(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            for logs in state.log_history:  # non-empty only when resumed from a checkpoint
                _log(live, logs, logs["step"])

        def on_log(self, args, state, control, logs=None, **kwargs):
            _log(live, logs or {}, state.global_step)

    return [DVCLiveLogger()] if live is not None else []


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _dataset(rows: list[dict]):
    from datasets import Dataset

    return Dataset.from_list([{"prompt": r["prompt"], "completion": r["response"]} for r in rows])


def length_grouped_sampler(lengths: list[int], per_device: int, processes: int, grad_accum: int):
    """Row order in groups of similar length, drawn from torch's seeded RNG, that depends only on
    the global batch (per_device x processes x grad_accum): one process or N, each optimizer step
    trains the same rows (accelerate deals consecutive per-process batches out to the ranks)."""
    from transformers.trainer_pt_utils import LengthGroupedSampler

    return LengthGroupedSampler(per_device * processes * grad_accum, lengths=lengths)


@contextmanager
def completion_positions_only(vocab_size: int | None = None):
    """Have TRL's fused LM head score only the positions that carry a label (the completion), in
    a logits buffer no wider than the vocabulary.

    TRL projects only those positions on Triton devices, and every position elsewhere (so that
    compilers such as Neuron's keep static tile shapes). Eager CPU has no such constraint, and
    there the prompt's positions are most of the LM head's work: 71 % of a SmolLM2 batch's
    positions are prompt, and a train step takes 1.93 s instead of 2.64 s with them left out.
    The loss is the same (the masked positions contribute zero either way).

    TRL also allocates its logits tile ``tokens x 32768`` wide whatever the vocabulary
    (``_CHUNKED_LOGPROB_CHUNK_SIZE``), in the forward and again in the backward: for a 512-word
    vocabulary that is 64x the memory the tile uses, and its allocation was a fifth of a micro
    build's train step. With ``vocab_size`` below that width the chunk is the vocabulary: the
    same single chunk, so the same sums in the same order. Without the hooks (another TRL)
    training runs as before, only slower; tests/test_train_lm_head.py notices."""
    import trl.trainer.utils as trl_utils

    original = getattr(trl_utils, "_use_triton", None)
    chunk = getattr(trl_utils, "_CHUNKED_LOGPROB_CHUNK_SIZE", None)
    if original is None:
        yield
        return
    trl_utils._use_triton = lambda device: device.type == "cpu" or original(device)
    if chunk is not None and vocab_size:
        trl_utils._CHUNKED_LOGPROB_CHUNK_SIZE = min(chunk, vocab_size)
    try:
        yield
    finally:
        trl_utils._use_triton = original
        if chunk is not None:
            trl_utils._CHUNKED_LOGPROB_CHUNK_SIZE = chunk


def _trainer_class(group_by_length: bool = False):
    """SFTTrainer that marks a checkpoint complete (with the loss summed so far, which the Trainer
    does not keep across a resume) once every file of it is written, scores only the completion's
    positions (see `completion_positions_only`), and optionally batches rows of similar length
    (see `_get_train_sampler`)."""
    from trl import SFTTrainer

    class Trainer(SFTTrainer):
        def _get_train_sampler(self, train_dataset=None):
            """transformers' LengthGroupedSampler (shuffled mega-batches, sorted by length within)
            sized by the *global* batch: its own group_by_length sizes the groups by the per-process
            batch, so N processes would see other rows per step than one. TRL pads each batch to
            its longest row: random batches of the SmolLM2 build are 22 % padding, grouped ~0 %."""
            if not group_by_length:
                return super()._get_train_sampler(train_dataset)
            ds = self.train_dataset if train_dataset is None else train_dataset
            a = self.args
            return length_grouped_sampler([len(ids) for ids in ds["input_ids"]], a.per_device_train_batch_size,
                                          a.world_size, a.gradient_accumulation_steps)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            head = getattr(model, "module", model).get_output_embeddings()   # DDP wraps the model in .module
            with completion_positions_only(head.weight.shape[0]):
                return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                            num_items_in_batch=num_items_in_batch)

        def _save_checkpoint(self, model, trial):
            super()._save_checkpoint(model, trial)
            if self.args.should_save:
                folder = Path(self.args.output_dir) / f"checkpoint-{self.state.global_step}"
                total = self._total_loss_scalar + float(self._tr_loss.item()) + self.loss_before_resume
                write_json_atomic(folder / COMPLETE, {"total_loss": total, "world_size": self.args.world_size})

    return Trainer


def train(cfg: dict, base_dir: Path, splits: Path, out_dir: Path | None, live, seed: int,
          checkpoints: Path | None = None) -> dict:
    """Train on ``splits`` from ``base_dir`` into ``out_dir``/{adapter,merged} (``out_dir`` None on
    ranks > 0: only rank 0 writes). With ``checkpoints`` (a folder keyed by the inputs, see
    checkpoints.key) a checkpoint is saved every ``train.save_steps`` steps and the run resumes
    from the latest complete one there."""
    if os.environ.get("PYTHONHASHSEED") != "0":
        raise TrainError("train must run with PYTHONHASHSEED=0 (dvc.yaml sets it) for byte-reproducible adapters")
    import torch
    from transformers import AutoModelForCausalLM, set_seed
    from trl import SFTConfig

    method = cfg["method"]
    set_seed(seed, deterministic=True)
    tok = load_tokenizer(base_dir)
    if method == "qlora":
        model = _load_4bit(base_dir, cfg["quant"])
    else:
        model = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
    model.config.use_cache = False
    train_rows, val_rows = read_jsonl(splits / "train.jsonl"), read_jsonl(splits / "val.jsonl")
    if not train_rows:
        raise TrainError(f"{splits / 'train.jsonl'}: the train split is empty")

    peft_config = None
    if method in ("lora", "qlora"):
        from peft import LoraConfig

        lora = cfg["lora"]
        peft_config = LoraConfig(r=lora["r"], lora_alpha=lora["alpha"], lora_dropout=lora["dropout"],
                                 target_modules=sorted(lora["target_modules"]), task_type="CAUSAL_LM", bias="none")
    save_steps = cfg.get("save_steps", 0) if checkpoints is not None else 0
    work = checkpoints if checkpoints is not None else (out_dir or base_dir.parent) / "_trainer"
    resume = None
    if save_steps and rank() == 0:
        prune_incomplete(work, world_size())
    if save_steps:
        found = complete_checkpoints(work, world_size())
        resume = found[-1] if found else None
    args = SFTConfig(
        output_dir=str(work), seed=seed, data_seed=seed, use_cpu=not _cuda(), fp16=False,
        gradient_checkpointing=False, num_train_epochs=cfg["epochs"], max_steps=cfg["max_steps"],
        bf16=method == "qlora" and cfg["quant"]["compute_dtype"] == "bfloat16" and _cuda(),
        per_device_train_batch_size=cfg["batch_size"], per_device_eval_batch_size=cfg["batch_size"],
        gradient_accumulation_steps=cfg["grad_accum"], learning_rate=cfg["lr"],
        warmup_ratio=cfg["warmup_ratio"], lr_scheduler_type="cosine", max_length=cfg["max_length"],
        # every checkpoint on a logging step: a resumed run then logs the same curve (and no
        # un-logged loss is pending in the checkpoint)
        logging_steps=math.gcd(10, save_steps) if save_steps else 10,
        completion_only_loss=True, eval_strategy="epoch" if val_rows else "no",
        save_strategy="steps" if save_steps else "no", save_steps=save_steps or 500, save_total_limit=2,
        report_to="none", dataloader_num_workers=0, disable_tqdm=False, dataset_num_proc=None,
        ddp_backend=("nccl" if _cuda() else "gloo") if world_size() > 1 else None,
    )
    trainer = _trainer_class(cfg.get("group_by_length", False))(model=model, args=args, train_dataset=_dataset(train_rows),
                               eval_dataset=_dataset(val_rows) if val_rows else None,
                               processing_class=tok, peft_config=peft_config, callbacks=_callbacks(live))
    trainer.loss_before_resume = 0.0
    if resume is not None:
        trainer.loss_before_resume = json.loads((resume / COMPLETE).read_text())["total_loss"]
        if rank() == 0:
            print(f"train: resuming from {resume}", flush=True)
    result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    steps = int(result.global_step)
    # the Trainer's training_loss counts only this process's steps: add the checkpoint's share
    total = float(result.training_loss) * max(steps, 0.001) + trainer.loss_before_resume
    metrics = {"train_loss": round(total / max(steps, 1), 4), "steps": steps,
               "resumed_from_step": int(resume.name.split("-")[1]) if resume else 0}
    if val_rows:  # the epoch-end evaluation already measured the final weights: don't run it twice
        evals = [h for h in trainer.state.log_history if "eval_loss" in h]
        final = evals[-1]["eval_loss"] if evals and evals[-1].get("step") == steps else trainer.evaluate()["eval_loss"]
        metrics["val_loss"] = round(float(final), 4)
    if out_dir is not None and trainer.is_world_process_zero():
        _save(trainer, method, base_dir, tok, out_dir)
    if checkpoints is None:
        shutil.rmtree(work, ignore_errors=True)
    return metrics


def _save(trainer, method: str, base_dir: Path, tok, out_dir: Path) -> None:
    """out_dir/merged: a plain HF model folder every target compiles (LoRA merged into the fp32
    base; full fine-tuning saves the trained model itself); out_dir/adapter for LoRA / QLoRA."""
    import torch
    from transformers import AutoModelForCausalLM

    adapter_dir, merged_dir = out_dir / "adapter", out_dir / "merged"
    if method == "full":
        merged = trainer.model
    else:
        trainer.model.save_pretrained(str(adapter_dir), safe_serialization=True)
        if method == "qlora":
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
    normalise(adapter_dir, merged_dir)


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
