"""llama.cpp runner (llama-cpp-python): exact greedy decoding on token ids.

We drive the model with ``Llama.eval`` and take the argmax of the last logits ourselves instead
of using llama.cpp's sampler chain, so "greedy" cannot silently mean "temp 0 plus penalties".
With a JSON Schema ``constraint`` (serve), llama.cpp's own JSON-Schema-to-GBNF converter builds a
grammar and llama.cpp's grammar sampler masks what it forbids. As in llama.cpp's own common
sampler, the argmax is checked against the grammar first and the whole vocabulary is masked only
when it is rejected: the grammar only removes tokens, so whenever the unconstrained argmax is
allowed the answer is bench's, and the check costs one token instead of the vocabulary.

llama.cpp is built with one CPU backend per instruction-set level (requirements/llama_cpp.sh), each
a ``libggml-cpu-<variant>.so`` that nothing loads until asked; ``load_llama_cpp`` asks. Every use of
llama_cpp in slmake goes through it.
"""

from __future__ import annotations

import json
from pathlib import Path

from .base import Generation, Greedy, OnToken

# re-exported: callers (bench, serve, install.sh's llama_cpp tail, tests) import them from here
from .llama_backend import PIN_ENV, cpu_variant, load_llama_cpp  # noqa: F401
from .text_grammar import TextAnswer, text_gbnf


class LlamaCppRunner:
    supports_constraint = True
    supports_logprobs = True       # generate(..., logprobs=k): from the logits slmake reads anyway

    def __init__(self, model_path: str | Path, threads: int | None = None, n_ctx: int = 0):
        llama_cpp = load_llama_cpp()

        self._llama_cpp = llama_cpp
        self.details = {"ggml_cpu_variant": cpu_variant()}   # bench's details file records it
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

    def grammar(self, schema) -> str:
        """GBNF for a JSON Schema, from llama.cpp's converter (cached per schema). Properties keep
        the schema's declaration order (the converter sorts them alphabetically otherwise, which
        would force an order the model was never trained on). A ``TextAnswer`` (a plain-text answer)
        gets the bare string its schema allows, without JSON's quotes (text_grammar.text_gbnf)."""
        if hasattr(schema, "gbnf"):          # a guide.Guide: the grammar is built already
            return schema.gbnf
        key = json.dumps(["text", schema.schema] if isinstance(schema, TextAnswer) else schema)
        if key not in self._grammars:
            self._grammars[key] = gbnf_for(schema)
        return self._grammars[key]

    def _grammar_sampler(self, constraint):
        sampler = self._llama_cpp.llama_sampler_init_grammar(self.vocab, self.grammar(constraint).encode(), b"root")
        if not sampler:
            raise ValueError("llama.cpp could not compile a grammar from the response schema")
        return sampler

    def check_constraint(self, constraint) -> None:
        """Raise (ValueError, text_grammar.TextGrammarUnsupported) unless llama.cpp compiles the
        constraint's grammar: serve checks once at start instead of failing every request."""
        self._llama_cpp.llama_sampler_free(self._grammar_sampler(constraint))

    def accepts(self, constraint, tokens: list[int], stopped: bool) -> bool:
        """Whether decoding under the constraint's grammar gives exactly ``tokens`` (a free greedy
        output): llama.cpp's grammar allows each token in turn, and the end of generation after them
        when it ``stopped`` there. Bench keeps such an output instead of decoding it again."""
        import ctypes

        import numpy as np

        lc = self._llama_cpp
        grammar = self._grammar_sampler(constraint)
        try:
            for t in list(tokens) + ([min(self.eos)] if stopped else []):
                one = (lc.llama_token_data * 1)(lc.llama_token_data(t, 0.0, 0.0))
                arr = lc.llama_token_data_array(data=one, size=1, selected=-1, sorted=False)
                lc.llama_sampler_apply(grammar, ctypes.byref(arr))
                if not np.isfinite(one[0].logit):
                    return False
                lc.llama_sampler_accept(grammar, t)
            return True
        finally:
            lc.llama_sampler_free(grammar)

    def _argmax_last(self, run: Greedy) -> int:
        import numpy as np

        ptr = self._llama_cpp.llama_get_logits_ith(self.llm.ctx, -1)
        return run.pick(np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)))

    def generate(self, prompt_ids: list[int], max_new_tokens: int, on_token: OnToken | None = None,
                 constraint=None, ignore_eos: bool = False, logprobs: int | None = None) -> Generation:
        if len(prompt_ids) >= self.n_ctx:
            raise ValueError(f"prompt of {len(prompt_ids)} tokens does not fit the context ({self.n_ctx})")
        lc = self._llama_cpp
        grammar = None
        if constraint is not None:
            grammar = self._grammar_sampler(constraint)
        self.llm.reset()          # drops the previous prompt's KV cache (eval removes cells >= n_tokens)
        run = Greedy(self.eos, on_token, ignore_eos, logprobs=logprobs)
        try:
            self.llm.eval(prompt_ids)
            budget = min(max_new_tokens, self.n_ctx - len(prompt_ids))
            for i in range(budget):
                nxt = self._argmax_last(run) if grammar is None else self._constrained_argmax(grammar, run)
                if run.step(nxt):
                    break
                if i + 1 < budget:
                    self.llm.eval([nxt])
        finally:
            if grammar is not None:
                lc.llama_sampler_free(grammar)
        return run.result()

    def _constrained_argmax(self, grammar, run: Greedy) -> int:
        import ctypes

        import numpy as np

        lc = self._llama_cpp
        logits = np.ctypeslib.as_array(lc.llama_get_logits_ith(self.llm.ctx, -1), shape=(self.n_vocab,))
        best = int(logits.argmax())
        one = (lc.llama_token_data * 1)(lc.llama_token_data(best, float(logits[best]), 0.0))
        arr = lc.llama_token_data_array(data=one, size=1, selected=-1, sorted=False)
        lc.llama_sampler_apply(grammar, ctypes.byref(arr))
        if not np.isfinite(one[0].logit):     # the grammar rejects the argmax: mask the whole vocabulary
            data = (lc.llama_token_data * self.n_vocab)()
            view = np.ctypeslib.as_array(data)
            view["id"], view["logit"], view["p"] = np.arange(self.n_vocab), logits, 0.0
            arr = lc.llama_token_data_array(data=data, size=self.n_vocab, selected=-1, sorted=False)
            lc.llama_sampler_apply(grammar, ctypes.byref(arr))
            best = int(view["id"][int(view["logit"].argmax())])
        lc.llama_sampler_accept(grammar, best)
        run.note(logits, best)     # the model's probabilities, before the grammar's mask
        return best

    def close(self) -> None:
        llm, self.llm = self.llm, None
        if llm is not None:
            llm.close()


def gbnf_for(constraint: dict | TextAnswer) -> str:
    """The GBNF every runtime decodes a response schema under (runtimes/guide.py): llama.cpp's
    JSON-Schema converter for a JSON answer (a dict), the bare string for a ``TextAnswer``."""
    if isinstance(constraint, TextAnswer):
        return text_gbnf(constraint.schema)
    return load_llama_cpp().llama_grammar.json_schema_to_gbnf(
        json.dumps(constraint), prop_order=_property_order(constraint))


def _property_order(schema) -> list[str]:
    """Every property name in declaration order, nested objects included."""
    order: list[str] = []
    stack = [schema]
    while stack:
        node = stack.pop(0)
        if isinstance(node, dict):
            order += [k for k in (node.get("properties") or {}) if k not in order]
            stack += list(node.values())
        elif isinstance(node, list):
            stack += node
    return order
