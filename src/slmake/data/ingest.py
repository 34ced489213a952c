"""Ingest: JSONL, CSV and Parquet files, or a folder of them, streamed one record at a time.

Every input record comes out as one `Raw` with its source, line number (for Parquet: row number)
and a content hash (sha256 of the raw line; of a CSV row's lines; of a Parquet row as canonical
JSON), whether or not it could be parsed, so the ledger can account for every one:

* `kind == "ok"`:          `record` is a parsed mapping (still unvalidated)
* `kind == "empty"`:       a blank line (dropped by the `empty` rule, not malformed)
* `kind == "quarantine"`:  `reason`/`detail` say what is wrong; `excerpt` is the start of the text

Problems with a whole file (missing, unreadable, a CSV header or Parquet schema without the mapped
columns) raise CurationError naming the file and what was expected; they are not per-record.
Reading is streaming: a line longer than `max_line_bytes` is never held in memory whole.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from .errors import CurationError

EXTENSIONS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
_MARK = "\ue000slmake-bad-line\ue000"  # stands in for an unreadable CSV line inside the csv module
EXCERPT = 200


@dataclass(frozen=True)
class SourceFile:
    path: Path
    display: str  # how the ledger and messages name it (as configured, posix separators)
    format: str


class Raw:
    __slots__ = ("source", "line", "content_hash", "kind", "record", "reason", "detail", "excerpt")

    def __init__(self, source: str, line: int, content_hash: str, kind: str, record: dict | None = None,
                 reason: str | None = None, detail: str | None = None, excerpt: str | None = None):
        self.source, self.line, self.content_hash, self.kind = source, line, content_hash, kind
        self.record, self.reason, self.detail, self.excerpt = record, reason, detail, excerpt


def find_sources(source: str, fmt: str) -> list[SourceFile]:
    """The configured file, or the matching files of the configured folder in sorted order."""
    path = Path(source)
    if path.is_file():
        if fmt == "auto":
            fmt = EXTENSIONS.get(path.suffix.lower(), "")
            if not fmt:
                raise CurationError(f"data.source: {source}: cannot tell the format from the extension "
                                    f"{path.suffix!r}; set data.format to one of jsonl, csv, parquet")
        return [SourceFile(path, Path(source).as_posix(), fmt)]
    if path.is_dir():
        files = []
        for root, dirs, names in os.walk(path):
            dirs[:] = sorted(d for d in dirs if not d.startswith((".", "_")))
            for name in sorted(names):
                kind = EXTENSIONS.get(Path(name).suffix.lower())
                if name.startswith((".", "_")) or kind is None or (fmt != "auto" and kind != fmt):
                    continue
                full = Path(root) / name
                files.append(SourceFile(full, (Path(source) / full.relative_to(path)).as_posix(), kind))
        files.sort(key=lambda s: s.display)
        if not files:
            want = sorted(e for e, k in EXTENSIONS.items() if fmt in ("auto", k))
            raise CurationError(f"data.source: folder {source} has no data files (looked for {want})")
        return files
    raise CurationError(f"data.source: {source} not found (expected a JSONL, CSV or Parquet file or a folder "
                        f"of them; relative paths resolve against {Path.cwd()})")


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read(src: SourceFile, cfg: dict, required: list[str], wanted: list[str]) -> Iterator[Raw]:
    """Stream the records of one file.  `required`: columns a CSV header / Parquet schema must
    have; `wanted`: every column the config may use (Parquet reads only those)."""
    limit = cfg["quarantine"]["max_line_bytes"]
    try:
        if src.format == "jsonl":
            yield from _jsonl(src, limit)
        elif src.format == "csv":
            yield from _csv(src, limit, cfg["csv"]["delimiter"], required)
        else:
            yield from _parquet(src, limit, required, wanted)
    except OSError as e:
        raise CurationError(f"{src.display}: cannot read: {e.strerror or e}") from None


def _lines(f, limit: int) -> Iterator[tuple[bytes | None, str]]:
    """Physical lines without their line break: (bytes, sha256) or (None, sha256) when longer than
    `limit` (then the rest of the line is skipped, hashed, never held whole)."""
    while True:
        raw = f.readline(limit + 1)
        if not raw:
            return
        if len(raw) > limit and not raw.endswith(b"\n"):
            h = hashlib.sha256(raw)
            while raw and not raw.endswith(b"\n"):
                raw = f.readline(1 << 20)
                h.update(raw.rstrip(b"\r\n") if raw.endswith(b"\n") else raw)
            yield None, h.hexdigest()
            continue
        body = raw[:-1] if raw.endswith(b"\n") else raw
        if body.endswith(b"\r"):
            body = body[:-1]
        yield body, hashlib.sha256(body).hexdigest()


def _excerpt(body: bytes | str) -> str:
    text = body if isinstance(body, str) else body[: EXCERPT * 4].decode("utf-8", "replace")
    return text[:EXCERPT]


def _too_long(limit: int) -> str:
    return f"longer than {limit} bytes (data.quarantine.max_line_bytes)"


def _jsonl(src: SourceFile, limit: int) -> Iterator[Raw]:
    with open(src.path, "rb") as f:
        for lineno, (body, digest) in enumerate(_lines(f, limit), 1):
            if body is None:
                yield Raw(src.display, lineno, digest, "quarantine", reason="line_too_long", detail=_too_long(limit))
                continue
            try:
                text = body.decode("utf-8")
            except UnicodeDecodeError as e:
                yield Raw(src.display, lineno, digest, "quarantine", reason="not_utf8",
                          detail=f"byte {e.start}: {e.reason} (expected UTF-8 text)", excerpt=_excerpt(body))
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
                yield Raw(src.display, lineno, digest, "quarantine", reason="invalid_json",
                          detail=f"{msg} (expected one JSON object per line)", excerpt=_excerpt(text))
                continue
            yield Raw(src.display, lineno, digest, "ok", record=rec)


def _csv(src: SourceFile, limit: int, delimiter: str, required: list[str]) -> Iterator[Raw]:
    bad: dict[int, tuple[str, str, str, str]] = {}  # physical line -> (reason, detail, digest, excerpt)
    digests: dict[int, str] = {}  # physical line -> sha256, for lines of the row being parsed

    def decoded(f) -> Iterator[str]:
        for lineno, (body, digest) in enumerate(_lines(f, limit), 1):
            digests[lineno] = digest
            if body is None:
                bad[lineno] = ("line_too_long", _too_long(limit), digest, "")
                yield _MARK + "\n"
                continue
            try:
                text = body.decode("utf-8")
            except UnicodeDecodeError as e:
                bad[lineno] = ("not_utf8", f"byte {e.start}: {e.reason} (expected UTF-8 text)", digest,
                               _excerpt(body))
                yield _MARK + "\n"
                continue
            yield text + "\n"

    previous = csv.field_size_limit(max(limit, 131072))  # a process-wide setting: restored below
    try:
        yield from _csv_rows(src, delimiter, required, decoded, bad, digests)
    finally:
        csv.field_size_limit(previous)


def _csv_rows(src: SourceFile, delimiter: str, required: list[str], decoded, bad: dict,
              digests: dict[int, str]) -> Iterator[Raw]:
    def lines_hash(first: int, end: int) -> str:
        """The row's content hash: its physical line's sha256, or for a row spanning several lines
        the sha256 of their hashes (then forgotten)."""
        if end - first == 1:
            return digests.pop(first, "")
        h = hashlib.sha256()
        for n in range(first, end):
            h.update(digests.pop(n, "").encode())
        return h.hexdigest()

    with open(src.path, "rb") as f:
        reader = csv.reader(decoded(f), delimiter=delimiter, strict=True)
        try:
            header = next(reader)
        except StopIteration:
            raise CurationError(f"{src.display}: empty file (expected a CSV header line)") from None
        except csv.Error as e:
            raise CurationError(f"{src.display}: line 1: cannot parse the CSV header ({e})") from None
        digests.clear()
        if 1 in bad or not header:
            raise CurationError(f"{src.display}: line 1: expected a UTF-8 CSV header line with column names")
        header = [h.removeprefix("\ufeff").strip() for h in header]
        missing = [c for c in required if c not in header]
        if missing:
            raise CurationError(f"{src.display}: line 1: the header has columns {header}, but the data config "
                                f"maps {missing} (data.columns), which are not among them")
        dupes = sorted({h for h in header if header.count(h) > 1})
        if dupes:
            raise CurationError(f"{src.display}: line 1: duplicate column names {dupes} in the header")
        start = reader.line_num + 1
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as e:
                line, start = start, reader.line_num + 1
                yield Raw(src.display, line, lines_hash(line, start), "quarantine", reason="bad_row",
                          detail=f"CSV syntax: {e}")
                continue
            line, start = start, reader.line_num + 1
            raw_hash = lines_hash(line, start)
            if any(_MARK in v for v in row):
                lines = [n for n in range(line, start) if n in bad]
                reason, detail, _, excerpt = bad[lines[0]] if lines else ("bad_row", "unreadable line", "", "")
                yield Raw(src.display, line, raw_hash, "quarantine", reason=reason, detail=detail, excerpt=excerpt)
                continue
            digest = raw_hash
            if not row or all(not v.strip() for v in row):
                yield Raw(src.display, line, digest, "empty")
                continue
            if len(row) != len(header):
                yield Raw(src.display, line, digest, "quarantine", reason="bad_row",
                          detail=f"{len(row)} fields, the header has {len(header)} (check delimiter and quoting)",
                          excerpt=_excerpt(delimiter.join(row)))
                continue
            yield Raw(src.display, line, digest, "ok", record=dict(zip(header, row)))


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
            text = json.dumps(rec, ensure_ascii=False, sort_keys=True, default=str)
            digest = hashlib.sha256(text.encode()).hexdigest()
            if len(text) > limit:
                yield Raw(src.display, row, digest, "quarantine", reason="line_too_long",
                          detail=_too_long(limit), excerpt=text[:EXCERPT])
                continue
            yield Raw(src.display, row, digest, "ok", record=rec)
