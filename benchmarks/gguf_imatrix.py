"""GGUF quants with and without the train split's importance matrix, scored against fp32.

Converts the build's merged model to gguf_f16 once (the cpu target's own converter), computes the
importance matrix with llama-imatrix on the train split (targets.cpu.gguf.imatrix's code path), then
quantizes each type twice — llama.cpp's plain quantizer and llama-quantize --imatrix — and runs
bench's own worker on the test split for each: exact match, its delta against the fp32 reference
of the evaluate stage (± its paired 95 % interval), parity, size; and the same on the validation
split, which is what the default of targets.cpu.gguf.imatrix.enabled is chosen on (never the test split).

    python benchmarks/gguf_imatrix.py --build /tmp/default/build [--quants q4_k_m,iq4_xs] [--max-prompts 256]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from slmake.io import read_jsonl  # noqa: E402
from slmake.metrics import score  # noqa: E402
from slmake.targets import cpu  # noqa: E402
from slmake.targets.base import BuildContext  # noqa: E402
from slmake.targets.cpu import imatrix  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from figures import record  # noqa: E402
from int4_accuracy import _bench_artifact, _contract, _row  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", type=Path, default=ROOT / "build", help="a build/ with data/, train/merged, evaluate/")
    ap.add_argument("--quants", default="q4_k_m", help="comma-separated gguf types")
    ap.add_argument("--max-prompts", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--limit", type=int, help="test prompts (default: all)")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "slmake-imatrix")
    args = ap.parse_args()
    ref_dir = args.build / "evaluate"
    schema, max_new = _contract(args.build)
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(ref_dir / "tokenizer/tokenizer.json"))
    ref = read_jsonl(ref_dir / "reference.jsonl")
    fp32 = score([tok.decode(r["tokens"], skip_special_tokens=True) for r in ref], [r["expected"] for r in ref],
                 schema)["exact_match"]
    print(f"fp32 reference: exact_match {fp32:.3f} on {len(ref)} test prompts")
    ctx = BuildContext(merged=(args.build / "train/merged").resolve(), out=args.work.resolve(),
                       data=(args.build / "data").resolve(), logs=(args.work / "logs").resolve())
    ctx.out.mkdir(parents=True, exist_ok=True)
    f16 = cpu._convert(ctx, "f16")
    assert f16.status == "built", f16.reason
    t0 = time.perf_counter()
    imat = imatrix.compute(ctx.out / f16.path, ctx.data / "train.jsonl", ctx.logs, args.max_prompts)
    assert imat[0] is not None, imat[1]
    print(f"importance matrix: {imat[1]} in {time.perf_counter() - t0:.1f} s")
    rows = []
    for quant in args.quants.split(","):
        for mode in ("plain", "imatrix"):
            art = cpu._quantize(ctx, f16, quant, imat if mode == "imatrix" else None)
            assert art.status == "built", art.reason
            name = f"{quant}_{mode}"
            (ctx.out / name).mkdir(exist_ok=True)
            (ctx.out / art.path).replace(ctx.out / name / "model.gguf")
            size = (ctx.out / name / "model.gguf").stat().st_size
            entry = {**art.to_dict(), "name": f"gguf_{name}", "path": f"{name}/model.gguf", "size_bytes": size}
            res = _bench_artifact("cpu", entry, ctx.out, ref_dir, args, max_new, schema, name)
            if res is None:
                continue
            val = {k: res.get(k) for k in ("val_exact_match", "val_delta", "val_delta_ci95")}
            if val["val_delta"] is not None:   # the validation split: what a default is chosen on
                print(f"{'':18} val em {val['val_exact_match']:.3f} ({100 * val['val_delta']:+.1f} "
                      f"±{100 * (val['val_delta_ci95'] or 0):.1f} pts)", flush=True)
            rows.append({**_row(name, mode, res, size, mode, 18), **val, "tensor_types": art.notes.get("tensor_types")})
    (args.work / "rows.json").write_text(json.dumps({"fp32_exact_match": fp32, "imatrix": imat[1], "rows": rows},
                                                    indent=1) + "\n")
    import yaml

    params = yaml.safe_load((args.build.parent / "params.yaml").read_text())
    record("gguf_imatrix", {"fp32 exact match": fp32, "test prompts": len(ref), "imatrix": imat[1], "rows": rows},
           variant="-".join([params["model"]["name"], params["data"]["name"]]))


if __name__ == "__main__":
    main()
