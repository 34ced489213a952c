"""The cpu target: GGUF for llama.cpp and ONNX for ONNX Runtime GenAI.

Each format is built with its own project's tools — llama.cpp's convert_hf_to_gguf.py and its
in-process quantizer, ONNX Runtime GenAI's model builder — so the artifacts are the ones those
runtimes' users would build themselves. Tools run in subprocesses (or with fd 2 redirected) and
their chatter goes to ``out_dir/logs/``; the terminal gets one line per artifact. A format whose
toolchain is missing or fails yields an Artifact with status "failed" and an actionable reason,
never an exception, so the other formats still get built.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import platform
import re
import shutil
import sys
import time
from collections import Counter
from pathlib import Path

from ..io import size_bytes as _size
from .base import Artifact, Probe, Skipped, TargetInfo
from .tools import build_ort_genai, check_merged as _check_merged, failed as _failed, last_error as _last_error, run_tool as _run

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
             "q4_k_m": "Q4_K_M", "q5_k_m": "Q5_K_M", "q6_k": "Q6_K"}   # quantized from gguf_f16
PRECISIONS = ("fp32", "int8", "int4")
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


def compile(merged_dir: Path, out_dir: Path, settings: dict) -> list[Artifact]:
    from tqdm import tqdm

    merged_dir, out_dir = Path(merged_dir).resolve(), Path(out_dir)
    _check_merged(merged_dir)
    quants = list((settings.get("gguf") or {}).get("quants") or [])
    precisions = list((settings.get("onnx_genai") or {}).get("precisions") or [])
    for value, allowed in [(q, (*CONVERTED, *QUANTIZED)) for q in quants] + [(p, PRECISIONS) for p in precisions]:
        if value not in allowed:
            raise ValueError(f"cpu target: unknown type {value!r}; allowed: {', '.join(allowed)}")
    (out_dir / "logs").mkdir(parents=True, exist_ok=True)
    names = [f"gguf_{q}" for q in quants] + [f"onnx_{p}" for p in precisions]
    with tqdm(total=len(names), desc="compile cpu", unit="artifact") as bar:
        def done(art: Artifact, seconds: float) -> Artifact:
            size = _size(out_dir / art.path) if art.status == "built" else 0
            bar.write(f"  {art.name:<14} {art.status:<6} {size / 2**20:8.2f} MiB {seconds:6.1f} s"
                      + (f"  {art.reason}" if art.reason else ""))
            bar.update(1)
            return art
        arts = _gguf(merged_dir, out_dir, quants, done) if quants else []
        for p in precisions:
            t0 = time.perf_counter()
            arts.append(done(build_ort_genai(merged_dir, out_dir, p, "cpu"), time.perf_counter() - t0))
    return arts


def open_runner(artifact: Artifact, artifact_dir: Path, bench: dict):
    if artifact.status != "built":
        raise Skipped(f"{artifact.name} was not built: {artifact.reason}")
    path, threads = Path(artifact_dir) / artifact.path, bench.get("threads")
    if artifact.format == "gguf":
        if importlib.util.find_spec("llama_cpp") is None:
            raise Skipped(f"llama-cpp-python is not installed; {INSTALL_HINT}")
        from ..runtimes.llamacpp import LlamaCppRunner
        return LlamaCppRunner(path, threads=threads, n_ctx=bench.get("n_ctx") or 0)
    if artifact.format == "onnx-genai":
        if importlib.util.find_spec("onnxruntime_genai") is None:
            raise Skipped("onnxruntime-genai is not installed (pip install onnxruntime-genai)")
        from ..runtimes.ortgenai import OrtGenAIRunner
        return OrtGenAIRunner(path, threads=threads)
    raise Skipped(f"cpu target cannot run format {artifact.format!r}")


# --- GGUF -------------------------------------------------------------------------------------

def _gguf(merged: Path, out: Path, quants: list[str], done) -> list[Artifact]:
    """Convert f16/f32/bf16 with the converter, then quantize every other type from gguf_f16
    (llama.cpp's standard route); gguf_f16 is deleted afterwards when it was not asked for."""
    need = [t for t in CONVERTED if t in quants or (t == "f16" and any(q in QUANTIZED for q in quants))]
    made: dict[str, Artifact] = {}
    for t in need:
        t0 = time.perf_counter()
        made[t] = _convert(merged, out, t)
        if t in quants:
            done(made[t], time.perf_counter() - t0)
    for q in (q for q in quants if q in QUANTIZED):
        t0 = time.perf_counter()
        made[q] = done(_quantize(out, made["f16"], q), time.perf_counter() - t0)
    if "f16" in made and "f16" not in quants:
        shutil.rmtree(out / "gguf_f16", ignore_errors=True)
    return [made[q] for q in quants]


def _convert(merged: Path, out: Path, outtype: str) -> Artifact:
    art = Artifact(f"gguf_{outtype}", "gguf", outtype, f"gguf_{outtype}/model.gguf", "llama.cpp")
    script = Path(os.environ.get(CONVERTER_ENV) or Path(sys.prefix) / "share/slmake/llama.cpp" / CONVERTER)
    if not script.is_file():
        return _failed(art, f"llama.cpp's converter is not installed ({script} missing); {INSTALL_HINT}")
    dest = out / art.path
    shutil.rmtree(dest.parent, ignore_errors=True)
    dest.parent.mkdir(parents=True)
    log = out / "logs" / f"convert_{outtype}.log"
    tmp = dest.with_name("model.gguf.partial")
    rc = _run([sys.executable, str(script), str(merged), "--outtype", outtype, "--outfile", str(tmp)], log)
    if rc != 0 or not tmp.is_file():
        shutil.rmtree(dest.parent, ignore_errors=True)
        return _failed(art, f"{CONVERTER} exited {rc}: {_last_error(log, out)}")
    os.replace(tmp, dest)
    art.notes = {"tool": "llama.cpp convert_hf_to_gguf.py", **_tensor_types(dest)}
    return art


def _quantize(out: Path, f16: Artifact, quant: str) -> Artifact:
    art = Artifact(f"gguf_{quant}", "gguf", quant, f"gguf_{quant}/model.gguf", "llama.cpp")
    if f16.status != "built":
        return _failed(art, f"needs gguf_f16, which failed: {f16.reason}")
    try:
        import llama_cpp
    except Exception as e:  # ImportError, or OSError when libllama.so does not load
        return _failed(art, f"llama-cpp-python (the quantizer) does not import: {e}; {INSTALL_HINT}")
    dest = out / art.path
    shutil.rmtree(dest.parent, ignore_errors=True)
    dest.parent.mkdir(parents=True)
    log, tmp = out / "logs" / f"quantize_{quant}.log", dest.with_name("model.gguf.partial")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{QUANTIZED[quant]}")
    with _stderr_to(log):
        rc = llama_cpp.llama_model_quantize(str(out / f16.path).encode(), str(tmp).encode(), params)
    if rc != 0 or not tmp.is_file():
        shutil.rmtree(dest.parent, ignore_errors=True)
        return _failed(art, f"llama_model_quantize returned {rc}: {_last_error(log, out)}")
    os.replace(tmp, dest)
    fallbacks = Counter(f"{a}->{b}" for _, a, b in _FALLBACK.findall(log.read_text(errors="replace")))
    art.notes = {"tool": "llama_cpp.llama_model_quantize", "quantized_from": "gguf_f16", **_tensor_types(dest)}
    if fallbacks:  # K-quants need rows divisible by 256; llama.cpp silently picks another type
        art.notes["fallbacks"] = dict(sorted(fallbacks.items()))
    return art


@contextlib.contextmanager
def _stderr_to(log: Path):
    """llama.cpp logs per tensor, through llama-cpp-python's callback (Python's sys.stderr, only at
    INFO level) and ggml's own fprintf (fd 2): send both to the log file for the duration."""
    logger = logging.getLogger("llama-cpp-python")
    level, saved = logger.level, os.dup(2)
    with open(log, "w") as f:
        sys.stderr.flush()
        os.dup2(f.fileno(), 2)
        logger.setLevel(logging.INFO)
        try:
            with contextlib.redirect_stderr(f):
                yield
        finally:
            f.flush()
            os.dup2(saved, 2)
            os.close(saved)
            logger.setLevel(level)


def _tensor_types(path: Path) -> dict:
    """Count tensor types as written (authoritative, unlike the requested ftype)."""
    try:
        from gguf import GGUFReader

        types = Counter(t.tensor_type.name.lower() for t in GGUFReader(path).tensors)
        return {"tensor_types": dict(sorted(types.items()))}
    except Exception:  # the gguf package is optional at this point
        return {}



