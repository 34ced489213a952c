"""Decode as served: the response schema's grammar, one for every runtime.

``slmake serve`` decodes under the response schema's grammar; evaluate and bench decode under the
same grammar (``eval.constrained``), so the accuracy a build reports is the served one. One GBNF
text per schema, built once (``gbnf_for``): llama.cpp's own JSON-Schema converter for a JSON answer,
``text_grammar.text_gbnf`` for a plain-text answer (one leading space allowed: a label written as one
word-start token, SentencePiece's ``▁network``, is matched by its bytes " network" in llama.cpp and
llguidance alike). Each runtime then enforces that same text:

* llama.cpp: its grammar sampler (runtimes/llamacpp.py).
* transformers and ONNX Runtime GenAI: llguidance masks the logits in slmake's own greedy loop
  (``Matcher.pick``: the argmax is checked first and the vocabulary is masked only when the grammar
  rejects it, so whenever the free argmax is allowed the token is the free one, bit for bit).
* OpenVINO GenAI: its own structured-output sampler (xgrammar inside GenAI) with the same GBNF.

llguidance (MIT, one abi3 CPU wheel with no dependencies, the engine ONNX Runtime GenAI's own
guidance is built on) reads GBNF through its converter; a mask over SmolLM2's 49k vocabulary takes
tens of microseconds. Its tokenizer is the merged model's Hugging Face tokenizer: every runtime is
fed and emits those ids.
"""

from __future__ import annotations

from .llamacpp import gbnf_for
from .text_grammar import TextAnswer, TextGrammarUnsupported

__all__ = ["Guide", "Matcher", "TextGrammarUnsupported", "decode_constraint", "gbnf_for"]


def decode_constraint(setting: bool | None, schema: dict | None, response_format: str = "json"
                      ) -> tuple[str | None, str | None]:
    """(GBNF to decode under or None, why not when ``setting`` is null and there is none).

    ``setting`` is ``eval.constrained``: null = exactly when serve enforces the schema (a response
    schema the grammar can express), true = always (an error when it cannot), false = never."""
    if setting is False:
        return None, "eval.constrained: false"
    if not schema:
        if setting:
            raise ValueError("eval.constrained: true needs data.response_schema (nothing to constrain to)")
        return None, "no data.response_schema"
    constraint = TextAnswer(schema) if response_format == "text" else schema
    try:
        return gbnf_for(constraint), None
    except TextGrammarUnsupported as e:
        if setting:
            raise ValueError(f"eval.constrained: true, but the response schema has no grammar: {e}") from None
        return None, str(e)


class Guide:
    """One grammar, compiled once, for every generation that decodes under it. ``gbnf`` is what
    llama.cpp and OpenVINO GenAI take; ``tokenizer_json`` (the Hugging Face tokenizer.json the ids
    come from) is what llguidance needs to mask logits (transformers, ONNX Runtime GenAI)."""

    def __init__(self, gbnf: str, tokenizer_json: str | None = None):
        self.gbnf, self.tokenizer_json = gbnf, tokenizer_json
        self._lark: str | None = None
        self._templates: dict[tuple, object] = {}

    def lark(self) -> str:
        """The grammar in llguidance's Lark dialect (ValueError when it cannot convert it)."""
        if self._lark is None:
            import llguidance

            self._lark = llguidance.grammar_from("gbnf", self.gbnf)
        return self._lark

    def matcher(self, eos: set[int], n_vocab: int) -> Matcher:
        """A fresh matcher at the grammar's start: a copy of one compiled per (eos, vocabulary)."""
        key = (tuple(sorted(eos)), n_vocab)
        if key not in self._templates:
            import llguidance

            if self.tokenizer_json is None:
                raise ValueError("this runtime masks logits itself and needs the tokenizer: "
                                 "Guide(gbnf, tokenizer_json)")
            tok = llguidance.LLTokenizer(self.tokenizer_json, n_vocab=n_vocab, eos_token=list(key[0]))
            template = llguidance.LLMatcher(tok, self.lark())
            if template.is_error():
                raise ValueError(f"llguidance cannot compile the response schema's grammar: {template.get_error()}")
            self._templates[key] = template
        return Matcher(self._templates[key].deep_copy(), n_vocab)

    def accepts(self, tokens: list[int], stopped: bool, eos: set[int], n_vocab: int) -> bool:
        """Whether decoding under the grammar would give exactly ``tokens`` (the free greedy output):
        every token allowed in turn, then, when generation ``stopped`` on an end-of-generation
        token, that too. Constrained greedy only departs from free greedy at a rejected token."""
        seq = list(tokens) + ([min(eos)] if stopped else [])
        return self.matcher(eos, n_vocab).m.validate_tokens(seq) == len(seq)


class Matcher:
    """One generation's grammar state: ``pick`` the greedy token the grammar allows, ``accept`` it."""

    def __init__(self, m, n_vocab: int):
        self.m, self.n_vocab = m, n_vocab

    def allowed(self):
        """The grammar's mask as a numpy bool array of n_vocab entries."""
        import numpy as np

        bits = np.frombuffer(self.m.compute_bitmask(), dtype=np.uint8)
        return np.unpackbits(bits, bitorder="little")[: self.n_vocab].astype(bool)

    def pick(self, logits, suppress: list[int] | None = None) -> int:
        """The argmax of ``logits`` (1-D numpy array or torch tensor) among the tokens the grammar
        allows now; an unmasked argmax the grammar allows is returned as is."""
        best = int(logits.argmax())
        if (not suppress or best not in suppress) and self.m.validate_tokens([best]) == 1:
            return best
        allowed = self.allowed()
        if suppress:
            allowed[suppress] = False
        if not allowed.any():
            raise RuntimeError(f"the response schema's grammar allows no token here ({self.m.get_error()})")
        if hasattr(logits, "masked_fill"):     # torch
            import torch

            mask = torch.from_numpy(allowed).to(logits.device)
            width = min(len(mask), logits.shape[-1])
            masked = logits[:width].masked_fill(~mask[:width], float("-inf"))
        else:
            import numpy as np

            masked = np.where(allowed[: len(logits)], logits[: len(allowed)], -np.inf)
        return int(masked.argmax())

    def accept(self, token: int) -> None:
        if not self.m.consume_token(token):
            raise RuntimeError(f"the grammar rejected token {token}: {self.m.get_error()}")
