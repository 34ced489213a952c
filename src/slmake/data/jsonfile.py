"""JSON files, streamed record by record: an array of records (the Alpaca / LLaMA-Factory `.json`
layout), or an object holding that array under a key path (`records_key: data.items`).

The stdlib parses each record (json.loads); this module only finds where each array element starts
and ends, scanning the text in 1 MiB chunks with regexes (brackets and quotes outside strings; the
closing quote or a backslash inside them), so memory holds one record, not the file -- the JSON
libraries that stream (ijson) stop at the first syntax error, where this reader quarantines the one
bad record and goes on.  A record that does not parse is quarantined (`invalid_json`; `not_utf8`;
`line_too_long` past data.quarantine.max_line_bytes characters), its ledger `line` being its record
number (1-based) and its detail the physical line.  A break in the structure itself (an unterminated
string, brackets that do not match, a missing comma, the file ending inside the array) leaves no
safe place to resume, so it fails the stage naming the file, line and column: no record is lost
without a trace.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import re
from collections.abc import Iterator
from typing import BinaryIO

from .errors import CurationError
from .raw import EXCERPT, Raw, too_long
from .sources import SourceFile

_STRUCT = re.compile(r'["\[\]{}]')     # what matters outside strings, inside an array or object
_STR_END = re.compile(r'["\\]')        # what matters inside a string
_SCALAR_END = re.compile(r"[\s,\]}]")  # what ends a number or literal
_NOT_WS = re.compile(r"[^ \t\r\n]")
_SURROGATE = re.compile("[\udc80-\udcff]")  # undecodable bytes (surrogateescape)
_CLOSES = {"]": "[", "}": "{"}
CHUNK = 1 << 20


class _Broken(Exception):
    """The JSON structure is broken at (line, column)."""

    def __init__(self, where: tuple[int, int], msg: str):
        super().__init__(msg)
        self.line, self.col, self.msg = *where, msg


class _Text:
    """A window on the decoded file: read in chunks, consumed text dropped now and then."""

    def __init__(self, f: BinaryIO):
        self.f, self.dec = f, codecs.getincrementaldecoder("utf-8")("surrogateescape")
        self.buf, self.pos, self.eof = "", 0, False
        self.base = (1, 0)                     # (line, column - 1) of buf[0]
        self._mark, self._line, self._nl = 0, 1, -1  # incremental line count: index, its line, last newline
        self.more()
        if self.buf.startswith("\ufeff"):
            self.pos = 1

    def more(self) -> bool:
        """Append the next chunk; False at the end of the file."""
        if self.eof:
            return False
        chunk = self.f.read(CHUNK)
        self.eof = not chunk
        text = self.dec.decode(chunk, final=self.eof)
        self.buf += text
        return bool(chunk or text)

    def where(self, i: int) -> tuple[int, int]:
        """(line, column) of buf[i], 1-based."""
        if i < self._mark:
            self._mark, self._line, self._nl = 0, self.base[0], -1
        n = self.buf.count("\n", self._mark, i)
        if n:
            self._nl = self.buf.rfind("\n", self._mark, i)
        self._mark, self._line = i, self._line + n
        return self._line, (i - self._nl if self._nl >= 0 else self.base[1] + i + 1)

    def compact(self) -> None:
        """Drop the consumed text buf[:pos]."""
        line, col = self.where(self.pos)
        self.buf, self.pos, self.base = self.buf[self.pos:], 0, (line, col - 1)
        self._mark, self._line, self._nl = 0, line, -1

    def peek(self) -> str:
        """The next non-whitespace character ('' at the end of the file); pos moves to it."""
        while True:
            m = _NOT_WS.search(self.buf, self.pos)
            if m:
                self.pos = m.start()
                return m.group()
            self.pos = len(self.buf)
            self.compact()
            if not self.more():
                return ""

    def take_value(self, limit: int) -> tuple[str | None, str]:
        """Consume the JSON value at pos: (its text, or None when longer than `limit` characters,
        which is then never held whole; sha256 of its bytes).  Only its extent is checked here."""
        start, h, overflow = self.where(self.pos), hashlib.sha256(), False
        c = self.buf[self.pos]
        stack = [c] if c in "[{" else []
        mode = "struct" if stack else "string" if c == '"' else "scalar"
        i = self.pos + (mode != "scalar")

        def load(i: int) -> int:
            nonlocal overflow
            if i - self.pos > limit:  # too long: hash and drop what was scanned
                h.update(self.buf[self.pos:i].encode("utf-8", "surrogateescape"))
                overflow, self.pos = True, i
                self.compact()
                i = 0
            if not self.more():
                raise _Broken(start, "the file ends inside this value (an unterminated string or a missing "
                                     + ("closing bracket)" if stack else "quote)"))
            return i

        while True:
            if mode == "scalar":
                m = _SCALAR_END.search(self.buf, i)
                if m or self.eof:
                    end = m.start() if m else len(self.buf)
                    break
                i = load(len(self.buf))
            elif mode == "string":
                m = _STR_END.search(self.buf, i)
                if not m or (m.group() == "\\" and m.end() >= len(self.buf)):
                    i = load(m.start() if m else len(self.buf))
                elif m.group() == "\\":
                    i = m.end() + 1
                else:
                    i = m.end()
                    if not stack:
                        end = i
                        break
                    mode = "struct"
            else:
                m = _STRUCT.search(self.buf, i)
                if not m:
                    i = load(len(self.buf))
                    continue
                ch, i = m.group(), m.end()
                if ch == '"':
                    mode = "string"
                elif ch in "[{":
                    stack.append(ch)
                elif stack.pop() != _CLOSES[ch]:
                    raise _Broken(self.where(m.start()), f"{ch!r} does not close the bracket it meets")
                elif not stack:
                    end = i
                    break
        text = self.buf[self.pos:end]
        self.pos = end
        h.update(text.encode("utf-8", "surrogateescape"))
        return (None if overflow or len(text) > limit else text), h.hexdigest()


def read(src: SourceFile, limit: int) -> Iterator[Raw]:
    with open(src.path, "rb") as f:
        t = _Text(f)
        try:
            yield from _records(src, t, limit)
        except _Broken as e:
            raise CurationError(f"{src.display}: line {e.line}, column {e.col}: {e.msg}; the JSON structure is broken "
                                "here, so the records after it cannot be told apart (nothing was curated)") from None


def _kind(c: str) -> str:
    return {"{": "an object", "[": "an array", '"': "a string", "": "missing (the file ends)"}.get(c, "a number or literal")


def _records(src: SourceFile, t: _Text, limit: int) -> Iterator[Raw]:
    c = t.peek()
    if not c:
        raise CurationError(f"{src.display}: empty file (expected a JSON array of records)")
    if src.records_key:
        _descend(src, t, limit)
    elif c == "{":
        raise CurationError(f"{src.display}: a JSON object, not an array of records: set records_key to the key path "
                            "of the records (e.g. data.items), or format jsonl for one JSON object per line")
    elif c != "[":
        raise CurationError(f"{src.display}: line {t.where(t.pos)[0]}: expected a JSON array of records, "
                            f"found {_kind(c)}")
    yield from _array(src, t, limit)
    if not src.records_key and t.peek():
        raise _Broken(t.where(t.pos), "more text after the array of records")


def _descend(src: SourceFile, t: _Text, limit: int) -> None:
    """Move to the array at records_key (a dotted path of object keys), skipping everything else."""
    parts = src.records_key.split(".")
    for depth, part in enumerate(parts):
        here = ".".join(parts[:depth]) or "the top level"
        if (c := t.peek()) != "{":
            raise CurationError(f"{src.display}: records_key {src.records_key}: {here} is {_kind(c)}, not an object")
        t.pos += 1
        keys: list[str] = []
        while (c := t.peek()) != "}":
            if c != '"':
                raise _Broken(t.where(t.pos), f"expected a key in quotes, found {c or 'the end of the file'!r}")
            text, _ = t.take_value(limit)
            name = json.loads(text) if text is not None else None
            if t.peek() != ":":
                raise _Broken(t.where(t.pos), f"expected ':' after the key {name!r}")
            t.pos += 1
            t.peek()
            if name == part:
                break
            keys.append(name)
            t.take_value(limit)  # a value not on the path: skipped, never held whole when big
            if t.pos > CHUNK:
                t.compact()
            if (c := t.peek()) == ",":
                t.pos += 1
            elif c != "}":
                raise _Broken(t.where(t.pos), f"expected ',' or '}}' after the value of {name!r}")
        else:
            raise CurationError(f"{src.display}: records_key {src.records_key}: no key {part!r} in {here} "
                                f"(its keys: {keys[:20]})")
    if (c := t.peek()) != "[":
        raise CurationError(f"{src.display}: records_key {src.records_key} is {_kind(c)}, expected an array of records")


def _array(src: SourceFile, t: _Text, limit: int) -> Iterator[Raw]:
    opened = t.where(t.pos)
    t.pos += 1
    if t.peek() == "]":
        t.pos += 1
        return
    n = 0
    while True:
        if not t.peek():
            raise _Broken(opened, "the array of records opened here is not closed (the file ends inside it)")
        n += 1
        line = t.where(t.pos)[0]
        text, digest = t.take_value(limit)
        yield _record(src, n, line, text, digest, limit)
        if t.pos > CHUNK:
            t.compact()
        c = t.peek()
        if c == ",":
            t.pos += 1
            if t.peek() == "]":  # a trailing comma
                c = "]"
        if c == "]":
            t.pos += 1
            return
        if c != ",":
            raise _Broken(t.where(t.pos), f"expected ',' or ']' after record {n} (line {line}), "
                                          f"found {c or 'the end of the file'!r}")


def _record(src: SourceFile, n: int, line: int, text: str | None, digest: str, limit: int) -> Raw:
    if text is None:
        return Raw(src.display, n, digest, "quarantine", reason="line_too_long",
                   detail=f"record {n} (line {line}): {too_long(limit).replace('bytes', 'characters')}")
    shown = _SURROGATE.sub("\ufffd", text[: EXCERPT * 2])[:EXCERPT]
    if _SURROGATE.search(text):
        return Raw(src.display, n, digest, "quarantine", reason="not_utf8",
                   detail=f"record {n} (line {line}): bytes that are not UTF-8 (expected UTF-8 text)", excerpt=shown)
    try:
        rec = json.loads(text)
    except (ValueError, RecursionError) as e:
        at = f"line {line + e.lineno - 1}, column {e.colno}: {e.msg}" if isinstance(e, json.JSONDecodeError) \
            else f"line {line}: nested too deeply"
        return Raw(src.display, n, digest, "quarantine", reason="invalid_json",
                   detail=f"record {n} ({at})", excerpt=shown)
    return Raw(src.display, n, digest, "ok", record=rec, where=f"record {n} (line {line})")
