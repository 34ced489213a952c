"""PII scrubbing: replace personal data with typed placeholders before anything is trained on.

Built-in detectors, each a cheap regex for candidates plus a validity check that keeps false
positives down:

* email  -> <EMAIL>   local@domain.tld
* iban   -> <IBAN>    country code + check digits, the country's registered length, ISO 7064 mod 97 == 1
* card   -> <CARD>    13-19 digits, bare or in the printed groups (4-4-4-4, 4-6-5), passing the
                      Luhn check; a random digit string that fails Luhn is left alone
* ip     -> <IP>      IPv4 (every octet <= 255) and IPv6 (validated by `ipaddress`)
* phone  -> <PHONE>   +<country> numbers, North-American (555) 123-4567 / 555-123-4567, and
                      trunk-prefixed national numbers (020 7946 0958); 8-15 digits.  Bare digit
                      runs without + or a leading 0 are not phones (they are ids, amounts, codes).

plus configured patterns (`pii.patterns`: name + regex -> <NAME>), applied first.  Optional deeper
detection with presidio-analyzer (`pii.presidio: true`) runs only when presidio and its language
model are installed; otherwise it is skipped and the report says why.
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from typing import Any, Callable

TYPES = ("email", "phone", "iban", "card", "ip")

# Registered IBAN lengths (SWIFT IBAN registry).
IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BI": 27,
    "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27, "DK": 18, "DO": 28,
    "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23,
    "GL": 18, "GR": 27, "GT": 28, "HN": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26,
    "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21,
    "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MN": 20, "MR": 27, "MT": 31, "MU": 30, "NI": 28,
    "NL": 18, "NO": 15, "OM": 23, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22,
    "RU": 33, "SA": 24, "SC": 31, "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25,
    "SV": 28, "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}

_EMAIL = re.compile(r"(?<![\w.%+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,24}(?![\w-])")
_IBAN = re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}(?![a-z0-9])")
_CARD = re.compile(
    r"(?<![\w.,-])(?:"
    r"\d{13,19}"                                      # 4111111111111111
    r"|\d{4}([ -])\d{4}(?:\1\d{4}){1,2}(?:\1\d{1,4})?"  # 4111 1111 1111 1111 (+ a short last group)
    r"|\d{4}([ -])\d{6}\2\d{4,5}"                      # Amex 3782 822463 10005, Diners 14 digits
    r")(?!\w|[.,-]\d)")
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_IPV4 = re.compile(rf"(?<![\w.]){_OCTET}(?:\.{_OCTET}){{3}}(?!\w|\.\d)")
_IPV6 = re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])")
_PHONE = re.compile(
    r"(?<![\w+.-])(?:"
    r"\+\d{1,3}(?:[ .-]?\(?\d{1,4}\)?)(?:[ .-]?\d{2,5}){1,5}"        # +44 20 7946 0958, +1 (555) 123-4567
    r"|(?:\(\d{3}\) ?|\d{3}[ .-])\d{3}[ .-]\d{4}"                     # (555) 123-4567, 555-123-4567
    r"|0\d{1,4}(?:[ /.-]?\d{2,8}){1,4}"                               # 020 7946 0958, 01 23 45 67 89
    r")(?![\w-]|[.,]\d)")
_DIGIT = re.compile(r"\d")


def luhn_ok(digits: str) -> bool:
    total, parity = 0, len(digits) % 2
    for i, ch in enumerate(digits):
        d = ord(ch) - 48
        if i % 2 == parity:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def iban_ok(iban: str) -> bool:
    """Length registered for the country and ISO 7064 mod-97 check digits."""
    if IBAN_LENGTHS.get(iban[:2]) != len(iban) or not iban.isalnum():
        return False
    rearranged = iban[4:] + iban[:4]
    return int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1


def _sub_iban(m: re.Match) -> tuple[str, int, int] | None:
    """Find the IBAN at the start of the candidate (it may have swallowed a following word)."""
    text = m.group(0)
    want = IBAN_LENGTHS.get(text[:2])
    if want is None:
        return None
    n, end = 0, 0
    for i, ch in enumerate(text):
        if ch != " ":
            n += 1
            if n == want:
                end = i + 1
                break
    if not end or not iban_ok(text[:end].replace(" ", "")):
        return None
    return "<IBAN>", m.start(), m.start() + end


def _card_spans(m: re.Match) -> list[tuple[int, int]]:
    """The candidate if it passes Luhn; a grouped candidate may have swallowed a trailing short
    group (an expiry month, a CVC), so without its last group it is tried once more.  Nothing
    else is tried: a random 16-digit number that fails Luhn is never scrubbed because some piece
    of it happens to pass."""
    text = m.group(0)
    tries = [text]
    if not text.isdigit():
        cut = max(text.rfind(" "), text.rfind("-"))
        tries.append(text[:cut])
    for t in tries:
        digits = t.replace(" ", "").replace("-", "")
        if 13 <= len(digits) <= 19 and luhn_ok(digits):
            return [(m.start(), m.start() + len(t))]
    return []


def _phone_ok(s: str) -> bool:
    n = sum(c.isdigit() for c in s)
    if s.startswith("+"):
        return 8 <= n <= 15
    if s.startswith("0"):
        return 9 <= n <= 12
    return n == 10


def _ipv6_ok(s: str) -> bool:
    if sum(1 for part in s.split(":") if part) < 2:
        return False
    try:
        ipaddress.IPv6Address(s)
    except ValueError:
        return False
    return True


class Scrubber:
    """Replace PII in texts; `counts` accumulates replacements per type across calls."""

    def __init__(self, enabled: bool = True, types: list[str] | tuple[str, ...] = TYPES,
                 patterns: list[dict] | None = None, presidio: bool = False):
        self.enabled = enabled
        self.types = set(types) if enabled else set()
        self.custom = [(p["name"].upper(), re.compile(p["regex"])) for p in (patterns or [])] if enabled else []
        self.counts: Counter = Counter({t: 0 for t in sorted(self.types)})
        for name, _ in self.custom:
            self.counts[name.lower()] += 0
        self.presidio_status = "off"
        self._presidio: Callable[[str], str] | None = None
        if enabled and presidio:
            self._presidio, self.presidio_status = _load_presidio(self.counts)

    def scrub(self, text: str) -> str:
        if not self.enabled or not text:
            return text
        for name, rx in self.custom:
            text = self._replace(text, rx, name.lower(), f"<{name}>")
        t = self.types
        if "email" in t and "@" in text:
            text = self._replace(text, _EMAIL, "email", "<EMAIL>")
        if _DIGIT.search(text):
            if "iban" in t:
                text = self._spans(text, _IBAN, "iban", lambda m: [r[1:] for r in [_sub_iban(m)] if r])
            if "card" in t:
                text = self._spans(text, _CARD, "card", _card_spans)
            if "ip" in t:
                text = self._replace(text, _IPV4, "ip", "<IP>")
                if ":" in text:
                    text = self._replace(text, _IPV6, "ip", "<IP>", _ipv6_ok)
            if "phone" in t:
                text = self._replace(text, _PHONE, "phone", "<PHONE>", _phone_ok)
        if self._presidio is not None:
            text = self._presidio(text)
        return text

    def scrub_json(self, value: Any) -> Any:
        """Scrub every string inside a JSON value (keys are left alone); returns the same object
        when nothing changed."""
        if isinstance(value, str):
            return self.scrub(value)
        if isinstance(value, list):
            new = [self.scrub_json(v) for v in value]
            return value if all(a is b for a, b in zip(new, value)) else new
        if isinstance(value, dict):
            new = {k: self.scrub_json(v) for k, v in value.items()}
            return value if all(new[k] is v for k, v in value.items()) else new
        return value

    def _replace(self, text: str, rx: re.Pattern, kind: str, placeholder: str,
                 ok: Callable[[str], bool] | None = None) -> str:
        def sub(m: re.Match) -> str:
            if ok is not None and not ok(m.group(0)):
                return m.group(0)
            self.counts[kind] += 1
            return placeholder
        return rx.sub(sub, text)

    def _spans(self, text: str, rx: re.Pattern, kind: str, find: Callable) -> str:
        spans = [s for m in rx.finditer(text) for s in find(m)]
        if not spans:
            return text
        placeholder, out, pos = f"<{kind.upper()}>", [], 0
        for s, e in spans:
            out.append(text[pos:s])
            out.append(placeholder)
            pos = e
        out.append(text[pos:])
        self.counts[kind] += len(spans)
        return "".join(out)


def _load_presidio(counts: Counter) -> tuple[Callable[[str], str] | None, str]:
    """presidio-analyzer as an optional extra: (scrub function, status) or (None, why skipped)."""
    try:
        from presidio_analyzer import AnalyzerEngine  # type: ignore[import-not-found]
    except ImportError:
        return None, "skipped: presidio-analyzer is not installed"
    try:
        engine = AnalyzerEngine()
    except Exception as e:  # noqa: BLE001 - a missing spaCy model etc.: skip, and say why
        return None, f"skipped: presidio could not start ({type(e).__name__}: {e})"

    def scrub(text: str) -> str:
        results = sorted(engine.analyze(text=text, language="en"), key=lambda r: (r.start, -r.end))
        out, pos = [], 0
        for r in results:
            if r.start < pos or text[r.start:r.end].startswith("<"):
                continue
            out += [text[pos:r.start], f"<{r.entity_type}>"]
            counts[f"presidio:{r.entity_type.lower()}"] += 1
            pos = r.end
        return "".join(out) + text[pos:]

    return scrub, "on"
