"""`data.source` -> the files to read, in order, each with the name the ledger gives it.

`data.source` is one source or a list of them; a source is a path (a file, a folder of files, or a
dataset folder written by `datasets`' `save_to_disk`) or a mapping
{path, format, records_key, split, origin}: `format` overrides `data.format` for that source,
`records_key` is the key path of the records in a JSON object file, `split` picks one split of a
saved DatasetDict, and `origin` is how the ledger, quarantine file, card and report name the source
(default: its path as written).  Every rule of curation (dedup, PII, leakage) runs across all
sources together, in the order they are listed.

`fingerprint` hashes every source file: the `check` stage writes it to build/check.data.json, which
the curate stage depends on, so DVC reruns curation when any source changes -- however many
sources the list has (dvc.yaml cannot list a variable number of deps).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..io import relative_paths_note, sha256_file
from .errors import CurationError

EXTENSIONS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".parquet": "parquet", ".pq": "parquet",
              ".json": "json"}
FORMATS = ("jsonl", "csv", "parquet", "json", "hf_disk")
# A folder read with format auto skips .json files (metadata such as categories.json or a saved
# dataset's state.json sits beside data files); format: json reads them.
_AUTO_IN_FOLDERS = ("jsonl", "csv", "parquet")
_HF_MARKERS = (("dataset_info.json", "state.json"), ("dataset_dict.json",))


@dataclass(frozen=True)
class SourceFile:
    path: Path
    display: str                    # how the ledger and messages name it (origin or path, posix separators)
    format: str                     # one of FORMATS
    records_key: str | None = None  # json: key path of the records array in an object
    split: str | None = None        # hf_disk: the DatasetDict split


def entries(source: Any) -> list[tuple[str, dict]]:
    """(key path for messages, mapping) per configured source."""
    if isinstance(source, list):
        return [(f"data.source.{i}", e if isinstance(e, dict) else {"path": e}) for i, e in enumerate(source)]
    return [("data.source", source if isinstance(source, dict) else {"path": source})]


def find_sources(source: Any, fmt: str) -> list[SourceFile]:
    """Every file to read, in order: each configured file, or the matching files of each configured
    folder in sorted order.  A file (or display name) configured twice is an error."""
    files: list[SourceFile] = []
    for key, entry in entries(source):
        files += _entry_files(key, entry, entry.get("format", fmt))
    names: dict[str, str] = {}
    paths: dict[Path, str] = {}
    for f in files:
        real = f.path.resolve()
        if real in paths:
            raise CurationError(f"data.source: {f.display} is listed twice (also as {paths[real]}); "
                                "each file is read once")
        if f.display in names:
            raise CurationError(f"data.source: two sources are named {f.display!r} in the ledger; "
                                "give one an `origin`")
        paths[real] = names[f.display] = f.display
    return files


def _entry_files(key: str, e: dict, fmt: str) -> list[SourceFile]:
    raw, name = e["path"], e.get("origin")
    path = Path(raw)
    shown = name if name is not None else path.as_posix()
    hf = path.is_dir() and any(all((path / m).is_file() for m in ms) for ms in _HF_MARKERS)
    if fmt == "hf_disk" and not hf:
        raise CurationError(f"{key}: {raw} is not a dataset folder written by datasets' save_to_disk "
                            "(expected dataset_info.json + state.json, or dataset_dict.json)")
    fmt = "hf_disk" if hf and fmt == "auto" else fmt
    if fmt != "auto":
        _records_key(key, e, fmt)
    if e.get("split") is not None and fmt != "hf_disk":
        raise CurationError(f"{key}.split: only for a saved Hugging Face dataset (format hf_disk), not {raw}")
    if fmt == "hf_disk":
        return [SourceFile(path, shown, "hf_disk", split=e.get("split"))]
    if path.is_file():
        if fmt == "auto":
            fmt = EXTENSIONS.get(path.suffix.lower(), "")
            if not fmt:
                raise CurationError(f"{key}: {raw}: cannot tell the format from the extension {path.suffix!r}; "
                                    f"set the format to one of {', '.join(FORMATS)}")
        return [SourceFile(path, shown, fmt, _records_key(key, e, fmt))]
    if path.is_dir():
        found = []
        for root, dirs, names in os.walk(path):
            dirs[:] = sorted(d for d in dirs if not d.startswith((".", "_")))
            for n in sorted(names):
                kind = EXTENSIONS.get(Path(n).suffix.lower())
                wanted = kind == fmt or (fmt == "auto" and kind in _AUTO_IN_FOLDERS)
                if n.startswith((".", "_")) or not wanted:
                    continue
                full = Path(root) / n
                found.append(SourceFile(full, (Path(shown) / full.relative_to(path)).as_posix(), kind,
                                        _records_key(key, e, kind)))
        found.sort(key=lambda s: s.display)
        if not found:
            want = sorted(x for x, k in EXTENSIONS.items() if k == fmt or (fmt == "auto" and k in _AUTO_IN_FOLDERS))
            raise CurationError(f"{key}: folder {raw} has no data files (looked for {want})")
        return found
    raise CurationError(f"{key}: {raw} not found (expected a JSONL, JSON, CSV or Parquet file, a folder of them, "
                        f"or a saved dataset folder; {relative_paths_note()})")


def _records_key(key: str, e: dict, fmt: str) -> str | None:
    rk = e.get("records_key")
    if rk is not None and fmt != "json":
        raise CurationError(f"{key}.records_key: only for JSON files (format json), not format {fmt}")
    return rk


def sha256(src: SourceFile, cache=None) -> str:
    """The file's sha256; for a saved dataset folder, a sha256 over its files' paths and hashes.
    `cache`: a model_files.HashCache (or anything with get(path, kind, compute)) to skip unchanged files."""
    digest = (lambda p: cache.get(p, "sha256", sha256_file)) if cache is not None else sha256_file
    if src.path.is_file():
        return digest(src.path)
    h = hashlib.sha256()
    for root, dirs, names in os.walk(src.path):
        dirs.sort()
        for n in sorted(names):
            full = Path(root) / n
            h.update(f"{full.relative_to(src.path).as_posix()}\0{digest(full)}\n".encode())
    return h.hexdigest()


def fingerprint(source: Any, fmt: str, cache=None) -> dict:
    """Content hashes of every source (what build/check.data.json holds); raises CurationError."""
    return {"sources": [{"path": s.display, "format": s.format, "sha256": sha256(s, cache)}
                        for s in find_sources(source, fmt)]}
