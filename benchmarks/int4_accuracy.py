"""Accuracy of ONNX Runtime GenAI int4 builds against fp32, one row per int4 setting.

Builds the merged model with the builder (`targets.tools.build_ort_genai`, the options the cpu /
cuda targets derive from their `onnx_genai.int4` settings) once per candidate, then runs bench's
own worker on the test split (a child process per artifact, as `bench@cpu` does): exact match,
its delta against the fp32 reference of the evaluate stage (± its paired 95 % interval), parity,
decode tok/s and size. This is how conf/targets/cpu.yaml's int4 defaults were chosen.

``--target intel_npu`` does the same for the OpenVINO int4 IR (optimum-intel's exporter with NNCF,
the settings of ``targets.intel_npu``), scored on OpenVINO's CPU device (``ov_int4_sym_cpu_proxy``:
the same IR and weights the NPU runs) and, with ``--npuw``, on the NPU's static-shape pipeline on CPU.

    python benchmarks/int4_accuracy.py --build /work/smol_before/build [--only default,tuned]
    python benchmarks/int4_accuracy.py --build /work/smol_before/build --target intel_npu
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from slmake import bench  # noqa: E402
from slmake.io import read_jsonl  # noqa: E402
from slmake.metrics import score  # noqa: E402
from slmake.targets import cpu  # noqa: E402
from slmake.targets.base import BuildContext  # noqa: E402
from slmake.targets.tools import build_ort_genai  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from figures import record  # noqa: E402

CANDIDATES = {
    # the control: the builder's fp32 graph, unquantized. Where it scores below transformers' fp32,
    # the graph (not int4) is what loses points
    "fp32": {"precision": "fp32"},
    "default": {},   # the builder's defaults: RTN, block 32, symmetric, accuracy level 4, tied int4 head
    "acc1": {"accuracy_level": 1},
    "head_int8": {"lm_head": "int8"},
    "k_quant_mixed": {"algorithm": "k_quant", "lm_head": "int8", "sensitive_layers": "int8"},
    "asym": {"symmetric": False},
    "float_embed_head": {"lm_head": "float", "embeddings": "float"},
    "float_head_acc1": {"lm_head": "float", "embeddings": "float", "accuracy_level": 1},
    "k_quant": {"algorithm": "k_quant"},
    "k_quant_mixed_acc1": {"algorithm": "k_quant", "lm_head": "int8", "sensitive_layers": "int8", "accuracy_level": 1},
    "k_quant_b16_mixed": {"algorithm": "k_quant", "block_size": 16, "lm_head": "int8", "sensitive_layers": "int8"},
    "k_quant_b16_mixed_acc1": {"algorithm": "k_quant", "block_size": 16, "lm_head": "int8",
                               "sensitive_layers": "int8", "accuracy_level": 1},
    "rtn_asym_b16_mixed": {"algorithm": "rtn", "symmetric": False, "block_size": 16, "lm_head": "int8",
                           "sensitive_layers": "int8"},
    # the builder's fp32 model, its MatMuls quantized by ORT's HQQ / GPTQ (benchmarks/ort_int4_posthoc.py)
    "hqq_mixed": {"algorithm": "hqq", "lm_head": "int8", "sensitive_layers": "int8", "embeddings": "float"},
    "gptq_mixed": {"algorithm": "gptq", "lm_head": "int8", "sensitive_layers": "int8", "embeddings": "float",
                   "calibration_samples": 64},
    # slmake's own: asymmetric blocks with a float minimum (targets/ort_scale_min.py), int8 head
    "scale_min": {"algorithm": "scale_min"},
    "scale_min_acc1": {"algorithm": "scale_min", "accuracy_level": 1},
    "scale_min_mixed": {"algorithm": "scale_min", "sensitive_layers": "int8"},
    # conf/targets/cpu.yaml's default: scale_min on a 4-bit GGUF base, k_quant otherwise
    "cpu_default": {"algorithm": "auto", "block_size": 32, "lm_head": "int8", "embeddings": "int4",
                    "sensitive_layers": "int8"},
}
OV_CANDIDATES = {  # targets.intel_npu overrides on conf/targets/intel_npu.yaml (weights: [int4_sym])
    "npu_recipe": {},   # OpenVINO's NPU recipe: int4 sym channel-wise, ratio 1.0, int8_asym embedding/head
    "g64": {"group_size": 64},   # 128 fails: 576 channels are not a multiple of 128
    "g32": {"group_size": 32},
    "awq_se": {"int4": {"awq": True, "scale_estimation": True, "dataset": "auto"}},
    "g64_awq_se": {"group_size": 64, "int4": {"awq": True, "scale_estimation": True, "dataset": "auto"}},
    "g64_ratio08": {"group_size": 64, "int4": {"ratio": 0.8}},
    "g32_awq_se": {"group_size": 32, "int4": {"awq": True, "scale_estimation": True, "dataset": "auto"}},
    "g64_r08_awq_se": {"group_size": 64, "int4": {"ratio": 0.8, "awq": True, "scale_estimation": True,
                                                  "dataset": "auto", "num_samples": 64}},
    "g32_r08_awq_se": {"group_size": 32, "int4": {"ratio": 0.8, "awq": True, "scale_estimation": True,
                                                  "dataset": "auto", "num_samples": 64}},
    # the same, calibrated on the build's train split (prompt + response) instead of generated text
    "g64_r08_awq_se_train": {"group_size": 64, "int4": {"ratio": 0.8, "awq": True, "scale_estimation": True,
                                                        "dataset": "train", "num_samples": 64}},
    "g64_r08_awq_se_train128": {"group_size": 64, "int4": {"ratio": 0.8, "awq": True, "scale_estimation": True,
                                                           "dataset": "train", "num_samples": 128}},
    # NNCF's other data-aware algorithms, on the train split: GPTQ, and a low-rank correction per layer
    # (each candidate overrides conf/targets/intel_npu.yaml's int4 keys: AWQ and scale estimation stay on)
    "g64_r08_gptq_se_train": {"group_size": 64, "int4": {"ratio": 0.8, "awq": True, "gptq": True,
                                                         "scale_estimation": True, "dataset": "train",
                                                         "num_samples": 128}},
    "g64_r08_awq_lora_train": {"group_size": 64, "int4": {"ratio": 0.8, "awq": True, "scale_estimation": True,
                                                          "lora_correction": True, "dataset": "train",
                                                          "num_samples": 128}},
    "g64_r06_awq_se_train": {"group_size": 64, "int4": {"ratio": 0.6, "awq": True, "scale_estimation": True,
                                                        "dataset": "train", "num_samples": 128}},
    "g64_r06_awq_se_lora_train": {"group_size": 64, "int4": {"ratio": 0.6, "awq": True, "scale_estimation": True,
                                                             "lora_correction": True, "dataset": "train",
                                                             "num_samples": 128}},
    "g64_r04_awq_se_train": {"group_size": 64, "int4": {"ratio": 0.4, "awq": True, "scale_estimation": True,
                                                        "dataset": "train", "num_samples": 128}},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", type=Path, default=ROOT / "build", help="a build/ with train/merged and evaluate/")
    ap.add_argument("--reference", type=Path, help="an evaluate output folder (default: <build>/evaluate)")
    ap.add_argument("--only", help="comma-separated candidate names (default: all)")
    ap.add_argument("--provider", default="cpu")
    ap.add_argument("--target", default="cpu", choices=("cpu", "intel_npu"),
                    help="cpu: ONNX Runtime GenAI int4 (CANDIDATES); intel_npu: OpenVINO int4 IR (OV_CANDIDATES)")
    ap.add_argument("--npuw", action="store_true", help="intel_npu: also score the NPU static pipeline on CPU")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--limit", type=int, help="test prompts (default: all)")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "slmake-int4")
    ap.add_argument("--json", type=Path, help="also write the rows here")
    args = ap.parse_args()
    merged, ref_dir = args.build / "train/merged", args.reference or args.build / "evaluate"
    if not (ref_dir / "reference.jsonl").is_file():
        sys.exit(f"int4_accuracy: {ref_dir}/reference.jsonl missing: run the evaluate stage first")
    schema, max_new = _contract(args.build)
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(ref_dir / "tokenizer/tokenizer.json"))
    ref = read_jsonl(ref_dir / "reference.jsonl")
    if args.limit:
        from slmake.io import evenly_spaced

        ref = evenly_spaced(ref, args.limit)
    fp32 = score([tok.decode(r["tokens"], skip_special_tokens=True) for r in ref], [r["expected"] for r in ref],
                 schema)["exact_match"]
    print(f"fp32 reference: exact_match {fp32:.3f} on {len(ref)} test prompts")
    candidates = OV_CANDIDATES if args.target == "intel_npu" else CANDIDATES
    names = args.only.split(",") if args.only else list(candidates)
    rows = []
    ctx_base = (args.build / "base").resolve() if (args.build / "base/config.json").is_file() else None
    for name in names:
        if args.target == "intel_npu":
            rows += _intel_npu(name, candidates[name], args, merged, ref_dir, schema, max_new)
            continue
        posthoc = CANDIDATES[name].get("algorithm") in ("hqq", "gptq")
        precision = CANDIDATES[name].get("precision", "int4")
        chosen = {} if posthoc else cpu._builder_args({"onnx_genai": {"int4": CANDIDATES[name]}}, precision, ctx_base)
        opts, scale_min = chosen.get("options", []), chosen.get("scale_min")
        out = args.work / name
        folder = f"onnx_{precision}"
        ctx = BuildContext(merged=merged, out=out, data=args.build / "data", logs=out / "logs", base=ctx_base)
        art = None
        if not (out / folder / "genai_config.json").is_file():
            art = build_ort_genai(ctx, "fp32" if posthoc else precision, args.provider, opts, scale_min=scale_min)
            if posthoc and art.status == "built":
                from ort_int4_posthoc import quantize_folder

                quantize_folder(out / "onnx_fp32", CANDIDATES[name], args.build / "data/train.jsonl")
                (out / "onnx_fp32").rename(out / "onnx_int4")
        if art is not None and art.status != "built":
            print(f"{name}: build failed: {art.reason}")
            continue
        entry = {"name": folder, "format": "onnx-genai", "precision": precision, "path": folder,
                 "runtime": "onnxruntime-genai", "status": "built", "reason": "", "notes": {},
                 "size_bytes": sum(f.stat().st_size for f in (out / folder).rglob("*") if f.is_file())}
        res = _bench_artifact("cpu", entry, out, ref_dir, args, max_new, schema, name)
        if res is None:
            continue
        described = ' '.join(opts) or ("scale_min " + json.dumps(scale_min) if scale_min else '(builder defaults)')
        rows.append(_row(name, opts or scale_min or [], res, entry["size_bytes"], described, 18))
    if args.json:
        args.json.write_text(json.dumps({"fp32_exact_match": fp32, "rows": rows}, indent=1) + "\n")
    import yaml

    params = yaml.safe_load((args.build.parent / "params.yaml").read_text())
    subset = [f"only-{args.only}"] * bool(args.only) + [f"limit{args.limit}"] * bool(args.limit)
    record("int4_accuracy", {"fp32 exact match": fp32, "test prompts": len(ref), "candidates": rows},
           variant="-".join([params["model"]["name"], params["data"]["name"], args.target, *subset]))


def _intel_npu(name: str, override: dict, args, merged: Path, ref_dir: Path, schema: dict, max_new: int) -> list[dict]:
    """Export one int4_sym IR with the intel_npu target's own compile and score its CPU-side entries."""
    import yaml

    from slmake.targets import intel_npu

    settings = yaml.safe_load((ROOT / "conf/targets/intel_npu.yaml").read_text())["intel_npu"]
    settings = {**settings, **override, "weights": ["int4_sym"],
                "int4": {**settings.get("int4", {}), **override.get("int4", {})}}
    out = args.work / f"ov_{name}"
    ctx = BuildContext(merged=merged, out=out, data=args.build / "data", logs=out / "logs")
    ir = out / "ov_int4_sym"
    arts = intel_npu.compile(ctx, settings) if not (ir / "openvino_model.xml").is_file() else None
    if arts is not None and arts[0].status != "built":
        print(f"{name}: build failed: {arts[0].reason}")
        return []
    size = sum(f.stat().st_size for f in ir.rglob("*") if f.is_file() and "tokenizer" not in f.name)
    rows = []
    suffixes = ["cpu_proxy"] + (["npuw_cpu"] if args.npuw else [])
    for suffix in suffixes:
        art = next((a for a in arts or [] if a.name.endswith(suffix)), None)
        notes = art.notes if art else _saved_notes(out, suffix)
        entry = {"name": f"ov_int4_sym_{suffix}", "format": "openvino-ir", "precision": "int4_sym",
                 "path": "ov_int4_sym", "runtime": "openvino-genai", "status": "built", "reason": "",
                 "notes": notes}
        (out / f"notes_{suffix}.json").write_text(json.dumps(notes))
        res = _bench_artifact("intel_npu", entry, out, ref_dir, args, max_new, schema, f"{name} {suffix}")
        if res is None:
            continue
        rows.append({**_row(f"{name}:{suffix}", override, res, size, json.dumps(override), 28),
                     "export_args": notes.get("export_args"), "weight_types": notes.get("weight_types"),
                     "calibration": notes.get("calibration")})
    return rows


