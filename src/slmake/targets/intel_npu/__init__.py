"""The intel_npu target: OpenVINO IR built the way OpenVINO's NPU guide says, run by OpenVINO GenAI.

Build: optimum-intel's own exporter (``optimum-cli export openvino``'s command, run by export.py in a
subprocess, offline, its calibration model in f32 on every CPU) with
int4 symmetric weights (conf default: group 64, 80 % int4 with AWQ + scale estimation on
self-generated data, or on the build's train split with ``int4.dataset: train`` through
export.py; the NPU guide's channel-wise ratio-1.0 recipe lost SmolLM2 33 points:
benchmarks/int4_accuracy.py --target intel_npu), tokenizer/detokenizer IRs included; optionally
int8_sym / fp16 / fp32 IRs (fp32 is the parity baseline: it separates errors of the static-shape
pipeline from errors of quantization).

Run: every IR folder yields three bench entries that share it, because a host without an NPU can
still check most of what matters:
  ``ov_<w>_npu``        LLMPipeline on "NPU"; Skipped (with the reason) where there is no NPU.
  ``ov_<w>_npuw_cpu``   the NPU's static-shape pipeline (NPUW: MAX_PROMPT_LEN/MIN_RESPONSE_LEN,
                        prefill + kv-cache models, f16 KV cache) executed on the CPU: parity/accuracy
                        of what the NPU would run; its speed says nothing about the NPU.
  ``ov_<w>_cpu_proxy``  the same IR on OpenVINO's CPU device: a labelled speed proxy, not an NPU figure.

Measured on openvino 2026.4.1: NPUW's online partitioner fails on multi-head-attention models
(num_key_value_heads == num_attention_heads) with "Model references undeclared parameters"; GQA
models pass. ``npuw_online_pipeline: auto`` therefore sets NPUW_ONLINE_PIPELINE=NONE (no
partitioning) for MHA models only; the choice is recorded in each artifact's notes.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
from pathlib import Path

from ...io import atomic_dir
from ...runtimes.openvino import OpenVINORunner
from ..base import Artifact, BuildContext, Probe, Skipped, TargetInfo
from ..tools import ToolFailed, check_merged, exited, require_built, run_tool, train_texts
from ..tools import last_error as _last_error

TARGET = TargetInfo(
    name="intel_npu",
    description="Intel NPU (Core Ultra): OpenVINO IR, int4 symmetric weights (NNCF), static shapes",
    formats=("openvino-ir",),
    runtime="openvino-genai",
    packages=("openvino", "openvino-genai", "openvino-tokenizers", "optimum-intel", "optimum", "nncf"),
    devices=("npu",),
)

RUNS = {  # bench entry suffix -> where it runs
    "npu": "npu",
    "npuw_cpu": "npu_static_on_cpu",
    "cpu_proxy": "cpu_proxy",
}
INSTALL_HINT = ("pip install openvino openvino-genai openvino-tokenizers nncf optimum and "
                "optimum-intel --no-deps (versions as in requirements/constraints.txt)")


def probe() -> Probe:
    try:
        import openvino as ov
    except ImportError:
        return Probe(False, f"openvino is not installed; {INSTALL_HINT}")
    core = ov.Core()
    devices = list(core.available_devices)
    if "NPU" in devices:
        name = core.get_property("NPU", "FULL_DEVICE_NAME")
        return Probe(True, f"NPU: {name} (OpenVINO {ov.get_version().split('-')[0]})")
    libs = Path(ov.__file__).parent / "libs"
    plugin = any(libs.glob("libopenvino_intel_npu_plugin*")) or any(libs.glob("openvino_intel_npu_plugin*"))
    compiler = any(libs.glob("*npu*compiler*"))
    accel = sorted(p.name for p in Path("/dev/accel").glob("accel*")) if Path("/dev/accel").is_dir() else []
    return Probe(False, f"no NPU device: OpenVINO {ov.get_version().split('-')[0]} sees {devices}; "
                        f"/dev/accel: {', '.join(accel) or 'none'} (needs Intel's NPU driver); NPU plugin "
                        f"{'present' if plugin else 'missing'}; NPU compiler library "
                        f"{'present' if compiler else 'not in this openvino install'}")


# NNCF's data-aware int4 algorithms: settings key -> optimum-cli flag (each needs int4.dataset)
DATA_AWARE = {"awq": "--awq", "scale_estimation": "--scale-estimation", "gptq": "--gptq",
              "lora_correction": "--lora-correction"}


def validate_settings(settings: dict) -> list[str]:
    """The schema says the rest (weights minItems 1, shapes multiples of 64)."""
    int4 = settings.get("int4", {})
    return [f"targets.intel_npu.int4.{k}: NNCF's {k} is data-aware: set int4.dataset (train = the build's "
            "train split; auto = samples the model generates itself)"
            for k in DATA_AWARE if int4.get(k) and not int4.get("dataset")]


def compile(ctx: BuildContext, settings: dict) -> list[Artifact]:
    check_merged(ctx.merged)
    s = settings
    config = json.loads((ctx.merged / "config.json").read_text())
    heads = config.get("num_attention_heads")
    kv_heads = config.get("num_key_value_heads") or heads
    pipeline = s["npuw_online_pipeline"]
    if pipeline == "auto":  # see module docstring: NPUW partitioning fails on MHA in 2026.4.1
        pipeline = "NONE" if kv_heads == heads else "default"
    arts: list[Artifact] = []
    for w in s["weights"]:
        err, notes = _export(ctx, w, s)
        ir = Artifact(f"ov_{w}", "openvino-ir", w, f"ov_{w}", "openvino-genai",
                      *(("failed", err) if err else ()))
        ctx.done(ir)
        for suffix, device in RUNS.items():
            art = Artifact(f"ov_{w}_{suffix}", "openvino-ir", w, f"ov_{w}", "openvino-genai",
                           notes={**notes, "device": device,
                                  "max_prompt_len": s["max_prompt_len"],
                                  "min_response_len": s["min_response_len"],
                                  "npuw_online_pipeline": pipeline,
                                  "num_attention_heads": heads, "num_key_value_heads": kv_heads})
            if device == "cpu_proxy":
                art.notes["proxy_for"] = "npu (speed proxy on OpenVINO's CPU device; not an NPU figure)"
            if device == "npu_static_on_cpu":
                art.notes["proxy_for"] = "npu (NPU static-shape pipeline run on CPU: parity, not speed)"
            if err:
                art.status, art.reason = "failed", err
            arts.append(art)
    return arts


def pipeline_args(notes: dict, precision: str, threads: int | None) -> tuple[str, dict]:
    """(OpenVINO device, LLMPipeline properties) an entry runs with, from its notes: bench's runner
    and the deploy package's OpenVINO Model Server graph (serve.recipes) use the same. ValueError
    for a device the notes do not know."""
    n, device = notes, notes.get("device")
    static = {"MAX_PROMPT_LEN": n.get("max_prompt_len"), "MIN_RESPONSE_LEN": n.get("min_response_len")}
    if n.get("npuw_online_pipeline", "default") != "default":
        static["NPUW_ONLINE_PIPELINE"] = n["npuw_online_pipeline"]
    # "fp32" IRs run in bf16 on AVX512-BF16/AMX CPUs unless told otherwise (measured, openvino 2026.4)
    f32 = {"INFERENCE_PRECISION_HINT": "f32"} if precision == "fp32" else {}
    cpu_threads = {"INFERENCE_NUM_THREADS": int(threads)} if threads else {}
    if device == "npu":
        return "NPU", static
    if device == "npu_static_on_cpu":
        return "NPU", {**static, "NPUW_DEVICES": "CPU", **f32}
    if device == "cpu_proxy":
        return "CPU", {**f32, **cpu_threads}
    raise ValueError(f"intel_npu target: unknown device {device!r}")


def open_runner(artifact: Artifact, artifact_dir: Path, bench: dict):
    require_built(artifact)
    if importlib.util.find_spec("openvino_genai") is None:
        raise Skipped(f"openvino-genai is not installed; {INSTALL_HINT}")

    n = artifact.notes
    path = Path(artifact_dir) / artifact.path
    try:
        device, properties = pipeline_args(n, artifact.precision, bench.get("threads"))
    except ValueError as e:
        raise Skipped(f"{e} in {artifact.name}'s notes") from None
    if n["device"] == "npu":
        p = probe()
        if not p.present:
            raise Skipped(p.reason)
    if n["device"] == "npu_static_on_cpu":
        import openvino as ov

        if not ov.Core().get_versions("NPU"):   # NPUW lives in the NPU plugin library
            raise Skipped("this openvino install has no NPU plugin (openvino_intel_npu_plugin), "
                          "which runs the NPU static-shape pipeline on CPU")
    return OpenVINORunner(path, device, properties, max_prompt_len=n["max_prompt_len"] if device == "NPU" else None)


# --- build ------------------------------------------------------------------------------------

def _export_args(w: str, s: dict) -> list[str]:
    if w == "int4_sym":  # int4 sym; the NPU recipe is ratio 1.0, channel-wise (or group 128)
        int4 = s.get("int4", {})
        args = ["--weight-format", "int4", "--sym", "--ratio", str(int4.get("ratio", 1.0)),
                "--group-size", str(s["group_size"]), "--backup-precision", s["backup_precision"]]
        args += [flag for key, flag in DATA_AWARE.items() if int4.get(key)]
        if int4.get("dataset"):   # train: export.py swaps in the train split's texts
            args += ["--dataset", int4["dataset"], "--num-samples", str(int4.get("num_samples", 128))]
        return args
    if w == "int8_sym":
        return ["--weight-format", "int8", "--sym"]
    return ["--weight-format", w]


def calibration(ctx: BuildContext, w: str, s: dict) -> tuple[Path | None, dict, str]:
    """NNCF's calibration data for IR ``w``: (the JSON list of texts export.py passes as
    the dataset, or None for the exporter's own; what the manifest records; error or "").
    ``int4.dataset: train`` takes the first ``num_samples`` rows of the build's train split as the
    model saw them in training (``tools.train_texts``, as the cpu target's importance matrix does);
    never val or test."""
    dataset = s.get("int4", {}).get("dataset") if w == "int4_sym" else None
    if dataset is None:
        return None, {}, ""
    num_samples = s["int4"].get("num_samples", 128)
    if dataset == "auto":
        return None, {"dataset": "auto", "source": "texts the model generates itself (NNCF)",
                      "num_samples": num_samples}, ""
    train = ctx.data / "train.jsonl"
    if not train.is_file():
        return None, {}, (f"no calibration data: {train} does not exist (targets.intel_npu.int4.dataset: train; "
                          "auto calibrates on text the model generates itself)")
    texts = train_texts(train, num_samples)
    if not texts:
        return None, {}, f"{train}: no rows with a string `prompt` field to calibrate on (targets.intel_npu.int4.dataset)"
    blob = json.dumps(texts, ensure_ascii=False, indent=0) + "\n"
    ctx.logs.mkdir(parents=True, exist_ok=True)
    path = ctx.logs / f"ov_{w}-calibration.json"
    path.write_text(blob, encoding="utf-8")
    return path, {"dataset": "train", "source": "train split (prompt + response)", "samples": len(texts),
                  "sha256": hashlib.sha256(blob.encode("utf-8")).hexdigest()}, ""


def _export(ctx: BuildContext, w: str, s: dict) -> tuple[str, dict]:
    """Run the exporter into a temporary folder swapped in when complete; return (error or "", notes)."""
    args = _export_args(w, s)
    notes = {"tool": "optimum-cli export openvino", "export_args": args}
    missing = [m for m in ("openvino", "nncf", "openvino_tokenizers", "optimum") if importlib.util.find_spec(m) is None]
    if not missing and importlib.util.find_spec("optimum.intel") is None:
        missing = ["optimum-intel"]
    if missing:
        return f"{', '.join(missing)} not installed; {INSTALL_HINT}", notes
    texts, calib, err = calibration(ctx, w, s)
    if calib:
        notes["calibration"] = calib
    if err:
        return err, notes
    exporter = [str(Path(__file__).with_name("export.py")), str(texts) if texts else "-"]
    log = ctx.logs / f"ov_{w}.log"
    try:
        with atomic_dir(ctx.out / f"ov_{w}") as tmp:
            rc = run_tool([sys.executable, *exporter, "--model", str(ctx.merged), "--task",
                           "text-generation-with-past", *args, str(tmp)], log, cwd=log.parent, TQDM_DISABLE="1")
            if rc != 0 or not (tmp / "openvino_model.xml").is_file():
                raise ToolFailed(f"optimum-cli export openvino {exited(rc)}: {_last_error(log)}")
            absent = [f for f in ("openvino_tokenizer.xml", "openvino_detokenizer.xml") if not (tmp / f).is_file()]
            if absent:
                raise ToolFailed(f"the exporter wrote no {', '.join(absent)} (openvino-tokenizers could not "
                                 f"convert the tokenizer; see {log})")
            _normalise(tmp)
    except ToolFailed as e:
        return str(e), notes
    notes.update(_weight_info(ctx.out / f"ov_{w}"))
    return "", notes


def _normalise(folder: Path) -> None:
    """openvino_config.json records the merged model's absolute path; drop it so the artifact's
    bytes depend on the model, not on where it was built. It also records a list-of-texts dataset
    whole: drop it too (the train split's rows have no place in a deployed artifact; the manifest
    notes record the calibration)."""
    cfg_path = folder / "openvino_config.json"
    if cfg_path.is_file():
        cfg = json.loads(cfg_path.read_text())
        q = cfg.get("quantization_config")
        if isinstance(q, dict) and isinstance(q.get("tokenizer"), str):
            q["tokenizer"] = None
        if isinstance(q, dict) and isinstance(q.get("dataset"), list):
            q["dataset"] = None
        cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def _weight_info(folder: Path) -> dict:
    """What NNCF actually wrote: compression parameters and weight constant types (authoritative)."""
    try:
        from collections import Counter

        import openvino as ov

        model = ov.Core().read_model(str(folder / "openvino_model.xml"))
        info: dict = {}
        for key in ("mode", "group_size", "ratio", "backup_mode", "all_layers"):
            if model.has_rt_info(["nncf", "weight_compression", key]):
                info[key] = model.get_rt_info(["nncf", "weight_compression", key]).astype(str)
        types = Counter(str(op.get_element_type().get_type_name()) for op in model.get_ops()
                        if op.get_type_name() == "Constant" and len(op.get_output_partial_shape(0)) >= 2
                        and op.get_output_partial_shape(0).is_static and op.get_output_shape(0)[0] >= 16
                        and op.get_output_shape(0)[-1] >= 16)
        return {"nncf_weight_compression": info, "weight_types": dict(sorted(types.items()))}
    except Exception as e:  # informative only
        return {"weight_info_error": str(e)[:200]}
