"""Log-probabilities and confidence in OpenAI's response shapes, and the "needs review" routing.

- ``/v1/completions`` with ``logprobs: k`` (0..MAX_TOP): each choice's ``logprobs`` is the legacy
  object ``{tokens, token_logprobs, top_logprobs: [{text: logprob}], text_offset}``.
- ``/v1/chat/completions`` with ``logprobs: true`` (and ``top_logprobs: k``): each choice's
  ``logprobs`` is ``{content: [{token, logprob, bytes, top_logprobs: [{token, logprob, bytes}]}],
  refusal: null}``.
- Streamed (``stream: true``): the answer's tokens' log-probabilities come in the last chunk (the one
  with ``finish_reason``, after the answer was validated), in the same shapes.

The log-probabilities are the model's own (its softmax, before the response schema's grammar
masked anything), as llama.cpp's llama-server reports them. Every answer whose label is an enum
(the schema's ``data.label_field``, or a text answer's whole string) carries the label's
probability in the ``slmake`` extension (``slmake.confidence``); with ``serve.min_confidence`` set,
an answer below it is not given: the content is ``serve.review_answer``, ``finish_reason`` is
``"needs_review"`` and ``slmake.needs_review`` is true, the withheld guess in ``slmake.guess``.
"""

from __future__ import annotations

from ..runtimes.confidence import needs_review as below
from .engine import Answer

MAX_TOP = 20          # alternatives per token (OpenAI allows 20 on chat, 5 on completions)
NEEDS_REVIEW = "needs_review"   # the finish_reason of an answer withheld for a person


def completion_logprobs(ans: Answer) -> dict | None:
    """The legacy completions ``logprobs`` object of an answer, None without log-probabilities."""
    if ans.token_logprobs is None:
        return None
    tops = []
    for t in ans.token_logprobs:
        alts: dict[str, float] = {}
        for text, lp in t["top"]:
            alts.setdefault(text, lp)     # two ids that decode alike: the likelier (listed first)
        tops.append(alts)
    return {"tokens": [t["token"] for t in ans.token_logprobs],
            "token_logprobs": [t["logprob"] for t in ans.token_logprobs],
            "top_logprobs": tops, "text_offset": [t["offset"] for t in ans.token_logprobs]}


def chat_logprobs(ans: Answer) -> dict | None:
    """The chat completions ``logprobs`` object of an answer, None without log-probabilities."""
    if ans.token_logprobs is None:
        return None
    return {"content": [{"token": t["token"], "logprob": t["logprob"], "bytes": list(t["token"].encode()),
                         "top_logprobs": [{"token": a, "logprob": lp, "bytes": list(a.encode())} for a, lp in t["top"]]}
                        for t in ans.token_logprobs], "refusal": None}


def label_of(ans: Answer, label_field: str | None) -> str | None:
    """The answer's label: its label field's value (a JSON answer), the whole text (a text answer)."""
    if label_field is None:
        return ans.text
    value = (ans.parsed or {}).get(label_field)
    return None if value is None else str(value)


def needs_review(ans: Answer, min_confidence: float | None) -> bool:
    """Whether this answer goes to a person instead of the client: a threshold is set, the answer has
    an enum label, and its probability is below the threshold."""
    return min_confidence is not None and ans.schema_valid is True and below(ans.confidence, min_confidence)


def slmake_fields(ans: Answer, engine, min_confidence: float | None) -> dict:
    """The ``slmake`` extension of a choice: the validation, the label's probability (None when the
    answer has no enum label or the engine no probabilities) and, with ``serve.min_confidence``,
    whether the answer was withheld (and the guess that was)."""
    out: dict = {"schema_valid": ans.schema_valid, "parsed": ans.parsed}
    if engine.label_enum:
        out["confidence"] = None if ans.confidence is None else {
            "label_field": engine.label_field, "label": label_of(ans, engine.label_field),
            "probability": round(ans.confidence, 6)}
    if min_confidence is not None:
        out["needs_review"] = needs_review(ans, min_confidence)
        if out["needs_review"]:
            out["guess"] = ans.text
    return out
