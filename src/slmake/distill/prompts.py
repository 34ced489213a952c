"""Prompts the teacher sees, and what its output must become before anything trains on it.

The teacher is prompted exactly as the student will be (the data config's prompt_template), with
`few_shot` labelled examples before the input. Its raw text is cut at the next example's start
(a base model continues the pattern), code fences are removed, and the rest must parse (response
format json) and satisfy data.response_schema -- else the output is quarantined with the reason.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

from ..data.validate import ResponseValidator
from ..prompt import format_prompt

SEPARATOR = "\n\n"     # between few-shot examples
_FENCE = re.compile(r"^```[A-Za-z0-9_-]*\s*\n?(.*?)\n?```\s*$", re.DOTALL)


def input_column(data: dict, column: str | None) -> str:
    """The inputs file's text column: distill.inputs.column, else the data shape's input column."""
    if column:
        return column
    role = {"instruction": "instruction", "alpaca": "instruction", "prompt_completion": "prompt",
            "classification": "text"}.get(data["shape"])
    if role is None or role not in data["columns"]:
        raise ValueError(f"data.shape {data['shape']!r} has no single input column: set distill.inputs.column")
    return data["columns"][role]


def instruction_of(data: dict, text: str) -> str:
    """The instruction curate would build from this input text (classification wraps it)."""
    if data["shape"] == "classification":
        return data["classification"]["instruction_template"].format(text=text)
    return text


def stop_marker(template: str) -> str:
    """The template's text before {instruction}: where the next few-shot example would start."""
    return template.split("{instruction}", 1)[0].strip()


def few_shot_prompt(template: str, shots: list[tuple[str, str]], instruction: str) -> str:
    """Each example as prompt + response, then the input's prompt (the student's prompt, verbatim)."""
    head = "".join(format_prompt(template, i) + r + SEPARATOR for i, r in shots)
    return head + format_prompt(template, instruction)


@dataclass
class Judged:
    response: str | None       # the canonical response (as curate writes it), or None
    reason: str | None = None  # why it was quarantined: empty_output | not_json | schema
    detail: str | None = None


class Judge:
    """Teacher text -> canonical response, or the reason it cannot be trained on."""

    def __init__(self, data: dict):
        self.data = data
        self.validator = ResponseValidator(data)
        self.schema = Draft202012Validator(data["response_schema"])
        self.stop = stop_marker(data["prompt_template"])

    def clean(self, text: str) -> str:
        if self.stop and self.stop in text:
            text = text[: text.index(self.stop)]
        text = text.strip()
        fenced = _FENCE.match(text)
        return fenced.group(1).strip() if fenced else text

    def __call__(self, text: str) -> Judged:
        text = self.clean(text)
        if not text:
            return Judged(None, "empty_output", "the teacher returned no text")
        value, why = self.validator.parse(text)
        if why is not None:
            return Judged(None, "not_json", f"{why}: {text[:120]!r}")
        canonical = self.validator.canonical(value)
        if canonical is None:
            err = best_match(self.schema.iter_errors(value))
            where = ".".join(str(p) for p in err.absolute_path) if err else ""
            msg = err.message if err else "does not satisfy data.response_schema"
            return Judged(None, "schema", f"{where + ': ' if where else ''}{msg} (data.response_schema)")
        return Judged(canonical)


def record(data: dict, text: str, response: str) -> dict:
    """A labelled record in the data config's own shape and columns, so curate reads it like any
    other source: `text` is the raw input, `response` the canonical response."""
    c, shape = data["columns"], data["shape"]
    if shape == "instruction":
        return {c["instruction"]: text, c["response"]: response}
    if shape == "alpaca":
        return {c["instruction"]: text, c["output"]: response}
    if shape == "prompt_completion":
        return {c["prompt"]: text, c["completion"]: response}
    if shape == "chat":
        ch = data["chat"]
        return {c["messages"]: [{ch["role_key"]: ch["user"], ch["content_key"]: text},
                                {ch["role_key"]: ch["assistant"], ch["content_key"]: response}]}
    label = response if data["response_format"] == "text" else json.loads(response)[data["classification"]["json_key"]]
    return {c["text"]: text, c["label"]: label}

