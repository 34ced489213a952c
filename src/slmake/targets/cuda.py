"""The cuda target: a merged fp16 safetensors folder (what vLLM / TGI load) and ONNX Runtime GenAI
models built for the CUDA execution provider.

Both build on a CPU-only machine: the fp16 folder is a tensor-by-tensor cast with safetensors (no
model instantiation, so the bytes depend only on the weights), and ONNX Runtime GenAI's own builder
writes ``-e cuda`` models without a GPU. Every artifact gets two bench entries sharing its folder:
``<name>_cuda`` runs on the GPU (Skipped with the reason where there is none) and
``<name>_cpu_check`` runs the very same files on the CPU -- transformers upcasting fp16 to fp32, and
ORT GenAI after ``Config.clear_providers()`` -- so loadability and parity are checked everywhere,
while speed figures only mean something from the ``_cuda`` entries.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
import time
from pathlib import Path

from ..runtimes.ortgenai import OrtGenAIRunner
from .base import Artifact, Generation, Probe, Skipped, Stopwatch, TargetInfo
from .tools import build_ort_genai, check_merged as _check_merged, failed as _failed

TARGET = TargetInfo(
    name="cuda",
    description="NVIDIA GPUs: merged fp16 safetensors (vLLM/TGI-ready) and ONNX Runtime GenAI for CUDA",
    formats=("hf-safetensors", "onnx-genai"),
    runtime="transformers / onnxruntime-genai (CUDA)",
    packages=("torch", "transformers", "safetensors", "onnxruntime-genai", "onnxruntime"),
    devices=("cuda",),
)

PRECISIONS = ("fp16", "int4", "bf16")   # no fp32: the 0.18 builder writes an invalid graph for -e cuda
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json",
                   "added_tokens.json", "chat_template.jinja")
VOLATILE_KEYS = ("transformers_version",)   # would change the artifact's hash with the toolchain


def probe() -> Probe:
    import torch

    ort = "onnxruntime-genai CUDA: "
    if importlib.util.find_spec("onnxruntime_genai") is None:
        ort += "not installed"
    else:
        import onnxruntime_genai as og
        ort += "yes" if og.is_cuda_available() else "no (needs the onnxruntime-genai-cuda package)"
    if torch.cuda.is_available():
        return Probe(True, f"{torch.cuda.get_device_name(0)} (torch CUDA {torch.version.cuda}); {ort}")
    build = f"CUDA {torch.version.cuda} build" if torch.version.cuda else "a CPU-only build"
    return Probe(False, f"no CUDA device: torch {torch.__version__} is {build} and sees no GPU; {ort}")


def compile(merged_dir: Path, out_dir: Path, settings: dict) -> list[Artifact]:
    merged_dir, out_dir = Path(merged_dir).resolve(), Path(out_dir)
    _check_merged(merged_dir)
    hf = bool((settings or {}).get("hf_fp16", True))
    precisions = list(((settings or {}).get("onnx_genai") or {}).get("precisions") or [])
    for p in precisions:
        if p not in PRECISIONS:
            raise ValueError(f"cuda target: unknown precision {p!r}; allowed: {', '.join(PRECISIONS)}")
    (out_dir / "logs").mkdir(parents=True, exist_ok=True)
    built: list[Artifact] = []
    if hf:
        built.append(_timed(_hf_fp16, merged_dir, out_dir))
    for p in precisions:
        built.append(_timed(build_ort_genai, merged_dir, out_dir, p, "cuda"))
    arts = []
    for a in built:   # one GPU entry and one CPU check per artifact, same folder
        for suffix, device in (("cuda", "cuda"), ("cpu_check", "cpu_check")):
            arts.append(Artifact(f"{a.name}_{suffix}", a.format, a.precision, a.path, a.runtime, a.status, a.reason,
                                 notes={**a.notes, "device": device}))
    return arts


def open_runner(artifact: Artifact, artifact_dir: Path, bench: dict):
    if artifact.status != "built":
        raise Skipped(f"{artifact.name} was not built: {artifact.reason}")
    path, threads, device = Path(artifact_dir) / artifact.path, bench.get("threads"), artifact.notes.get("device")
    if artifact.format == "onnx-genai" and importlib.util.find_spec("onnxruntime_genai") is None:
        raise Skipped("onnxruntime-genai is not installed (pip install onnxruntime-genai, or -cuda on GPUs)")
    if device == "cpu_check":
        if artifact.format == "hf-safetensors":
            from ..runtimes.hf import HFRunner
            return HFRunner(path, threads=threads)          # loads fp16 weights as fp32
        if artifact.precision == "bf16":
            raise Skipped("ONNX Runtime's CPU provider has no bf16 MatMul kernel: bf16 models run on the GPU only")
        return OrtGenAIRunner(path, threads=threads)         # clears the cuda provider -> CPU
    if device != "cuda":
        raise Skipped(f"cuda target: unknown device {device!r} in {artifact.name}'s notes")
    p = probe()
    if not p.present:
        raise Skipped(p.reason)
    if artifact.format == "hf-safetensors":
        return _HFCudaRunner(path)
    import onnxruntime_genai as og
    if not og.is_cuda_available():
        raise Skipped(f"{p.reason}; install onnxruntime-genai-cuda to run {artifact.name}")
    return _OrtGenAICudaRunner(path)


# --- merged fp16 safetensors ------------------------------------------------------------------

def _hf_fp16(merged: Path, out: Path) -> Artifact:
    """Cast floating tensors to fp16 file by file (shards and index kept); copy config with dtype
    float16, generation config and tokenizer files; drop keys that only name the toolchain."""
    import torch
    from safetensors.torch import load_file, save_file

    art = Artifact("hf_fp16", "hf-safetensors", "fp16", "hf_fp16", "transformers",
                   notes={"tool": "safetensors cast", "serving": "vLLM / TGI / transformers"})
    dest, tmp = out / art.path, out / f"{art.path}.partial"
    for d in (dest, tmp):
        shutil.rmtree(d, ignore_errors=True)
    tmp.mkdir()
    total = 0
    for f in sorted(merged.glob("*.safetensors")):
        tensors = {k: (v.to(torch.float16) if v.is_floating_point() else v).contiguous()
                   for k, v in load_file(str(f)).items()}
        bad = sorted(k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all())
        if bad:
            shutil.rmtree(tmp)
            return _failed(art, f"fp16 overflow (values beyond ±65504) in {', '.join(bad[:3])}: serve in bf16 instead")
        total += sum(v.numel() * v.element_size() for v in tensors.values())
        save_file(tensors, str(tmp / f.name), metadata={"format": "pt"})
    index = merged / "model.safetensors.index.json"
    if index.is_file():
        idx = json.loads(index.read_text())
        idx.setdefault("metadata", {})["total_size"] = total
        _write_json(tmp / index.name, idx)
    config = _clean(json.loads((merged / "config.json").read_text()))
    config["dtype"] = "float16"
    if "torch_dtype" in config:
        config["torch_dtype"] = "float16"
    _write_json(tmp / "config.json", config)
    gen = merged / "generation_config.json"
    gen_cfg = _clean(json.loads(gen.read_text())) if gen.is_file() else {
        k: config[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id") if k in config}
    _write_json(tmp / "generation_config.json", gen_cfg)
    for name in TOKENIZER_FILES:
        if (merged / name).is_file():
            shutil.copyfile(merged / name, tmp / name)
    os.replace(tmp, dest)
    return art


def _clean(cfg: dict) -> dict:
    return {k: v for k, v in cfg.items() if k not in VOLATILE_KEYS}


def _write_json(path: Path, obj: dict) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")



# --- GPU runners (used only where torch / ORT GenAI see a CUDA device) -------------------------

class _HFCudaRunner:
    """transformers fp16 on the GPU, the same greedy loop as runtimes/hf.py; synchronises before
    reading the clock so TTFT is not just kernel launch time."""

    def __init__(self, folder: Path):
        import torch
        from transformers import AutoModelForCausalLM

        self.torch = torch
        self.model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float16).to("cuda").eval()
        eos = self.model.config.eos_token_id
        self.eos = set(eos if isinstance(eos, list) else [eos])

    def generate(self, prompt_ids: list[int], max_new_tokens: int) -> Generation:
        torch = self.torch
        watch, out, past = Stopwatch(), [], None
        with torch.inference_mode():
            ids = torch.tensor([prompt_ids], device="cuda")
            for _ in range(max_new_tokens):
                res = self.model(input_ids=ids, past_key_values=past, use_cache=True)
                past = res.past_key_values
                nxt = int(res.logits[0, -1].argmax())      # .item() synchronises
                watch.mark_first()
                if nxt in self.eos:
                    break
                out.append(nxt)
                ids = torch.tensor([[nxt]], device="cuda")
        return watch.result(out)

    def close(self) -> None:
        self.model = None
        self.torch.cuda.empty_cache()


class _OrtGenAICudaRunner(OrtGenAIRunner):
    """OrtGenAIRunner minus its clear_providers(): the builder's genai_config selects cuda."""

    def __init__(self, model_dir: Path):
        import onnxruntime_genai as og

        cfg = json.loads((Path(model_dir) / "genai_config.json").read_text())["model"]
        eos = cfg.get("eos_token_id")
        self._og, self.eos = og, set(eos if isinstance(eos, list) else [eos])
        self.context = int(cfg.get("context_length") or 0)
        self.model = og.Model(og.Config(str(model_dir)))


# --- helpers (kept local: targets do not depend on each other) --------------------------------

def _timed(fn, *args) -> Artifact:
    t0 = time.perf_counter()
    art = fn(*args)
    size = sum(p.stat().st_size for p in (args[1] / art.path).rglob("*") if p.is_file()) if art.status == "built" else 0
    print(f"  {art.name:<12} {art.status:<6} {size / 2**20:8.2f} MiB {time.perf_counter() - t0:6.1f} s"
          + (f"  {art.reason}" if art.reason else ""), file=sys.stderr)
    return art

