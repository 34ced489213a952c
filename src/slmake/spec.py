"""Compose the spec from conf/ (as DVC's Hydra integration does) and validate it.

Every stage calls ``stage_params`` at start: it reads params.yaml, validates the slices the
stage uses against the packaged JSON Schema and exits with a message that names the key path,
the bad value and what was allowed -- never a library traceback.
"""

from __future__ import annotations

import json
import sys
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Iterable

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from . import strict_yaml

GROUPS = ("model", "data", "train", "targets", "bench", "monitor", "cost", "distill")


class SpecError(Exception):
    """A spec that cannot be used; the message is meant for the user as is."""


def _schema_file(name: str) -> dict:
    return json.loads(resources.files("slmake").joinpath("schema", name).read_text())


@lru_cache(maxsize=None)
def target_schema(name: str) -> dict:
    """A target's settings schema, kept in its own folder: targets/<name>/schema.json."""
    return json.loads(resources.files("slmake.targets").joinpath(name, "schema.json").read_text())


@lru_cache(maxsize=1)
def schema() -> dict:
    """The full spec schema: the top level, the data slice, and one sub-schema per registered
    target (each target owns its file, targets/<name>/schema.json)."""
    from .targets import REGISTRY

    full = _schema_file("spec.schema.json")
    full["properties"]["data"] = _schema_file("data.schema.json")
    full["properties"]["targets"]["properties"] = {name: target_schema(name) for name in REGISTRY}
    return full


def _path(error: ValidationError, prefix: Iterable[str] = ()) -> str:
    return ".".join([*prefix, *(str(p) for p in error.absolute_path)]) or "<spec root>"


def explain(error: ValidationError, prefix: Iterable[str] = ()) -> str:
    """One line per problem: key path, offending value, what was allowed. ``prefix`` places a slice
    validated on its own (``data``, ``targets.qualcomm_npu``) in the whole spec's key paths."""
    path, value, v, kind = _path(error, prefix), error.instance, error.validator_value, error.validator
    if kind == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(value) - set(allowed)) if isinstance(value, dict) else []
        where = path if path != "<spec root>" else "the top level"
        return f"{where}: unknown key(s) {extra}; allowed keys: {allowed}"
    if kind == "enum":
        return f"{path}: {value!r} is not one of {v}"
    if kind == "type":
        wanted = " or ".join(v) if isinstance(v, list) else v  # ["integer", "null"] -> "integer or null"
        return f"{path}: {value!r} has type {type(value).__name__}, expected {wanted}"
    if kind in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        op = {"minimum": ">=", "maximum": "<=", "exclusiveMinimum": ">", "exclusiveMaximum": "<"}[kind]
        return f"{path}: {value!r} is out of range, expected a value {op} {v}"
    if kind == "required":
        missing = [k for k in v if not isinstance(value, dict) or k not in value]
        return f"{path}: missing required key(s) {missing}"
    if kind == "multipleOf":
        return f"{path}: {value!r} must be a multiple of {v}"
    if kind == "pattern":
        return f"{path}: {value!r} must match {v!r}"
    if kind in ("minItems", "uniqueItems", "minLength", "minProperties"):
        return f"{path}: {value!r} violates {kind}={v}"
    return f"{path}: {error.message}"


def validate(spec: dict, only: Iterable[str] | None = None) -> list[str]:
    """Return every problem in ``spec`` (or in its top-level slices ``only``), sorted by key path."""
    full = schema()
    if only is None:
        return sorted({explain(e) for e in Draft202012Validator(full).iter_errors(spec)})
    problems = set()
    for key in only:
        if key not in spec:
            return [f"{key}: missing from the spec (params.yaml)"]
        sub = dict(full["properties"][key])
        problems |= {explain(e, prefix=[key]) for e in Draft202012Validator(sub).iter_errors(spec[key])}
    return sorted(problems)


def load_params(path: str | Path = "params.yaml") -> dict:
    path = Path(path)
    if not path.exists():
        raise SpecError(f"{path}: not found. Run stages from the project root, or `slmake check` to compose one.")
    try:
        data = strict_yaml.load(path)  # names file, line and key; duplicate keys are errors
    except strict_yaml.YAMLProblem as e:
        raise SpecError(str(e)) from None
    if not isinstance(data, dict):
        raise SpecError(f"{path}: expected a mapping of spec keys, got {type(data).__name__}")
    return data


