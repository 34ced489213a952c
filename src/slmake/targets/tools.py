"""Helpers every target shares: check the merged model, run a toolchain offline into a log (or send
in-process libraries' output there), turn a failure into a reason a user can act on, refuse to run
what was not built, build ONNX Runtime GenAI models (the cpu and cuda targets both use its
builder), and read the train split as calibration text (the cpu and intel_npu targets)."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import re
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from ..io import atomic_dir
from .base import Artifact, BuildContext, Skipped


def check_merged(merged: Path) -> None:
    if not (merged / "config.json").is_file():
        raise ValueError(f"{merged}: not a Hugging Face model folder (no config.json)")
    if not any(merged.glob("*.safetensors")):
        raise ValueError(f"{merged}: no *.safetensors weights (slmake loads safetensors only)")


def train_texts(train: Path, max_rows: int) -> list[str]:
    """The first ``max_rows`` train rows as the model saw them in training: prompt (already rendered
    with the spec's template by curate) followed by its response. The calibration data of the
    task-calibrated quantizers (cpu: llama.cpp's importance matrix; intel_npu: NNCF's data-aware
    int4); they never read the val or test split."""
    texts = []
    with open(train, encoding="utf-8") as f:
        for line in f:
            if len(texts) >= max_rows:
                break
            row = json.loads(line) if line.strip() else None
            if isinstance(row, dict) and isinstance(row.get("prompt"), str):
                response = row.get("response")
                texts.append(row["prompt"] + (response if isinstance(response, str) else ""))
    return texts


def run_tool(cmd: list[str], log: Path, cwd: str | Path | None = None, **extra_env: str) -> int:
    """Run a tool offline and deterministic, all its output into ``log``; return its exit code."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONHASHSEED": "0",
           "TOKENIZERS_PARALLELISM": "false", **extra_env}
    env.pop("NO_LOCAL_GGUF", None)  # llama.cpp's converter must use the gguf-py installed beside it
    # ONNX Runtime GenAI's builder stamps `git rev-parse HEAD` of whatever repo holds its install into
    # producer_version: with the venv inside this repo, every commit changed the ONNX bytes.
    env["GIT_DIR"] = os.devnull
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        return subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=cwd).returncode


def exited(rc: int) -> str:
    """How a tool ended, for an error message: "exited 1", or the signal that killed it by name
    (a crash in native code reads as "was killed by SIGFPE", not as exit code -8)."""
    if rc < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-rc).name}"
    return f"exited {rc}"


def last_error(log: Path) -> str:
    """The line a user needs (the last error-looking line) and where the full log is."""
    lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    errors = [ln for ln in lines if re.search(r"(Error|Exception|error:|failed)", ln)]
    return f"{((errors or lines or ['(no output)'])[-1])[:300]} (full log: {_shown(log)})"


def _shown(log: Path) -> str:
    with contextlib.suppress(ValueError):
        return str(log.resolve().relative_to(Path.cwd()))
    return str(log)


@contextlib.contextmanager
def output_to(log: Path):
    """Send everything an in-process toolchain prints to ``log``: fd 1/2 (C++ code such as ggml,
    ORT, QNN and torch.export print there) and Python's sys.stdout/stderr, with llama-cpp-python's
    logger at INFO so the quantizer's per-tensor lines (fallback types) land in the log too."""
    logger = logging.getLogger("llama-cpp-python")
    level = logger.level
    log.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(log, "a") as f:
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
        logger.setLevel(logging.INFO)
        try:
            with contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
                yield
        finally:
            f.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
            logger.setLevel(level)


def require_built(artifact: Artifact) -> None:
    """The one guard every open_runner starts with."""
    if artifact.status != "built":
        raise Skipped(f"{artifact.name} was not built: {artifact.reason}")


def first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or ["(no message)"])[0][:300]


class ToolFailed(Exception):
    """A toolchain step failed; the message is the artifact's reason."""


def failed(art: Artifact, reason: str) -> Artifact:
    art.status, art.reason = "failed", reason
    return art


def ort_genai_int4_options(int4: dict) -> list[str]:
    """The ONNX Runtime GenAI builder's ``--extra_options`` for a target's ``int4`` settings (the
    builder's defaults for keys left out). On a tied-embedding model the embedding and LM head are
    one matrix: it stays float only when both are ``float``."""
    opts = []
    for key, option in (("block_size", "block_size"), ("accuracy_level", "accuracy_level"),
                        ("algorithm", "algo_config")):
        if int4.get(key) is not None:
            opts.append(f"{option}={int4[key]}")
    if "symmetric" in int4:
        opts.append(f"is_symmetric={str(int4['symmetric']).lower()}")
    mixed = [f"{sel}:int8" for key, sel in (("lm_head", "last_matmul"), ("sensitive_layers", "mixed_layers"))
             if int4.get(key) == "int8"]
    exclude = [node for key, node in (("lm_head", "/lm_head/MatMul"), ("embeddings", "/model/embed_tokens/Gather"))
               if int4.get(key) == "float"]
    if mixed:
        opts.append("matmul_mixed_precision=" + ",".join(mixed))
    if exclude:
        opts.append("nodes_to_exclude=" + ",".join(exclude))
    return opts


