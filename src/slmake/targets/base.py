"""What every hardware target declares (the Olive pass-registry idea, without inheritance).

A target is a module in ``slmake.targets`` exposing a module-level ``TARGET: TargetInfo``
plus three functions:

    probe() -> Probe                         # is the hardware (and its runtime) on this host?
    compile(merged_dir, out_dir, settings) -> list[Artifact]
    open_runner(artifact, artifact_dir, bench) -> Runner   # raise Skipped(reason) when it cannot run here

Runners work on token ids: every artifact is fed the same ids (tokenised once by the merged
model's Hugging Face tokenizer), so parity figures measure the model and its numerics, not
tokenizer differences between runtimes.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class TargetInfo:
    name: str
    description: str
    formats: tuple[str, ...]          # artifact formats this target produces
    runtime: str                      # what benchmarks them
    packages: tuple[str, ...]         # toolchain distributions (versions go in manifests)
    devices: tuple[str, ...]          # hardware it is meant for


@dataclass(frozen=True)
class Probe:
    present: bool
    reason: str                       # why not, or what was found


class Skipped(Exception):
    """Raised by open_runner when an artifact cannot run on this host; the message is the reason."""


@dataclass
class Artifact:
    name: str                         # unique within the target, e.g. "gguf_q4_k_m"
    format: str                       # e.g. "gguf", "onnx-genai", "openvino-ir"
    precision: str                    # e.g. "f16", "q8_0", "int4"
    path: str                         # file or folder, relative to the target's out dir
    runtime: str                      # e.g. "llama.cpp"
    status: str = "built"             # "built", or "failed" (toolchain missing, op unsupported, ...)
    reason: str = ""                  # why it failed, in words a user can act on
    notes: dict = field(default_factory=dict)   # settings worth recording (static shapes, graph fixes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Artifact":
        return cls(**d)


@dataclass
class Generation:
    tokens: list[int]                 # generated ids, without the prompt, without the final EOS
    ttft_s: float                     # prompt processing + first token
    decode_s: float                   # time for the remaining tokens


class Runner(Protocol):
    def generate(self, prompt_ids: list[int], max_new_tokens: int) -> Generation: ...

    def close(self) -> None: ...


class Stopwatch:
    """Tiny helper runners use to split TTFT from decode time."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.first: float | None = None

    def mark_first(self) -> None:
        if self.first is None:
            self.first = time.perf_counter()

    def result(self, tokens: list[int]) -> Generation:
        end = time.perf_counter()
        first = self.first if self.first is not None else end
        return Generation(tokens=tokens, ttft_s=first - self.start, decode_s=end - first)
