"""PII scrubbing: replace personal data with typed placeholders before anything is trained on.

Built-in detectors, each a cheap regex for candidates plus a validity check that keeps false
positives down:

* email  -> <EMAIL>   local@domain.tld, "quoted local"@domain, user@localhost, user@[ip], and the
                      spelled-out forms people use to dodge scrapers (john.doe at example dot com,
                      john (at) example (dot) com, john[at]example.com)
* iban   -> <IBAN>    country code + check digits, the country's registered length, ISO 7064 mod 97
                      == 1; upper or lower case, grouped by spaces or dashes
* card   -> <CARD>    13-19 digits, bare or in the printed groups (4-4-4-4, 4-6-5) separated by
                      spaces, dashes or dots, passing the Luhn check; a random digit string that
                      fails Luhn is left alone
* ip     -> <IP>      IPv4 (every octet <= 255) and IPv6 incl. compressed forms (::1, fe80::) and
                      IPv4-mapped ones (validated by `ipaddress`)
* phone  -> <PHONE>   +<country> numbers, North-American (555) 123-4567 / 555-123-4567 / 1-800-...,
                      trunk-prefixed national numbers (020 7946 0958, (02) 9876 5432), bare
                      10-digit numbers that are valid North-American or Indian mobile numbers
                      (9876543210, 98765 43210). Other digit runs are not phones (ids, amounts).

* person -> <NAME>    person names found by a real NER model (spaCy en_core_web_md, offline:
                      slmake.data.ner), applied last. Not in the curation default (`TYPES`): list
                      it in `data.pii.types`. The request log of `slmake serve` scrubs it by
                      default (`LOG_TYPES`).

plus configured patterns (`pii.patterns`: name + regex -> <NAME>), applied first, and person names
from an explicit list (`names` -> <NAME>, see `names_pattern`). presidio-analyzer
(`pii.presidio: true`) runs too when presidio and its language model are installed; otherwise it
is skipped and the report says why. `name_slots` / `names_warning` tell the data card when a
dataset has name-like fields and nothing scrubs names.
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from collections.abc import Callable
from typing import Any

from .ner import PersonNames
from .ner import replace as replace_spans

TYPES = ("email", "phone", "iban", "card", "ip")   # the curation default (conf/data/_base.yaml)
PERSON = "person"
ALL_TYPES = (*TYPES, PERSON)
LOG_TYPES = ALL_TYPES                               # what serve's request log scrubs by default

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

_LOCAL = r"(?:[\w%+-]+(?:[.'][\w%+-]+)*|\"[^\"\n@]{1,64}\")"   # dotted or "quoted local part"
_DOMAIN = r"(?:(?:[^\W_](?:[\w-]{0,61}[^\W_])?\.)+[^\W\d_]{2,24}|localhost|\[[0-9A-Fa-f:.]+\])"
_EMAIL = re.compile(rf"(?<![\w.%+'-]){_LOCAL}@{_DOMAIN}(?![\w-])")
# Spelled-out: "john.doe at example dot com", "john (at) example (dot) com", "john[at]example.com".
_AT = r"(?:\s*[(\[{<]\s*at\s*[)\]}>]\s*|\s+at\s+|\s*@\s*)"
_DOT = r"(?:\s*[(\[{<]\s*dot\s*[)\]}>]\s*|\s+dot\s+|\.)"
_TLDS = ("com|org|net|edu|gov|mil|int|info|biz|io|ai|co|me|dev|app|eu|uk|us|ca|au|nz|in|de|fr|es|it|nl|be|"
         "ch|at|ie|se|no|dk|fi|pl|pt|br|mx|jp|cn|ru|za|sg|hk")
_EMAIL_SPELLED = re.compile(
    rf"(?<![\w.%+-])[\w%+-]+(?:{_DOT}[\w%+-]+)*{_AT}(?!(?:the|a|an|my|your|our|his|her|their|this|that|"
    rf"home|work|least|most|all|once|first|last|night|noon)\b)[^\W_][\w-]*(?:{_DOT}[^\W_][\w-]*)*?{_DOT}"
    rf"(?:{_TLDS})(?![\w-]|\.[^\W_])", re.IGNORECASE)
_SPELLED_GATE = re.compile(r"(?i)[\s(\[{<]at[\s)\]}>]|@")
_AT_TOKEN = re.compile(_AT, re.IGNORECASE)
_SPELLED_DOT = re.compile(r"(?i)\s+dot\s+|[(\[{<]\s*dot\s*[)\]}>]")

_IBAN = re.compile(r"(?<![A-Za-z0-9])[A-Za-z]{2}\d{2}(?:[ -]?[A-Za-z0-9]){11,30}")
_CARD = re.compile(
    r"(?<![\w.,-])(?:"
    r"\d{13,19}"                                        # 4111111111111111
    r"|\d{4}([ .-])\d{4}(?:\1\d{4}){1,2}(?:\1\d{1,4})?"  # 4111 1111 1111 1111, 4111.1111.... (+ a short group)
    r"|\d{4}([ .-])\d{6}\2\d{4,5}"                       # Amex 3782 822463 10005, Diners 14 digits
    r")(?!\w|[.,-]\d)")
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_IPV4 = re.compile(rf"(?<![\w.]){_OCTET}(?:\.{_OCTET}){{3}}(?!\w|\.\d)")
_IPV6 = re.compile(r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:\d{1,3}(?:\.\d{1,3}){3}|[0-9A-Fa-f]{0,4})(?![\w:])")
_PHONE = re.compile(
    r"(?<![\w+.-])(?:"
    r"(?:\+\d{1,3}|\(\+\d{1,3}\))(?:[ .-]?\(?\d{1,4}\)?)(?:[ .-]?\d{2,5}){1,5}"  # +44 20 7946 0958, (+44) 20 ...
    r"|(?:1[ .-])?(?:\(\d{3}\) ?|\d{3}[ .-])\d{3}[ .-]\d{4}"              # (555) 123-4567, 1-800-555-0199
    r"|\(0\d{1,4}\)[ .-]?\d{2,5}(?:[ .-]?\d{2,5}){1,3}"                   # (02) 9876 5432
    r"|0\d{1,4}(?:[ /.-]?\d{2,8}){1,4}"                                   # 020 7946 0958, 01 23 45 67 89
    r"|[6-9]\d{4} \d{5}"                                                  # 98765 43210 (India)
    r"|[2-9]\d{9}"                                                        # 9876543210, 2125550199
    r")(?![\w-]|[.,]\d)")
_DIGIT = re.compile(r"\d")


def _spelled_ok(s: str) -> bool:
    """A plain-word " at " is English ("a customer at gmail.com"), unless a spelled-out dot follows
    ("john.doe at example dot com"); "(at)", "[at]" and "@" are always address notation."""
    at = _AT_TOKEN.search(s)
    return at is not None and (not at.group(0).strip().lower() == "at" or bool(_SPELLED_DOT.search(s, at.end())))


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
    want = IBAN_LENGTHS.get(text[:2].upper())
    if want is None:
        return None
    n, end = 0, 0
    for i, ch in enumerate(text):
        if ch not in " -":
            n += 1
            if n == want:
                end = i + 1
                break
    if not end or (end < len(text) and text[end].isalnum()):  # a longer code, not this IBAN
        return None
    if not iban_ok(text[:end].replace(" ", "").replace("-", "").upper()):
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
        cut = max(text.rfind(" "), text.rfind("-"), text.rfind("."))
        tries.append(text[:cut])
    for t in tries:
        digits = re.sub(r"[ .-]", "", t)
        if 13 <= len(digits) <= 19 and luhn_ok(digits):
            return [(m.start(), m.start() + len(t))]
    return []


def _phone_ok(s: str) -> bool:
    n = sum(c.isdigit() for c in s)
    if s.startswith(("+", "(+")):
        return 8 <= n <= 15
    if s.startswith(("0", "(0")):
        return 9 <= n <= 12
    if s.isdigit():  # bare: a valid North-American number (NXX-NXX-XXXX) or an Indian mobile
        return n == 10 and (s[3] in "23456789" or s[0] in "6789")
    return n == 10 or (n == 11 and s.startswith("1"))


def _ipv6_ok(s: str) -> bool:
    parts = [p for p in s.split(":") if p]
    if not parts or not (len(parts) >= 2 or "::" in s):  # ::1 and fe80:: yes; "a:b" no
        return False
    try:
        ipaddress.IPv6Address(s)
    except ValueError:
        return False
    return True


class Scrubber:
    """Replace PII in texts; `counts` accumulates replacements per type across calls."""

    def __init__(self, enabled: bool = True, types: list[str] | tuple[str, ...] = TYPES,
                 patterns: list[dict] | None = None, presidio: bool = False, names: list[str] | None = None):
        self.enabled = enabled
        self.types = set(types) if enabled else set()
        self.custom = [(p["name"].upper(), re.compile(p["regex"])) for p in (patterns or [])] if enabled else []
        self.names = names_pattern(names) if enabled and names else None
        self.counts: Counter = Counter({t: 0 for t in sorted(self.types)})
        for name, _ in self.custom:
            self.counts[name.lower()] += 0
        if self.names is not None:
            self.counts["name"] += 0
        self.presidio_status = "off"
        self._presidio: Callable[[str], str] | None = None
        if enabled and presidio:
            self._presidio, self.presidio_status = _load_presidio(self.counts)
        self._person = None
        if PERSON in self.types:  # the model loads here (once per process), not on the first text

            self._person = PersonNames.load()

    @classmethod
    def from_config(cls, pii: dict, presidio: bool = True) -> Scrubber:
        """From the spec's `data.pii` slice (`names` is optional)."""
        return cls(pii["enabled"], pii["types"], pii["patterns"], presidio and pii["presidio"], pii.get("names"))

    @property
    def scrubs_names(self) -> bool:
        """Whether anything here replaces person names: the `person` type, a names list, a
        NAME/PERSON pattern, presidio."""
        return (self.names is not None or self._presidio is not None or self._person is not None
                or any(name in ("NAME", "PERSON", "FIRST_NAME", "LAST_NAME", "FULL_NAME") for name, _ in self.custom))

    def scrub(self, text: str) -> str:
        if not self.enabled or not text:
            return text
        text = self._patterns(text)
        spans = self._person.spans(text) if self._person is not None else []
        return self._finish(text, spans)

    def scrub_many(self, texts: list[str]) -> list[str]:
        """``scrub`` for many texts at once: the NER model reads them in one batch (spaCy's pipe,
        about half the time per text of one call each); the same results as ``scrub`` text by text."""
        if not self.enabled:
            return list(texts)
        pre = [self._patterns(t) if t else t for t in texts]
        if self._person is None:
            return [self._finish(t, []) if t else t for t in pre]
        found = self._person.spans_many([t or "" for t in pre])
        return [self._finish(t, spans) if t else t for t, spans in zip(pre, found, strict=True)]

    def _patterns(self, text: str) -> str:
        """Every step before the NER model's: custom patterns, e-mail, numbers, addresses, names listed."""
        for name, rx in self.custom:
            text = self._replace(text, rx, name.lower(), f"<{name}>")
        t = self.types
        if "email" in t and _SPELLED_GATE.search(text):
            if "@" in text:
                text = self._replace(text, _EMAIL, "email", "<EMAIL>")
            text = self._replace(text, _EMAIL_SPELLED, "email", "<EMAIL>", _spelled_ok)
        if _DIGIT.search(text):
            if "iban" in t:
                text = self._spans(text, _IBAN, "iban", lambda m: [r[1:] for r in [_sub_iban(m)] if r])
            if "card" in t:
                text = self._spans(text, _CARD, "card", _card_spans)
            if "ip" in t:
                if ":" in text:  # first: an IPv4-mapped IPv6 address holds an IPv4 one
                    text = self._replace(text, _IPV6, "ip", "<IP>", _ipv6_ok)
                text = self._replace(text, _IPV4, "ip", "<IP>")
            if "phone" in t:
                text = self._replace(text, _PHONE, "phone", "<PHONE>", _phone_ok)
        if self.names is not None:
            text = self._replace(text, self.names, "name", "<NAME>")
        return text

    def _finish(self, text: str, person_spans: list[tuple[int, int]]) -> str:
        """The NER model's person spans replaced, then presidio (when on)."""
        if person_spans:
            self.counts[PERSON] += len(person_spans)
            text = replace_spans(text, person_spans)
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


