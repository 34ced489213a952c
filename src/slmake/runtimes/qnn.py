"""Greedy generation on the static-shape graphs of the qualcomm_npu target, on any ORT session.

The same loop serves all three artifacts (fp32 on the CPU EP, QDQ on the HTP simulator, the
context binary on a device), so differences between them are numerics, not driver code. Each step
feeds the whole right-padded context and the index of the last real token (see qnn_export); the
graph's fixed length comes from the sidecar (``SIDECAR``) written at compile time, not from a setting that could
drift from the artifact.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .base import Generation, Greedy, OnToken

SIDECAR = "slmake_static.json"   # what a runner needs to feed the graph, stored beside it by compile


class StaticRunner:
    supports_logprobs = True       # generate(..., logprobs=k): the graph's logits are slmake's own

    def __init__(self, folder: str | Path, where: str, threads: int | None = None):
        """``folder``: an artifact folder (graph + sidecar); ``where``: "cpu" (CPU EP), "qnn" (HTP
        backend; the simulator on x86) or "qnn_device"."""
        import onnxruntime as ort

        meta = json.loads((Path(folder) / SIDECAR).read_text())
        model = Path(folder) / meta["model"]
        self.C, self.pad, self.eos = meta["context_len"], meta["pad_id"], set(meta["eos_ids"])
        if where == "cpu":
            so = ort.SessionOptions()
            so.log_severity_level = 3
            if threads:
                so.intra_op_num_threads = int(threads)
            self.session = ort.InferenceSession(str(model), so, providers=["CPUExecutionProvider"])
        else:
            opts = {"htp_performance_mode": "burst"} if where == "qnn_device" else {}
            # the whole graph on QNN, unless compile recorded ops it allowed onto the CPU EP
            strict = {} if meta.get("cpu_fallback_ops") else {"session.disable_cpu_ep_fallback": "1"}
            so = qnn_session_options(opts, strict, threads)
            self.session = ort.InferenceSession(str(model), so)

    def generate(self, prompt_ids: list[int], max_new_tokens: int, on_token: OnToken | None = None,
                 ignore_eos: bool = False, logprobs: int | None = None) -> Generation:
        n = len(prompt_ids)
        if not 0 < n <= self.C:
            raise ValueError(f"prompt of {n} tokens does not fit the static context of {self.C} tokens; "
                             "raise targets.qualcomm_npu.context_len and recompile")
        ids = np.full((1, self.C), self.pad, np.int64)
        ids[0, :n] = prompt_ids
        run = Greedy(self.eos, on_token, ignore_eos, logprobs=logprobs)
        while len(run.tokens) < max_new_tokens:
            logits = self.session.run(None, {"input_ids": ids, "last": np.array([n - 1], np.int64)})[0]
            nxt = run.pick(logits[0])
            if run.step(nxt):
                break
            if n == self.C:    # context full: like llama.cpp at n_ctx, generation ends here
                break
            ids[0, n] = nxt
            n += 1
        return run.result()

    def close(self) -> None:
        self.session = None


# --- the QNN execution provider (onnxruntime-qnn's plugin EP) ---------------------------------------

def register_qnn():
    """Register onnxruntime-qnn's plugin EP once per process; returns its OrtEpDevices."""
    import onnxruntime as ort
    import onnxruntime_qnn

    if not [d for d in ort.get_ep_devices() if d.ep_name == onnxruntime_qnn.EP_NAME]:
        ort.register_execution_provider_library(onnxruntime_qnn.EP_NAME, onnxruntime_qnn.get_library_path())
    return [d for d in ort.get_ep_devices() if d.ep_name == onnxruntime_qnn.EP_NAME]


def qnn_session_options(provider_options: dict | None = None, config: dict | None = None, threads=None):
    """Session options that put the graph on QNN's HTP backend (the x86 simulator off-device)."""
    import onnxruntime as ort
    import onnxruntime_qnn

    so = ort.SessionOptions()
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = int(threads)
    so.add_provider_for_devices(register_qnn(), {"backend_path": onnxruntime_qnn.get_qnn_htp_path(),
                                                 **(provider_options or {})})
    for k, v in (config or {}).items():
        so.add_session_config_entry(k, str(v))
    return so
