"""The qualcomm_npu target: static-shape QDQ ONNX for ONNX Runtime's QNN execution provider.

Artifacts (built on any host that has onnxruntime-qnn):
  ``onnx_fp32_static``  the static graph after the QNN graph fixes, on the CPU EP: the parity
                        baseline, so quantization error is not confused with export error.
  ``qdq_<a>a<w>w``      the QDQ model (ORT's QNN recipe); runs on the HTP backend, which on x86 is a
                        host simulator: parity/accuracy are real, speed is labelled simulated.
  ``qnn_htp_device``    the QNN context binary for ``soc_model``/``htp_arch``: what a Snapdragon
                        device loads; benched only where a real HTP exists, else ``skipped``.
The export and graph work lives in ``export.py`` beside this file, generation in slmake.runtimes.qnn.
"""

from __future__ import annotations

import importlib.util
import json
import platform
import shutil
import tempfile
from pathlib import Path

from ..base import Artifact, BuildContext, Probe, Skipped, TargetInfo
from ..tools import check_merged, output_to, require_built
from ..tools import failed as _failed
from ..tools import first_line as _first_line

TARGET = TargetInfo(
    name="qualcomm_npu",
    description="Qualcomm Hexagon NPU (HTP): static-shape QDQ ONNX + QNN context binary for onnxruntime-qnn",
    formats=("onnx-static", "onnx-qdq", "qnn-context-binary"),
    runtime="onnxruntime-qnn",
    packages=("onnxruntime", "onnxruntime-qnn", "onnx", "onnxscript", "torch", "transformers"),
    devices=("npu",),
)

SIMULATED = "simulated (HTP on x86 host)"
_MATMUL = ("the HTP MatMul/FullyConnected rejects these widths (measured on onnxruntime-qnn 2.7.0: u16 weights "
           "fail at u8 and u16 activations; u8, s8, u4, s4 weights run): set "
           "targets.qualcomm_npu.quantization.weights=u8")
OP_HINTS = {"MatMul": _MATMUL, "FullyConnected": _MATMUL}   # ONNX / QNN op names; measured on 2.7.0
# QNN SoC id -> its HTP version (QNN SDK's QnnSoc enum): QNN itself accepts a mismatched pair and
# writes a binary the device then refuses, so known pairs are checked here.
SOC_ARCH = {43: 73, 57: 75, 60: 73, 69: 79, 87: 81}   # SM8550, SM8650, SC8380XP (X Elite), SM8750, SM8850
INSTALL_HINT = "pip install onnxruntime-qnn (versions as in requirements/constraints.txt)"


def probe() -> Probe:
    """A real HTP is an ARM64 Windows/Linux Snapdragon whose QNN EP reports an NPU device; on any
    other host onnxruntime-qnn's HTP backend is the x86 simulator (its EP device is the CPU)."""
    host = f"{platform.system()} {platform.machine()}"
    if importlib.util.find_spec("onnxruntime_qnn") is None:
        return Probe(False, f"{host}: onnxruntime-qnn is not installed; {INSTALL_HINT}")
    import onnxruntime as ort
    import onnxruntime_qnn

    from ...runtimes.qnn import register_qnn

    try:
        devices = register_qnn()
    except Exception as e:  # a broken or mismatched plugin
        return Probe(False, f"{host}: onnxruntime-qnn {onnxruntime_qnn.__version__} does not load: {e}")
    npu = [d for d in devices if d.device.type == ort.OrtHardwareDeviceType.NPU]
    arm = platform.machine().lower() in ("arm64", "aarch64") and platform.system() in ("Windows", "Linux")
    if arm and npu:
        return Probe(True, f"{host}: Qualcomm HTP ({npu[0].device.vendor}) via onnxruntime-qnn "
                           f"{onnxruntime_qnn.__version__}")
    kinds = ", ".join(sorted({d.device.type.name for d in devices})) or "none"
    return Probe(False, f"{host}: no Qualcomm NPU (a Hexagon HTP needs an ARM64 Windows/Linux Snapdragon "
                        f"device); onnxruntime-qnn {onnxruntime_qnn.__version__} (QNN "
                        f"{onnxruntime_qnn.build_and_package_info.qnn_version}) reports its EP on: {kinds}, "
                        "i.e. the HTP backend here is the x86 host simulator")


def validate_settings(settings: dict) -> list[str]:
    """QNN itself accepts a mismatched SoC / HTP pair and writes a binary the device then refuses."""
    cb = settings["context_binary"]
    if cb["enabled"] and SOC_ARCH.get(cb["soc_model"], cb["htp_arch"]) != cb["htp_arch"]:
        return [f"targets.qualcomm_npu.context_binary: soc_model {cb['soc_model']} has HTP "
                f"v{SOC_ARCH[cb['soc_model']]}, not htp_arch {cb['htp_arch']}"]
    return []


