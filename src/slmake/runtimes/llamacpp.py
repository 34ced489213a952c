"""llama.cpp runner (llama-cpp-python): exact greedy decoding on token ids.

We drive the model with ``Llama.eval`` and take the argmax of the last logits ourselves instead
of using llama.cpp's sampler chain, so "greedy" cannot silently mean "temp 0 plus penalties".
"""

from __future__ import annotations

from pathlib import Path

from ..targets.base import Generation, Stopwatch


class LlamaCppRunner:
    def __init__(self, model_path: str | Path, threads: int | None = None, n_ctx: int = 0):
        import llama_cpp

        self._llama_cpp = llama_cpp
        kw = {"n_threads": threads, "n_threads_batch": threads} if threads else {}
        # n_ctx=0: the model's training context; verbose=False keeps llama.cpp's logs off stderr.
        self.llm = llama_cpp.Llama(model_path=str(model_path), n_ctx=n_ctx, seed=0, verbose=False, **kw)
        self.n_ctx = self.llm.n_ctx()
        self.n_vocab = self.llm.n_vocab()
        # every end-of-generation id (EOS, EOT, <|im_end|>...), as llama.cpp itself stops on them
        vocab = llama_cpp.llama_model_get_vocab(self.llm.model)
        self.eos = {t for t in range(self.n_vocab) if llama_cpp.llama_vocab_is_eog(vocab, t)}

    def _argmax_last(self) -> int:
        import numpy as np

        ptr = self._llama_cpp.llama_get_logits_ith(self.llm.ctx, -1)
        return int(np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).argmax())

    def generate(self, prompt_ids: list[int], max_new_tokens: int) -> Generation:
        if len(prompt_ids) >= self.n_ctx:
            raise ValueError(f"prompt of {len(prompt_ids)} tokens does not fit the context ({self.n_ctx})")
        self.llm.reset()          # drops the previous prompt's KV cache (eval removes cells >= n_tokens)
        watch = Stopwatch()
        out: list[int] = []
        self.llm.eval(prompt_ids)
        budget = min(max_new_tokens, self.n_ctx - len(prompt_ids))
        for i in range(budget):
            nxt = self._argmax_last()
            watch.mark_first()
            if nxt in self.eos:
                break
            out.append(nxt)
            if i + 1 < budget:
                self.llm.eval([nxt])
        return watch.result(out)

    def close(self) -> None:
        llm, self.llm = self.llm, None
        if llm is not None:
            llm.close()
