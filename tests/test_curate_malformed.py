"""No silent loss (issue 9): malformed CSV, JSONL and JSON files, each written from a known list of
intended records; the ledger's input count must equal that independent count, every malformed
record is quarantined with its file and line, and the rest are read as they are.  And a degenerate
result (200 identical rows: nothing left for val/test) warns loudly, naming the cause."""

from __future__ import annotations

import json

import pytest

from curate_utils import QA, base, check_invariant, curate_cfg, ledger, quarantine, row, write_lines
from curate_utils import cfg_for as tickets_cfg


def csv_lines(n: int) -> list[str]:
    """n well-formed CSV records, one per line; every 50th text is quoted (it holds a comma)."""
    return [f'"question {i}, about plums",answer {i}' if i % 50 == 0 else f"question {i} about plums,answer {i}"
            for i in range(n)]


def curate_csv(tmp_path, lines: list[str], **over):
    src = tmp_path / "d.csv"
    src.write_text("q,a\n" + "\n".join(lines) + "\n")
    return src, curate_cfg(tmp_path, base(src, columns=QA, quarantine={"max_share": 0.9}, **over))


@pytest.mark.parametrize("bad", [[120], [289], [260], [3, 50, 51, 200]],
                         ids=["closed_by_a_later_quote", "last_line", "open_to_the_end", "several"])
def test_unterminated_quote_quarantines_one_line_and_keeps_the_rest(tmp_path, bad):
    """The issue-9 probe: an unterminated quote swallowed up to 125 following rows into one record
    (290 records in, 165 counted).  Now: its line is quarantined, every other row is read."""
    lines = csv_lines(290)
    for i in bad:
        lines[i] = f'"question {i} about plums,answer {i}'  # the quote never closes
    src, report = curate_csv(tmp_path, lines)
    assert report["input"] == 290 and report["quarantined_total"] == len(bad) and report["kept"] == 290 - len(bad)
    q = quarantine(tmp_path)
    assert [(r["source"], r["line"], r["reason"]) for r in q] == [(str(src), i + 2, "bad_row") for i in bad]
    if bad == [120]:  # swallowed up to the quoted record 150 (line 152), then read again
        assert "lines 122-152 as one record: a quote opened on line 122 is not closed" in q[0]["detail"]
    check_invariant(tmp_path, report)


def test_ragged_rows_and_other_csv_damage(tmp_path):
    lines = csv_lines(40)
    lines[5] = lines[5] + ',"extra"'            # too many fields
    lines[6] = lines[6].split(",")[0] + '"'     # too few (one field)
    lines[7] = '"quote"then text,answer 7'       # characters after a closing quote
    lines[8] = ""                                # blank: an empty record, dropped
    lines[9] = lines[9] + "\r"                   # CRLF
    lines[10] = '"a field over\ntwo lines, kept as one record",answer 10'  # legit: one record, two lines
    _, report = curate_csv(tmp_path, lines)
    assert report["input"] == 40 and report["dropped"]["empty"] == 1
    assert {q["line"]: q["detail"].split(" (")[0] for q in quarantine(tmp_path)} == {
        7: "3 fields, the header has 2", 8: "1 fields, the header has 2",
        9: "CSV syntax: ',' expected after '\"'"}
    assert [int(r["line"]) for r in ledger(tmp_path)][9:13] == [11, 12, 14, 15]  # record 10 spans lines 12-13
    check_invariant(tmp_path, report)


def test_jsonl_damage_is_counted_line_by_line(tmp_path):
    good = [json.dumps({"q": f"question {i} about plums and nothing else", "a": f"answer {i}"}) for i in range(30)]
    lines = list(good)
    lines[3] = lines[3][:-5]                    # truncated
    lines[4] = b"\xff" + lines[4].encode()      # not UTF-8
    lines[5] = ""                               # blank
    lines[6] = json.dumps(["an", "array"])      # wrong type
    src = write_lines(tmp_path / "d.jsonl", lines)
    src.write_bytes(src.read_bytes()[:-1])      # and no final newline
    report = curate_cfg(tmp_path, base(src, columns=QA, quarantine={"max_share": 0.9}))
    assert report["input"] == 30 and report["quarantined_total"] == 3 and report["dropped"]["empty"] == 1
    assert {(q["line"], q["reason"]) for q in quarantine(tmp_path)} == {(4, "invalid_json"), (5, "not_utf8"),
                                                                         (7, "wrong_type")}
    check_invariant(tmp_path, report)


def test_json_array_damage_is_counted_record_by_record(tmp_path):
    records = [{"q": f"question {i} about plums and nothing else", "a": f"answer {i}"} for i in range(25)]
    text = json.dumps(records, indent=2)
    text = text.replace('"answer 3"', "NaNa").replace('"answer 9"', '"answer 9" "x"')  # two bad records
    text = text.replace('"question 12', '"question \\x12')                               # a bad escape
    text = text.replace('"answer 20"', json.dumps("y" * 5000))                            # too long
    src = tmp_path / "d.json"
    src.write_text(text)
    assert text.count('"q":') == 25  # the independent count
    report = curate_cfg(tmp_path, base(src, columns=QA, quarantine={"max_share": 0.9, "max_line_bytes": 1024}))
    assert report["input"] == 25 and report["quarantined"]["invalid_json"] == 3 and report["kept"] == 21
    assert [(q["line"], q["reason"]) for q in quarantine(tmp_path)] == [
        (4, "invalid_json"), (10, "invalid_json"), (13, "invalid_json"), (21, "line_too_long")]
    check_invariant(tmp_path, report)


def test_identical_rows_warn_that_val_and_test_are_empty(tmp_path, capsys):
    """200 identical rows keep one record: val and test come out empty, and the report, the stage
    and the data card say so and why."""
    src = write_lines(tmp_path / "in.jsonl", [row("the very same ticket")] * 200)
    report = curate_cfg(tmp_path, tickets_cfg(src))
    assert report["records_per_split"] == {"train": 1, "val": 0, "test": 0}
    (w,) = report["warnings"]
    assert w.startswith("EMPTY split(s): val (data.split.val = 0.1) and test (data.split.test = 0.1)")
    assert "only 1 record(s)" in w and "of 200 input (dropped: 199 duplicate)" in w and "no held-out data" in w
    assert "## Warnings" in (tmp_path / "reports" / "card.md").read_text()
    fine = curate_cfg(tmp_path / "ok", tickets_cfg(write_lines(tmp_path / "ok.jsonl",
                                                               [row(f"ticket {i} " + "xy"[i % 2] * i) for i in range(60)])))
    assert fine["warnings"] == []
