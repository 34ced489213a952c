"""The `data` slice: fill in the defaults, validate it against the packaged JSON Schema, check the rest.

Defaults live in one file, slmake/conf/data/_base.yaml: Hydra composes it before every data option
(conf/config.yaml), and `resolve` merges a partial mapping over it the same way (mappings key by
key, everything else replaced), so a config written before a key existed keeps working and means
the same thing.  The schema says which keys and values are allowed; what it cannot say (a template
that formats, a regex that compiles, a response schema that is itself valid) is checked here, and
every message names the key path, the value and what was allowed.
"""

from __future__ import annotations

import copy
import json
import re
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from jsonschema import Draft202012Validator

from ..prompt import format_prompt
from ..spec import explain
from .errors import RULES, CurationError

MISSING = "???"  # Hydra's "no default: must be set" marker in _base.yaml


@lru_cache(maxsize=1)
def data_schema() -> dict:
    return json.loads(resources.files("slmake").joinpath("schema", "data.schema.json").read_text())


@lru_cache(maxsize=1)
def defaults() -> dict:
    """slmake/conf/data/_base.yaml, with its `???` (must be set) keys left out."""
    text = resources.files("slmake").joinpath("conf", "data", "_base.yaml").read_text()
    return _merge({}, yaml.safe_load(text))


def _merge(base: dict, over: dict) -> dict:
    """`over` merged into a copy of `base` as Hydra merges configs; `???` values are left out."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if value == MISSING:
            continue
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def resolve(cfg: Any) -> dict:
    """Validate the `data` slice and return it with defaults filled in; raise CurationError."""
    if not isinstance(cfg, dict):
        raise CurationError(f"data: expected a mapping, got {type(cfg).__name__}")
    full = _merge(defaults(), cfg)
    rules = full["filters"].get("drop_rules") if isinstance(full["filters"], dict) else None
    if isinstance(rules, list):  # a rule without `field` searches both texts
        full["filters"]["drop_rules"] = [{**r, "field": r.get("field", "any")} if isinstance(r, dict) else r
                                         for r in rules]
    problems = sorted({explain(e, prefix=["data"]) for e in Draft202012Validator(data_schema()).iter_errors(full)})
    if problems:
        raise CurationError("invalid data config:\n" + "\n".join(f"  - {p}" for p in problems))
    _check_semantics(full)
    return full


def _check_semantics(cfg: dict) -> None:
    template = cfg["prompt_template"]
    try:
        format_prompt(template, "x")
    except (KeyError, IndexError, ValueError) as e:
        raise CurationError(f"data.prompt_template: {template!r} is not a valid template ({e!r}); "
                            "it must contain {instruction} and escape other braces as {{ }}") from None
    ctemplate = cfg["classification"]["instruction_template"]
    try:
        ctemplate.format(text="x")
    except (KeyError, IndexError, ValueError) as e:
        raise CurationError(f"data.classification.instruction_template: {ctemplate!r} is not a valid "
                            f"template ({e!r}); it must contain {{text}} and escape other braces") from None
    schema = cfg["response_schema"]
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as e:
        raise CurationError(f"data.response_schema: not a valid JSON Schema: {e.message}") from None
    split = cfg["split"]
    if split["val"] + split["test"] >= 1:
        raise CurationError(f"data.split: val + test = {split['val'] + split['test']}, must leave room for train")
    label = cfg["label_field"]
    if label is not None:
        props = schema.get("properties") if isinstance(schema.get("properties"), dict) else None
        if cfg["response_format"] != "json" or props is None or label not in props:
            allowed = f" (one of {sorted(props)})" if props else ""
            raise CurationError(f"data.label_field: got {label!r}, expected null or a property of the "
                                f"JSON object response{allowed}")
    for key, rules in (("filters.drop_rules", cfg["filters"]["drop_rules"]),
                       ("pii.patterns", cfg["pii"]["patterns"])):
        names = [r["name"] for r in rules]
        for i, r in enumerate(rules):
            try:
                re.compile(r["regex"])
            except re.error as e:
                raise CurationError(f"data.{key}.{i}.regex: {r['regex']!r} is not a valid regular "
                                    f"expression ({e})") from None
            if names.count(r["name"]) > 1:
                raise CurationError(f"data.{key}.{i}.name: {r['name']!r} is used twice")
    for i, r in enumerate(cfg["filters"]["drop_rules"]):
        if r["name"] in RULES:
            raise CurationError(f"data.filters.drop_rules.{i}.name: {r['name']!r} is a built-in rule; "
                                f"pick a name not in {list(RULES)}")
    tok = cfg["filters"]["tokenizer"]
    if tok is not None and not Path(tok).is_dir():
        raise CurationError(f"data.filters.tokenizer: {tok} is not a folder (expected a local Hugging Face "
                            "tokenizer folder, or null for the word/char estimate)")
    neg = cfg["negatives"]
    if neg["min_share"] > 0 and (neg["field"] is None or not neg["values"]):
        raise CurationError("data.negatives: min_share > 0 needs `field` and `values` (which records count as "
                            "negative examples)")
