"""YAML loading for spec files (conf/, params.yaml) that names the file, line and key of a problem.

PyYAML's errors are tracebacks with a scanner's vocabulary ("found character '\\t' that cannot start
any token"), and `safe_load` keeps the last of two equal keys silently: a spec with a duplicated
`lr:` trains with whichever came second. Here a duplicate key is an error, and every error names
the file, the line and the key path it sits under.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

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


def explain(error: yaml.YAMLError, path: str | Path, text: str) -> str:
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


def load_text(text: str, path: str | Path = "<string>") -> Any:
    """Parse YAML text strictly; raise YAMLProblem naming file, line and key."""
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        raise YAMLProblem(explain(e, path, text)) from None


def load(path: str | Path) -> Any:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise YAMLProblem(f"{path}: not UTF-8 text (byte {e.start})") from None
    except OSError as e:
        raise YAMLProblem(f"{path}: cannot be read ({e.strerror})") from None
    return load_text(text, path)
