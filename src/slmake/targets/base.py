"""What every hardware target declares (the Olive pass-registry idea, without inheritance).

A target is a module in ``slmake.targets`` exposing a module-level ``TARGET: TargetInfo``
plus four functions:

    probe() -> Probe                         # is the hardware (and its runtime) on this host?
    validate_settings(settings) -> list[str] # semantic problems the JSON Schema cannot express
    compile(ctx: BuildContext, settings) -> list[Artifact]
    open_runner(artifact, artifact_dir, bench) -> Runner   # raise Skipped(reason) when it cannot run here

A target is one folder, ``targets/<name>/``: its module, its ``schema.json`` (the settings'
only definition: enums, ranges, required keys) and whatever it alone uses (e.g. the Qualcomm
exporter). The compile and bench drivers validate settings against that schema once and print
sizes and timings; a target receives validated settings and the paths it may use.

The runner a target returns follows ``slmake.runtimes.base.Runner``; the runtime layer does not
import targets, targets import runtimes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


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
    def from_dict(cls, d: dict) -> Artifact:
        return cls(**d)


@dataclass
class BuildContext:
    """Everything a target's compile may read or write, passed in by the stage (targets never
    derive build paths themselves)."""
    merged: Path                              # the fine-tuned HF safetensors folder
    out: Path                                 # where artifacts go (a temp folder, swapped in whole)
    data: Path                                # the curated splits (e.g. calibration data)
    logs: Path                                # toolchain logs: outside the cached output
    done: Callable[[Artifact], None] = lambda art: None   # once per finished artifact (progress)
    base: Path | None = None                  # the HF folder that was fine-tuned (build/base), if known