def _bench_artifact(target: str, entry: dict, compile_dir: Path, ref_dir: Path, args, max_new: int,
                    schema, label: str) -> dict | None:
    """Bench one artifact in bench's own child process (as the bench stage does), scored against the
    fp32 reference in ``ref_dir``; None (and a line naming ``label``) when it did not run."""
    job = {"target": target, "artifact": entry, "compile_dir": str(compile_dir), "reference_dir": str(ref_dir),
           "bench": {"limit": args.limit, "speed_prompts": 2, "repeats": 1, "warmup": 1, "threads": args.threads},
           "max_new_tokens": max_new, "response_schema": schema}
    res = bench._run_child(job)
    if res.get("status") != "ok":
        print(f"{label}: {res.get('status')}: {res.get('reason')}")
        return None
    return res


def _row(candidate: str, options, res: dict, size_bytes: int, described: str, width: int) -> dict:
    """One scored candidate as the --json row, printed as a line of the table."""
    row = {"candidate": candidate, "options": options, "exact_match": res["exact_match"], "delta": res["delta"],
           "delta_ci95": res["delta_ci95"], "parity": res["parity"], "decode_tok_s": res["decode_tok_s"],
           "size_mb": round(size_bytes / 1e6, 1)}
    print(f"{candidate:{width}} em {row['exact_match']:.3f} ({100 * row['delta']:+.1f} ±{100 * row['delta_ci95']:.1f} "
          f"pts) parity {row['parity']:.3f} {row['decode_tok_s']} tok/s {row['size_mb']} MB  {described}", flush=True)
    return row


def _saved_notes(out: Path, suffix: str) -> dict:
    """Notes of an IR exported by an earlier run (so a rerun scores without re-exporting)."""
    from slmake.targets.intel_npu import RUNS

    for saved in (out / f"notes_{suffix}.json", *out.glob("notes_*.json")):  # the entries differ by device only
        if saved.is_file():
            return {**json.loads(saved.read_text()), "device": RUNS[suffix]}
    sys.exit(f"int4_accuracy: {out}: IR present but no notes_{suffix}.json; delete the folder to re-export")


def _contract(build: Path) -> tuple[dict, int]:
    """The response schema and answer budget the build used (its params.yaml)."""
    import yaml

    params = yaml.safe_load((build.parent / "params.yaml").read_text())
    return params["data"]["response_schema"], params["eval"]["max_new_tokens"]


if __name__ == "__main__":
    main()
