"""slmake's int4 for ONNX Runtime (targets/ort_scale_min.py): blocks stored as a scale and a float
minimum (llama.cpp's Q4_1 layout), run as MatMulNBits plus a block-sum correction."""

from __future__ import annotations

import numpy as np
import pytest

ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from slmake.targets import ort_scale_min  # noqa: E402

K, N, BLOCK = 128, 48, 32


def _q4_1_weights(rng) -> np.ndarray:
    """[N, K] weights on a Q4_1 grid: each 32-block is m + d * k, k in 0..15, both ends used."""
    k = rng.integers(0, 16, (N, K // BLOCK, BLOCK))
    k[..., 0], k[..., 1] = 0, 15
    d = rng.uniform(0.001, 0.02, (N, K // BLOCK, 1))
    m = rng.uniform(-0.2, 0.05, (N, K // BLOCK, 1))
    return (m + d * k).reshape(N, K).astype(np.float32)


def _graph(w: np.ndarray, name: str = "/model/layers.0/mlp/up_proj/MatMul"):
    node = helper.make_node("MatMul", ["x", "w"], ["y"], name=name)
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", "s", K])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", "s", N])],
                          [numpy_helper.from_array(np.ascontiguousarray(w.T), "w")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def _run(model, x):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def test_blocks_on_a_q4_1_grid_are_reproduced_exactly():
    rng = np.random.default_rng(0)
    w = _q4_1_weights(rng)
    q, d, c = ort_scale_min.quantize_blocks(w, BLOCK)
    back = ((q.astype(np.float64) - 8) * d[..., None] + c[..., None]).reshape(N, K)
    assert q.dtype == np.uint8 and q.max() <= 15 and np.abs(back - w).max() < 1e-6
    # off any grid: per block never worse than Q4_1's min/max rounding, and better overall
    noise = rng.normal(0, 0.05, (N, K)).astype(np.float32)
    q, d, c = ort_scale_min.quantize_blocks(noise, BLOCK)
    back = ((q.astype(np.float64) - 8) * d[..., None] + c[..., None]).reshape(N, -1, BLOCK)
    x = noise.reshape(N, -1, BLOCK).astype(np.float64)
    lo, step = x.min(-1, keepdims=True), (x.max(-1, keepdims=True) - x.min(-1, keepdims=True)) / 15
    minmax = np.rint((x - lo) / step) * step + lo
    err, err_minmax = ((back - x) ** 2).sum(-1), ((minmax - x) ** 2).sum(-1)
    assert np.all(err <= err_minmax + 1e-12) and err.sum() < 0.9 * err_minmax.sum()


@pytest.mark.parametrize("accuracy_level, tol", [(1, 1e-5), (4, 2e-2)])
def test_rewritten_matmul_computes_the_grid_weights(accuracy_level, tol):
    """MatMulNBits + the block-sum correction gives x @ W.T for weights on a Q4_1 grid (exactly with
    fp32 activations; within int8 activation rounding at accuracy level 4, the CPU's fast path)."""
    rng = np.random.default_rng(1)
    w = _q4_1_weights(rng)
    model = _graph(w)
    assert ort_scale_min.rewrite(model, BLOCK, accuracy_level) == (1, 0)
    ops = [n.op_type for n in model.graph.node]
    assert ops == ["MatMulNBits", "MatMul", "MatMul", "Add"]
    assert not any(i.name == "w" for i in model.graph.initializer)
    x = rng.normal(size=(2, 3, K)).astype(np.float32)
    want = x @ w.T
    got = _run(model, x)
    assert np.linalg.norm(got - want) / np.linalg.norm(want) < tol


def test_the_lm_head_and_ragged_matmuls_are_left_alone():
    rng = np.random.default_rng(2)
    model = _graph(_q4_1_weights(rng), name=ort_scale_min.HEAD)
    assert ort_scale_min.rewrite(model, BLOCK)[0] == 0 and [n.op_type for n in model.graph.node] == ["MatMul"]
    model = _graph(_q4_1_weights(rng))
    assert ort_scale_min.rewrite(model, 48)[0] == 0     # K = 128 is not a multiple of 48


def test_int8_blocks_reproduce_a_q8_0_head():
    rng = np.random.default_rng(3)
    q8 = rng.integers(-127, 128, (N, K // BLOCK, BLOCK))
    q8[..., 0] = 127
    w = (q8 * rng.uniform(1e-4, 1e-3, (N, K // BLOCK, 1))).reshape(N, K).astype(np.float32)
    model = _graph(w, name=ort_scale_min.HEAD)
    assert ort_scale_min.int8(model, [ort_scale_min.HEAD], BLOCK, 1) == 1
    node = model.graph.node[0]
    assert node.op_type == "MatMulNBits" and {a.name: a.i for a in node.attribute}["bits"] == 8
    x = rng.normal(size=(1, 2, K)).astype(np.float32)
    want = x @ w.T
    assert np.linalg.norm(_run(model, x) - want) / np.linalg.norm(want) < 1e-5


def test_a_fine_tune_of_a_grid_base_is_kept_whole():
    """Given the base's weights, the base is quantized (exactly, on its Q4_1 grid) and the fine-tune's
    difference rides beside it at its own rank: the output is the fine-tuned model's. Quantizing the
    fine-tuned weight instead snaps most of a small difference back onto the base's grid."""
    rng = np.random.default_rng(4)
    base_w = _q4_1_weights(rng)
    delta = (rng.normal(size=(N, 4)) @ rng.normal(size=(4, K)) * 5e-4).astype(np.float32)   # a rank-4 LoRA
    tuned = base_w + delta
    x = rng.normal(size=(2, 3, K)).astype(np.float32)
    want = x @ tuned.T

    model = _graph(tuned)
    assert ort_scale_min.rewrite(model, BLOCK, 1, base={"/model/layers.0/mlp/up_proj/MatMul": base_w.T}) == (1, 4)
    assert np.linalg.norm(_run(model, x) - want) / np.linalg.norm(x @ delta.T) < 1e-3

    snapped = _graph(tuned)
    ort_scale_min.rewrite(snapped, BLOCK, 1)
    got = _run(snapped, x)
    kept = np.vdot(got - x @ base_w.T, x @ delta.T) / np.vdot(x @ delta.T, x @ delta.T)
    assert kept < 0.7, kept

    # a full-rank difference (not a LoRA's) is not carried: the fine-tuned weight is quantized itself
    full = _graph(base_w + rng.normal(0, 1e-3, (N, K)).astype(np.float32))
    assert ort_scale_min.rewrite(full, BLOCK, 1, base={"/model/layers.0/mlp/up_proj/MatMul": base_w.T},
                                 max_rank=8) == (1, 0)