def stage_params(*keys: str, path: str | Path = "params.yaml") -> dict:
    """Load params.yaml, validate the slices ``keys``; on error print them and exit 2."""
    try:
        spec = load_params(path)
        problems = validate(spec, only=keys)
        if not problems:  # semantic checks of the slices this stage reads (slmake.checks)
            from .checks import check
            from .model_files import HashCache

            problems = check(spec, only=keys, cache=HashCache(Path(path).parent / "build/.hash_cache.json"))
        if problems:
            raise SpecError(f"{path}: invalid spec:\n" + "\n".join(f"  - {p}" for p in problems))
    except SpecError as e:
        print(f"slmake: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    from .runtime_env import offline  # every stage starts here: no library reaches the network unasked

    offline(bool(spec.get("model", {}).get("allow_network", False)))
    return {k: spec[k] for k in keys}


def compose(config_dir: str | Path = "conf", overrides: list[str] | None = None) -> dict:
    """Compose conf/ with Hydra overrides into a plain dict (what `dvc exp run -S` writes)."""
    from hydra import compose as hydra_compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf

    from omegaconf.errors import OmegaConfBaseException

    config_dir = Path(config_dir).resolve()
    if not (config_dir / "config.yaml").exists():
        raise SpecError(f"{config_dir}/config.yaml: not found (run from the project root or pass --conf)")
    _lint_conf(config_dir, list(overrides or []))
    try:
        with initialize_config_dir(config_dir=str(config_dir), version_base=None):
            cfg = hydra_compose(config_name="config", overrides=list(overrides or []))
        return OmegaConf.to_container(cfg, resolve=True)
    except HydraException as e:
        raise SpecError(_explain_hydra(e, config_dir)) from None
    except OmegaConfBaseException as e:  # a bad ${...} interpolation, or a value of the wrong kind
        raise SpecError(_explain_omegaconf(e, config_dir)) from None


def _lint_conf(config_dir: Path, overrides: list[str]) -> None:
    """Read every conf/ file strictly first (Hydra's YAML errors are tracebacks, and it keeps the
    last of two equal keys), and refuse a group option listed twice (Hydra merges it silently)."""
    problems = []
    for f in sorted(config_dir.rglob("*.yaml")):
        try:
            strict_yaml.load(f)
        except strict_yaml.YAMLProblem as e:
            problems.append(str(e).replace(str(config_dir), config_dir.name, 1))
    lists = {}
    try:
        top = strict_yaml.load(config_dir / "config.yaml") or {}
        lists = {k: v for d in top.get("defaults", []) if isinstance(d, dict)
                 for k, v in d.items() if isinstance(v, list)}
    except (strict_yaml.YAMLProblem, AttributeError):
        pass
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        for o in OverridesParser.create().parse_overrides(overrides):
            if isinstance(o.value(), list) and o.key_or_group in GROUPS:
                lists[o.key_or_group] = o.value()
    except Exception:  # noqa: BLE001 - a malformed override: Hydra explains it below
        pass
    for group, options in lists.items():
        twice = sorted({str(x) for x in options if options.count(x) > 1})
        if twice:
            problems.append(f"{group}: {twice} listed twice in {options}; list each option once")
    if problems:
        raise SpecError("\n".join(problems))


def _explain_omegaconf(e, config_dir: Path) -> str:
    key = getattr(e, "full_key", None) or ""
    msg = str(e).splitlines()[0] if str(e) else type(e).__name__
    where = ""
    leaf = key.rsplit(".", 1)[-1]
    if leaf:
        for f in sorted(config_dir.rglob("*.yaml")):
            for n, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1):
                if line.strip().startswith(f"{leaf}:") and "${" in line:
                    where = f" (in {config_dir.name}/{f.relative_to(config_dir)}, line {n})"
                    break
            if where:
                break
    return f"{key or '<spec>'}: {msg}{where or ' (set by an override?)'}"


def _explain_hydra(e: Exception, config_dir: Path) -> str:
    msg = " ".join(line.strip() for line in str(e).splitlines() if line.strip())
    for group in GROUPS:
        if f"'{group}/" in msg or f"{group}=" in msg or f"'{group}'" in msg:
            options = sorted(p.stem for p in (config_dir / group).glob("*.yaml"))
            return f"{msg}\n  available options for '{group}': {options}"
    return msg
