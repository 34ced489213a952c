"""The audit trail: one ledger row per input record, the quarantine file, and atomic publishing.

Ledger (CSV, input order): source, line, content_hash (sha256 of the raw line; for a CSV row over
several lines, of their hashes; for Parquet, of the row as canonical JSON), record_id (the output id, when the record got that far), fate (kept / dropped /
quarantined), split (kept rows), reason (the rule or quarantine reason), copies (times written
to train; 0 when not kept).

The read pass writes every row to a spool as soon as the record is read; rows of records still
in the running carry their candidate number instead of a fate.  The write pass streams the spool
into the final ledger, filling in fates decided after the whole input was seen -- nothing grows
with the input except the small per-candidate arrays.

`Staged` writes every output to a temporary sibling and renames them all only at the end, so a
failure never leaves half-written splits (or a ledger that disagrees with them) behind.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

LEDGER_COLUMNS = ("source", "line", "content_hash", "record_id", "fate", "split", "reason", "copies")


class Staged:
    """Temporary siblings of the final paths, renamed into place together by `publish`."""

    def __init__(self) -> None:
        self._files: list[tuple[TextIO, str, Path]] = []

    def open(self, final: Path) -> TextIO:
        final = Path(final)
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp")
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; outputs are ordinary shared files
        fh = os.fdopen(fd, "w", encoding="utf-8", newline="\n")
        self._files.append((fh, tmp, final))
        return fh

    def publish(self) -> None:
        for fh, _, _ in self._files:
            fh.flush()
            os.fsync(fh.fileno())
            fh.close()
        for _, tmp, final in self._files:
            os.replace(tmp, final)
        self._files = []

    def discard(self) -> None:
        for fh, tmp, _ in self._files:
            fh.close()
            Path(tmp).unlink(missing_ok=True)
        self._files = []


class LedgerSpool:
    """Read pass: one spool line per input record (tab-separated; sources by index)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._f = open(self.path, "w", encoding="utf-8", newline="\n")
        self.sources: list[str] = []
        self._index: dict[str, int] = {}

    def _src(self, source: str) -> int:
        i = self._index.get(source)
        if i is None:
            i = self._index[source] = len(self.sources)
            self.sources.append(source)
        return i

    def final(self, source: str, line: int, content_hash: str, fate: str, reason: str, record_id: str = "") -> None:
        self._f.write(f"{self._src(source)}\t{line}\t{content_hash}\t{record_id}\t{fate}\t{reason}\n")

    def pending(self, source: str, line: int, content_hash: str, record_id: str, candidate: int) -> None:
        self._f.write(f"{self._src(source)}\t{line}\t{content_hash}\t{record_id}\t?\t{candidate}\n")

    def close(self) -> None:
        self._f.close()

    def write_ledger(self, out: TextIO, fate_of: Callable[[int], tuple[str, str, str, int]]) -> dict[str, int]:
        """Write pass: stream the spool into the final CSV; fate_of(candidate) -> (fate, split, reason, copies).
        Returns the number of rows per fate (for the invariant check)."""
        self.close()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(LEDGER_COLUMNS)
        totals = {"kept": 0, "dropped": 0, "quarantined": 0}
        with open(self.path, encoding="utf-8", newline="\n") as f:
            for row in f:
                src, line, chash, rid, fate, rest = row.rstrip("\n").split("\t")
                if fate == "?":
                    fate, split, reason, n = fate_of(int(rest))
                else:
                    split, reason, n = "", rest, 0
                totals[fate] += 1
                writer.writerow((self.sources[int(src)], line, chash, rid, fate, split, reason, n))
        return totals


def quarantine_row(source: str, line: int, reason: str, detail: str | None, content_hash: str,
                   excerpt: str | None) -> str:
    text = json.dumps({"source": source, "line": line, "reason": reason, "detail": detail,
                       "content_hash": content_hash, "excerpt": excerpt}, ensure_ascii=False) + "\n"
    return text.encode("utf-8", "replace").decode("utf-8")  # lone surrogates in an excerpt -> "?"


def read_ledger(path: Path) -> list[dict]:
    """The ledger as a list of dicts (for tests and tools)."""
    return list(csv.DictReader(io.StringIO(Path(path).read_text(encoding="utf-8"))))
