"""CSV files, streamed record by record with Python's csv module (strict quoting).

A quoted field may span lines, so one CSV record can be several physical lines -- and a quote that
is never closed swallows every line after it into one field.  So a record that spans lines and is
malformed (a CSV syntax error, the file ending inside quotes, the wrong number of fields) is not
taken as one record: its first line is quarantined (`bad_row`, naming the lines) and the lines
after it are read again as records of their own.  A single line with the wrong number of fields is
quarantined as it is.  The ledger's `line` is a record's first physical line; its content hash is
that line's sha256, or for a record over several lines, the sha256 of their hashes.
"""

from __future__ import annotations

import csv
import hashlib
from collections import deque
from collections.abc import Iterator
from typing import BinaryIO, NamedTuple

from .errors import CurationError
from .raw import Raw, excerpt, physical_lines, too_long
from .sources import SourceFile

_MARK = "\ue000slmake-bad-line\ue000"  # stands in for an unreadable line inside the csv module


class _Line(NamedTuple):
    number: int
    text: str                                # with its line break; _MARK for an unreadable line
    digest: str
    bad: tuple[str, str, str] | None = None  # (reason, detail, excerpt) of an unreadable line


class _Feed:
    """Physical lines as the csv reader pulls them; the lines of the current record are kept
    (`taken`) so that they can be pushed back and read again."""

    def __init__(self, lines: Iterator[_Line]):
        self._lines, self._back, self.taken = lines, deque(), []

    def __iter__(self):
        return self

    def __next__(self) -> str:
        line = self._back.popleft() if self._back else next(self._lines)
        self.taken.append(line)
        return line.text

    def push_back(self, lines: list[_Line]) -> None:
        self._back.extendleft(reversed(lines))


def read(src: SourceFile, limit: int, delimiter: str, required: list[str]) -> Iterator[Raw]:
    """Stream the records of one CSV file; `required`: columns its header must have."""
    previous = csv.field_size_limit(max(limit, 131072))  # a process-wide setting: restored below
    try:
        with open(src.path, "rb") as f:
            yield from _records(src, _Feed(_decoded(f, limit)), delimiter, required)
    finally:
        csv.field_size_limit(previous)


def _decoded(f: BinaryIO, limit: int) -> Iterator[_Line]:
    for number, (body, digest) in enumerate(physical_lines(f, limit), 1):
        if body is None:
            yield _Line(number, _MARK + "\n", digest, ("line_too_long", too_long(limit), ""))
            continue
        try:
            yield _Line(number, body.decode("utf-8") + "\n", digest)
        except UnicodeDecodeError as e:
            yield _Line(number, _MARK + "\n", digest,
                        ("not_utf8", f"byte {e.start}: {e.reason} (expected UTF-8 text)", excerpt(body)))


def _digest(lines: list[_Line]) -> str:
    if len(lines) == 1:
        return lines[0].digest
    h = hashlib.sha256()
    for line in lines:
        h.update(line.digest.encode())
    return h.hexdigest()


def _header(src: SourceFile, feed: _Feed, reader, required: list[str]) -> list[str]:
    try:
        header = next(reader)
    except StopIteration:
        raise CurationError(f"{src.display}: empty file (expected a CSV header line)") from None
    except csv.Error as e:
        raise CurationError(f"{src.display}: line 1: cannot parse the CSV header ({e})") from None
    if any(line.bad for line in feed.taken) or not header:
        raise CurationError(f"{src.display}: line 1: expected a UTF-8 CSV header line with column names")
    header = [h.removeprefix("\ufeff").strip() for h in header]
    missing = [c for c in required if c not in header]
    if missing:
        raise CurationError(f"{src.display}: line 1: the header has columns {header}, but the data config "
                            f"maps {missing} (data.columns), which are not among them")
    dupes = sorted({h for h in header if header.count(h) > 1})
    if dupes:
        raise CurationError(f"{src.display}: line 1: duplicate column names {dupes} in the header")
    return header


def _records(src: SourceFile, feed: _Feed, delimiter: str, required: list[str]) -> Iterator[Raw]:
    reader = csv.reader(feed, delimiter=delimiter, strict=True)
    header = _header(src, feed, reader, required)
    while True:
        feed.taken = []
        try:
            row, problem = next(reader), None
        except StopIteration:
            return
        except csv.Error as e:
            row, problem = None, f"CSV syntax: {e}"
        lines, first = feed.taken, feed.taken[0]
        if row is not None and any(_MARK in v for v in row):
            reason, detail, shown = next((x.bad for x in lines if x.bad), ("bad_row", "unreadable line", ""))
            yield Raw(src.display, first.number, _digest(lines), "quarantine", reason=reason, detail=detail,
                      excerpt=shown)
            continue
        if row is not None and (not row or all(not v.strip() for v in row)):
            yield Raw(src.display, first.number, _digest(lines), "empty")
            continue
        if row is not None and len(row) == len(header):
            yield Raw(src.display, first.number, _digest(lines), "ok", record=dict(zip(header, row)))
            continue
        problem = problem or f"{len(row)} fields, the header has {len(header)}"
        if len(lines) > 1:  # a quote opened on the first line was not closed where a record ends
            feed.push_back(lines[1:])
            reader = csv.reader(feed, delimiter=delimiter, strict=True)
            yield Raw(src.display, first.number, first.digest, "quarantine", reason="bad_row",
                      detail=f"{problem}, reading lines {first.number}-{lines[-1].number} as one record: a quote "
                             f"opened on line {first.number} is not closed; lines {first.number + 1}-"
                             f"{lines[-1].number} are read again as records of their own",
                      excerpt=excerpt(first.text.rstrip("\n")))
            continue
        yield Raw(src.display, first.number, first.digest, "quarantine", reason="bad_row",
                  detail=problem if row is None else f"{problem} (check delimiter and quoting)",
                  excerpt=None if row is None else excerpt(delimiter.join(row)))
