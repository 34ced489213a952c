"""A corpus of malformed data files (issue 9): every file is written from a known number of intended
records with one damaged record at a known line. For each, curation must account for every record
(the ledger's input count equals that independent count), put the damaged one in quarantine with
its file and line — or drop it by a named rule when it is well-formed but unusable — and keep the
rest. Files whose structure cannot be read at all fail with a message naming the file."""

from __future__ import annotations

import json

import pytest

from curate_utils import base, check_invariant, curate_cfg, ledger, quarantine
from curate_utils import cfg_for as tickets_cfg
from slmake.data.errors import QUARANTINE_REASONS, RULES, CurationError

N, AT = 40, 7      # records per file, index of the damaged one
WORDS = "printer vpn laptop badge mailbox monitor keyboard wifi outlook teams excel docking".split()
ACTIONS = ["resolve", "resolve", "refuse", "escalate"]


def ticket(i: int) -> str:
    return f"Ticket {i}: the {WORDS[i % 12]} on floor {i * 7 % 13} fails after {WORDS[(i * 5) % 12]} update {i * 31}"


def response(i: int) -> str:
    return json.dumps({"category": "software", "priority": "low", "action": ACTIONS[i % 4]})


def good_jsonl(i: int) -> bytes:
    return json.dumps({"ticket": ticket(i), "response": response(i)}).encode()


R = response(AT)
T = ticket(AT)
JSONL = {  # id -> (damaged line, "quarantine" | "drop")
    "truncated_object": (b'{"ticket": "x", "resp', "quarantine"),
    "trailing_comma": (f'{{"ticket": "{T}", "response": {json.dumps(R)},}}'.encode(), "quarantine"),
    "single_quotes": (f"{{'ticket': '{T}', 'response': 'x'}}".encode(), "quarantine"),
    "unquoted_keys": (f'{{ticket: "{T}", response: {json.dumps(R)}}}'.encode(), "quarantine"),
    "not_utf8": (b'{"ticket": "caf\xe9 broken", "response": ' + json.dumps(R).encode() + b"}", "quarantine"),
    "array_line": (b"[1, 2, 3]", "quarantine"),
    "number_line": (b"42", "quarantine"),
    "string_line": (b'"just a string"', "quarantine"),
    "null_line": (b"null", "quarantine"),
    "true_line": (b"true", "quarantine"),
    "missing_ticket": (json.dumps({"response": R}).encode(), "quarantine"),
    "missing_response": (json.dumps({"ticket": T}).encode(), "quarantine"),
    "ticket_int": (json.dumps({"ticket": 7, "response": R}).encode(), "quarantine"),
    "ticket_list": (json.dumps({"ticket": [T], "response": R}).encode(), "quarantine"),
    "ticket_object": (json.dumps({"ticket": {"text": T}, "response": R}).encode(), "quarantine"),
    "ticket_null": (json.dumps({"ticket": None, "response": R}).encode(), "quarantine"),
    "response_int": (json.dumps({"ticket": T, "response": 3}).encode(), "drop"),   # valid JSON, fails the schema
    "two_objects": (good_jsonl(AT) + good_jsonl(AT + 100), "quarantine"),
    "too_long_line": (json.dumps({"ticket": "x" * 5000, "response": R}).encode(), "quarantine"),
    "unterminated_string": (b'{"ticket": "abc, "response": "x"}', "quarantine"),
    "nan_ticket": (b'{"ticket": NaN, "response": ' + json.dumps(R).encode() + b"}", "quarantine"),
    "bad_escape": (b'{"ticket": "a \\x12 b", "response": ' + json.dumps(R).encode() + b"}", "quarantine"),
    "trailing_garbage": (good_jsonl(AT) + b" garbage", "quarantine"),
    "comment_line": (b"// a comment, not JSON", "quarantine"),
    "bom_mid_file": (b"\xef\xbb\xbf" + good_jsonl(AT), "either"),
    "huge_number": (b'{"ticket": 1e999, "response": ' + json.dumps(R).encode() + b"}", "quarantine"),
    "empty_ticket": (json.dumps({"ticket": "", "response": R}).encode(), "drop"),
    "blank_ticket": (json.dumps({"ticket": "   \t ", "response": R}).encode(), "drop"),
    "response_not_json": (json.dumps({"ticket": T, "response": "reset it please"}).encode(), "drop"),
    "response_bad_enum": (json.dumps({"ticket": T, "response": json.dumps(
        {"category": "plumbing", "priority": "low", "action": "resolve"})}).encode(), "drop"),
    "response_missing_key": (json.dumps({"ticket": T, "response": json.dumps(
        {"category": "software", "priority": "low"})}).encode(), "drop"),
    "response_extra_key": (json.dumps({"ticket": T, "response": json.dumps(
        {"category": "software", "priority": "low", "action": "resolve", "why": "x"})}).encode(), "drop"),
    "response_empty": (json.dumps({"ticket": T, "response": ""}).encode(), "drop"),
    "ticket_too_long": (json.dumps({"ticket": "word " * 500, "response": R}).encode(), "drop"),
    "blank_line": (b"", "drop"),
    "whitespace_line": (b"   \t  ", "drop"),
}


def qa_csv(i: int) -> str:
    return f"{ticket(i)},answer {i} for you"