def build_ort_genai(ctx: BuildContext, precision: str, provider: str, options: list[str] = (),
                    scale_min: dict | None = None) -> Artifact:
    """ONNX Runtime GenAI's own model builder, offline, into ``ctx.out/onnx_<precision>``;
    ``options`` are more builder ``--extra_options`` (key=value). With ``scale_min`` (int4 settings
    whose algorithm is scale_min) the builder writes fp32 and ``ort_scale_min`` quantizes it."""
    art = Artifact(f"onnx_{precision}", "onnx-genai", precision, f"onnx_{precision}", "onnxruntime-genai",
                   notes={"tool": "onnxruntime_genai.models.builder", "execution_provider": provider})
    if options:
        art.notes["builder_options"] = list(options)
    if importlib.util.find_spec("onnxruntime_genai") is None:
        return failed(art, "onnxruntime-genai is not installed (pip install onnxruntime-genai onnx-ir, "
                           "versions as in requirements/lock.txt)")
    log = ctx.logs / f"onnx_{precision}.log"
    try:
        with atomic_dir(ctx.out / art.path) as tmp, \
                tempfile.TemporaryDirectory(prefix="slmake-ortgenai-") as work:  # the builder's -c cache and cwd
            # the builder, with the config it is handed corrected per family (ort_genai_config)
            report = Path(work) / "config_report.json"
            rc = run_tool(_builder_cmd(ctx.merged, tmp, "fp32" if scale_min else precision, provider,
                                       Path(work) / "cache", options), log, cwd=work,
                          SLMAKE_ORT_GENAI_REPORT=str(report))
            shim = json.loads(report.read_text()) if report.is_file() else {}
            if "error" in shim:
                raise ToolFailed(f"onnxruntime_genai.models.builder cannot build {ctx.merged}: {shim['error']}")
            if shim.get("changes"):
                art.notes["builder_config_changes"] = shim["changes"]
            if rc != 0 or not (tmp / "genai_config.json").is_file():
                raise ToolFailed(f"onnxruntime_genai.models.builder {exited(rc)}: {last_error(log)}")
            problem = graph_problem(tmp / "model.onnx")
            if problem:  # seen with -p fp32 -e cuda on 0.18: packed Attention without present.* outputs
                raise ToolFailed(f"onnxruntime_genai.models.builder -p {precision} -e {provider}: {problem}")
            if scale_min:
                art.notes["int4"] = _scale_min(ctx, tmp, Path(work), provider, scale_min, log)
    except ToolFailed as e:
        return failed(art, str(e))
    return art


def _builder_cmd(model: Path, out: Path, precision: str, provider: str, cache: Path, options=()) -> list[str]:
    """The builder's command line, through ort_genai_config (the config it is handed, corrected per family)."""
    return [sys.executable, "-m", "slmake.targets.ort_genai_config", "-i", str(model), "-o", str(out),
            "-p", precision, "-e", provider, "-c", str(cache), "--extra_options", "hf_token=false", *options]


def _scale_min(ctx: BuildContext, folder: Path, work: Path, provider: str, int4: dict, log: Path) -> dict:
    """Quantize the builder's fp32 graph in ``folder`` with ort_scale_min; with the base model known,
    the builder's fp32 graph of the base too, so a fine-tune's difference is kept exactly."""
    from . import ort_scale_min

    base = None
    if ctx.base is not None:
        base = work / "base_fp32"
        base_log = log.with_name(f"{log.stem}.base.log")
        rc = run_tool(_builder_cmd(ctx.base, base, "fp32", provider, work / "base_cache"), base_log, cwd=work)
        if rc != 0 or not (base / "model.onnx").is_file():
            raise ToolFailed(f"onnxruntime_genai.models.builder (the base, fp32) {exited(rc)}: {last_error(base_log)}")
    qlog = log.with_name(f"{log.stem}.quantize.log")
    try:
        with output_to(qlog):
            return ort_scale_min.quantize_folder(folder, int4.get("block_size") or 32, int4.get("accuracy_level") or 4,
                                                 int4.get("sensitive_layers") or "int4", base_folder=base)
    except (ValueError, RuntimeError, OSError, KeyError) as e:   # onnx / onnxruntime's quantizer / numpy
        raise ToolFailed(f"ort_scale_min could not quantize {folder.name}: {type(e).__name__}: {e} "
                         f"(log: {_shown(qlog)})") from None


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
