"""OpenVINO GenAI runner: greedy generation on token ids with ``openvino_genai.LLMPipeline``.

Ids go in as ``TokenizedInputs``, so no tokenizer IR and no chat template is involved (GenAI applies
the template only to string inputs; we also switch it off explicitly). TTFT comes from the pipeline's
own perf metrics: a Python streamer callback per token would slow the decode loop it is timing.
No grammar-constrained decoding (``supports_constraint = False``: serve validates OpenVINO answers,
bench decodes them free). The pipeline exposes no per-token logits to mask, and GenAI 2026.4's own
structured output (``StructuredOutputConfig``, xgrammar) cannot emit a SentencePiece ``▁``-prefixed
token: on the default build's vocabulary ``root ::= "{" " " ...`` stalls on <pad> after ``{``, and
under the response schema's GBNF answers lose their spaces (``{"category":"software",...`` where free
greedy, which the grammar allows, wrote ``{"category": "other", ...``): not greedy under the grammar.
"""

from __future__ import annotations

import time
from pathlib import Path

from .base import Generation, OnToken, Stopwatch


class OpenVINORunner:
    supports_constraint = False    # see the module docstring

    def __init__(self, model_dir: str | Path, device: str, properties: dict | None = None,
                 max_prompt_len: int | None = None):
        import openvino_genai as ov_genai

        self._genai = ov_genai
        self.max_prompt_len = max_prompt_len   # static-shape pipelines reject longer prompts
        self.pipe = ov_genai.LLMPipeline(str(model_dir), device, **(properties or {}))
        cfg = self.pipe.get_generation_config()  # from the IR folder's generation_config.json
        self.eos = {int(t) for t in cfg.stop_token_ids} | ({int(cfg.eos_token_id)} if cfg.eos_token_id >= 0 else set())
        cfg.do_sample, cfg.num_beams, cfg.repetition_penalty = False, 1, 1.0
        cfg.apply_chat_template, cfg.echo, cfg.ignore_eos, cfg.min_new_tokens = False, False, False, 0
        cfg.no_repeat_ngram_size, cfg.presence_penalty, cfg.frequency_penalty = 0, 0.0, 0.0
        cfg.stop_token_ids = self.eos
        self.config = cfg

    def generate(self, prompt_ids: list[int], max_new_tokens: int, on_token: OnToken | None = None,
                 ignore_eos: bool = False, constraint=None) -> Generation:
        import numpy as np
        import openvino as ov

        if constraint is not None:
            raise NotImplementedError("OpenVINO GenAI: no grammar-constrained decoding (runtimes/openvino.py)")
        if self.max_prompt_len and len(prompt_ids) > self.max_prompt_len:
            raise ValueError(f"prompt of {len(prompt_ids)} tokens exceeds the static shape "
                             f"max_prompt_len={self.max_prompt_len}; raise targets.intel_npu.max_prompt_len")
        ids = np.asarray([prompt_ids], dtype=np.int64)
        inputs = self._genai.TokenizedInputs(ov.Tensor(ids), ov.Tensor(np.ones_like(ids)))
        self.config.max_new_tokens = max_new_tokens
        # ignore_eos: GenAI's sampler sets the stop ids' logits to -inf for the first min_new_tokens
        # tokens (EOSPenaltyTransform), and ignore_eos keeps an end token from ending it anyway
        self.config.ignore_eos = ignore_eos
        self.config.min_new_tokens = max_new_tokens if ignore_eos else 0
        watch = Stopwatch()
        res = self.pipe.generate(inputs, self.config)
        tokens = [int(t) for t in res.tokens[0]]
        finish = "length"
        if tokens and tokens[-1] in self.eos and not ignore_eos:
            tokens.pop()
            finish = "stop"
        if on_token is not None:  # the pipeline ran without a streamer: replay, honouring a stop
            for i, t in enumerate(tokens):
                if on_token(t):
                    tokens, finish = tokens[:i + 1], "stop"
                    break
        ttft_s = res.perf_metrics.get_ttft().mean / 1000.0   # ms in GenAI
        watch.first = min(watch.start + ttft_s, time.perf_counter())
        return watch.result(tokens, finish)

    def close(self) -> None:
        self.pipe = None
