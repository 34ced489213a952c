"""HQQ and GPTQ int4 candidates for benchmarks/int4_accuracy.py: the builder's fp32 model, its
MatMuls quantized by ONNX Runtime's own MatMulNBitsQuantizer (HQQ: data-free; GPTQ: calibrated on
the build's curated train split, prompt + response).

The builder (0.18) only rounds weights (RTN, k_quant). The LM head and llama.cpp's sensitive layers
stay int8 (k_quant) and the tied embedding becomes a block-quantized int4 Gather, as in the builder's
int4 models, so the artifact runs with the same genai_config. Measured on SmolLM2-135M, both lose
more than the builder's k_quant (docs/figures.md, int4 records), so the targets do not offer them.
"""

from __future__ import annotations

import json
from pathlib import Path

from slmake.targets.ort_scale_min import sensitive_layers, untie_embedding

EMBED, HEAD = "/model/embed_tokens/Gather", "/lm_head/MatMul"


def calibration_feeds(folder: Path, split: Path, samples: int) -> list[dict]:
    """One prefill feed (empty KV cache) per calibration row: ``prompt + response`` of evenly spaced
    rows of the curated train split, tokenized with the artifact's own tokenizer."""
    import numpy as np
    from tokenizers import Tokenizer

    from slmake.io import evenly_spaced, read_jsonl

    if not split.is_file():
        raise ValueError(f"{split}: missing; GPTQ calibrates on the curated train split (run curate first)")
    dec = json.loads((folder / "genai_config.json").read_text())["model"]["decoder"]
    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    empty = np.zeros((1, dec["num_key_value_heads"], 0, dec["head_size"]), np.float32)
    feeds = []
    for row in evenly_spaced(read_jsonl(split), samples):
        ids = np.array([tok.encode(row["prompt"] + row["response"]).ids], dtype=np.int64)
        feed = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
        for i in range(dec["num_hidden_layers"]):
            feed[f"past_key_values.{i}.key"] = feed[f"past_key_values.{i}.value"] = empty
        feeds.append(feed)
    return feeds


def quantize(model, feeds: list[dict] | None, int4: dict, num_layers: int):
    """Quantize an fp32 ModelProto's MatMuls / embedding Gather (GPTQ with ``feeds``, else HQQ);
    returns the new one."""
    from onnxruntime.quantization.matmul_nbits_quantizer import (
        DefaultWeightOnlyQuantConfig,
        GPTQWeightOnlyQuantConfig,
        HQQWeightOnlyQuantConfig,
        KQuantWeightOnlyQuantConfig,
        MatMulNBitsQuantizer,
    )

    block = int4.get("block_size") or 32
    upgraded = ([HEAD] if int4.get("lm_head", "int8") == "int8" else []) + \
        (sensitive_layers(num_layers) if int4.get("sensitive_layers") == "int8" else [])
    floats = [HEAD] if int4.get("lm_head") == "float" else []
    model = untie_embedding(model)
    q = MatMulNBitsQuantizer(model, bits=4, block_size=block, is_symmetric=bool(int4.get("symmetric", False)),
                             accuracy_level=int4.get("accuracy_level"), nodes_to_exclude=upgraded + floats,
                             algo_config=GPTQWeightOnlyQuantConfig(calibration_data_reader=feeds) if feeds
                             else HQQWeightOnlyQuantConfig(block_size=block, bits=4))
    q.process()
    model = q.model.model
    if upgraded:  # int8 as the builder writes it: k_quant, symmetric
        q = MatMulNBitsQuantizer(model, bits=8, block_size=block, is_symmetric=True, nodes_to_exclude=floats,
                                 accuracy_level=int4.get("accuracy_level"),
                                 algo_config=KQuantWeightOnlyQuantConfig(
                                     customized_weight_config={name: {"bits": 8} for name in upgraded}))
        q.process()
        model = q.model.model
    if int4.get("embeddings", "int4") == "int4":  # GatherBlockQuantized takes int4 only
        q = MatMulNBitsQuantizer(model, nodes_to_include=[EMBED], algo_config=DefaultWeightOnlyQuantConfig(
            block_size=block, is_symmetric=True, op_types_to_quantize=("Gather",), bits=4))
        q.process()
        model = q.model.model
    return model


def quantize_folder(folder: Path, int4: dict, split: Path) -> None:
    """Rewrite ``folder``'s fp32 model.onnx (+ .data) as the int4 model (int4["algorithm"]: hqq|gptq)."""
    import onnx

    num_layers = json.loads((folder / "genai_config.json").read_text())["model"]["decoder"]["num_hidden_layers"]
    feeds = calibration_feeds(folder, split, int4.get("calibration_samples") or 64) \
        if int4["algorithm"] == "gptq" else None
    model = quantize(onnx.load(str(folder / "model.onnx")), feeds, int4, num_layers)
    (folder / "model.onnx.data").unlink()
    onnx.save(model, str(folder / "model.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
              location="model.onnx.data", size_threshold=1024)
