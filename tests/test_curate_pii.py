"""PII scrubbing: typed placeholders, checksum-validated IBANs and Luhn-checked cards (negatives
stay), custom patterns, counts in the report, presidio skipped cleanly when absent."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from curate_utils import REPO, all_rows, quarantine, resp, row, run
from slmake.data.pii import Scrubber, iban_ok, luhn_ok


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


# ----------------------------------------------------------------------------- the variant corpus

VARIANTS = [json.loads(l) for l in (Path(__file__).parent / "fixtures/pii/variants.jsonl").read_text().splitlines()]


def test_variant_corpus_is_big_and_covers_every_type():
    assert len(VARIANTS) >= 100
    assert {v["type"] for v in VARIANTS} == {"email", "phone", "iban", "card", "ip"}


@pytest.mark.parametrize("v", VARIANTS, ids=[f"{v['type']}:{v['pii']}" for v in VARIANTS])
def test_every_variant_becomes_one_typed_placeholder(v):
    s = Scrubber()
    assert s.scrub(v["text"]) == v["text"].replace(v["pii"], f"<{v['type'].upper()}>")
    assert s.counts[v["type"]] == 1 and sum(s.counts.values()) == 1


@pytest.mark.parametrize("text", [
    "Emails to everyone at acme-logistics.com bounce back",   # a plain "at": people at a domain
    "Messages to a customer at gmail.com are rejected",
    "remember the dot com bubble? we looked at the dot com era",
    "meet at noon in room 4",
    "at 10:30:45 the job failed; retry at 12:30",
    "MAC 00:1A:2B:3C:4D:5E on port 3",
    "std::vector and Foo::bar, a :: b",
    "order 1234567890 and timestamp 1700000000",              # bare 10 digits that no phone plan allows
    "invoice 5000000000 issued",
    "dates 2024-01-15 and 15.01.2024, build 1.2.3.4.5",
    "KB5034441 and INC0012345 and CVE-2024-21412",
    "de12 abcd efgh ijkl mnop qr fails its checksum",
    "@here please and the @property decorator, user@ then",
    "dotted 4111.1111.1111.1112 fails Luhn",
])
def test_new_forms_leave_look_alikes_alone(text):
    assert Scrubber().scrub(text) == text


def test_default_datasets_have_no_false_positives():
    """The IT-ticket data and Banking77 have no PII: nothing may be scrubbed there."""
    import csv

    s = Scrubber()
    texts = [json.loads(l)["ticket"] for l in (REPO / "data/it_tickets/tickets.jsonl").read_text().splitlines()]
    bank = REPO.parent / "shared/datasets/banking77/train.csv"
    if bank.exists():
        with open(bank, encoding="utf-8") as f:
            texts += [r["text"] for r in csv.DictReader(f)]
    changed = [t for t in texts if s.scrub(t) != t]
    assert changed == [] and sum(s.counts.values()) == 0


def test_no_variant_survives_into_the_build(tmp_path):
    """Every variant as a ticket (and inside a JSON response string) through the curate stage:
    none of them appears in any file curation writes."""
    schema = {"type": "object", "properties": {"reply": {"type": "string"}}, "required": ["reply"]}
    lines = [row(f"case {i}: {v['text']}", json.dumps({"reply": f"noted {i}: {v['text']}"}))
             for i, v in enumerate(VARIANTS)]
    report = run(tmp_path, lines, response_schema=schema, label_field=None)
    assert report["kept"] == len(VARIANTS)
    written = "\n".join(p.read_text(encoding="utf-8") for p in tmp_path.rglob("*") if p.is_file() and p.name != "in.jsonl")
    survivors = [v["pii"] for v in VARIANTS if v["pii"] in written or json.dumps(v["pii"])[1:-1] in written]
    assert survivors == []
    assert sum(report["pii"]["counts"].values()) == 2 * len(VARIANTS)


# ----------------------------------------------------------------------------- person names

def test_names_list_scrubs_whole_names_case_insensitively():
    s = Scrubber(names=["John", "Smith", "Priya"])
    assert s.scrub("Book a table for John Smith, and one for priya. Johnson stays.") == \
        "Book a table for <NAME>, and one for <NAME>. Johnson stays."
    assert s.counts["name"] == 2 and s.scrubs_names


def test_names_from_config_and_as_a_pattern():
    s = Scrubber.from_config({"enabled": True, "types": ["email"], "patterns": [], "presidio": False,
                              "names": ["Mia"]})
    assert s.scrub("Thanks, Mia (mia@example.com)") == "Thanks, <NAME> (<EMAIL>)"
    p = Scrubber(patterns=[{"name": "name", "regex": r"(?i)\b(?:kwame|kowalski)\b"}])  # works in the spec today
    assert p.scrub("Best, Kwame Kowalski") == "Best, <NAME> <NAME>" and p.scrubs_names


def test_name_slots_and_the_card_warning():
    from slmake.data.pii import name_slots, names_warning

    record = {"intent": "book", "slots": {"guest_name": "Ann", "time": "7pm", "party": 2, "hostname": "srv1"},
              "customer": "Bo", "file_name": "a.txt"}
    assert name_slots(record) == {"slots.guest_name", "customer"}
    schema = {"type": "object", "properties": {"name": {"type": "string"}, "size": {"type": "integer"}}}
    assert name_slots(schema["properties"]) == {"name"}
    warning = names_warning(name_slots(record), Scrubber())
    assert "customer" in warning and "data.pii.presidio" in warning
    assert names_warning(name_slots(record), Scrubber(names=["Ann"])) is None
    assert names_warning(set(), Scrubber()) is None


def test_person_names_from_the_spec_are_scrubbed_and_unscrubbed_name_slots_are_warned(tmp_path):
    """data.pii.names is the explicit, tested alternative to presidio; a dataset with name-like
    fields and no name scrubbing gets a warning at the top of its data card."""
    words = "printer vpn laptop badge mailbox monitor".split()
    lines = [json.dumps({"ticket": f"Please reset the {w} password of Alice Moreau", "customer_name": "Alice Moreau",
                         "response": resp(action="refuse" if i % 2 else "resolve")}).encode()
             for i, w in enumerate(words)]
    for sub in ("named", "plain"):
        (tmp_path / sub).mkdir()
    report = run(tmp_path / "named", lines, pii={"names": ["Alice Moreau", "Bob"]})
    prompts = " ".join(r["prompt"] for r in all_rows(tmp_path / "named"))
    assert "Alice" not in prompts and "<NAME>" in prompts and report["pii"]["counts"]["name"] == 6
    assert not any("name-like" in w for w in report["warnings"])
    report = run(tmp_path / "plain", lines)
    (warning,) = [w for w in report["warnings"] if "name-like" in w]
    assert "customer_name" in warning and "data.pii" in warning
    card = (tmp_path / "plain" / "reports" / "card.md").read_text()
    assert "## Warnings" in card and "customer_name" in card
