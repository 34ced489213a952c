"""Answer one request exactly as bench measured the artifact: the same runner (opened by the
target's own ``open_runner``), the training prompt template, the same tokenizer ids, greedy.

With a response schema the GGUF runner decodes under llama.cpp's JSON-Schema grammar; every
runtime's answer is then validated, and an invalid one is reported as such, never as a valid
answer. One generation runs at a time (a runner is not thread-safe); the HTTP layer queues.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass

from jsonschema import Draft202012Validator

from .. import runtime_env, targets
from ..data.config import format_prompt
from ..data.normalize import normalize
from ..targets.base import Artifact
from .package import Package


@dataclass
class Answer:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str                 # "stop" | "length"
    ttft_s: float
    latency_s: float
    schema_valid: bool | None          # None: no schema for this task
    parsed: dict | None
    error: str | None = None           # why the answer is not usable (schema), None when it is
    queue_s: float = 0.0               # of latency_s, the time spent waiting for the runner (load, not work)


class InputError(ValueError):
    """The request cannot be answered as sent (too long, empty); the message is for the client."""


class Engine:
    def __init__(self, package: Package, *, enforce_schema: bool = True, threads: int | None = None):
        from tokenizers import Tokenizer

        c = package.contract
        self.package, self.contract = package, c
        self.tokenizer = Tokenizer.from_file(str(package.folder / c["tokenizer"]))
        art = Artifact.from_dict(c["artifact"])
        # the package's bench.threads; null: the runtime's default, or cores // SLMAKE_PARALLEL_JOBS
        # when that many servers share the box (runtime_env.resolve_threads)
        threads = threads or runtime_env.resolve_threads(c["threads"])
        self.runner = targets.load(c["target"]).open_runner(art, package.folder, {"threads": threads})
        self.schema = c.get("response_schema")
        self.validator = Draft202012Validator(self.schema) if self.schema else None
        self.constrained = bool(self.schema and enforce_schema and getattr(self.runner, "supports_constraint", False))
        self._lock = threading.Lock()

    def prompt_ids(self, raw_input: str) -> list[int]:
        """The training prompt for a raw input (same normalisation and template as curation),
        as ids with BOS, as evaluate encoded it for the reference outputs."""
        text = normalize(raw_input)
        if not text.strip():
            raise InputError("the input is empty")
        return self.tokenizer.encode(format_prompt(self.contract["prompt_template"], text)).ids

    def answer(self, raw_input: str, max_tokens: int, arrived: float | None = None) -> Answer:
        """``arrived``: time.perf_counter() when the request came in (default: now); the wait until
        the runner is free is ``queue_s``, the rest of ``latency_s`` is service time."""
        t_run = time.perf_counter()
        t0 = t_run if arrived is None else min(arrived, t_run)
        ids = self.prompt_ids(raw_input)
        if len(ids) > self.contract["max_prompt_tokens"]:
            raise InputError(f"the prompt is {len(ids)} tokens; this model was trained on at most "
                             f"{self.contract['max_prompt_tokens']} (train.max_length)")
        t_wait = time.perf_counter()
        with self._lock:
            queued = time.perf_counter() - t_wait
            kw = {"constraint": self.schema} if self.constrained else {}
            gen = self.runner.generate(ids, max_tokens, **kw)
        text = self.tokenizer.decode(gen.tokens, skip_special_tokens=True)
        valid, parsed, error = self.check(text, gen.finish_reason)
        latency = time.perf_counter() - t0
        queued += t_run - t0            # and before a worker thread picked the request up
        return Answer(text, len(ids), len(gen.tokens), gen.finish_reason, gen.ttft_s, latency, valid, parsed, error,
                      queued)

    def check(self, text: str, finish_reason: str) -> tuple[bool | None, dict | None, str | None]:
        if self.validator is None:
            return None, None, None
        try:
            parsed = json.loads(text)
        except ValueError:
            why = "it was cut off at max_tokens" if finish_reason == "length" else "it is not JSON"
            return False, None, f"the model's output does not follow the response schema: {why}"
        errors = sorted(self.validator.iter_errors(parsed), key=lambda e: list(e.absolute_path))
        if errors:
            where = ".".join(str(p) for p in errors[0].absolute_path) or "<root>"
            return False, parsed if isinstance(parsed, dict) else None, \
                f"the model's output does not follow the response schema: {where}: {errors[0].message}"
        return True, parsed if isinstance(parsed, dict) else None, None

    def close(self) -> None:
        with self._lock:
            self.runner.close()
