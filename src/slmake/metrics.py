"""Task metrics shared by evaluate and bench: exact match, per-field accuracy, schema validity."""

from __future__ import annotations

import json

from jsonschema import Draft202012Validator


def _parse(text: str):
    try:
        return json.loads(text)
    except (json.JSONDecodeError, ValueError):
        return None


def _exact(out: str, ref: str, got, want) -> bool:
    """The exact-match rule (``got``/``want``: the parsed output/reference, None for plain text)."""
    return out.strip() == ref.strip() if want is None else got == want


def exact_hits(outputs: list[str], references: list[str]) -> list[bool]:
    """Per row, whether the output is an exact match as `score` counts it."""
    return [_exact(out, ref, _parse(out), _parse(ref)) for out, ref in zip(outputs, references, strict=True)]


def paired_delta(hits: list[bool], reference_hits: list[bool]) -> dict:
    """Accuracy minus the reference's on the same rows, with the half-width of its 95 % interval.

    The rows are paired, so only the discordant ones carry information: b rows the reference got
    and the artifact missed, c the other way round. Var(delta) = (b + c - (b - c)^2 / n) / n^2 (the
    paired-proportions variance behind McNemar's test). On 200 rows, 37 discordant prompts give
    +-5.9 points: a drop inside that is not yet distinguishable from none."""
    n = len(hits)
    if n != len(reference_hits):
        raise ValueError(f"{n} rows against {len(reference_hits)} reference rows")
    if not n:
        return {"delta": 0.0, "delta_ci95": 0.0}
    b = sum(r and not h for h, r in zip(hits, reference_hits))
    c = sum(h and not r for h, r in zip(hits, reference_hits))
    var = max(0.0, b + c - (b - c) ** 2 / n) / n ** 2
    return {"delta": round((c - b) / n, 4), "delta_ci95": round(1.96 * var ** 0.5, 4)}


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
        exact += _exact(out, ref, got, want)
        if want is None:  # plain-text task
            valid += validator.is_valid(out.strip())
            continue
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


def free_figures(free_texts: list[str], references: list[str], response_schema: dict,
                 served: list[list[int]], free: list[list[int]]) -> dict:
    """The free decode's figures beside a constrained one (evaluate and bench): its exact match and
    validity, and the share of prompts whose tokens the grammar changed."""
    m = score(free_texts, references, response_schema)
    changed = sum(a != b for a, b in zip(served, free))
    return {"exact_match_free": m["exact_match"], "valid_free": m["valid"],
            "constrained_changed": round(changed / max(len(free), 1), 4)}