def compile(ctx: BuildContext, s: dict) -> list[Artifact]:
    from . import export as qx

    check_merged(ctx.merged)
    problems = validate_settings(s)
    if problems:
        raise ValueError("invalid qualcomm_npu settings:\n" + "\n".join(f"  - {m}" for m in problems))
    q, cb = s["quantization"], s["context_binary"]
    qname = f"qdq_{q['activations'].lstrip('u')}a{q['weights'].lstrip('u')}w"   # qdq_16a8w, qdq_16as4w
    precision = f"{q['activations']} activations / {q['weights']} weights"
    fp32 = Artifact("onnx_fp32_static", "onnx-static", "fp32", "onnx_fp32_static", "onnxruntime (CPU EP)")
    qdq = Artifact(qname, "onnx-qdq", precision, qname, "onnxruntime-qnn HTP")
    dev = Artifact("qnn_htp_device", "qnn-context-binary", precision, "qnn_htp_device",
                   "onnxruntime-qnn (Hexagon HTP device)")
    arts = [fp32, qdq] + ([dev] if cb["enabled"] else [])
    export_log = ctx.logs / "export.log"
    with tempfile.TemporaryDirectory(prefix="slmake-qnn-") as work:
        work = Path(work)
        try:  # export + fixes: every artifact depends on them
            with output_to(export_log):
                meta = qx.export_static(ctx.merged, work / "exported.onnx", s["context_len"])
                fixes = qx.fix_graph(work / "exported.onnx", work / "fixed.onnx", s["mask_fill"])
        except Exception as e:
            reason = (f"static ONNX export failed: {type(e).__name__}: {_first_line(e)} (full log: {export_log}); "
                      "this target exports decoder-only models that AutoModelForCausalLM loads with eager attention")
            for a in arts:
                ctx.done(_failed(a, reason))
            return arts
        notes = {"context_len": s["context_len"], "graph_fixes": fixes, "mask_fill": s["mask_fill"],
                 "inputs": "input_ids [1, context_len] right-padded + last [1]; logits [1, vocab]"}
        _place(work / "fixed.onnx", ctx.out / fp32.path, meta)
        fp32.notes = {"tool": "torch.onnx.export(dynamo=True) + slmake graph fixes", **notes}
        ctx.done(fp32)

        _build_qdq(qdq, ctx, work, s, meta, notes)
        if probe().present is False:  # the HTP here is the x86 simulator: bench.py caps its prompts
            qdq.notes["bench_limit"] = s["simulator_prompts"]
        ctx.done(qdq)
        if cb["enabled"]:
            _build_context(dev, qdq, ctx, cb, meta, notes)
            ctx.done(dev)
    return arts


def open_runner(artifact: Artifact, artifact_dir: Path, bench: dict):
    require_built(artifact)
    from ...runtimes.qnn import StaticRunner

    path, threads = Path(artifact_dir) / artifact.path, bench.get("threads")
    if artifact.format == "onnx-static":
        return StaticRunner(path, "cpu", threads)
    if importlib.util.find_spec("onnxruntime_qnn") is None:
        raise Skipped(f"onnxruntime-qnn is not installed; {INSTALL_HINT}")
    if artifact.format == "onnx-qdq":
        return StaticRunner(path, "qnn", threads)
    if artifact.format == "qnn-context-binary":
        found = probe()
        if not found.present:
            raise Skipped(f"needs a Qualcomm HTP device: {found.reason}")
        return StaticRunner(path, "qnn_device", threads)
    raise Skipped(f"qualcomm_npu target cannot run format {artifact.format!r}")


# --- steps -------------------------------------------------------------------------------------

