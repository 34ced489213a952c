"""Static-shape ONNX for Qualcomm's QNN execution provider: export, graph fixes, QDQ, context binary.

Why this shape of graph: the HTP compiles fixed shapes only, so the model takes the whole padded
context every step (``input_ids`` [1, context_len], right-padded) plus ``last`` (the index of the
last real token) and returns that position's logits [1, vocab]. With right padding the causal mask
already keeps real positions from seeing the padding, so no attention-mask input is needed and the
logits equal the unpadded model's. No KV cache: measured on the x86 HTP simulator, a 1-token
KV-cache step cost about as many cycles as the full 128-token step (HTP matmuls are tile-bound, and
quantizing the float KV inputs took ~35 % of the step), so the extra graph was not worth it here.

Graph fixes (measured with onnxruntime-qnn 2.7.0): the causal mask's float-min fill
(-3.4e38) wrecks the quantized range of the mask add, so it becomes a moderate negative; QNN's
quantized Reciprocal (RMSNorm's rsqrt) had 92 % relative error, so Reciprocal(x) becomes Div(1, x).
Every fix is counted so the artifact's notes say what was changed.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import numpy as np

from ...runtimes.qnn import SIDECAR, qnn_session_options

INPUTS = ("input_ids", "last")
QTYPES = {"u8": "QUInt8", "u16": "QUInt16", "s8": "QInt8", "u4": "QUInt4", "s4": "QInt4"}  # -> QuantType
_MIN_FILL = -1e30                # anything below this is a float-min mask fill


def export_static(merged: Path, dest: Path, context_len: int) -> dict:
    """torch dynamo export (``dynamo=False`` fails on torch 2.13) with eager attention: the plain
    MatMul/Add/Softmax graph, without the IsNaN/Where guards SDPA's decomposition adds per layer."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(str(merged))
    model = AutoModelForCausalLM.from_pretrained(str(merged), dtype=torch.float32, attn_implementation="eager")
    model.eval()

    class Static(torch.nn.Module):
        """Decoder, then the LM head on one position only (the head is vocab x hidden per row)."""

        def __init__(self, lm):
            super().__init__()
            self.decoder, self.head = lm.get_decoder(), lm.get_output_embeddings()

        def forward(self, input_ids, last):
            hidden = self.decoder(input_ids=input_ids, use_cache=False).last_hidden_state
            return self.head(torch.index_select(hidden, 1, last))[:, 0]

    example = (torch.zeros(1, context_len, dtype=torch.long), torch.zeros(1, dtype=torch.long))
    with torch.no_grad():
        program = torch.onnx.export(Static(model).eval(), example, dynamo=True, input_names=list(INPUTS),
                                    output_names=["logits"], optimize=True)
    program.save(str(dest), external_data=_big(model))
    eos = config.eos_token_id
    pad = config.pad_token_id if config.pad_token_id is not None else (eos[0] if isinstance(eos, list) else eos)
    return {"context_len": context_len, "pad_id": int(pad or 0), "vocab_size": int(config.vocab_size),
            "eos_ids": sorted(set(eos if isinstance(eos, list) else [eos])), "inputs": list(INPUTS)}


def fix_graph(src: Path, dest: Path, mask_fill: float) -> dict:
    """Apply the two QNN fixes; returns {fix: count}. The mask fill is found as data, not by
    pattern: the exporter leaves a scalar Where operand at 128 tokens but constant-folds the whole
    [1, 1, L, L] mask at 32, so every float constant holding float-min entries is rewritten."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(src))
    graph = model.graph
    counts: Counter = Counter()
    tensors = list(graph.initializer) + [a.t for n in graph.node if n.op_type == "Constant" for a in n.attribute
                                         if a.name == "value"]
    for t in tensors:
        if t.data_type == onnx.TensorProto.FLOAT:
            a = numpy_helper.to_array(t)
            if a.size and a.min() < _MIN_FILL:
                t.CopyFrom(numpy_helper.from_array(np.where(a < _MIN_FILL, np.float32(mask_fill), a), t.name))
                counts["causal_mask_fill_float_min_to_moderate"] += 1
    for node in graph.node:
        if node.op_type == "Reciprocal":
            one = f"{node.output[0]}_slmake_one"
            graph.initializer.append(numpy_helper.from_array(np.array(1.0, np.float32), one))
            x = node.input[0]
            node.op_type = "Div"
            del node.input[:]
            node.input.extend([one, x])
            counts["reciprocal_to_div"] += 1
    onnx.save(model, str(dest), save_as_external_data=_big(model))
    return dict(counts)


def calibration_feeds(merged: Path, rows: list[dict], n: int, meta: dict):
    """Teacher-forced prompt (+ response when present) sequences, as the runner feeds them: the
    activation ranges then cover what generation produces, not just the prompts."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(merged))
    C, feeds, truncated = meta["context_len"], [], 0
    for row in rows[:n]:
        ids = tok(row["prompt"] + row.get("response", ""))["input_ids"]
        if ids and ids[0] != tok.bos_token_id and tok.bos_token_id is not None:
            ids = [tok.bos_token_id] + ids
        truncated += len(ids) > C
        ids = ids[:C]
        x = np.full((1, C), meta["pad_id"], np.int64)
        x[0, :len(ids)] = ids
        feeds.append({"input_ids": x, "last": np.array([len(ids) - 1], np.int64)})
    return feeds, truncated