def names_pattern(names: list[str]) -> re.Pattern:
    """Whole-word, case-insensitive matches of the listed names; a run of them ("John Smith") is one
    match, so it becomes one <NAME>. List names, not words that are also names in lower case
    (will, bill, may, mark): those would be scrubbed wherever they appear."""
    alts = "|".join(re.escape(n.strip()) for n in sorted(set(names), key=len, reverse=True) if n.strip())
    return re.compile(rf"(?<!\w)(?:{alts})(?:[ \t]+(?:{alts}))*(?!\w)", re.IGNORECASE)


NAME_KEY = re.compile(r"(?:^|_)(?:name|names|person|guest|customer|contact|passenger|attendee|patient|"
                      r"employee|surname|firstname|lastname|fullname|username)(?:$|_)", re.IGNORECASE)
_NOT_A_PERSON = re.compile(r"(?:^|_)(?:file|host|domain|product|company|app|server|device|model|dataset|"
                           r"queue|team|project|key|class|type)_?name", re.IGNORECASE)


def name_slots(value: Any, prefix: str = "") -> set[str]:
    """Key paths in a JSON value (a record, a response, a response schema's `properties`) whose
    key looks like it holds a person's name: `name`, `guest_name`, `slots.customer`, ... The data
    card calls this on a sample of records (and on the response schema) with `names_warning`."""
    found: set[str] = set()
    if isinstance(value, dict):
        for k, v in value.items():
            path = f"{prefix}.{k}" if prefix else str(k)
            if isinstance(k, str) and NAME_KEY.search(k) and not _NOT_A_PERSON.search(k) \
                    and (isinstance(v, str) or (isinstance(v, dict) and v.get("type") == "string")):
                found.add(path)
            found |= name_slots(v.get("properties") if isinstance(v, dict) and "properties" in v else v, path)
    elif isinstance(value, list):
        for v in value:
            found |= name_slots(v, prefix)
    return found


def names_warning(slots: set[str] | list[str], scrubber: Scrubber) -> str | None:
    """The data-card warning for name-like fields that nothing scrubs, or None."""
    if not slots or scrubber.scrubs_names or not scrubber.enabled:
        return None
    why = f" (presidio {scrubber.presidio_status})" if scrubber.presidio_status != "off" else ""
    return (f"name-like fields {sorted(slots)} and no person-name scrubbing{why}: names go into training "
            "as they are. Add `person` to data.pii.types (an offline NER model), list them in data.pii.names, "
            "turn on data.pii.presidio, or use a pattern, "
            "e.g. data.pii.patterns: [{name: name, regex: '(?i)\\b(?:alice|bob)\\b'}]")


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
