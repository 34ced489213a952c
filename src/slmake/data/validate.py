"""Record validation: a JSON Schema per record shape, and the task's response schema.

`RecordValidator` turns the configured shape and column mapping into a JSON Schema for one input
record (which keys must be present, with which types) and reports the first problem as a
(reason, detail) pair: `missing_field`, `wrong_type` or `invalid_record`.  Such records are
malformed and go to quarantine.

`ResponseValidator` checks a response against the spec's `response_schema` and returns its one
canonical spelling (JSON with keys in the schema's property order, or normalised text), so the
model is trained on one spelling of each answer and evaluation can compare strings.
"""

from __future__ import annotations

import json
from typing import Any

import jsonschema
from jsonschema import Draft202012Validator

from .normalize import normalize_response

_STR = {"type": "string"}
_LABEL = {"type": ["string", "integer", "boolean"]}


def record_schema(cfg: dict) -> dict:
    """The JSON Schema one input record of the configured shape must satisfy."""
    shape, cols = cfg["shape"], cfg["columns"]
    response = _STR if cfg["response_format"] == "text" else {}  # json: a JSON string or a JSON value
    props: dict[str, dict] = {}
    required: list[str] = []

    def need(role: str, schema: dict, optional: bool = False) -> None:
        props[cols[role]] = schema
        if not optional:
            required.append(cols[role])

    if shape == "instruction":
        need("instruction", _STR)
        need("response", response)
    elif shape == "alpaca":
        need("instruction", _STR)
        if "input" in cols:
            need("input", {"type": ["string", "null"]}, optional=True)
        need("output", response)
    elif shape == "prompt_completion":
        need("prompt", _STR)
        need("completion", response)
    elif shape == "chat":
        chat = cfg["chat"]
        need("messages", {"type": "array", "minItems": 1, "items": {
            "type": "object", "required": [chat["role_key"], chat["content_key"]],
            "properties": {chat["role_key"]: _STR, chat["content_key"]: _STR}}})
    elif shape == "classification":
        need("text", _STR)
        need("label", _LABEL)
    if shape != "classification" and "label" in cols:
        need("label", {"type": ["string", "integer", "boolean", "null"]}, optional=True)
    return {"type": "object", "required": required, "properties": props}


_PY_TYPES = {"string": str, "null": type(None), "boolean": bool, "array": list, "object": dict}


def _is_type(value: Any, name: str) -> bool:
    """JSON Schema's type test for one type name (booleans are not integers; 2.0 is one)."""
    if name == "integer":
        return (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, float) and value.is_integer())
    if name == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, _PY_TYPES[name])


def _fast_path(schema: dict):
    """For the flat record schemas (required keys + a `type` per key) a direct check that accepts
    exactly what the JSON Schema accepts; None when the schema is not that simple."""
    props = schema.get("properties", {})
    if any(set(p) - {"type"} for p in props.values()):
        return None
    required = tuple(schema.get("required", ()))
    typed = [(k, (p["type"],) if isinstance(p["type"], str) else tuple(p["type"]))
             for k, p in props.items() if "type" in p]

    def ok(record: Any) -> bool:
        if not isinstance(record, dict):
            return False
        for k in required:
            if k not in record:
                return False
        for k, types in typed:
            if k in record and not any(_is_type(record[k], t) for t in types):
                return False
        return True

    return ok


class RecordValidator:
    def __init__(self, cfg: dict):
        self.schema = record_schema(cfg)
        self._v = Draft202012Validator(self.schema)
        self._fast = _fast_path(self.schema)
        self._expected = ", ".join(self.schema["required"])

    def check(self, record: Any) -> tuple[str, str] | None:
        """None when valid, else (reason, detail) for the first problem (jsonschema's best match)."""
        if self._fast(record) if self._fast is not None else self._v.is_valid(record):
            return None
        err = jsonschema.exceptions.best_match(self._v.iter_errors(record))
        where = ".".join(str(p) for p in err.absolute_path)
        if err.validator == "required":
            missing = [k for k in err.validator_value if isinstance(err.instance, dict) and k not in err.instance]
            at = f" in {where}" if where else ""
            return "missing_field", f"missing field {missing[0]!r}{at} (expected keys: {self._expected})"
        if err.validator == "type":
            got = _json_type(err.instance)
            if not where:
                return "wrong_type", f"record is {got}, expected an object with keys: {self._expected}"
            shown = "" if err.instance is None else f" {_short(err.instance)}"
            return "wrong_type", f"{where}: got {got}{shown}, expected {err.validator_value}"
        return "invalid_record", f"{where or 'record'}: {err.message}"


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    for name in ("boolean", "integer", "number", "string", "array", "object"):
        if name not in ("integer", "number") and _is_type(value, name):
            return {"array": "an array", "object": "an object"}.get(name, f"a {name}")
    return "an integer" if _is_type(value, "integer") else "a number"


def _short(value: Any, n: int = 40) -> str:
    text = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else repr(value)
    return text if len(text) <= n else text[: n - 3] + "..."


class ResponseValidator:
    """Validate a response against `response_schema`; return its canonical string or None.

    Label-like responses repeat a lot (a few hundred distinct values in 100k records), so results
    are memoised per distinct response (bounded; deterministic either way)."""

    CACHE = 65536

    def __init__(self, cfg: dict):
        self.format = cfg["response_format"]
        self.schema = cfg["response_schema"]
        self._v = jsonschema.validators.validator_for(self.schema)(self.schema)
        props = self.schema.get("properties")
        self._order = list(props) if isinstance(props, dict) else None
        self._memo: dict[str, str | None] = {}

    def canonical_cached(self, key: str, value: Any) -> str | None:
        """`canonical(value)`, memoised under `key` (the raw response text that parsed to `value`)."""
        hit = self._memo.get(key, self)
        if hit is not self:
            return hit  # type: ignore[return-value]
        result = self.canonical(value)
        if len(self._memo) < self.CACHE:
            self._memo[key] = result
        return result

    def parse(self, value: Any) -> tuple[Any, str | None]:
        """Raw response -> (value, None), or (None, why) when it cannot be a response at all."""
        if self.format == "text":
            if not isinstance(value, str):
                return None, f"expected text, got {type(value).__name__}"
            return normalize_response(value), None
        if isinstance(value, str):
            try:
                return json.loads(value), None
            except ValueError as e:
                return None, f"not JSON ({e})"
        return value, None

    def canonical(self, value: Any) -> str | None:
        """The canonical spelling if `value` satisfies the schema, else None."""
        if not self._v.is_valid(value):
            return None
        if self.format == "text":
            return value
        if isinstance(value, dict) and self._order is not None:
            ordered = {k: value[k] for k in self._order if k in value}
            ordered.update({k: value[k] for k in sorted(value) if k not in ordered})
            value = ordered
        text = json.dumps(value, ensure_ascii=False)
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate spelled as \udXXX in the source JSON
            return None
        return text
