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
import shutil
from pathlib import Path

from ...io import atomic_dir
from ...runtimes.hf import HFRunner
from ...runtimes.ortgenai import OrtGenAIRunner
from ..base import Artifact, BuildContext, Probe, Skipped, TargetInfo
from ..tools import (
    ToolFailed,
    build_ort_genai,
    check_merged,
    ort_genai_int4_options,
    require_built,
)
from ..tools import (
    failed as _failed,
)

TARGET = TargetInfo(
    name="cuda",
    description="NVIDIA GPUs: merged fp16 safetensors (vLLM/TGI-ready) and ONNX Runtime GenAI for CUDA",
    formats=("hf-safetensors", "onnx-genai"),
    runtime="transformers / onnxruntime-genai (CUDA)",
    packages=("torch", "transformers", "safetensors", "onnxruntime-genai", "onnxruntime"),
    devices=("cuda",),
)

# ONNX precisions: fp16, int4, bf16 (schema.json); no fp32: the 0.18 builder writes an invalid graph for -e cuda
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


def validate_settings(settings: dict) -> list[str]:
    if not settings["hf_fp16"] and not settings["onnx_genai"]["precisions"]:
        return ["targets.cuda: nothing to build: hf_fp16 is false and onnx_genai.precisions is empty"]
    return []


def compile(ctx: BuildContext, settings: dict) -> list[Artifact]:
    check_merged(ctx.merged)
    built: list[Artifact] = []
    if settings["hf_fp16"]:
        built.append(_hf_fp16(ctx))
        ctx.done(built[-1])
    for p in settings["onnx_genai"]["precisions"]:
        built.append(build_ort_genai(ctx, p, "cuda", _int4_options(settings, p)))
        ctx.done(built[-1])
    arts = []
    for a in built:   # one GPU entry and one CPU check per artifact, same folder
        for suffix, device in (("cuda", "cuda"), ("cpu_check", "cpu_check")):
            arts.append(Artifact(f"{a.name}_{suffix}", a.format, a.precision, a.path, a.runtime, a.status, a.reason,
                                 notes={**a.notes, "device": device}))
    return arts


def _int4_options(settings: dict, precision: str) -> list[str]:
    return ort_genai_int4_options(settings["onnx_genai"].get("int4", {})) if precision == "int4" else []


def open_runner(artifact: Artifact, artifact_dir: Path, bench: dict):
    require_built(artifact)
    path, threads, device = Path(artifact_dir) / artifact.path, bench.get("threads"), artifact.notes.get("device")
    if artifact.format == "onnx-genai" and importlib.util.find_spec("onnxruntime_genai") is None:
        raise Skipped("onnxruntime-genai is not installed (pip install onnxruntime-genai, or -cuda on GPUs)")
    if device == "cpu_check":
        if artifact.format == "hf-safetensors":
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
        return HFRunner(path, device="cuda")
    import onnxruntime_genai as og
    if not og.is_cuda_available():
        raise Skipped(f"{p.reason}; install onnxruntime-genai-cuda to run {artifact.name}")
    return OrtGenAIRunner(path, provider="cuda")


# --- merged fp16 safetensors ------------------------------------------------------------------

def _hf_fp16(ctx: BuildContext) -> Artifact:
    """Cast floating tensors to fp16 file by file (shards and index kept); copy config with dtype
    float16, generation config and tokenizer files; drop keys that only name the toolchain."""
    art = Artifact("hf_fp16", "hf-safetensors", "fp16", "hf_fp16", "transformers",
                   notes={"tool": "safetensors cast", "serving": "vLLM / TGI / transformers"})
    try:
        with atomic_dir(ctx.out / art.path) as tmp:
            _cast_fp16(ctx.merged, tmp)
    except ToolFailed as e:
        return _failed(art, str(e))
    return art


def _cast_fp16(merged: Path, tmp: Path) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    total = 0
    for f in sorted(merged.glob("*.safetensors")):
        tensors = {k: (v.to(torch.float16) if v.is_floating_point() else v).contiguous()
                   for k, v in load_file(str(f)).items()}
        bad = sorted(k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all())
        if bad:
            raise ToolFailed(f"fp16 overflow (values beyond ±65504) in {', '.join(bad[:3])}: serve in bf16 instead")
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


def _clean(cfg: dict) -> dict:
    return {k: v for k, v in cfg.items() if k not in VOLATILE_KEYS}


def _write_json(path: Path, obj: dict) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
