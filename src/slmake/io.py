"""Atomic outputs and content hashes.

A stage that is killed half-way must leave nothing that looks finished: files are written to a
temporary sibling and renamed; folders are built in a temporary sibling and swapped in whole.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


def write_text_atomic(path: str | Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json_atomic(path: str | Path, obj, indent: int = 2) -> None:
    write_text_atomic(path, json.dumps(obj, indent=indent, sort_keys=True, ensure_ascii=False) + "\n")


def remove_litter(path: str | Path) -> list[Path]:
    """Remove what a killed writer of ``path`` left behind: its temporary siblings
    (``.<name>.*.tmp``, files or folders) and a half-swapped ``.<name>.old``. A SIGKILL runs no
    cleanup, so the next run of the same stage does it; for a real model each is gigabytes."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    gone = []
    for p in sorted(path.parent.glob(f".{glob.escape(path.name)}.*")):
        if p.name.endswith(".tmp") or p.name == f".{path.name}.old":
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            gone.append(p)
    return gone


def _is_litter(name: str) -> bool:
    return name.startswith(".") and len(name) > 5 and name.endswith((".tmp", ".old"))


def sweep_litter(*roots: str | Path) -> list[Path]:
    """Remove every killed writer's litter (`remove_litter`'s kinds) anywhere under ``roots``. The
    check stage runs this on every `dvc repro`: a killed stage whose outputs DVC then restores
    from its run cache never runs again, so its own cleanup never would."""
    gone = []
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            for name in filter(_is_litter, dirnames + filenames):
                p = Path(dirpath) / name
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink(missing_ok=True)
                gone.append(p)
            dirnames[:] = [d for d in dirnames if not _is_litter(d)]
    return gone


def prune_dropped(patterns: list[str], keep: set[str]) -> list[Path]:
    """Remove the outputs of keys no longer in ``keep``; each pattern names one key's output, as
    'build/bench/{key}' (a folder) or 'reports/bench/{key}.json' (a file). DVC leaves a removed
    `foreach` stage's outputs in the workspace, and a stage that depends on the parent folder
    (monitor on build/bench) would then hash files no clone has. DVC's cache keeps them."""
    gone = []
    for pattern in patterns:
        parent, _, name = pattern.rpartition("/")
        prefix, _, suffix = name.partition("{key}")
        root = Path(parent)
        for p in sorted(root.iterdir()) if root.is_dir() else []:
            if p.name.startswith(".") or not (p.name.startswith(prefix) and p.name.endswith(suffix)):
                continue
            key = p.name[len(prefix):len(p.name) - len(suffix)]
            if key and "." not in key and key not in keep and p.is_dir() == (suffix == ""):
                shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
                gone.append(p)
    return gone


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a fresh temporary folder; on success it replaces ``path`` whole, on error it vanishes.
    Litter of an earlier, killed run (see `remove_litter`) is removed first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_litter(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    tmp.chmod(0o755)  # mkdtemp makes it 0700; artifacts are meant to be shared
    try:
        yield tmp
        old = None
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _files(path: Path, exclude: str | None) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file() and not (exclude and p.match(exclude)))


def sha256_tree(path: str | Path, exclude: str | None = None) -> str:
    """Hash of a file, or of a folder's relative paths and file contents (order-independent of the
    FS); files matching the glob ``exclude`` are left out."""
    path = Path(path)
    if path.is_file():
        return sha256_file(path)
    h = hashlib.sha256()
    for f in _files(path, exclude):
        h.update(f.relative_to(path).as_posix().encode() + b"\0" + sha256_file(f).encode() + b"\n")
    return h.hexdigest()


def size_bytes(path: str | Path, exclude: str | None = None) -> int:
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in _files(path, exclude))


def read_jsonl(path: str | Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def evenly_spaced(rows: list, limit: int | None) -> list:
    """``limit`` rows spread evenly over ``rows`` (deterministic), or all of them. Splits keep the
    input order and many datasets are sorted by label: the first N rows could be one class."""
    if not limit or limit >= len(rows):
        return rows
    return [rows[i * len(rows) // limit] for i in range(limit)]


def relative_paths_note() -> str:
    """How a relative path in the spec was resolved, for "not found" errors. Stages run in the
    working directory, which for a DVC experiment run in a temporary copy of the project (`dvc exp
    run --temp`, `dvc queue`, `slmake search`) is that copy: a relative path that leaves the project
    (``../shared/...``) then points nowhere, which the message says."""
    cwd = Path.cwd()
    note = f"relative paths resolve against {cwd}"
    if "/.dvc/tmp/exps/" in cwd.as_posix() + "/":
        note += ("; this run is a DVC experiment in a temporary copy of the project (dvc exp run --temp, "
                 "dvc queue, slmake search): a path outside the project must be absolute there")
    return note
