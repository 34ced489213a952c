"""Ingest: stream the records of one source file, whatever its format, as `raw.Raw` items.

Formats: JSONL (one record per line), CSV (csvfile.py), JSON arrays or objects holding one
(jsonfile.py), Parquet (pyarrow, row groups in batches) and Hugging Face datasets saved with
`save_to_disk` (memory-mapped Arrow, read in batches).  Which files a `data.source` names is
sources.py's job.  Problems with a whole file (missing, unreadable, a CSV header or a schema without
the mapped columns, a broken JSON structure) raise CurationError naming the file and what was
expected; they are not per-record.  A line longer than `max_line_bytes` is never held in memory whole.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator

from . import csvfile, jsonfile
from .errors import CurationError
from .raw import EXCERPT, Raw, excerpt, physical_lines, too_long
from .sources import SourceFile, find_sources

__all__ = ["find_sources", "read"]  # find_sources: where checks.py has always found it


def read(src: SourceFile, cfg: dict, required: list[str], wanted: list[str]) -> Iterator[Raw]:
    """Stream the records of one file.  `required`: columns a CSV header / a schema must have;
    `wanted`: every column the config may use (Parquet and saved datasets read only those)."""
    limit = cfg["quarantine"]["max_line_bytes"]
    try:
        if src.format == "jsonl":
            yield from _jsonl(src, limit)
        elif src.format == "csv":
            yield from csvfile.read(src, limit, cfg["csv"]["delimiter"], required)
        elif src.format == "json":
            yield from jsonfile.read(src, limit)
        elif src.format == "hf_disk":
            yield from _hf_disk(src, limit, required, wanted)
        else:
            yield from _parquet(src, limit, required, wanted)
    except OSError as e:
        raise CurationError(f"{src.display}: cannot read: {e.strerror or e}") from None


def _jsonl(src: SourceFile, limit: int) -> Iterator[Raw]:
    with open(src.path, "rb") as f:
        for lineno, (body, digest) in enumerate(physical_lines(f, limit), 1):
            if body is None:
                yield Raw(src.display, lineno, digest, "quarantine", reason="line_too_long", detail=too_long(limit))
                continue
            try:
                text = body.decode("utf-8")
            except UnicodeDecodeError as e:
                yield Raw(src.display, lineno, digest, "quarantine", reason="not_utf8",
                          detail=f"byte {e.start}: {e.reason} (expected UTF-8 text)", excerpt=excerpt(body))
                continue
            if lineno == 1 and text.startswith("\ufeff"):
                text = text[1:]
            if not text.strip():
                yield Raw(src.display, lineno, digest, "empty")
                continue
            try:
                rec = json.loads(text)
            except (ValueError, RecursionError) as e:
                msg = f"{e.msg} at column {e.colno}" if isinstance(e, json.JSONDecodeError) else \
                    "nested too deeply" if isinstance(e, RecursionError) else str(e)
                hint = "; this looks like a JSON array file: set its format to json" \
                    if lineno == 1 and text.lstrip().startswith("[") else ""
                yield Raw(src.display, lineno, digest, "quarantine", reason="invalid_json",
                          detail=f"{msg} (expected one JSON object per line{hint})", excerpt=excerpt(text))
                continue
            yield Raw(src.display, lineno, digest, "ok", record=rec)


def _parquet(src: SourceFile, limit: int, required: list[str], wanted: list[str]) -> Iterator[Raw]:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise CurationError(f"{src.display}: reading Parquet needs pyarrow, which is not installed") from None
    try:
        pf = pq.ParquetFile(src.path)
    except (pa.ArrowException, OSError, ValueError) as e:
        raise CurationError(f"{src.display}: not a readable Parquet file ({e})") from None
    names = pf.schema_arrow.names
    missing = [c for c in required if c not in names]
    if missing:
        raise CurationError(f"{src.display}: the Parquet schema has columns {names}, but the data config maps "
                            f"{missing} (data.columns), which are not among them")
    row = 0
    batches = pf.iter_batches(batch_size=2048, columns=[c for c in names if c in wanted])
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except (pa.ArrowException, OSError, ValueError) as e:
            raise CurationError(f"{src.display}: rows after {row}: cannot decode ({e})") from None
        for rec in batch.to_pylist():
            row += 1
            yield _row(src, row, rec, limit)


def _hf_disk(src: SourceFile, limit: int, required: list[str], wanted: list[str]) -> Iterator[Raw]:
    """A dataset written by `Dataset.save_to_disk` (or one split of a `DatasetDict`'s)."""
    try:
        import datasets
    except ImportError:
        raise CurationError(f"{src.display}: reading a saved Hugging Face dataset needs `datasets`, which is "
                            "not installed") from None
    try:
        ds = datasets.load_from_disk(str(src.path))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CurationError(f"{src.display}: not a readable dataset saved with save_to_disk ({e})") from None
    if isinstance(ds, datasets.DatasetDict):
        names = list(ds)
        split = src.split if src.split is not None else names[0] if len(names) == 1 else None
        if split not in ds:
            raise CurationError(f"{src.display}: a DatasetDict with splits {names}: name one as `split` in its "
                                "data.source entry (e.g. {path: ..., split: train})")
        ds = ds[split]
    elif src.split is not None:
        raise CurationError(f"{src.display}: split {src.split!r} given, but this is one Dataset, not a DatasetDict")
    names = ds.column_names
    missing = [c for c in required if c not in names]
    if missing:
        raise CurationError(f"{src.display}: the dataset has columns {names}, but the data config maps "
                            f"{missing} (data.columns), which are not among them")
    columns = [c for c in names if c in wanted]
    row = 0
    for batch in ds.select_columns(columns).iter(batch_size=1024):
        for values in zip(*(batch[c] for c in columns)):
            row += 1
            yield _row(src, row, dict(zip(columns, values)), limit)


def _row(src: SourceFile, row: int, rec: dict, limit: int) -> Raw:
    """A table row (Parquet, saved dataset), hashed as canonical JSON."""
    text = json.dumps(rec, ensure_ascii=False, sort_keys=True, default=str)
    digest = hashlib.sha256(text.encode()).hexdigest()
    if len(text) > limit:
        return Raw(src.display, row, digest, "quarantine", reason="line_too_long", detail=too_long(limit),
                   excerpt=text[:EXCERPT])
    return Raw(src.display, row, digest, "ok", record=rec)
