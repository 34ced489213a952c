"""The spec: compose it from conf/ (as DVC's Hydra integration does), read params.yaml strictly, and
validate it against the packaged JSON Schema.

The bottom layer of the package: it imports no other slmake module but strict_yaml (which imports
none), so anything may import it. Semantic checks (what the schema cannot say) sit above everything
they check, in checks.py, which also holds the one function that does compose/read, validate and
check for `slmake check`, the check stage and every stage (checks.load_spec, checks.stage_params).
Every message names the key path, the bad value and what was allowed -- never a library traceback.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from functools import cache, lru_cache
from importlib import resources
from pathlib import Path

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from . import strict_yaml

GROUPS = ("model", "data", "train", "targets", "bench", "monitor", "cost", "distill")


class SpecError(Exception):
    """A spec that cannot be used; the message is meant for the user as is."""


def _schema_file(name: str) -> dict:
    return json.loads(resources.files("slmake").joinpath("schema", name).read_text())


def _targets_dir():
    return resources.files("slmake").joinpath("targets")


def target_names() -> list[str]:
    """The targets with a settings schema, one folder each (targets/<name>/schema.json); the test
    of the layers checks that they are exactly targets.REGISTRY (found here without importing it)."""
    return sorted(d.name for d in _targets_dir().iterdir() if d.joinpath("schema.json").is_file())


@cache
def target_schema(name: str) -> dict:
    """A target's settings schema, kept in its own folder: targets/<name>/schema.json."""
    return json.loads(_targets_dir().joinpath(name, "schema.json").read_text())


@lru_cache(maxsize=1)
def schema() -> dict:
    """The full spec schema: the top level, the data slice, and one sub-schema per target (each
    target owns its file, targets/<name>/schema.json)."""
    full = _schema_file("spec.schema.json")
    full["properties"]["data"] = _schema_file("data.schema.json")
    full["properties"]["targets"]["properties"] = {name: target_schema(name) for name in target_names()}
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


def compose(config_dir: str | Path = "conf", overrides: list[str] | None = None) -> dict:
    """Compose conf/ with Hydra overrides into a plain dict (what `dvc exp run -S` writes)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
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
