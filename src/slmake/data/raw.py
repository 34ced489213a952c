"""One input record as a reader yields it (`Raw`), and the helpers every reader shares.

Every input record comes out as one `Raw` with its source, position (a line number; for Parquet,
JSON arrays and saved datasets: the record number) and a content hash, whether or not it could be
parsed, so the ledger can account for every one:

* `kind == "ok"`:          `record` is a parsed mapping (still unvalidated)
* `kind == "empty"`:       a blank line (dropped by the `empty` rule, not malformed)
* `kind == "quarantine"`:  `reason`/`detail` say what is wrong; `excerpt` is the start of the text
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import BinaryIO

EXCERPT = 200


class Raw:
    __slots__ = ("content_hash", "detail", "excerpt", "kind", "line", "reason", "record", "source", "where")

    def __init__(self, source: str, line: int, content_hash: str, kind: str, record: dict | None = None,
                 reason: str | None = None, detail: str | None = None, excerpt: str | None = None,
                 where: str | None = None):
        self.source, self.line, self.content_hash, self.kind = source, line, content_hash, kind
        self.record, self.reason, self.detail, self.excerpt = record, reason, detail, excerpt
        self.where = where   # where a record that is not one line starts ("record 8 (line 9)"), for details


def physical_lines(f: BinaryIO, limit: int) -> Iterator[tuple[bytes | None, str]]:
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


def excerpt(body: bytes | str) -> str:
    text = body if isinstance(body, str) else body[: EXCERPT * 4].decode("utf-8", "replace")
    return text[:EXCERPT]


def too_long(limit: int) -> str:
    return f"longer than {limit} bytes (data.quarantine.max_line_bytes)"
