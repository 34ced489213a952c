"""The spec: compose it from conf/ (as DVC's Hydra integration does), read params.yaml strictly, and
validate it against the packaged JSON Schema.

The bottom layer of the package: it imports no other slmake module, so anything may import it. Its
YAML reader (the first section below) names file, line and key of a problem and refuses duplicate
keys: PyYAML's `safe_load` keeps the last of two equal keys silently, so a spec with a duplicated
`lr:` would train with whichever came second. Semantic checks (what the schema cannot say) sit above everything
they check, in checks.py, which also holds the one function that does compose/read, validate and
check for `slmake check`, the check stage and every stage (checks.load_spec, checks.stage_params).
Every message names the key path, the bad value and what was allowed -- never a library traceback.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from functools import cache, lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

# --- strict YAML: every problem names the file, the line and the key path it sits under ----------

_KEY = re.compile(r"^(\s*)(?:-\s+)*([^\s#'\"{}\[\],&*!|>%@`-][^:#]*?|'[^']*'|\"[^\"]*\"):(?:\s|$)")


class YAMLProblem(Exception):
    """A YAML file that cannot be read; the message is meant for the user as is."""


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys in a mapping."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in seen and key != "<<":
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first on line {seen[key] + 1})", key_node.start_mark)
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def key_path_at(text: str, line: int) -> str:
    """The dotted key path a (0-based) line sits under, read from indentation: good enough to point
    a user at the right place in a block-style spec file, which is all a spec file is."""
    stack: list[tuple[int, str]] = []
    for raw in text.splitlines()[: line + 1]:
        raw = raw.replace("\t", " " * 8)
        m = _KEY.match(raw)
        if not m:
            continue
        indent = len(raw) - len(raw.lstrip(" -"))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, m.group(2).strip("'\" ")))
    return ".".join(k for _, k in stack)


def _explain_yaml(error: yaml.YAMLError, path: str | Path, text: str) -> str:
    """`file, line N, key 'a.b': what is wrong` for a PyYAML error."""
    mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
    problem = getattr(error, "problem", None) or str(error)
    context = getattr(error, "context", None) or ""
    if ("quoted scalar" in context or "flow" in context) and getattr(error, "context_mark", None) is not None:
        mark = error.context_mark  # where the unclosed quote/bracket opened, not where YAML gave up
    if mark is None:
        return f"{path}: not valid YAML: {problem}"
    line = mark.line
    lines = text.splitlines()
    bad = lines[line] if line < len(lines) else ""
    hint = ""
    if "\t" in bad[: max(mark.column, 0) + 1] or "'\\t'" in problem:
        hint = " (a tab character: YAML indents with spaces only)"
    elif "duplicate key" in problem:
        hint = " (each key may appear once per mapping)"
    elif "quoted scalar" in context:
        hint = " (a quote is not closed)"
    elif "flow" in context:
        hint = f" (a {'[' if 'sequence' in context else '{'} opened here is not closed)"
    key = key_path_at(text, line)
    where = f"{path}, line {line + 1}" + (f", key '{key}'" if key else "")
    return f"{where}: {problem}{hint}"


def load_yaml_text(text: str, path: str | Path = "<string>") -> Any:
    """Parse YAML text strictly; raise YAMLProblem naming file, line and key."""
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        raise YAMLProblem(_explain_yaml(e, path, text)) from None


def load_yaml(path: str | Path) -> Any:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise YAMLProblem(f"{path}: not UTF-8 text (byte {e.start})") from None
    except OSError as e:
        raise YAMLProblem(f"{path}: cannot be read ({e.strerror})") from None
    return load_yaml_text(text, path)


# --- the spec -----------------------------------------------------------------------------------

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
        data = load_yaml(path)  # names file, line and key; duplicate keys are errors
    except YAMLProblem as e:
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
            load_yaml(f)
        except YAMLProblem as e:
            problems.append(str(e).replace(str(config_dir), config_dir.name, 1))
    lists = {}
    try:
        top = load_yaml(config_dir / "config.yaml") or {}
        lists = {k: v for d in top.get("defaults", []) if isinstance(d, dict)
                 for k, v in d.items() if isinstance(v, list)}
    except (YAMLProblem, AttributeError):
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
