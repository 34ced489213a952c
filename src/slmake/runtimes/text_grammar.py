"""GBNF for a plain-text answer (``response_format: text``) from its string JSON Schema.

llama.cpp's JSON-Schema converter writes grammars for JSON *values*: a string schema becomes a
quoted JSON string (``"\\"card_arrival\\"" space``), which is right for a JSON answer and wrong
for a text answer, where the model was trained to write the bare label. Stripping the quotes off
the converter's output would be text surgery on a format that changes between llama.cpp versions
(and its string literals would still be JSON-escaped), so the grammar is built here instead:

* ``enum`` / ``const``: an alternation of GBNF string literals, escaped for GBNF only (exact: the
  grammar accepts precisely the listed strings; non-string members can never be a text answer).
* ``pattern``: llama.cpp's own regex translator in its raw mode (``raw_pattern=True``: the
  supported way to get the pattern without the JSON quotes); an unanchored pattern is a search,
  as in JSON Schema, so any text may come before/after it.
* ``minLength`` / ``maxLength``: that many characters (code points, as JSON Schema counts them).
* ``anyOf`` / ``oneOf`` of those: an alternation.

One space may come first (``root ::= " "? ...``): grammars match the bytes of token pieces, and a
model whose tokenizer marks word starts (SentencePiece's ``▁network``, byte-level BPE's
``Ġnetwork``) writes a label as ONE such piece, i.e. as " network". The decoder drops that mark at
the start (SentencePiece) and text answers are compared and validated stripped (metrics.score,
serve), so it is the same answer; without the optional space the grammar forced the label spelled
in word-internal pieces (``n`` ``et`` ``work``), a token sequence the model was never trained on.
Only the one word-boundary space: two spaces, or a trailing one, stay outside the grammar.

The grammar may be looser than the schema (keywords it cannot express, e.g. ``not``, ``format``,
a length next to a pattern), never the only check: every answer is validated against the schema
afterwards, and an invalid one is refused. ``TextGrammarUnsupported`` says when nothing in the
schema can be expressed; then answers are validated only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .llama_backend import load_llama_cpp

ANY_CHAR = r"[^\x00]"          # a text answer may hold any character (newlines too) but NUL
CHAR = "text-char"
LEAD = '" "?'                  # the word-start mark a label's first token may carry (see above)


@dataclass(frozen=True)
class TextAnswer:
    """A runner constraint for a plain-text answer: the string ``schema`` allows, bare (no quotes).
    A bare dict constraint is a JSON Schema for a JSON answer."""
    schema: dict


class TextGrammarUnsupported(ValueError):
    """No part of the schema can constrain a text answer; the message says why."""


class NoTextAnswer(TextGrammarUnsupported):
    """The (sub)schema admits no string at all (a non-string type, an enum without strings)."""


def literal(text: str) -> str:
    """``text`` as a GBNF string literal (llama.cpp's escapes: \\\\ \\" \\n \\r \\t \\xHH)."""
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def text_gbnf(schema: dict) -> str:
    """The GBNF whose ``root`` accepts the text answers ``schema`` allows (as closely as GBNF can)."""
    rules: dict[str, str] = {}
    expr = _expr(schema, rules, "t")
    if expr is None:
        raise TextGrammarUnsupported(f"nothing in the response schema constrains a text answer "
                                     f"({_short(schema)}): answers are validated only")
    if not expr.startswith(CHAR + "*"):    # an unanchored pattern allows any lead already
        expr = f"{LEAD} {expr}"
    return "\n".join([f"root ::= {expr}", *(f"{k} ::= {v}" for k, v in rules.items())]) + "\n"


def _expr(schema, rules: dict[str, str], name: str) -> str | None:
    """A GBNF expression for one (sub)schema, None when it does not constrain text."""
    if not isinstance(schema, dict):
        return None
    types = schema.get("type")
    if types is not None and "string" not in ([types] if isinstance(types, str) else types):
        raise NoTextAnswer(f"response schema type {types!r}: a text answer is a string and can "
                                     "never satisfy it")
    if "const" in schema or "enum" in schema:
        values = [schema["const"]] if "const" in schema else list(schema["enum"])
        strings = list(dict.fromkeys(v for v in values if isinstance(v, str)))
        if not strings:
            raise NoTextAnswer(f"response schema enum/const {values!r}: no string value, so no text "
                                         "answer can satisfy it")
        # longest first: with a shared prefix either order is correct, this one reads better
        return "(" + " | ".join(literal(s) for s in sorted(strings, key=lambda s: (-len(s), s))) + ")"
    if isinstance(schema.get("pattern"), str):
        return _pattern(schema["pattern"], rules, name)
    for key in ("anyOf", "oneOf"):
        branches = schema.get(key)
        if isinstance(branches, list) and branches:
            parts = []
            for i, branch in enumerate(branches):
                try:
                    parts.append(_expr(branch, rules, f"{name}-{i}"))
                except NoTextAnswer:            # a branch no text satisfies adds nothing to the union
                    continue
            if not parts:
                raise NoTextAnswer(f"response schema {key}: no branch admits a string")
            if any(p is None for p in parts):   # an unconstrained branch: the union is anything
                return None
            return "(" + " | ".join(parts) + ")"
    lo, hi = schema.get("minLength"), schema.get("maxLength")
    if isinstance(lo, int) or isinstance(hi, int):
        rules[CHAR] = ANY_CHAR
        lo = max(int(lo or 0), 0)
        if hi is None:
            return " ".join([CHAR] * lo + [CHAR + "*"])
        if hi < lo:
            raise TextGrammarUnsupported(f"response schema minLength {lo} > maxLength {hi}")
        return f"{CHAR}{{{lo},{hi}}}" if hi else '""'
    return None


_CLASS_ESC = {"d": "0-9", "w": "A-Za-z0-9_", "s": r" \t\n\r\x0B\x0C"}


def _regex_for_llama(pattern: str) -> str:
    """Spell what llama.cpp's regex translator passes through verbatim into GBNF: ``\\d \\w \\s`` (in
    and out of classes) as classes, a quote as ``\\x22`` (its raw mode does not escape quotes)."""
    out, i, in_class = [], 0, False
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern):
            nxt = pattern[i + 1]
            if nxt in _CLASS_ESC:
                out.append(_CLASS_ESC[nxt] if in_class else f"[{_CLASS_ESC[nxt]}]")
            elif nxt.upper() in _CLASS_ESC and nxt.isupper() and not in_class:
                out.append(f"[^{_CLASS_ESC[nxt.lower()]}]")
            else:
                out.append(pattern[i:i + 2])
            i += 2
            continue
        if c == '"':
            out.append(r"\x22")
        else:
            out.append(c)
            if c == "[" and not in_class:
                in_class = True
            elif c == "]" and in_class:
                in_class = False
        i += 1
    return "".join(out)


