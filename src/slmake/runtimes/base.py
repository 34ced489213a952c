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
from dataclasses import dataclass
from typing import Callable, Protocol

# Called with each generated id (before the next is computed); returning True stops generation.
# Serve uses it for streaming and for stop strings; bench passes None.
OnToken = Callable[[int], bool]


@dataclass
class Generation:
    tokens: list[int]                 # generated ids, without the prompt, without the final EOS
    ttft_s: float                     # prompt processing + first token
    decode_s: float                   # time for the remaining tokens
    finish_reason: str = "stop"       # "stop" (an end-of-generation token), "length" (budget or context)


class Runner(Protocol):
    eos: set[int]

    def generate(self, prompt_ids: list[int], max_new_tokens: int) -> Generation: ...

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
