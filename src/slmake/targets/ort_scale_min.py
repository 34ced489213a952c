"""int4 with a scale and a float minimum per block (llama.cpp's Q4_1 / q4_K layout) in ONNX.

Why: ONNX Runtime's MatMulNBits stores a block as ``(q - z) * s`` with an integer zero point
``z``; llama.cpp's 4-bit types store ``q * d + m`` with a float minimum ``m``. A model whose
weights already sit on such a grid (every GGUF base slmake imports from a 4-bit file, and what a
fine-tune adds to it is small) is re-rounded by ORT's quantizers with ~8 % relative weight error
(measured on SmolLM2-135M's Q4_1 tensors: symmetric 9.3 %, integer zero point 8.1 %, float minimum
0.0 %). MatMulNBits does accept float zero points, but its CPU kernel then dequantizes on every call
(65x slower on a 576x1536 GEMV, onnxruntime 1.32). So the minimum is applied beside the kernel:

    y = x @ W.T,  W[n, block b] = (q - 8) * d[n, b] + c[n, b]
      = MatMulNBits(x, q, d)  +  (x @ S) @ c.T      (S [K, K/32]: x @ S sums x over each 32-block)

The second term is two float MatMuls through a width of K/32; the first runs the fast int4 kernel.
A fine-tune's low-rank difference (see ``rewrite``) shares those two MatMuls: ``x @ [S | a]`` then
``@ [c.T ; b]``, so a layer costs three ops more than the builder's int4, whatever it carries.

``quantize_folder`` rewrites the builder's fp32 ``model.onnx`` in place: every 2-D weight MatMul
whose K divides into blocks becomes that pair, except the LM head (and with ``sensitive="int8"``
llama.cpp's q4_k_m choice of sensitive layers: int8 blocks, Q8_0's rounding); the tied embedding
becomes the builder's block-quantized int4 Gather.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

HEAD, EMBED = "/lm_head/MatMul", "/model/embed_tokens/Gather"


def quantize_blocks(w: np.ndarray, block: int, steps: int = 20) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``w`` [N, K] -> (q uint8 [N, K/block, block] in 0..15, d [N, K/block], c [N, K/block]) with
    w ~= (q - 8) * d + c. Per block, the search of llama.cpp's q4_K (make_qkx2_quants): scales
    around min/max rounding, each refitted by least squares given its levels, the one of least
    squared error kept. min/max is one candidate, so a block on a Q4_1 grid comes back exactly."""
    n, k = w.shape
    x = w.reshape(-1, block).astype(np.float32)
    lo, hi = x.min(-1, keepdims=True), x.max(-1, keepdims=True)
    span = np.where(hi > lo, hi - lo, np.float32(1))
    best_err = np.full((x.shape[0], 1), np.inf)
    best_q = np.zeros(x.shape, np.uint8)
    best_d, best_m = np.zeros_like(lo), lo.copy()
    for step in range(-steps, steps + 1):
        q = np.clip(np.rint((x - lo) * ((15 + np.float32(0.1) * step) / span)), 0, 15)
        sq, sx = q.sum(-1, keepdims=True), x.sum(-1, keepdims=True)
        det = block * (q * q).sum(-1, keepdims=True) - sq * sq
        d = np.where(det > 0, (block * (q * x).sum(-1, keepdims=True) - sq * sx) / np.where(det > 0, det, 1), 0.0)
        d = np.maximum(d, np.float32(0))
        m = (sx - d * sq) / block
        err = ((d * q + m - x) ** 2).sum(-1, keepdims=True)
        better = err < best_err
        best_err = np.where(better, err, best_err)
        best_q = np.where(better, q.astype(np.uint8), best_q)
        best_d, best_m = np.where(better, d, best_d), np.where(better, m, best_m)
    d, m = best_d.reshape(n, k // block), best_m.reshape(n, k // block)
    return best_q.reshape(n, k // block, block), d.astype(np.float32), (m + 8 * d).astype(np.float32)


def base_on_grid(folder: Path, block: int = 32, rows: int = 64) -> bool:
    """Whether ``folder``'s weights sit on a 4-bit scale + minimum grid (a base imported from a
    Q4_1/q4_K GGUF): ``quantize_blocks``' min/max rounding reproduces the first MLP projection's
    first ``rows`` rows."""
    from safetensors import safe_open

    for path in sorted(Path(folder).glob("*.safetensors")):
        with safe_open(str(path), framework="np") as f:
            name = next((k for k in f.keys() if k.endswith("mlp.up_proj.weight")), None)
            if name is None:
                continue
            w = f.get_slice(name)[:rows].astype(np.float32)
            if w.ndim != 2 or w.shape[1] % block or not np.abs(w).max() > 0:
                return False
            q, d, c = quantize_blocks(w, block, steps=0)   # min/max rounding only: exact on such a grid
            back = ((q - 8.0) * d[..., None] + c[..., None]).reshape(w.shape)
            return bool(np.abs(back - w).max() <= 1e-3 * np.abs(w).max())
    return False


def _block_sums(k: int, block: int) -> np.ndarray:
    """[K, K/block] of 0/1: x @ it sums x over each block (a MatMul: one op, any rank of x)."""
    return np.kron(np.eye(k // block, dtype=np.float32), np.ones((block, 1), np.float32))


def _pack(q: np.ndarray) -> np.ndarray:
    """MatMulNBits' B: [N, blocks, block/2] bytes, the even element in the low nibble."""
    return (q[..., 0::2] | (q[..., 1::2] << 4)).astype(np.uint8)


def low_rank(delta: np.ndarray, max_rank: int, rel: float = 1e-4) -> tuple[np.ndarray, np.ndarray] | None:
    """``delta`` [K, N] ~= a @ b (a [K, r], b [r, N]): the singular directions above ``rel`` of the
    largest, at most ``max_rank``; None when there are none. A merged LoRA's difference has exactly
    its rank (the rest is float rounding), so it comes back whole."""
    u, s, vt = np.linalg.svd(delta.astype(np.float64), full_matrices=False)
    r = min(max_rank, int((s > rel * s[0]).sum())) if s.size and s[0] > 0 else 0   # max_rank: truncated
    if r == 0:
        return None
    return (u[:, :r] * s[:r]).astype(np.float32), vt[:r].astype(np.float32)


def rewrite(model, block: int = 32, accuracy_level: int = 4, exclude: tuple[str, ...] = (HEAD,),
            base: dict | None = None, max_rank: int = 64) -> tuple[int, int]:
    """Replace ``model``'s weight MatMuls (fp32 initializer [K, N], K % block == 0)
    by MatMulNBits + the block-sum correction; return (how many, the total rank of the corrections).

    ``base`` (node name -> the base model's weight [K, N], from the same builder on the base): the
    base's weights are quantized instead, and what the fine-tune changed (this weight minus the
    base's, exactly low-rank after a merged LoRA) rides beside them as a float product ``x @ a @ b``,
    so the int4 model errs only where the base's own int4 does. Quantizing the
    fine-tuned weight itself snaps a small fine-tune back onto the base's grid: on SmolLM2's Q4_1
    base it kept 7-48 % of a LoRA's change (measured, BANKING77 build)."""
    from onnx import helper, numpy_helper

    g = model.graph
    inits = {i.name: i for i in g.initializer}
    out, done, rank = [], 0, 0
    for node in g.node:
        w = _weight(node, inits)
        if w is None or node.name in exclude or len(w.dims) != 2 or w.dims[0] % block:
            out.append(node)
            continue
        wt = numpy_helper.to_array(w)                       # [K, N]
        k, n = wt.shape
        bt = base.get(node.name) if base is not None else None
        correction = low_rank(wt - bt, max_rank) if bt is not None and bt.shape == wt.shape else None
        if correction is not None and correction[0].shape[1] < max_rank:
            q, d, c = quantize_blocks(np.ascontiguousarray(bt.T), block)
        else:   # no base, no change, or more than max_rank (not a LoRA's): quantize the weight itself
            q, d, c = quantize_blocks(np.ascontiguousarray(wt.T), block)
            correction = None
        stem = _stem(node) or f"matmul{done}"
        # (x @ inner) @ outer: the block sums of x times each block's offset, and the fine-tune's difference
        inner, outer = _block_sums(k, block), np.ascontiguousarray(c.T)            # [K, K/block], [K/block, N]
        if correction is not None:
            inner, outer = np.hstack([inner, correction[0]]), np.vstack([outer, correction[1]])
            rank += correction[0].shape[1]
        new = [numpy_helper.from_array(_pack(q), f"{stem}.qweight"),
               numpy_helper.from_array(d.reshape(-1), f"{stem}.scales"),
               numpy_helper.from_array(inner, f"{stem}.correction_in"),
               numpy_helper.from_array(outer, f"{stem}.correction_out")]
        g.initializer.extend(new)
        x, y = node.input[0], node.output[0]
        out += [
            helper.make_node("MatMulNBits", [x, new[0].name, new[1].name], [f"{stem}/int4"], name=f"{node.name}NBits",
                             domain="com.microsoft", K=k, N=n, bits=4, block_size=block,
                             accuracy_level=accuracy_level),
            helper.make_node("MatMul", [x, new[2].name], [f"{stem}/correction_in"], name=f"{node.name}CorrectionIn"),
            helper.make_node("MatMul", [f"{stem}/correction_in", new[3].name], [f"{stem}/correction"],
                             name=f"{node.name}CorrectionOut"),
            helper.make_node("Add", [f"{stem}/int4", f"{stem}/correction"], [y], name=f"{node.name}Add"),
        ]
        g.initializer.remove(w)
        done += 1
    if done:
        del g.node[:]
        g.node.extend(out)
        _contrib_opset(model)
    return done, rank


def _contrib_opset(model) -> None:
    """MatMulNBits lives in ONNX Runtime's com.microsoft domain."""
    from onnx import helper

    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))


def quantize_folder(folder: Path, block: int = 32, accuracy_level: int = 4, sensitive: str = "int4",
                    base_folder: Path | None = None, max_rank: int = 64) -> dict:
    """Rewrite the builder's fp32 ``folder/model.onnx`` (+ .data) as this int4 model; return what
    the manifest records. ``base_folder``: the same builder's fp32 graph of the model that was
    fine-tuned (see ``rewrite``)."""
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import (
        DefaultWeightOnlyQuantConfig,
        MatMulNBitsQuantizer,
    )

    model = onnx.load(str(folder / "model.onnx"))
    model = untie_embedding(model)
    layers = json.loads((folder / "genai_config.json").read_text())["model"]["decoder"]["num_hidden_layers"]
    upgraded = [HEAD] + (sensitive_layers(layers) if sensitive == "int8" else [])
    in_int8 = int8(model, upgraded, block, accuracy_level)
    base = _weights(onnx.load(str(base_folder / "model.onnx"))) if base_folder is not None else None
    replaced, rank = rewrite(model, block, accuracy_level, base=base, max_rank=max_rank)
    q = MatMulNBitsQuantizer(model, nodes_to_include=[EMBED], algo_config=DefaultWeightOnlyQuantConfig(
        block_size=block, is_symmetric=True, op_types_to_quantize=("Gather",), bits=4))
    q.process()
    model = q.model.model
    (folder / "model.onnx.data").unlink()
    onnx.save(model, str(folder / "model.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
              location="model.onnx.data", size_threshold=1024)
    (folder / "model.onnx.data").chmod(0o644)   # onnx writes it 0600; artifacts are shared
    return {"algorithm": "scale_min", "block_size": block, "accuracy_level": accuracy_level,
            "int4_matmuls": replaced, "int8_matmuls": in_int8, "lm_head": "int8", "sensitive_layers": sensitive,
            "embeddings": "int4", "quantized_from": "base" if base is not None else "fine-tuned",
            "fine_tune_rank": rank}


def _weights(model) -> dict:
    """Node name -> weight [K, N] of every MatMul with an initializer weight."""
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    return {n.name: numpy_helper.to_array(w) for n in model.graph.node if (w := _weight(n, inits)) is not None}


def _weight(node, inits: dict):
    """The initializer a MatMul multiplies by (its weight), or None for any other node."""
    return inits.get(node.input[1]) if node.op_type == "MatMul" and len(node.input) == 2 else None


def _stem(node) -> str:
    """A node's name as a prefix for the initializers and values that replace it."""
    return node.name.strip("/").replace("/", "_")


def sensitive_layers(num_layers: int) -> list[str]:
    """The builder's ``mixed_layers`` selection (llama.cpp's q4_k_m rule): the first and last eighth
    of the layers and every third one between, their qkv and down projections."""
    n = num_layers
    return [f"/model/layers.{i}/{p}/MatMul" for i in range(n)
            if i < n / 8 or i >= 7 * n / 8 or (i - round(n / 8)) % 3 == 2 for p in ("attn/qkv_proj", "mlp/down_proj")]


def int8(model, names: list[str], block: int, accuracy_level: int) -> int:
    """The named weight MatMuls as symmetric int8 blocks (llama.cpp's Q8_0 rounding: scale =
    absmax / 127, exact on a Q8_0 tensor), MatMulNBits with 8 bits and its default zero point 128;
    return how many were replaced."""
    from onnx import helper, numpy_helper

    g = model.graph
    inits = {i.name: i for i in g.initializer}
    done = 0
    for node in [n for n in g.node if n.name in set(names)]:
        w = _weight(node, inits)
        if w is None or len(w.dims) != 2 or w.dims[0] % block:
            continue
        wt = numpy_helper.to_array(w)
        k, n = wt.shape
        x = np.ascontiguousarray(wt.T).reshape(n, k // block, block).astype(np.float64)
        s = np.abs(x).max(-1) / 127
        q = np.clip(np.rint(x / np.where(s > 0, s, 1.0)[..., None]), -127, 127).astype(np.int16) + 128
        stem = _stem(node)
        new = [numpy_helper.from_array(q.astype(np.uint8), f"{stem}.qweight8"),
               numpy_helper.from_array(s.astype(np.float32).reshape(-1), f"{stem}.scales8")]
        g.initializer.extend(new)
        g.initializer.remove(w)
        g.node.insert(list(g.node).index(node), helper.make_node(
            "MatMulNBits", [node.input[0], new[0].name, new[1].name], list(node.output), name=f"{node.name}NBits",
            domain="com.microsoft", K=k, N=n, bits=8, block_size=block, accuracy_level=accuracy_level))
        g.node.remove(node)
        done += 1
    _contrib_opset(model)
    return done


def untie_embedding(model):
    """The fp32 builder feeds the embedding Gather through a Transpose of the tied LM head weight;
    give the Gather its own initializer so it can be quantized apart from the head."""
    from onnx import numpy_helper

    g = model.graph
    gather = next((n for n in g.node if n.name == EMBED), None)
    producer = next((n for n in g.node if gather is not None and gather.input[0] in n.output), None)
    if producer is None or producer.op_type != "Transpose":
        return model
    init = next(i for i in g.initializer if i.name == producer.input[0])
    table = numpy_helper.from_array(numpy_helper.to_array(init).T.copy(), "model.embed_tokens.weight")
    g.initializer.append(table)
    gather.input[0] = table.name
    g.node.remove(producer)
    return model