def _pattern(pattern: str, rules: dict[str, str], name: str) -> str:
    SchemaConverter = load_llama_cpp().llama_grammar.SchemaConverter  # llama.cpp's regex -> GBNF

    start = pattern.startswith("^")
    end = pattern.endswith("$") and not re.search(r"(?<!\\)(\\\\)*\\\$$", pattern)
    core = pattern[1 if start else 0: len(pattern) - 1 if end else len(pattern)]
    conv = SchemaConverter(prop_order={}, allow_fetch=False, dotall=False, raw_pattern=True)
    try:
        rule = conv.visit({"type": "string", "pattern": "^(" + _regex_for_llama(core) + ")$"}, f"{name}-pattern")
    except (AssertionError, ValueError, IndexError, KeyError) as e:
        raise TextGrammarUnsupported(f"response schema pattern {pattern!r}: llama.cpp's regex translator "
                                     f"cannot express it ({e}): answers are validated only") from None
    rules.update(line.split(" ::= ", 1) for line in conv.format_grammar().splitlines()
                 if " ::= " in line and not line.startswith("space ::= "))
    if start and end:
        return rule
    rules[CHAR] = ANY_CHAR
    return " ".join([*([] if start else [CHAR + "*"]), rule, *([] if end else [CHAR + "*"])])


def _short(value, n: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= n else text[: n - 3] + "..."
