"""The runner contract: load one artifact, greedy-generate from token ids.

Every runtime (transformers, llama.cpp, ONNX Runtime GenAI, OpenVINO GenAI, ONNX Runtime with the
QNN EP) implements ``Runner``. Bench and serve both drive artifacts through these runners only, so
a served answer and a benchmarked answer come from one code path. Runners work on token ids: every
artifact is fed the same ids (the merged model's Hugging Face tokenizer), so parity figures measure
the model and its numerics, not tokenizer differences between runtimes.

This layer imports nothing from ``slmake.targets``: targets build artifacts and pick a runner.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from .confidence import token_logprob

# Called with each generated id (before the next is computed); returning True stops generation.
# Serve uses it for streaming and for stop strings; bench passes None.
OnToken = Callable[[int], bool]


@dataclass
class Generation:
    tokens: list[int]                 # generated ids, without the prompt, without the final EOS
    ttft_s: float                     # prompt processing + first token
    decode_s: float                   # time for the remaining tokens
    finish_reason: str = "stop"       # "stop" (an end-of-generation token), "length" (budget or context)
    # with generate(..., logprobs=k): each kept token's log-probability under the model's softmax
    # (before any grammar), and the k most likely (id, log-probability) at its position
    logprobs: list[float] | None = None
    top_logprobs: list[list[tuple[int, float]]] | None = None


class Runner(Protocol):
    eos: set[int]

    # ignore_eos=True: end-of-generation tokens are suppressed (never picked), so exactly
    # max_new_tokens are generated (context permitting) - bench's fixed-length decode timing.
    # constraint (guide.Guide): decode under the response schema's grammar, as serve does
    # logprobs=k (runners with ``supports_logprobs``): Generation.logprobs / top_logprobs (k best)
    def generate(self, prompt_ids: list[int], max_new_tokens: int,
                 ignore_eos: bool = False, constraint=None) -> Generation: ...

    def close(self) -> None: ...


class Stopwatch:
    """Splits TTFT from decode time; runners call ``mark_first`` when the first token is known."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.first: float | None = None

    def mark_first(self) -> None:
        if self.first is None:
            self.first = time.perf_counter()

    def result(self, tokens: list[int], finish_reason: str = "stop") -> Generation:
        end = time.perf_counter()
        first = self.first if self.first is not None else end
        return Generation(tokens=tokens, ttft_s=first - self.start, decode_s=end - first,
                          finish_reason=finish_reason)


class Greedy:
    """One greedy generation's bookkeeping, shared by every runtime's loop: time to the first token,
    the tokens kept, and why it ended. ``step(token)`` returns True when generation ends there (an
    end-of-generation token, which is not kept, or ``on_token`` asking to stop).

    ``ignore_eos``: ``pick`` never returns an end-of-generation id (the next best token instead, as
    llama.cpp's ``--ignore-eos`` biases every EOG token to -inf), so only the budget ends it.

    ``matcher`` (guide.Matcher): decode under the response schema's grammar; ``pick`` returns the
    best token the grammar allows and ``step`` advances the grammar.

    ``logprobs`` (None: off): each kept token's log-probability and the ``logprobs`` best
    alternatives (confidence.token_logprob), from the logits ``pick`` saw (or ``note`` was given)."""

    def __init__(self, eos: set[int], on_token: OnToken | None = None, ignore_eos: bool = False,
                 matcher=None, logprobs: int | None = None) -> None:
        self.eos, self.on_token = (set() if ignore_eos else eos), on_token
        self.suppress = sorted(eos) if ignore_eos else []
        self.matcher = matcher
        self.watch = Stopwatch()
        self.tokens: list[int] = []
        self.finish = "length"
        self.top = logprobs
        self.logprobs: list[float] | None = None if logprobs is None else []
        self.top_logprobs: list[list[tuple[int, float]]] | None = None if logprobs is None else []
        self._noted: tuple[float, list] | None = None

    def pick(self, logits) -> int:
        """Greedy id from one position's logits (a 1-D numpy array or torch tensor)."""
        best = self._pick(logits)
        self.note(logits, best)
        return best

    def _pick(self, logits) -> int:
        if self.matcher is not None:
            return self.matcher.pick(logits, self.suppress)
        best = int(logits.argmax())
        if not self.suppress or best not in self.suppress:
            return best
        masked = logits.clone() if hasattr(logits, "clone") else logits.copy()
        masked[self.suppress] = float("-inf")
        return int(masked.argmax())

    def note(self, logits, token: int) -> None:
        """The log-probabilities of ``token`` at this position (logprobs on), for the next ``step``;
        a runner that picks without ``pick`` (llama.cpp's grammar sampler) calls it itself."""
        if self.top is not None:
            self._noted = token_logprob(logits, token, self.top)

    def step(self, token: int) -> bool:
        self.watch.mark_first()
        if token in self.eos:
            self.finish = "stop"
            return True
        if self.matcher is not None:
            self.matcher.accept(token)
        self.tokens.append(token)
        if self.logprobs is not None:
            lp, top = self._noted if self._noted is not None else (float("nan"), [])
            self.logprobs.append(lp)
            self.top_logprobs.append(top)
            self._noted = None
        if self.on_token is not None and self.on_token(token):
            self.finish = "stop"
            return True
        return False

    def result(self) -> Generation:
        gen = self.watch.result(self.tokens, self.finish)
        gen.logprobs, gen.top_logprobs = self.logprobs, self.top_logprobs
        return gen
