"""ONNX Runtime GenAI runner: greedy generation on token ids with the builder's genai_config.json.

``provider="cpu"`` clears the providers the builder wrote (a cuda-built model then runs on the CPU
EP, which is how cuda artifacts are parity-checked without a GPU); ``provider="cuda"`` keeps them.
Thread count is applied through ``og.Config.overlay`` (the decoder's session_options), so the built
artifact stays untouched and its hash keeps meaning "what the builder wrote".

A ``constraint`` (guide.Guide) is applied in this loop, as for transformers: llguidance picks the
best token the grammar allows from ``get_logits`` and ``set_logits`` hands the generator logits in
which only that token is finite, so its own greedy search takes it.
"""

from __future__ import annotations

import json
from pathlib import Path

from .base import Generation, Greedy, OnToken


class OrtGenAIRunner:
    supports_constraint = True     # decodes under a guide.Guide (serve, evaluate, bench)
    supports_logprobs = True       # generate(..., logprobs=k): from get_logits

    def __init__(self, model_dir: str | Path, threads: int | None = None, provider: str = "cpu"):
        import onnxruntime_genai as og

        self._og = og
        cfg = json.loads((Path(model_dir) / "genai_config.json").read_text())["model"]
        eos = cfg.get("eos_token_id")
        self.eos = set(eos if isinstance(eos, list) else [eos])
        self.context = int(cfg.get("context_length") or 0)
        self.n_vocab = int(cfg.get("vocab_size") or 0)
        config = og.Config(str(model_dir))
        if provider == "cpu":
            config.clear_providers()  # CPU execution provider
            if threads:
                opts = {"intra_op_num_threads": int(threads), "inter_op_num_threads": 1}
                config.overlay(json.dumps({"model": {"decoder": {"session_options": opts}}}))
        self.model = og.Model(config)

    def check_constraint(self, constraint) -> None:
        """Raise ValueError unless llguidance compiles the constraint's grammar for this vocabulary
        (serve checks once at start)."""
        constraint.matcher(self.eos, self.n_vocab) if self.n_vocab else constraint.lark()

    def generate(self, prompt_ids: list[int], max_new_tokens: int, on_token: OnToken | None = None,
                 ignore_eos: bool = False, constraint=None, logprobs: int | None = None) -> Generation:
        import numpy as np

        og = self._og
        max_length = len(prompt_ids) + max_new_tokens
        if self.context:
            max_length = min(max_length, self.context)
        params = og.GeneratorParams(self.model)
        # ignore_eos: min_length = max_length makes the generator set every eos_token_id's logit to
        # the lowest float until the budget is used up (its own EOS suppression)
        params.set_search_options(do_sample=False, num_beams=1, max_length=max_length,
                                  min_length=max_length if ignore_eos else 0, repetition_penalty=1.0)
        run = Greedy(self.eos, on_token, ignore_eos, logprobs=logprobs)   # the clock starts before the prompt
        gen = og.Generator(self.model, params)
        gen.append_tokens(list(prompt_ids))   # prompt ids already carry BOS
        matcher = None
        if constraint is not None:
            matcher = run.matcher = constraint.matcher(self.eos, self.n_vocab or int(gen.get_logits().shape[-1]))
        while len(run.tokens) < max_new_tokens and not gen.is_done():
            if matcher is not None:
                logits = gen.get_logits()
                pick = run.pick(logits[0, -1])
                forced = np.full_like(logits, -np.inf)
                forced[0, -1, pick] = 0.0
                gen.set_logits(forced)
            elif logprobs is not None:
                logits = gen.get_logits()     # the generator's own greedy picks; its logits are noted below
            gen.generate_next_token()
            token = int(gen.get_next_tokens()[0])
            if matcher is None and logprobs is not None:
                run.note(logits[0, -1], token)
            if run.step(token):
                break
        del gen
        return run.result()

    def close(self) -> None:
        self.model = None