def quantize_qdq(src: Path, dest: Path, feeds: list[dict], activations: str, weights: str) -> dict:
    """ORT's QNN recipe: qnn_preprocess_model, get_qnn_qdq_config, quantize (MinMax calibration)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantType, quantize
    from onnxruntime.quantization.execution_providers.qnn import get_qnn_qdq_config, qnn_preprocess_model

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(feeds)

        def get_next(self):
            return next(self.it, None)

    pre = dest.with_name("preprocessed.onnx")
    changed = qnn_preprocess_model(str(src), str(pre))
    model_in = pre if changed else src
    cfg = get_qnn_qdq_config(str(model_in), Reader(), activation_type=getattr(QuantType, QTYPES[activations]),
                             weight_type=getattr(QuantType, QTYPES[weights]))
    quantize(str(model_in), str(dest), cfg)
    if changed:
        pre.unlink(missing_ok=True)
    return {"qnn_preprocess": "changed the graph" if changed else "no changes needed",
            "calibration": f"MinMax over {len(feeds)} sequences"}


# --- checks on QNN ---------------------------------------------------------------------------

def unsupported_ops(model: Path) -> Counter:
    """Ops the HTP backend rejects: open the model with CPU fallback allowed and count the nodes
    ONNX Runtime placed anywhere but on QNN. Q/DQ nodes are not counted: the EP hands graph-I/O
    (de)quantization to the CPU EP by design (``offload_graph_io_quantization``, default on), and a
    rejected op brings its own."""
    import onnxruntime as ort

    so = qnn_session_options(config={"session.record_ep_graph_assignment_info": "1"})
    sess = ort.InferenceSession(_source(model), so)
    return Counter(n.op_type for sg in sess.get_provider_graph_assignment_info()
                   if sg.ep_name != "QNNExecutionProvider" for n in sg.get_nodes()
                   if n.op_type not in ("QuantizeLinear", "DequantizeLinear"))


def failed_qnn_nodes(log: str) -> list[tuple[str, str]]:
    """(node, QNN op type) for each node QNN refused to add, as the EP logs it."""
    return re.findall(r"failed for node `([^`]+)` of type `([^`]+)`", log)


def context_binary(qdq: Path, dest: Path, soc_model: int, htp_arch: int) -> dict:
    """``ep.context_enable=1``: compiling the session writes an EPContext model plus the QNN
    context binary (``*_qnn.bin``) for the given SoC, which a device then loads without compiling."""
    import onnxruntime as ort

    so = qnn_session_options({"soc_model": str(soc_model), "htp_arch": str(htp_arch)},
                             {"session.disable_cpu_ep_fallback": "1", "ep.context_enable": "1",
                              "ep.context_embed_mode": "0", "ep.context_file_path": str(dest)})
    ort.InferenceSession(_source(qdq), so)
    bins = sorted(p.name for p in dest.parent.glob("*.bin"))
    if not dest.is_file() or not bins:
        raise RuntimeError(f"QNN wrote no context binary next to {dest.name}")
    return {"context_binary": bins, "soc_model": soc_model, "htp_arch": f"v{htp_arch}"}


def write_sidecar(folder: Path, meta: dict) -> None:
    (folder / SIDECAR).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")


def _source(model: Path):
    """The model's bytes, not its path: ORT names the QNN partition after a hash of the path, which
    is a random temporary folder at compile time, so a path made the context binary differ on
    every build. Bytes make it byte-identical across builds (measured). Models with external
    weights must go by path."""
    return str(model) if any(model.parent.glob("*.data")) else model.read_bytes()


def _big(model) -> bool:
    """Protobuf caps a file at 2 GB: larger models keep their weights as external data."""
    try:
        return sum(p.numel() for p in model.parameters()) * 4 > 1.5e9
    except AttributeError:
        return model.ByteSize() > 1.5e9
