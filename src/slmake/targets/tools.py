"""Helpers every target shares: run a toolchain offline into a log, turn its failure into a reason a
user can act on, and build ONNX Runtime GenAI models (the cpu and cuda targets both use its builder)."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from .base import Artifact


def check_merged(merged: Path) -> None:
    if not (merged / "config.json").is_file():
        raise ValueError(f"{merged}: not a Hugging Face model folder (no config.json)")
    if not any(merged.glob("*.safetensors")):
        raise ValueError(f"{merged}: no *.safetensors weights (slmake loads safetensors only)")


def run_tool(cmd: list[str], log: Path, cwd: str | Path | None = None, **extra_env: str) -> int:
    """Run a tool offline and deterministic, all its output into ``log``; return its exit code."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONHASHSEED": "0",
           "TOKENIZERS_PARALLELISM": "false", **extra_env}
    env.pop("NO_LOCAL_GGUF", None)  # llama.cpp's converter must use the gguf-py installed beside it
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        return subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=cwd).returncode


def last_error(log: Path, out: Path) -> str:
    """The line a user needs (the last error-looking line) and where the full log is. The path is
    relative: compile_target builds in a temporary folder that is renamed afterwards."""
    lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    errors = [ln for ln in lines if re.search(r"(Error|Exception|error:|failed)", ln)]
    return f"{((errors or lines or ['(no output)'])[-1])[:300]} (full log: {log.relative_to(out)})"


def failed(art: Artifact, reason: str) -> Artifact:
    art.status, art.reason = "failed", reason
    return art


def build_ort_genai(merged: Path, out: Path, precision: str, provider: str) -> Artifact:
    """ONNX Runtime GenAI's own model builder, offline, into ``out/onnx_<precision>``."""
    art = Artifact(f"onnx_{precision}", "onnx-genai", precision, f"onnx_{precision}", "onnxruntime-genai",
                   notes={"tool": "onnxruntime_genai.models.builder", "execution_provider": provider})
    if importlib.util.find_spec("onnxruntime_genai") is None:
        return failed(art, "onnxruntime-genai is not installed (pip install onnxruntime-genai onnx-ir, "
                           "versions as in requirements/lock.txt)")
    dest, tmp = out / art.path, out / f"{art.path}.partial"
    for d in (dest, tmp):
        shutil.rmtree(d, ignore_errors=True)
    log = out / "logs" / f"onnx_{precision}.log"
    with tempfile.TemporaryDirectory(prefix="slmake-ortgenai-") as work:  # the builder's -c cache and cwd
        rc = run_tool([sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(merged), "-o", str(tmp),
                       "-p", precision, "-e", provider, "-c", str(Path(work) / "cache"),
                       "--extra_options", "hf_token=false"], log, cwd=work)
    if rc != 0 or not (tmp / "genai_config.json").is_file():
        shutil.rmtree(tmp, ignore_errors=True)
        return failed(art, f"onnxruntime_genai.models.builder exited {rc}: {last_error(log, out)}")
    problem = graph_problem(tmp / "model.onnx")
    if problem:  # seen with -p fp32 -e cuda on 0.18: packed Attention without present.* outputs
        shutil.rmtree(tmp, ignore_errors=True)
        return failed(art, f"onnxruntime_genai.models.builder -p {precision} -e {provider}: {problem}")
    os.replace(tmp, dest)
    return art


def graph_problem(path: Path) -> str:
    """A builder can exit 0 with a graph ORT refuses to load; catch that here, not at deploy time."""
    try:
        import onnx
    except ImportError:
        return ""
    g = onnx.load(str(path), load_external_data=False).graph
    made = {o for n in g.node for o in n.output} | {i.name for i in g.input} | {i.name for i in g.initializer}
    missing = [o.name for o in g.output if o.name not in made]
    return f"invalid graph: outputs {', '.join(missing[:4])} are produced by no node" if missing else ""
