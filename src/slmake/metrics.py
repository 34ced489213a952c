"""Task metrics shared by evaluate and bench: exact match, per-field accuracy, schema validity."""

from __future__ import annotations

import json

from jsonschema import Draft202012Validator


def _parse(text: str):
    try:
        return json.loads(text)
    except (json.JSONDecodeError, ValueError):
        return None


def score(outputs: list[str], references: list[str], response_schema: dict) -> dict:
    """Compare generated responses to references. A response counts as an exact match when it
    parses to the same JSON value (whitespace and key order do not matter); plain-text
    responses compare as stripped strings."""
    if len(outputs) != len(references):
        raise ValueError(f"{len(outputs)} outputs for {len(references)} references")
    n = len(outputs)
    validator = Draft202012Validator(response_schema)
    fields = list(response_schema.get("properties", {}))
    exact = valid = 0
    field_hits = {f: 0 for f in fields}
    for out, ref in zip(outputs, references):
        got, want = _parse(out), _parse(ref)
        if want is None:  # plain-text task
            exact += out.strip() == ref.strip()
            valid += validator.is_valid(out.strip())
            continue
        exact += got == want
        valid += got is not None and validator.is_valid(got)
        if isinstance(got, dict) and isinstance(want, dict):
            for f in fields:
                field_hits[f] += f in want and got.get(f) == want.get(f)
    result = {
        "n": n,
        "exact_match": round(exact / n, 4) if n else 0.0,
        "valid": round(valid / n, 4) if n else 0.0,
    }
    if fields:
        result["field_accuracy"] = {f: round(field_hits[f] / n, 4) if n else 0.0 for f in fields}
    return result


def parity(outputs: list[list[int]], reference: list[list[int]]) -> float:
    """Share of prompts whose greedy token sequence equals the fp32 reference's."""
    if not reference:
        return 0.0
    return round(sum(a == b for a, b in zip(outputs, reference)) / len(reference), 4)
