"""llama.cpp runner (llama-cpp-python): exact greedy decoding on token ids.

We drive the model with ``Llama.eval`` and take the argmax of the last logits ourselves instead
of using llama.cpp's sampler chain, so "greedy" cannot silently mean "temp 0 plus penalties".
With a JSON Schema ``constraint`` (serve), llama.cpp's own JSON-Schema-to-GBNF converter builds a
grammar and a [grammar, greedy] sampler chain picks each token: the grammar only masks tokens, so
whenever the unconstrained argmax is allowed the answer is the same as bench's.
"""

from __future__ import annotations

import json
from pathlib import Path

from .base import Generation, OnToken, Stopwatch


class LlamaCppRunner:
    supports_constraint = True

    def __init__(self, model_path: str | Path, threads: int | None = None, n_ctx: int = 0):
        import llama_cpp

        self._llama_cpp = llama_cpp
        kw = {"n_threads": threads, "n_threads_batch": threads} if threads else {}
        # n_ctx=0: the model's training context; verbose=False keeps llama.cpp's logs off stderr.
        self.llm = llama_cpp.Llama(model_path=str(model_path), n_ctx=n_ctx, seed=0, verbose=False, **kw)
        self.n_ctx = self.llm.n_ctx()
        self.n_vocab = self.llm.n_vocab()
        # every end-of-generation id (EOS, EOT, <|im_end|>...), as llama.cpp itself stops on them
        self.vocab = llama_cpp.llama_model_get_vocab(self.llm.model)
        self.eos = {t for t in range(self.n_vocab) if llama_cpp.llama_vocab_is_eog(self.vocab, t)}
        self._grammars: dict[str, str] = {}

    def token_text(self, token: int) -> str:
        """The token's text as the GGUF's vocabulary spells it (special tokens included)."""
        return self.llm.detokenize([token], special=True).decode("utf-8", errors="replace")

    def grammar(self, schema: dict) -> str:
        """GBNF for a JSON Schema, from llama.cpp's converter (cached per schema)."""
        key = json.dumps(schema, sort_keys=True)
        if key not in self._grammars:
            from llama_cpp.llama_grammar import json_schema_to_gbnf

            self._grammars[key] = json_schema_to_gbnf(key)
        return self._grammars[key]

    def _argmax_last(self) -> int:
        import numpy as np

        ptr = self._llama_cpp.llama_get_logits_ith(self.llm.ctx, -1)
        return int(np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).argmax())

    def generate(self, prompt_ids: list[int], max_new_tokens: int, on_token: OnToken | None = None,
                 constraint: dict | None = None) -> Generation:
        if len(prompt_ids) >= self.n_ctx:
            raise ValueError(f"prompt of {len(prompt_ids)} tokens does not fit the context ({self.n_ctx})")
        lc = self._llama_cpp
        sampler = None
        if constraint is not None:
            sampler = lc.llama_sampler_chain_init(lc.llama_sampler_chain_default_params())
            lc.llama_sampler_chain_add(sampler, lc.llama_sampler_init_grammar(
                self.vocab, self.grammar(constraint).encode(), b"root"))
            lc.llama_sampler_chain_add(sampler, lc.llama_sampler_init_greedy())
        self.llm.reset()          # drops the previous prompt's KV cache (eval removes cells >= n_tokens)
        watch = Stopwatch()
        out: list[int] = []
        finish = "length"
        try:
            self.llm.eval(prompt_ids)
            budget = min(max_new_tokens, self.n_ctx - len(prompt_ids))
            for i in range(budget):
                nxt = self._argmax_last() if sampler is None else int(lc.llama_sampler_sample(sampler, self.llm.ctx, -1))
                watch.mark_first()
                if nxt in self.eos:
                    finish = "stop"
                    break
                out.append(nxt)
                if on_token is not None and on_token(nxt):
                    finish = "stop"
                    break
                if i + 1 < budget:
                    self.llm.eval([nxt])
        finally:
            if sampler is not None:
                lc.llama_sampler_free(sampler)
        return watch.result(out, finish)

    def close(self) -> None:
        llm, self.llm = self.llm, None
        if llm is not None:
            llm.close()
