"""The cpu target: GGUF for llama.cpp and ONNX for ONNX Runtime GenAI.

Each format is built with its own project's tools — llama.cpp's convert_hf_to_gguf.py and its
in-process quantizer, ONNX Runtime GenAI's model builder — so the artifacts are the ones those
runtimes' users would build themselves. Tools run in subprocesses (or with their output redirected)
into logs outside the cached output; the driver prints one line per artifact. A format whose
toolchain is missing or fails yields an Artifact with status "failed" and an actionable reason,
never an exception, so the other formats still get built.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import platform
import re
import shutil
import sys
from collections import Counter
from pathlib import Path

from ... import gguf_meta
from ...runtimes.llamacpp import LlamaCppRunner, load_llama_cpp
from ...runtimes.ortgenai import OrtGenAIRunner
from .. import ort_scale_min
from ..base import Artifact, BuildContext, Probe, Skipped, TargetInfo
from ..tools import (
    build_ort_genai,
    check_merged,
    exited,
    ort_genai_int4_options,
    output_to,
    require_built,
)
from ..tools import (
    failed as _failed,
)
from ..tools import (
    last_error as _last_error,
)
from ..tools import (
    run_tool as _run,
)
from . import imatrix

TARGET = TargetInfo(
    name="cpu",
    description="Any x86-64/ARM64 CPU: GGUF for llama.cpp, ONNX for ONNX Runtime GenAI",
    formats=("gguf", "onnx-genai"),
    runtime="llama.cpp / onnxruntime-genai",
    packages=("llama-cpp-python", "gguf", "onnxruntime-genai", "onnxruntime"),
    devices=("cpu",),
)

CONVERTED = ("f32", "f16", "bf16")              # written by the converter itself
QUANTIZED = {"q8_0": "Q8_0", "q4_0": "Q4_0", "q4_1": "Q4_1", "q5_0": "Q5_0", "q5_1": "Q5_1",
             "q4_k_m": "Q4_K_M", "q5_k_m": "Q5_K_M", "q6_k": "Q6_K",   # quantized from gguf_f16
             "q2_k": "Q2_K", "q3_k_m": "Q3_K_M", "iq4_xs": "IQ4_XS", "iq4_nl": "IQ4_NL", "iq3_xxs": "IQ3_XXS",
             "iq3_s": "IQ3_S", "iq2_xs": "IQ2_XS", "iq2_xxs": "IQ2_XXS"}
INSTALL_HINT = "run `bash requirements/llama_cpp.sh <venv>/bin/python`"
CONVERTER = "convert_hf_to_gguf.py"           # installed by requirements/llama_cpp.sh
CONVERTER_ENV = "SLMAKE_LLAMA_CPP_CONVERTER"   # path to another convert_hf_to_gguf.py (optional)
_FALLBACK = re.compile(r"warning: (\S+)\s+- ncols.*required for type\s+(\S+)\).*falling back to\s+(\S+)")


def probe() -> Probe:
    flags = ""
    with contextlib.suppress(OSError):
        words = set(re.findall(r"\w+", Path("/proc/cpuinfo").read_text()))
        flags = " ".join(f for f in ("avx2", "avx512f", "avx512_bf16", "amx_tile", "neon", "asimd") if f in words)
    found = {m: importlib.util.find_spec(m) is not None for m in ("llama_cpp", "onnxruntime_genai")}
    runtimes = ", ".join(f"{m}{'' if ok else ' (missing)'}" for m, ok in found.items())
    return Probe(present=any(found.values()),
                 reason=f"{platform.machine()}, {os.cpu_count()} logical cores [{flags}]; runtimes: {runtimes}")


def validate_settings(settings: dict) -> list[str]:
    if not settings["gguf"]["quants"] and not settings["onnx_genai"]["precisions"]:
        return ["targets.cpu: nothing to build: gguf.quants and onnx_genai.precisions are both empty"]
    int4 = settings["onnx_genai"].get("int4") or {}
    if int4.get("algorithm") == "scale_min":
        clash = _scale_min_clash(int4)
        if clash:
            return [f"targets.cpu.onnx_genai.int4: algorithm scale_min writes asymmetric int4 blocks with an int8 "
                    f"LM head and an int4 embedding; it cannot honour {', '.join(clash)}"]
    enabled = settings["gguf"].get("imatrix", {}).get("enabled")
    needs = [q for q in settings["gguf"]["quants"] if q in imatrix.REQUIRED]
    if enabled is False and needs:
        return [f"targets.cpu.gguf.imatrix.enabled: false, but gguf.quants has {needs}, which llama.cpp only "
                "quantizes with an importance matrix; set it to null or true, or drop those types"]
    return []


def compile(ctx: BuildContext, settings: dict) -> list[Artifact]:
    check_merged(ctx.merged)
    quants, precisions = settings["gguf"]["quants"], settings["onnx_genai"]["precisions"]
    arts = _gguf(ctx, quants, settings["gguf"].get("imatrix", {})) if quants else []
    for p in precisions:
        arts.append(build_ort_genai(ctx, p, "cpu", **_builder_args(settings, p, ctx.base)))
        ctx.done(arts[-1])
    return arts


def _builder_args(settings: dict, precision: str, base: Path | None = None) -> dict:
    """build_ort_genai's keywords for one precision: the builder's own int4 options, or the int4
    settings themselves where slmake quantizes the builder's fp32 graph (algorithm scale_min, or
    auto on a base whose weights sit on a 4-bit GGUF grid; auto is k_quant otherwise)."""
    int4 = dict(settings["onnx_genai"].get("int4", {})) if precision == "int4" else {}
    if int4.get("algorithm") == "auto":
        grid = base is not None and not _scale_min_clash(int4) and ort_scale_min.base_on_grid(base)
        int4["algorithm"] = "scale_min" if grid else "k_quant"
    if int4.get("algorithm") == "scale_min":
        return {"scale_min": int4}
    return {"options": ort_genai_int4_options(int4)}


def _scale_min_clash(int4: dict) -> list[str]:
    """int4 settings scale_min cannot honour (it writes asymmetric blocks, an int8 head, an int4 embedding)."""
    return [f"{k}: {int4[k]}" for k, ok in (("symmetric", (None, False)), ("lm_head", (None, "int8")),
                                            ("embeddings", (None, "int4"))) if int4.get(k) not in ok]


def open_runner(artifact: Artifact, artifact_dir: Path, bench: dict):
    require_built(artifact)
    path, threads = Path(artifact_dir) / artifact.path, bench.get("threads")
    if artifact.format == "gguf":
        if importlib.util.find_spec("llama_cpp") is None:
            raise Skipped(f"llama-cpp-python is not installed; {INSTALL_HINT}")
        return LlamaCppRunner(path, threads=threads)
    if artifact.format == "onnx-genai":
        if importlib.util.find_spec("onnxruntime_genai") is None:
            raise Skipped("onnxruntime-genai is not installed (pip install onnxruntime-genai)")
        return OrtGenAIRunner(path, threads=threads)
    raise Skipped(f"cpu target cannot run format {artifact.format!r}")


# --- GGUF -------------------------------------------------------------------------------------

def _gguf(ctx: BuildContext, quants: list[str], calib: dict) -> list[Artifact]:
    """Convert f16/f32/bf16 with the converter, then quantize every other type from gguf_f16
    (llama.cpp's standard route), with an importance matrix from the train split where
    ``gguf.imatrix`` asks for one; gguf_f16 is deleted afterwards when it was not asked for."""
    need = [t for t in CONVERTED if t in quants or (t == "f16" and any(q in QUANTIZED for q in quants))]
    made: dict[str, Artifact] = {}
    for t in need:
        made[t] = _convert(ctx, t)
        if t in quants:
            ctx.done(made[t])
    imat: tuple[Path | None, dict] | None = None
    for q in (q for q in quants if q in QUANTIZED):
        if imatrix.uses_imatrix(q, calib.get("enabled")) and imat is None and made["f16"].status == "built":
            imat = imatrix.compute(ctx.out / made["f16"].path, ctx.data / "train.jsonl", ctx.logs,
                                   calib.get("max_prompts", 256))
        made[q] = _quantize(ctx, made["f16"], q, imat if imatrix.uses_imatrix(q, calib.get("enabled")) else None)
        ctx.done(made[q])
    if "f16" in made and "f16" not in quants:
        shutil.rmtree(ctx.out / "gguf_f16", ignore_errors=True)
    return [made[q] for q in quants]


def _convert(ctx: BuildContext, outtype: str) -> Artifact:
    art = Artifact(f"gguf_{outtype}", "gguf", outtype, f"gguf_{outtype}/model.gguf", "llama.cpp")
    script = Path(os.environ.get(CONVERTER_ENV) or Path(sys.prefix) / "share/slmake/llama.cpp" / CONVERTER)
    if not script.is_file():
        return _failed(art, f"llama.cpp's converter is not installed ({script} missing); {INSTALL_HINT}")
    dest = ctx.out / art.path
    shutil.rmtree(dest.parent, ignore_errors=True)
    dest.parent.mkdir(parents=True)
    log = ctx.logs / f"convert_{outtype}.log"
    tmp = dest.with_name("model.gguf.partial")
    rc = _run([sys.executable, str(script), str(ctx.merged), "--outtype", outtype, "--outfile", str(tmp)], log)
    if rc != 0 or not tmp.is_file():
        shutil.rmtree(dest.parent, ignore_errors=True)
        return _failed(art, f"{CONVERTER} {exited(rc)}: {_last_error(log)}")
    os.replace(tmp, dest)
    art.notes = {"tool": "llama.cpp convert_hf_to_gguf.py", **_tensor_types(dest)}
    return art


def _quantize(ctx: BuildContext, f16: Artifact, quant: str, imat: tuple[Path | None, dict] | None = None) -> Artifact:
    art = Artifact(f"gguf_{quant}", "gguf", quant, f"gguf_{quant}/model.gguf", "llama.cpp")
    if f16.status != "built":
        return _failed(art, f"needs gguf_f16, which failed: {f16.reason}")
    if imat is not None:
        return _quantize_imatrix(ctx, art, f16, quant, *imat)
    try:
        llama_cpp = load_llama_cpp()
    except Exception as e:  # ImportError, or OSError when libllama.so does not load
        return _failed(art, f"llama-cpp-python (the quantizer) does not import: {e}; {INSTALL_HINT}")
    dest = ctx.out / art.path
    shutil.rmtree(dest.parent, ignore_errors=True)
    dest.parent.mkdir(parents=True)
    log, tmp = ctx.logs / f"quantize_{quant}.log", dest.with_name("model.gguf.partial")
    log.unlink(missing_ok=True)
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{QUANTIZED[quant]}")
    with output_to(log):
        rc = llama_cpp.llama_model_quantize(str(ctx.out / f16.path).encode(), str(tmp).encode(), params)
    if rc != 0 or not tmp.is_file():
        shutil.rmtree(dest.parent, ignore_errors=True)
        return _failed(art, f"llama_model_quantize returned {rc}: {_last_error(log)}")
    os.replace(tmp, dest)
    fallbacks = Counter(f"{a}->{b}" for _, a, b in _FALLBACK.findall(log.read_text(errors="replace")))
    art.notes = {"tool": "llama_cpp.llama_model_quantize", "quantized_from": "gguf_f16", **_tensor_types(dest)}
    if fallbacks:  # K-quants need rows divisible by 256; llama.cpp silently picks another type
        art.notes["fallbacks"] = dict(sorted(fallbacks.items()))
    return art


def _quantize_imatrix(ctx: BuildContext, art: Artifact, f16: Artifact, quant: str, imat: Path | None,
                      notes: dict) -> Artifact:
    """llama-quantize with the train split's importance matrix (the C API takes it only as a C++ map)."""
    if imat is None:
        return _failed(art, f"needs an importance matrix (targets.cpu.gguf.imatrix), which failed: {notes['error']}")
    dest = ctx.out / art.path
    shutil.rmtree(dest.parent, ignore_errors=True)
    dest.parent.mkdir(parents=True)
    log, tmp = ctx.logs / f"quantize_{quant}.log", dest.with_name("model.gguf.partial")
    rc, error = imatrix.quantize(ctx.out / f16.path, tmp, QUANTIZED[quant], imat, log)
    if rc != 0 or not tmp.is_file():
        shutil.rmtree(dest.parent, ignore_errors=True)
        return _failed(art, f"llama-quantize exited {rc}: {error}")
    os.replace(tmp, dest)
    fallbacks = Counter(f"{a}->{b}" for _, a, b in _FALLBACK.findall(log.read_text(errors="replace")))
    art.notes = {"tool": "llama-quantize --imatrix", "quantized_from": "gguf_f16", "imatrix": notes,
                 **_tensor_types(dest)}
    if fallbacks:
        art.notes["fallbacks"] = dict(sorted(fallbacks.items()))
    return art


def _tensor_types(path: Path) -> dict:
    """Count tensor types as written (authoritative, unlike the requested ftype)."""
    try:
        types = Counter(gguf_meta.type_name(t.type_id).lower() for t in gguf_meta.read(path).tensors)
        return {"tensor_types": dict(sorted(types.items()))}
    except Exception:  # the gguf package is optional at this point
        return {}
