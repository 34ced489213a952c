"""The compact metrics file that makes `dvc exp show` fit a screen.

DVC names a column after the metric's full key path, so `cpu.gguf_q4_k_m.decode_tok_s` alone is
28 characters wide. This file holds just what a sweep compares — accuracy, decode tokens/s and size
per artifact — under short keys (`acc.q4_k_m`, `tps.q4_k_m`, `mb.q4_k_m`), so twelve artifact
figures and a sweep's spec keys fit 160 columns (README, "Comparing experiments").
The per-target files in reports/bench keep every figure.
"""

from __future__ import annotations

SHORT = {"acc": "exact_match", "tps": "decode_tok_s", "mb": "size_mb"}


def short_name(target: str, artifact: str) -> str:
    """gguf_q4_k_m -> q4_k_m on cpu; other targets keep their name as a prefix (cuda_onnx_int4...)."""
    name = artifact.split("_", 1)[1] if artifact.startswith(("gguf_", "onnx_")) else artifact
    return name if target == "cpu" else f"{target}_{name}"


def summary(rows: list[dict]) -> dict:
    out: dict = {k: {} for k in SHORT}
    for r in rows:
        for short, key in SHORT.items():
            if isinstance(r.get(key), (int, float)):
                out[short][short_name(r["target"], r["artifact"])] = r[key]
    return {k: v for k, v in out.items() if v}