def _build_qdq(art: Artifact, ctx: BuildContext, work: Path, s: dict, meta: dict, notes: dict) -> None:
    from . import export as qx

    q = s["quantization"]
    if importlib.util.find_spec("onnxruntime_qnn") is None:
        _failed(art, f"onnxruntime-qnn is not installed (needed to check the graph on QNN); {INSTALL_HINT}")
        return
    source = Path(q["calibration_file"]) if q["calibration_file"] else ctx.data / "train.jsonl"
    if not source.is_file():
        _failed(art, f"no calibration data: {source} does not exist; set targets.qualcomm_npu.quantization."
                     "calibration_file to a JSONL file with a `prompt` field")
        return
    try:
        rows = [json.loads(line) for line in source.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (ValueError, OSError) as e:
        _failed(art, f"{source}: not readable JSONL ({e}); fix it or set "
                     "targets.qualcomm_npu.quantization.calibration_file")
        return
    rows = [r for r in rows if isinstance(r, dict) and isinstance(r.get("prompt"), str)]
    if not rows:
        _failed(art, f"{source}: no rows with a string `prompt` field to calibrate on")
        return
    log = ctx.logs / "quantize.log"
    try:
        with output_to(log):
            feeds, truncated = qx.calibration_feeds(ctx.merged, rows, q["calibration_samples"], meta)
            info = qx.quantize_qdq(work / "fixed.onnx", work / "qdq.onnx", feeds, q["activations"], q["weights"])
    except Exception as e:
        _failed(art, f"quantization failed: {type(e).__name__}: {_first_line(e)} (full log: {log})")
        return
    where = f"at {q['activations']} activations / {q['weights']} weights"
    fallback = ("or set targets.qualcomm_npu.allow_cpu_fallback=true to run them on the CPU EP (slower, and no "
                "context binary)")
    try:  # QNN either declines ops up front (counted) or accepts them and fails to build them (raised)
        with output_to(log):
            rejected = qx.unsupported_ops(work / "qdq.onnx")
    except Exception as e:
        nodes = qx.failed_qnn_nodes(log.read_text(errors="replace"))
        what = ", ".join(f"`{n}` ({t})" for n, t in nodes[:3]) or "(no node named in the log)"
        hints = sorted({OP_HINTS[t] for _, t in nodes if t in OP_HINTS})
        _failed(art, f"QNN's HTP backend could not build node(s) {what} {where}: {_first_line(e)}; "
                     + "; ".join(hints + [f"full log: {log}"]))
        return
    if rejected and not s["allow_cpu_fallback"]:
        ops = ", ".join(f"{op} x{n}" for op, n in sorted(rejected.items()))
        hints = [OP_HINTS[op] for op in sorted(rejected) if op in OP_HINTS]
        _failed(art, f"QNN's HTP backend rejected op(s) {ops} of this graph {where}; " + "; ".join(hints + [fallback]))
        return
    _place(work / "qdq.onnx", ctx.out / art.path, {**meta, "cpu_fallback_ops": dict(rejected)})
    speed = "device" if probe().present else SIMULATED
    art.notes = {**notes, **info, "tool": "onnxruntime.quantization (QNN QDQ config)",
                 "calibration_source": str(source), "calibration_truncated_to_context": truncated,
                 "cpu_fallback_ops": dict(rejected), "speed": speed}
    if speed == SIMULATED:
        art.runtime = "onnxruntime-qnn HTP simulator (x86 host)"


def _build_context(art: Artifact, qdq: Artifact, ctx: BuildContext, cb: dict, meta: dict, notes: dict) -> None:
    from . import export as qx

    if qdq.status != "built":
        _failed(art, f"needs {qdq.name}, which failed: {qdq.reason}")
        return
    if qdq.notes.get("cpu_fallback_ops"):
        _failed(art, f"a context binary needs the whole graph on QNN; ops left on the CPU EP: "
                     f"{qdq.notes['cpu_fallback_ops']}")
        return
    dest = ctx.out / art.path / "model_ctx.onnx"
    dest.parent.mkdir(parents=True, exist_ok=True)
    log = ctx.logs / "context_binary.log"
    try:
        with output_to(log):
            info = qx.context_binary(ctx.out / qdq.path / "model.onnx", dest, cb["soc_model"], cb["htp_arch"])
    except Exception as e:
        shutil.rmtree(dest.parent, ignore_errors=True)
        _failed(art, f"QNN context binary generation failed for soc_model={cb['soc_model']} "
                     f"htp_arch={cb['htp_arch']}: {_first_line(e)}; check targets.qualcomm_npu.context_binary."
                     "soc_model/htp_arch against the QNN SDK's SoC table (full log: {log})")
        return
    qx.write_sidecar(dest.parent, {**meta, "model": dest.name})
    art.notes = {**notes, **info, "built_from": qdq.name, "tool": "onnxruntime-qnn ep.context_enable=1"}


# --- helpers -----------------------------------------------------------------------------------

def _place(src: Path, folder: Path, meta: dict) -> None:
    """An artifact is a folder: the graph (model.onnx), its external weights if any, the sidecar."""
    from .export import write_sidecar

    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, folder / "model.onnx")
    data = src.with_name(src.name + ".data")   # external weights of a > 1.5 GB model keep their name
    if data.exists():
        shutil.copyfile(data, folder / data.name)
    write_sidecar(folder, {**meta, "model": "model.onnx"})
