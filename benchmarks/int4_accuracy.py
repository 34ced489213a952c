"""Accuracy of ONNX Runtime GenAI int4 builds against fp32, one row per int4 setting.

Builds the merged model with the builder (`targets.tools.build_ort_genai`, the options the cpu /
cuda targets derive from their `onnx_genai.int4` settings) once per candidate, then runs bench's
own worker on the test split (a child process per artifact, as `bench@cpu` does): exact match,
its delta against the fp32 reference of the evaluate stage, parity, decode tok/s and size. This is
how conf/targets/cpu.yaml's int4 defaults were chosen.

    python benchmarks/int4_accuracy.py --build /work/smol_before/build [--only default,tuned]
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
from slmake.targets.base import BuildContext  # noqa: E402
from slmake.targets.tools import build_ort_genai, ort_genai_int4_options  # noqa: E402

CANDIDATES = {
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
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", type=Path, default=ROOT / "build", help="a build/ with train/merged and evaluate/")
    ap.add_argument("--reference", type=Path, help="an evaluate output folder (default: <build>/evaluate)")
    ap.add_argument("--only", help="comma-separated candidate names (default: all)")
    ap.add_argument("--provider", default="cpu")
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
    names = args.only.split(",") if args.only else list(CANDIDATES)
    rows = []
    for name in names:
        opts = ort_genai_int4_options(CANDIDATES[name])
        out = args.work / name
        ctx = BuildContext(merged=merged, out=out, data=args.build / "data", logs=out / "logs")
        art = build_ort_genai(ctx, "int4", args.provider, opts) if not (out / "onnx_int4/genai_config.json").is_file() \
            else None
        if art is not None and art.status != "built":
            print(f"{name}: build failed: {art.reason}")
            continue
        entry = {"name": "onnx_int4", "format": "onnx-genai", "precision": "int4", "path": "onnx_int4",
                 "runtime": "onnxruntime-genai", "status": "built", "reason": "", "notes": {},
                 "size_bytes": sum(f.stat().st_size for f in (out / "onnx_int4").rglob("*") if f.is_file())}
        job = {"target": "cpu", "artifact": entry, "compile_dir": str(out), "reference_dir": str(ref_dir),
               "bench": {"limit": args.limit, "speed_prompts": 2, "repeats": 1, "warmup": 1, "threads": args.threads},
               "max_new_tokens": max_new, "response_schema": schema}
        res = bench._run_child(job)
        if res.get("status") != "ok":
            print(f"{name}: {res.get('status')}: {res.get('reason')}")
            continue
        row = {"candidate": name, "options": opts, "exact_match": res["exact_match"],
               "delta": round(res["exact_match"] - fp32, 4), "parity": res["parity"],
               "decode_tok_s": res["decode_tok_s"], "size_mb": round(entry["size_bytes"] / 1e6, 1)}
        rows.append(row)
        print(f"{name:18} em {row['exact_match']:.3f} ({100 * row['delta']:+.1f} pts) parity {row['parity']:.3f} "
              f"{row['decode_tok_s']} tok/s {row['size_mb']} MB  {' '.join(opts) or '(builder defaults)'}", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"fp32_exact_match": fp32, "rows": rows}, indent=1) + "\n")


def _contract(build: Path) -> tuple[dict, int]:
    """The response schema and answer budget the build used (its params.yaml)."""
    import yaml

    params = yaml.safe_load((build.parent / "params.yaml").read_text())
    return params["data"]["response_schema"], params["eval"]["max_new_tokens"]


if __name__ == "__main__":
    main()
