"""Task-calibrated GGUF quantization: an importance matrix computed by llama.cpp's own `llama-imatrix`
on the train split (never val/test), passed to llama.cpp's `llama-quantize`.

The importance matrix is the mean squared activation each weight column sees on real inputs; the
quantizer weights its rounding error by it, so the columns this task exercises are kept most exact.
llama.cpp refuses the 2-bit i-quants without one, and recommends it for every k-quant and i-quant.

Reproducible: the calibration text is a pure function of the train split and `max_prompts`; the
tools run with relative file names (llama-quantize stores the imatrix and dataset names in the GGUF)
and a fixed thread count (ggml's matmuls give every output row to one thread, so the sums do not
depend on it: checked by two runs at 1 and 2 threads giving the same bytes).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from ...runtimes.llamacpp import load_llama_cpp
from ...toolchain import llama_cpp_tool
from ..tools import exited, last_error, output_to, run_tool, train_texts

# llama-quantize refuses these without an importance matrix (tools/quantize/quantize.cpp)
REQUIRED = frozenset({"iq2_xxs", "iq2_xs", "iq1_s"})
# enabled: null applies it where 4 bits are not enough without it: the sub-4-bit k-quants and i-quants
# (llama.cpp's own recommendation; the 2-bit i-quants cannot be built without it). At 4 bits and up the
# plain quantizer is kept: measured on BANKING77's validation split (SmolLM2-135M fully fine-tuned, 1,006
# prompts; benchmarks/gguf_imatrix.py, docs/guide/targets.md), the train split's matrix cost q4_k_m 2.2
# points against 0.5 plain and iq4_xs 2.4 against 0.3 (the test split agrees: 2.9/1.0 and 3.6/0.7).
# `enabled: true` applies it to every type that takes one (the 4-bit and larger k/i-quants, q4_0..q5_1);
# q8_0 and the float types ignore an importance matrix in llama.cpp, so it is never computed for them.
BENEFITS = frozenset({"q2_k", "q3_k_m", "iq3_xxs", "iq3_s"}) | REQUIRED
USABLE = BENEFITS | {"q4_k_m", "q5_k_m", "q6_k", "iq4_xs", "iq4_nl", "q4_0", "q4_1", "q5_0", "q5_1"}
CALIBRATION = "imatrix-calibration.txt"   # relative names: llama.cpp stores them in its outputs
IMATRIX = "imatrix.gguf"
THREADS = 2


def uses_imatrix(quant: str, enabled: bool | None) -> bool:
    if enabled is None:
        return quant in BENEFITS
    return bool(enabled) and quant in USABLE


def calibration_text(train: Path, max_prompts: int) -> tuple[str, int]:
    """The first ``max_prompts`` train rows as the model saw them in training (``tools.train_texts``),
    one text for llama-imatrix; and how many rows it holds."""
    texts = train_texts(train, max_prompts)
    return "\n\n".join(texts) + "\n", len(texts)


def compute(f16: Path, train: Path, logs: Path, max_prompts: int) -> tuple[Path | None, dict]:
    """Write ``logs/imatrix.gguf`` from ``f16`` and the train split; return (path, notes) or
    (None, {"error": reason})."""
    tool = llama_cpp_tool("llama-imatrix")
    if tool is None:
        return None, {"error": "llama.cpp's llama-imatrix is not installed; run `bash requirements/llama_cpp.sh "
                               "<venv>/bin/python` (or set SLMAKE_LLAMA_CPP_BIN to a folder holding it)"}
    if not train.is_file():
        return None, {"error": f"no calibration data: {train} does not exist"}
    text, n = calibration_text(train, max_prompts)
    if n == 0:
        return None, {"error": f"{train}: no rows with a string `prompt` field to calibrate on"}
    logs.mkdir(parents=True, exist_ok=True)
    with output_to(logs / "imatrix-tokenize.log"):   # llama.cpp logs on fd 2
        n_tokens, ctx_train = _count_tokens(f16, text)
    ctx = min(512, ctx_train or 512, n_tokens // 2) // 16 * 16   # llama-imatrix needs >= 2 chunks
    if ctx < 32:
        return None, {"error": f"{train}: {n} prompts tokenize to only {n_tokens} tokens; llama-imatrix needs "
                               "at least 64 (raise targets.cpu.gguf.imatrix.max_prompts or add data)"}
    (logs / CALIBRATION).write_text(text, encoding="utf-8")
    out = logs / IMATRIX
    out.unlink(missing_ok=True)
    log = logs / "imatrix.log"
    rc = run_tool([str(tool), "-m", str(f16), "-f", CALIBRATION, "-o", IMATRIX, "-c", str(ctx), "-b", str(ctx),
                   "-ub", str(ctx), "-t", str(THREADS), "-tb", str(THREADS), "--no-ppl", "-s", "0"], log, cwd=logs)
    if rc != 0 or not out.is_file():
        return None, {"error": f"llama-imatrix {exited(rc)}: {last_error(log)}"}
    return out, {"source": "train split (prompt + response)", "prompts": n, "tokens": n_tokens,
                 "ctx": ctx, "chunks": n_tokens // ctx, "sha256": hashlib.sha256(out.read_bytes()).hexdigest(),
                 "tool": "llama-imatrix"}


def quantize(f16: Path, dest: Path, ftype: str, imatrix: Path, log: Path) -> tuple[int, str]:
    """llama-quantize with the importance matrix; returns (exit code, error line)."""
    tool = llama_cpp_tool("llama-quantize")
    if tool is None:
        return -1, "llama.cpp's llama-quantize is not installed; run `bash requirements/llama_cpp.sh <venv>/bin/python`"
    rc = run_tool([str(tool), "--imatrix", imatrix.name, str(f16), str(dest), ftype, str(THREADS)], log,
                  cwd=imatrix.parent)
    return rc, "" if rc == 0 else last_error(log)


def _count_tokens(f16: Path, text: str) -> tuple[int, int]:
    """Tokens of ``text`` under the model's own (llama.cpp) tokenizer, and its training context."""
    llama_cpp = load_llama_cpp()
    llm = llama_cpp.Llama(str(f16), vocab_only=True, verbose=False)
    try:
        n = len(llm.tokenize(text.encode("utf-8"), add_bos=True, special=False))
        meta = llm.metadata   # a vocab-only model reports n_ctx_train 0: read the GGUF's own key
        return n, int(meta.get(f"{meta.get('general.architecture', 'llama')}.context_length", 0))
    finally:
        llm.close()
