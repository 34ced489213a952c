"""Answer one request exactly as bench measured the artifact: the same runner (opened by the
target's own ``open_runner``), the training prompt template, the same tokenizer ids, greedy.

With a response schema every runner that can decodes under its grammar, exactly as bench measured
it (runtimes/guide.py): llama.cpp's JSON-Schema grammar for a JSON answer, the bare string the schema
allows for a text answer (response_format: text; runtimes/text_grammar.py); llama.cpp enforces it
with its grammar sampler, transformers and ONNX Runtime GenAI with llguidance, OpenVINO GenAI with
its structured output. A build with ``eval.constrained: false`` (serve.json ``constrained``) was
benchmarked free and is served free. Every runtime's answer is then validated against the schema (a
text answer as the string it is, ends stripped as training's were), and an invalid one is reported
as such, never as a valid answer. One generation runs at a time (a runner is not thread-safe); the
HTTP layer queues.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from jsonschema import Draft202012Validator

from .. import process_setup, targets
from ..data.normalize import normalize
from ..prompt import format_prompt
from ..runtimes.guide import Guide, decode_constraint
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
        # when that many servers share the box (process_setup.resolve_threads)
        threads = threads or process_setup.resolve_threads(c["threads"])
        self.runner = targets.load(c["target"]).open_runner(art, package.folder, {"threads": threads})
        self.schema = c.get("response_schema")
        self.text_answers = c.get("response_format", "json") == "text"
        self.validator = Draft202012Validator(self.schema) if self.schema else None
        # the grammar bench decoded under (guide.decode_constraint): none when the build says
        # eval.constrained: false (it was benchmarked free) or --no-schema-enforcement
        enforce = enforce_schema and c.get("constrained") is not False
        gbnf, why = decode_constraint(None if enforce else False, self.schema, c.get("response_format", "json"))
        self.constraint = Guide(gbnf, (package.folder / c["tokenizer"]).read_text(encoding="utf-8")) if gbnf else None
        self.constrained = bool(gbnf and getattr(self.runner, "supports_constraint", False))
        # why a schema that could constrain does not
        self.unconstrained_why: str | None = why if (self.schema and enforce and not gbnf) else None
        if self.constrained and hasattr(self.runner, "check_constraint"):
            try:   # once here, not a failed request each time: a schema the grammar cannot express
                self.runner.check_constraint(self.constraint)
            except ValueError as e:
                self.constrained, self.unconstrained_why = False, str(e)
        # Every generation runs on this one thread, one at a time (a runner is not thread-safe), never
        # on the HTTP layer's worker threads: llama.cpp (OpenMP) keeps a thread team per calling
        # thread, and teams of other callers spinning beside the active one made each generation
        # ~5x slower once two requests overlapped (default build's q4_k_m, 2 cores: 12 -> 60 ms).
        self._runner_thread = ThreadPoolExecutor(1, thread_name_prefix="slmake-runner")

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
        kw = {"constraint": self.constraint} if self.constrained else {}
        started: list[float] = []

        def generate():
            started.append(time.perf_counter())
            return self.runner.generate(ids, max_tokens, **kw)
        t_wait = time.perf_counter()
        gen = self._runner_thread.submit(generate).result()   # waits its turn (FIFO), then the runner's work
        queued = started[0] - t_wait
        text = self.tokenizer.decode(gen.tokens, skip_special_tokens=True)
        if self.text_answers:   # training's text responses had their ends stripped (normalize_response)
            text = text.strip()
        valid, parsed, error = self.check(text, gen.finish_reason, max_tokens)
        latency = time.perf_counter() - t0
        queued += t_run - t0            # and before a worker thread picked the request up
        return Answer(text, len(ids), len(gen.tokens), gen.finish_reason, gen.ttft_s, latency, valid, parsed, error,
                      queued)

    def check(self, text: str, finish_reason: str, max_tokens: int | None = None
              ) -> tuple[bool | None, dict | None, str | None]:
        """(schema_valid, the parsed JSON object or None, why it is invalid or None). A JSON answer is
        parsed first; a text answer is validated as the string it is."""
        if self.validator is None:
            return None, None, None
        cut = ""
        if finish_reason == "length":
            cut = "it was cut off at max_tokens" + (f" = {max_tokens}" if max_tokens else "")
        if self.text_answers:
            parsed = text
        else:
            try:
                parsed = json.loads(text)
            except ValueError:
                why = cut or "it is not JSON"
                return False, None, f"the model's output does not follow the response schema: {why}"
        errors = sorted(self.validator.iter_errors(parsed), key=lambda e: list(e.absolute_path))
        obj = parsed if isinstance(parsed, dict) else None
        if errors:
            where = ".".join(str(p) for p in errors[0].absolute_path) or "<root>"
            return False, obj, (f"the model's output does not follow the response schema: {where}: "
                                f"{_message(errors[0])}" + (f" ({cut})" if cut else ""))
        return True, obj, None

    def close(self) -> None:
        """After the generations already queued (the server drains on SIGTERM)."""
        self._runner_thread.submit(self.runner.close).result()
        self._runner_thread.shutdown()


def _message(error) -> str:
    """jsonschema's message, except that a long enum is counted, not listed (151 labels would fill
    the client's error and the request log)."""
    if error.validator == "enum" and isinstance(error.validator_value, list) and len(error.validator_value) > 8:
        shown = repr(error.instance) if len(repr(error.instance)) <= 80 else repr(error.instance)[:77] + "..."
        return f"{shown} is not one of the {len(error.validator_value)} allowed values"
    return error.message if len(error.message) <= 300 else error.message[:297] + "..."
