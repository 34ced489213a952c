"""PII scrubbing: typed placeholders, checksum-validated IBANs and Luhn-checked cards (negatives
stay), custom patterns, counts in the report, presidio skipped cleanly when absent."""

from __future__ import annotations

import json
import random

import pytest

from slmake.data.pii import Scrubber, iban_ok, luhn_ok
from test_curate import all_rows, quarantine, row, run


@pytest.mark.parametrize("text,expected", [
    ("mail john.doe+it@example.co.uk today", "mail <EMAIL> today"),
    ("Contact: A_B@sub.example.org.", "Contact: <EMAIL>."),
    ("card 4111 1111 1111 1111 exp 12/27", "card <CARD> exp 12/27"),
    ("card 4111-1111-1111-1111", "card <CARD>"),
    ("visa 4012888888881881, thanks", "visa <CARD>, thanks"),
    ("amex 3782 822463 10005", "amex <CARD>"),
    ("IBAN DE89 3704 0044 0532 0130 00 PLEASE", "IBAN <IBAN> PLEASE"),
    ("pay to GB82WEST12345698765432", "pay to <IBAN>"),
    ("server 192.168.10.25 is down", "server <IP> is down"),
    ("host fe80::1ff:fe23:4567:890a unreachable", "host <IP> unreachable"),
    ("call +44 20 7946 0958 now", "call <PHONE> now"),
    ("call (555) 123-4567", "call <PHONE>"),
    ("call 555-123-4567", "call <PHONE>"),
    ("ring 020 7946 0958", "ring <PHONE>"),
])
def test_placeholders(text, expected):
    assert Scrubber().scrub(text) == expected


@pytest.mark.parametrize("text", [
    "card 4111 1111 1111 1112 expired",         # fails Luhn
    "order 1234567812345678 shipped",           # a 16-digit number that fails Luhn
    "IBAN GB82WEST12345698765431",              # wrong checksum
    "XX12 3456 7890 1234 5",                    # unknown country
    "error 0x80070005 at 10:30 on 2024-01-15",  # codes, times, dates
    "SMTP 554 5.7.1 and 550 5.7.606",           # status codes
    "build 10.0.19045.3803",                    # a version is not an IP
    "version 300.1.1.1",                        # octet > 255
    "ticket INC0012345 and amount 1,234,567.89",
    "hr-queries@. mailbox",
])
def test_negatives_are_left_alone(text):
    assert Scrubber().scrub(text) == text


def test_iban_with_bad_check_digits_is_not_an_iban():
    assert "<IBAN>" not in Scrubber().scrub("IBAN DE88 3704 0044 0532 0130 00")
    assert Scrubber(types=["iban"]).scrub("IBAN DE88 3704 0044 0532 0130 00") == "IBAN DE88 3704 0044 0532 0130 00"


def test_random_luhn_failing_numbers_are_never_cards():
    rng = random.Random(0)
    s = Scrubber(types=["card"])
    tried = 0
    while tried < 300:
        digits = "".join(rng.choice("0123456789") for _ in range(16))
        if luhn_ok(digits):
            continue
        tried += 1
        grouped = " ".join(digits[i:i + 4] for i in range(0, 16, 4))
        assert s.scrub(f"no {digits} card") == f"no {digits} card"
        assert s.scrub(f"no {grouped} card") == f"no {grouped} card"
    assert s.counts["card"] == 0


def test_checksums():
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")
    assert iban_ok("DE89370400440532013000") and not iban_ok("DE89370400440532013001")
    assert not iban_ok("DE8937040044053201300")  # wrong length for DE


def test_custom_patterns_and_types_subset():
    s = Scrubber(types=["email"], patterns=[{"name": "employee_id", "regex": r"EMP-\d{6}"}])
    assert s.scrub("EMP-123456 at a@b.io, card 4111111111111111") == "<EMPLOYEE_ID> at <EMAIL>, card 4111111111111111"
    assert s.counts == {"email": 1, "employee_id": 1}
    off = Scrubber(enabled=False)
    assert off.scrub("a@b.io") == "a@b.io"


def test_presidio_is_an_optional_extra():
    s = Scrubber(presidio=True)
    try:
        import presidio_analyzer  # noqa: F401
    except ImportError:
        assert s.presidio_status.startswith("skipped: presidio-analyzer is not installed")
    assert s.scrub("mail a@b.io") == "mail <EMAIL>"


def test_scrubbed_before_training_with_counts_in_report(tmp_path):
    lines = [row("Reach me at jo@example.com or +1 415 555 0100, card 5555 5555 5555 4444"),
             row("Wire it to NL91 ABNA 0417 1643 00 from 10.0.0.7"),
             row("My id is EMP-000042", json.dumps({"category": "access", "priority": "low", "action": "resolve"})),
             row("nothing here"),
             b'{"ticket": "broken \xff line with a@b.io", "response": "x"}']
    report = run(tmp_path, lines, pii={"patterns": [{"name": "employee_id", "regex": r"EMP-\d{6}"}]},
                 quarantine={"max_share": 0.5})
    counts = report["pii"]["counts"]
    assert counts == {"card": 1, "email": 1, "employee_id": 1, "iban": 1, "ip": 1, "phone": 1}
    prompts = " ".join(r["prompt"] for r in all_rows(tmp_path))
    for token in ("<EMAIL>", "<PHONE>", "<CARD>", "<IBAN>", "<IP>", "<EMPLOYEE_ID>"):
        assert token in prompts
    assert "example.com" not in prompts and "5555" not in prompts and "ABNA" not in prompts
    (q,) = quarantine(tmp_path)
    assert "<EMAIL>" in q["excerpt"] and "a@b.io" not in q["excerpt"]  # excerpts are scrubbed too
    assert report["pii"]["presidio"] == "off"


def test_json_response_strings_are_scrubbed(tmp_path):
    schema = {"type": "object", "properties": {"reply": {"type": "string"}}, "required": ["reply"]}
    report = run(tmp_path, [row("who?", json.dumps({"reply": "write to x@y.org"}))], response_schema=schema,
                 label_field=None)
    assert all_rows(tmp_path)[0]["response"] == '{"reply": "write to <EMAIL>"}'
    assert report["pii"]["counts"]["email"] == 1