CSV = {
    "too_many_fields": (qa_csv(AT) + ",extra", "quarantine"),
    "too_few_fields": (ticket(AT).replace(",", ""), "quarantine"),
    "text_after_quote": (f'"{ticket(AT)}"then,answer', "quarantine"),
    "unterminated_quote": (f'"{ticket(AT)},answer', "quarantine"),
    "wrong_delimiter": (f"{ticket(AT)};answer", "quarantine"),
    "too_long_row": ("x" * 5000 + ",answer", "quarantine"),
    "empty_question": (",answer only", "drop"),
    "empty_answer": (f"{ticket(AT)},", "drop"),
    "only_delimiter": (",", "drop"),
    "quoted_empty_fields": ('"",""', "drop"),
    "four_fields": ("a,b,c,d", "quarantine"),
    "stray_quotes": (f'"{ticket(AT)}","answer" "x"', "quarantine"),
}

JSON_ARRAY = {  # the damaged element replaces record AT; a JSON file's "line" is the record number
    "bad_token": ('{"q": "question seven", "a": NaNa}', "quarantine"),
    "element_number": ("17", "quarantine"),
    "element_string": ('"a bare string"', "quarantine"),
    "element_null": ("null", "quarantine"),
    "element_list": ('["q", "a"]', "quarantine"),
    "missing_q": ('{"a": "answer"}', "quarantine"),
    "q_is_int": ('{"q": 5, "a": "answer"}', "quarantine"),
    "bad_escape_in_array": ('{"q": "bad \\x12 escape", "a": "answer"}', "quarantine"),
    "empty_q": ('{"q": "", "a": "answer"}', "drop"),
    "empty_a": ('{"q": "question seven about plums", "a": ""}', "drop"),
}


def _expect(report: dict, kind: str, src, line: int, tmp_path) -> None:
    assert report["input"] == N, report                                      # every record accounted for
    q = quarantine(tmp_path)
    if kind == "either":
        assert report["quarantined_total"] + report["dropped_total"] == 1, report
    elif kind == "quarantine":
        assert report["quarantined_total"] == 1 and report["dropped_total"] == 0, report
        assert [(r["source"], r["line"]) for r in q] == [(str(src), line)], q
        assert q[0]["reason"] in QUARANTINE_REASONS and q[0]["detail"], q
    else:
        assert report["quarantined_total"] == 0 and report["dropped_total"] == 1, (report, q)
        (dropped,) = [r for r in ledger(tmp_path) if r["fate"] == "dropped"]
        assert dropped["reason"] in RULES and int(dropped["line"]) == line, dropped
    assert report["kept"] == N - 1
    check_invariant(tmp_path, report)


@pytest.mark.parametrize("case", sorted(JSONL))
def test_jsonl_corpus(tmp_path, case):
    damaged, kind = JSONL[case]
    lines = [good_jsonl(i) for i in range(N)]
    lines[AT] = damaged
    src = tmp_path / "tickets.jsonl"
    src.write_bytes(b"\n".join(lines) + b"\n")
    report = curate_cfg(tmp_path, tickets_cfg(src, quarantine={"max_share": 0.5, "max_line_bytes": 4096},
                                              dedup={"near": {"action": "group"}}))
    _expect(report, kind, src, AT + 1, tmp_path)


@pytest.mark.parametrize("case", sorted(CSV))
def test_csv_corpus(tmp_path, case):
    damaged, kind = CSV[case]
    rows = [qa_csv(i) for i in range(N)]
    rows[AT] = damaged
    src = tmp_path / "qa.csv"
    src.write_text("q,a\n" + "\n".join(rows) + "\n")
    report = curate_cfg(tmp_path, base(src, columns={"instruction": "q", "response": "a"},
                                       quarantine={"max_share": 0.5, "max_line_bytes": 4096}))
    _expect(report, kind, src, AT + 2, tmp_path)


@pytest.mark.parametrize("case", sorted(JSON_ARRAY))
def test_json_array_corpus(tmp_path, case):
    damaged, kind = JSON_ARRAY[case]
    elements = [json.dumps({"q": ticket(i), "a": f"answer {i} for you"}) for i in range(N)]
    elements[AT] = damaged
    src = tmp_path / "qa.json"
    src.write_text("[\n" + ",\n".join(elements) + "\n]\n")
    report = curate_cfg(tmp_path, base(src, columns={"instruction": "q", "response": "a"},
                                       quarantine={"max_share": 0.5}))
    _expect(report, kind, src, AT + 1, tmp_path)
    if kind == "quarantine":   # ...and the detail says where the record starts in the file
        assert f"line {AT + 2}" in quarantine(tmp_path)[0]["detail"], quarantine(tmp_path)


FATAL = {  # files whose structure cannot be read: fail, naming the file (and what was expected)
    "csv_header_lacks_column": ("qa.csv", "question,answer\n" + "\n".join(qa_csv(i) for i in range(N)) + "\n", {}),
    "json_object_without_records_key": ("qa.json", json.dumps({"items": [{"q": "x", "a": "y"}]}), {}),
    "json_truncated_array": ("qa.json", "[\n" + ",\n".join(json.dumps({"q": ticket(i), "a": "y"}) for i in range(5)), {}),
    "json_records_key_missing": ("qa.json", json.dumps({"data": {"rows": [{"q": "x", "a": "y"}]}}),
                                 {"source": {"path": None, "records_key": "data.items"}}),
    "empty_file": ("qa.jsonl", "", {}),
}


@pytest.mark.parametrize("case", sorted(FATAL))
def test_unreadable_structure_fails_naming_the_file(tmp_path, case):
    name, text, extra = FATAL[case]
    src = tmp_path / name
    src.write_text(text)
    cfg = base(src, columns={"instruction": "q", "response": "a"})
    if "source" in extra:
        cfg["source"] = {**extra["source"], "path": str(src)}
    with pytest.raises(CurationError) as err:
        curate_cfg(tmp_path, cfg)
    assert name in str(err.value), str(err.value)


def test_the_corpus_is_big_enough():
    assert len(JSONL) + len(CSV) + len(JSON_ARRAY) + len(FATAL) >= 60
