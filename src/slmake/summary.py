"""The compact metrics file that makes `dvc exp show` fit a screen.

DVC names a column after the metric's full key path, so `cpu.gguf_q4_k_m.decode_tok_s` alone is
28 characters wide. This file holds just what a sweep compares — accuracy, decode tokens/s and size
per artifact — under short keys (`acc.q4km`, `tps.q4km`, `mb.q4km`), so twelve artifact figures,
the experiment tree and a sweep's spec key fit 160 columns (docs/guide/sweeps.md, "Comparing experiments").
The per-target files in reports/bench keep every figure.
"""

from __future__ import annotations

SHORT = {"acc": "exact_match", "tps": "decode_tok_s", "mb": "size_mb"}


def short_name(target: str, artifact: str) -> str:
    """gguf_q4_k_m -> q4km, gguf_q8_0 -> q8, onnx_int4 -> int4 on cpu; other targets keep their
    name as a prefix (cuda_hf_fp16_cuda...)."""
    name = artifact.split("_", 1)[1] if artifact.startswith(("gguf_", "onnx_")) else artifact
    if target != "cpu":
        return f"{target}_{name}"
    return (name[:-2] if name.endswith("_0") else name).replace("_", "")


def summary(rows: list[dict]) -> dict:
    out: dict = {k: {} for k in SHORT}
    for r in rows:
        for short, key in SHORT.items():
            if isinstance(r.get(key), (int, float)):
                out[short][short_name(r["target"], r["artifact"])] = r[key]
    return {k: v for k, v in out.items() if v}
