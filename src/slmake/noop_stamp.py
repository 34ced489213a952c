"""The check stage's memory of its last pass, so a no-op `dvc repro` costs little more than `dvc status`.

The stage is `always_changed` (it also hashes the files behind model.hf.path and data.source, which
dvc.yaml cannot list, and sweeps killed stages' litter), so DVC runs it on every repro; the full
check (schema, semantic checks, model facts) imports jsonschema, numpy and the data package: ~0.45 s
of a ~1 s no-op repro. Its result is a function of what it read: params.yaml's bytes, slmake's code,
and the files it hashed or named. The stamp keeps their (size, mtime, inode) - what DVC and
HashCache trust too - and the outputs of that pass; when none moved, the stage writes the same
outputs back (DVC removed them before running it) without importing any of that. Any change - an
edited spec, a touched source, new code, a file added beside a source - runs the full check.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import yaml

from .io import write_json_atomic, write_text_atomic

CODE = Path(__file__).resolve().parent  # the slmake actually imported (an editable install's src)


def _stat(p: str) -> list:
    try:
        st = os.stat(p)
    except (OSError, ValueError):  # missing (it may appear later: that changes the key), or not a path
        return [p, None]
    return [p, st.st_size, st.st_mtime_ns, st.st_ino]


def _code_files(extra: list[str]) -> list[str]:
    files = list(extra)
    for root, dirs, names in os.walk(CODE):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        files += [os.path.join(root, n) for n in sorted(names) if not n.endswith((".pyc", ".pyo"))]
    return files


def _strings(node, out: set) -> set:
    """Every one-line string of the spec: the paths it names (sources, model, teacher, review file)
    among them, whether they exist yet or not; stat() of the rest fails the same way every time."""
    if isinstance(node, dict):
        for v in node.values():
            _strings(v, out)
    elif isinstance(node, list):
        for v in node:
            _strings(v, out)
    elif isinstance(node, str) and 0 < len(node) < 4096 and "\n" not in node:
        out.add(node)
    return out


class Stamp:
    def __init__(self, path: Path, params: Path, code: list[str]):
        self.path, self.params, self.code = path, params, code

    def _key(self, read: list[str]) -> str:
        raw = self.params.read_bytes()
        try:
            spec = yaml.load(raw, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        except (yaml.YAMLError, ValueError):  # an unparsable spec: the full check says why
            spec = None
        named = {os.path.abspath(p) for p in _strings(spec, set()) if "\0" not in p}
        paths = set(read) | named | {os.path.dirname(p) for p in read}  # folders: a file added beside
        h = hashlib.sha256(raw)
        for p in _code_files(self.code) + sorted(paths):
            h.update(json.dumps(_stat(p)).encode())
        return h.hexdigest()

    def restore(self) -> dict | None:
        """Write back the last pass's outputs if nothing it read has moved; their contents, or None."""
        try:
            last = json.loads(self.path.read_text())
            if last["key"] != self._key(last["read"]):
                return None
        except (OSError, ValueError, KeyError, TypeError):
            return None
        for name, text in last["outputs"].items():
            write_text_atomic(name, text)
        return last["outputs"]

    def save(self, outputs: list[str], read: list[str]) -> None:
        """After a full pass: remember what it read and wrote."""
        read = sorted({os.path.abspath(p) for p in read})
        write_json_atomic(self.path, {"key": self._key(read), "read": read,
                                      "outputs": {o: Path(o).read_text() for o in outputs}}, indent=None)


def recording(cache):
    """Wrap a HashCache so every file the check reads through it is listed in ``cache.read``."""
    get = cache.get
    cache.read = []

    def wrapped(f, kind, compute):
        cache.read.append(str(f))
        return get(f, kind, compute)

    cache.get = wrapped
    return cache
