"""Text normalisation: one spelling of each text before hashing, deduplicating and training.

* Instructions: Unicode NFC, CRLF -> LF, control characters removed (newlines kept), runs of
  spaces/tabs (and other Unicode spaces) collapsed to one space, ends stripped.
* Text responses: the same, except that runs of spaces are kept (indentation in code answers
  matters); tabs are kept too.
* Near-duplicate keys: `fold`ed (NFKC, lower case, homoglyphs to the ASCII letters they imitate),
  then words joined by single spaces, punctuation gone -- so a full-width or Cyrillic-lettered copy
  of a text is the same key, its MinHash signature is the same, and it lands in the same split.
"""

from __future__ import annotations

import re
import unicodedata

from .confusables import TABLE as _HOMOGLYPHS

# C0/C1 control characters except \t and \n, zero-width and bidi formatting characters that make
# identical-looking texts differ, and lone surrogates (JSON can spell them; UTF-8 cannot).
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2060-\u2064\ufeff\ud800-\udfff]")
_SPACES = re.compile(r"[ \t\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000]+")
_TRAILING = re.compile(r"[ \t]+\n")
_WORDS = re.compile(r"\w+")


def _base(text: str) -> str:
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not text.isascii():
        text = unicodedata.normalize("NFC", text)
    return _CONTROL.sub("", text)


def normalize(text: str) -> str:
    """Normalise an instruction (see the module docstring)."""
    text = _SPACES.sub(" ", _base(text))
    return _TRAILING.sub("\n", text).strip()


def normalize_response(text: str) -> str:
    """Normalise a plain-text response: like `normalize`, but spaces and tabs inside lines stay."""
    return _TRAILING.sub("\n", _base(text)).strip()


def fold(text: str) -> str:
    """One spelling of look-alike text, for comparison only (never for training): NFKC folds
    full-width forms, ligatures and styled letters; homoglyphs (Cyrillic/Greek/... letters that
    look Latin, UTS #39) become the ASCII letter they imitate (before lower-casing: capital Cyrillic
    Т looks like T, small т does not look like t); then lower case."""
    if text.isascii():
        return text.lower()
    return unicodedata.normalize("NFKC", text).translate(_HOMOGLYPHS).lower().translate(_HOMOGLYPHS)


def dedup_key(text: str) -> str:
    """The text near-duplicate detection compares: folded words, single spaces."""
    return " ".join(_WORDS.findall(fold(text)))
