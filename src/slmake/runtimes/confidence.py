"""How sure the model was: token log-probabilities, and the probability of an enum answer's label.

``token_logprob`` is the log-softmax of one position's logits at the chosen token (and the ``top``
best alternatives), the model's own distribution before any grammar masks it: what OpenAI's
``logprobs`` report, and what llama.cpp's llama-server returns for ``n_probs`` (its pre-sampling
probabilities). Every runner that sees logits records it the same way (base.Greedy), so serve and
bench compute one figure.

The label's probability: when the response schema's label field (``data.label_field``) is an enum
(or the whole answer is, a text answer), the probability of the chosen label is the product of the
probabilities of the tokens that spell its value, the quotes included (the token that closes the
string decides where the label ends): exp of the sum of their log-probabilities. Under the grammar
only the enum's labels can be produced, so this is the model's probability of this label among the
others (a lower bound of it: the mass the grammar masked away counts against it).
``coverage_table`` turns per-answer probabilities into what a threshold (``serve.min_confidence``)
does: the share of answers kept and their accuracy.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence

THRESHOLDS = (0.0, 0.3, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)   # the report's coverage/accuracy rows


def token_logprob(logits, token: int, top: int = 0) -> tuple[float, list[tuple[int, float]]]:
    """(log p(token), [(id, log p) of the ``top`` most likely tokens, best first, ties by id]) under
    the softmax of ``logits`` (a 1-D numpy array or torch tensor)."""
    import numpy as np

    if hasattr(logits, "detach"):   # torch
        logits = logits.detach().float().cpu().numpy()
    x = np.asarray(logits, dtype=np.float32).reshape(-1)   # a view: the runner's own buffer, not copied
    m = float(x.max())
    lse = m + math.log(float(np.exp(x - m).sum(dtype=np.float64)))
    best: list[tuple[int, float]] = []
    if top > 0:
        k = min(top, x.size)
        idx = np.argpartition(x, x.size - k)[x.size - k:]
        best = [(int(i), float(x[i]) - lse) for i in sorted(idx.tolist(), key=lambda i: (-float(x[i]), i))]
    return float(x[token]) - lse, best


def label_target(schema: dict | None, label_field: str | None) -> tuple[bool, str | None]:
    """(whether answers have an enum label, the JSON field that holds it or None for the whole
    answer): the label field when the schema makes it an enum, else the root when the schema is an
    enum itself (a text answer), else (False, None)."""
    if not isinstance(schema, dict):
        return False, None
    props = schema.get("properties") or {}
    if label_field and isinstance(props.get(label_field), dict) and "enum" in props[label_field]:
        return True, label_field
    if "enum" in schema:
        return True, None
    return False, None


def value_span(text: str, field: str | None) -> tuple[int, int] | None:
    """The [start, end) characters of ``field``'s value in the JSON object ``text`` (a string's
    quotes included), of the whole answer without its surrounding whitespace when ``field`` is None;
    None when the text holds no such value."""
    if field is None:
        start, end = len(text) - len(text.lstrip()), len(text.rstrip())
        return (start, end) if end > start else None
    decoder, scan = json.JSONDecoder(), json.decoder.scanstring

    def skip(i: int) -> int:
        while i < len(text) and text[i] in " \t\r\n":
            i += 1
        return i

    try:
        i = skip(0)
        if text[i:i + 1] != "{":
            return None
        i = skip(i + 1)
        while i < len(text) and text[i] == '"':
            key, i = scan(text, i + 1)
            i = skip(i)
            if text[i:i + 1] != ":":
                return None
            start = skip(i + 1)
            _, end = decoder.raw_decode(text, start)
            if key == field:
                return start, end
            i = skip(end)
            if text[i:i + 1] != ",":
                return None
            i = skip(i + 1)
    except (ValueError, IndexError):
        return None
    return None


def token_ends(tokens: Sequence[int], decode: Callable[[list[int]], str]) -> list[int]:
    """The character where each token ends in ``decode(tokens)`` (decoding each prefix)."""
    return [len(decode(list(tokens[:i + 1]))) for i in range(len(tokens))]


def span_logprob(logprobs: Sequence[float], ends: Sequence[int], span: tuple[int, int]) -> float:
    """The sum of the log-probabilities of the tokens that overlap ``span``."""
    total, begin = 0.0, 0
    for lp, end in zip(logprobs, ends):
        if end > span[0] and begin < span[1]:
            total += lp
        begin = max(begin, end)
    return total


def label_probability(tokens: Sequence[int], logprobs: Sequence[float] | None, decode: Callable[[list[int]], str],
                      field: str | None, ends: Sequence[int] | None = None) -> float | None:
    """The chosen label's probability (module docstring), None without log-probabilities or a label
    value in the answer. ``ends``: token_ends(tokens, decode) when the caller has them already."""
    if logprobs is None or len(logprobs) != len(tokens) or not tokens:
        return None
    span = value_span(decode(list(tokens)), field)
    if span is None:
        return None
    return math.exp(span_logprob(logprobs, token_ends(tokens, decode) if ends is None else ends, span))


def coverage_table(probs: Sequence[float | None], hits: Sequence[bool],
                   thresholds: Sequence[float] = THRESHOLDS) -> list[dict]:
    """For each threshold t: the answers ``serve.min_confidence: t`` would give (label probability
    >= t; an answer without one counts as 0, t = 0 keeps every answer), their share (coverage) and
    accuracy (share of ``hits`` among them; None when none are kept)."""
    n = len(probs)
    rows = []
    for t in thresholds:
        kept = [h for p, h in zip(probs, hits) if not needs_review(p, t)]
        rows.append({"min_confidence": t, "answered": len(kept),
                     "coverage": round(len(kept) / n, 4) if n else None,
                     "accuracy": round(sum(kept) / len(kept), 4) if kept else None})
    return rows


def needs_review(probability: float | None, min_confidence: float | None) -> bool:
    """Whether ``serve.min_confidence`` routes this answer to a person: a threshold is set and the
    label's probability is below it (an unknown one counts as 0)."""
    if min_confidence is None:
        return False
    return (probability or 0.0) < min_confidence
