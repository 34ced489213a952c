"""Ingest: every record shape and file format (JSONL, CSV, Parquet, folders), and clear errors for
whole-file problems."""

from __future__ import annotations

import json
import shutil

import pytest

from curate_utils import FIXTURES, SPLITS, all_rows, base, check_invariant, curate_cfg, ledger, quarantine
from slmake.data.curate import CurationError


def by_prompt(tmp_path) -> dict[str, dict]:
    return {r["prompt"]: r for r in all_rows(tmp_path)}


def test_alpaca_jsonl(tmp_path):
    cfg = base(FIXTURES / "alpaca.jsonl", shape="alpaca",
               columns={"instruction": "instruction", "input": "input", "output": "output"})
    report = curate_cfg(tmp_path, cfg)
    assert report["input"] == 7 and report["kept"] == 6 and report["quarantined"]["missing_field"] == 1
    rows = by_prompt(tmp_path)
    assert rows["Q: Translate to French\n\nGood morning\nA: "]["response"] == "Bonjour"
    assert rows["Q: Name the capital of Italy\nA: "]["response"] == "Rome"  # empty input: no blank paragraph
    assert rows["Q: Write a haiku about rain\nA: "]["response"].count("\n") == 2  # newlines kept
    assert rows["Q: Fix the code\n\ndef f(x):\n return x+1\nA: "]["response"] == "def f(x):\n    return x + 1"
    assert rows["Q: Email the customer\n\nCustomer: <EMAIL>\nA: "]["response"] == "Sent to <EMAIL>"
    assert report["pii"]["counts"]["email"] == 2
    (q,) = quarantine(tmp_path)
    assert q["line"] == 7 and "missing field 'output'" in q["detail"]
    check_invariant(tmp_path, report)


def test_prompt_completion_csv(tmp_path):
    cfg = base(FIXTURES / "prompt_completion.csv", shape="prompt_completion",
               columns={"prompt": "prompt", "completion": "completion"})
    report = curate_cfg(tmp_path, cfg)
    assert report["input"] == 5 and report["kept"] == 4
    assert by_prompt(tmp_path)["Q: List two colours\nA: "]["response"] == "red\nblue"
    (q,) = quarantine(tmp_path)
    assert q["reason"] == "bad_row" and q["line"] == 6 and "4 fields, the header has 3" in q["detail"]
    lines = [int(r["line"]) for r in ledger(tmp_path)]
    assert lines == [2, 3, 5, 6, 7]  # physical line where each row starts (the header is line 1)
    check_invariant(tmp_path, report)


def test_chat_jsonl(tmp_path):
    cfg = base(FIXTURES / "chat.jsonl", shape="chat", columns={"messages": "messages"})
    cfg["quarantine"] = {"max_share": 0.9}
    report = curate_cfg(tmp_path, cfg)
    assert report["input"] == 7 and report["kept"] == 3 and report["quarantined_total"] == 4
    rows = by_prompt(tmp_path)
    assert rows["Q: You are terse.\n\nHi there\nA: "]["response"] == "Hello."
    assert rows["Q: What is the boiling point of water?\nA: "]["response"] == "100 C at sea level."
    assert rows["Q: User: Pick a number\n\nAssistant: 7\n\nUser: Another one\nA: "]["response"] == "3"
    reasons = {q["line"]: (q["reason"], q["detail"]) for q in quarantine(tmp_path)}
    assert reasons[4][0] == "invalid_record" and "last message must be from 'assistant'" in reasons[4][1]
    assert reasons[5][0] == "invalid_record" and "'robot'" in reasons[5][1]
    assert reasons[6][0] == "wrong_type" and "messages.0.content" in reasons[6][1]
    assert reasons[7][0] == "wrong_type"
    check_invariant(tmp_path, report)


def test_chat_custom_keys(tmp_path):
    src = tmp_path / "sharegpt.jsonl"
    src.write_text(json.dumps({"conversations": [{"from": "human", "value": "Hello?"},
                                                 {"from": "gpt", "value": "Hi!"}]}) + "\n")
    cfg = base(src, shape="chat", columns={"messages": "conversations"},
               chat={"role_key": "from", "content_key": "value", "user": "human", "assistant": "gpt"})
    curate_cfg(tmp_path, cfg)
    assert [(r["prompt"], r["response"]) for r in all_rows(tmp_path)] == [("Q: Hello?\nA: ", "Hi!")]


@pytest.mark.parametrize("response_format,schema,expected", [
    ("text", {"type": "string", "enum": ["card_arrival", "top_up", "card_swallowed"]}, "card_arrival"),
    ("json", {"type": "object", "required": ["intent"], "additionalProperties": False,
              "properties": {"intent": {"enum": ["card_arrival", "top_up", "card_swallowed"]}}},
     '{"intent": "card_arrival"}'),
])
def test_classification_csv(tmp_path, response_format, schema, expected):
    cfg = base(FIXTURES / "classification.csv", shape="classification",
               columns={"text": "text", "label": "category"}, response_format=response_format,
               response_schema=schema, split={"val": 0, "test": 0.3},
               classification={"instruction_template": "Classify: {text}", "json_key": "intent"})
    report = curate_cfg(tmp_path, cfg)
    assert report["input"] == 7 and report["kept"] == 6 and report["quarantined"]["bad_row"] == 1
    rows = by_prompt(tmp_path)
    rec = rows["Q: Classify: my card has not arrived yet\nA: "]
    assert rec["response"] == expected and rec["label"] == "card_arrival"
    assert report["labels_before"] == {"card_arrival": 2, "card_swallowed": 2, "top_up": 2}
    assert sum(report["labels"]["test"].values()) == 3 and len(report["labels"]["test"]) == 3  # stratified
    check_invariant(tmp_path, report)


def test_classification_unknown_label_is_response_invalid(tmp_path):
    src = tmp_path / "c.csv"
    src.write_text("text,category\nhello there,greeting\nbye now,farewell\nwhat,unknown_label\n")
    cfg = base(src, shape="classification", columns={"text": "text", "label": "category"},
               response_schema={"type": "string", "enum": ["greeting", "farewell"]})
    report = curate_cfg(tmp_path, cfg)
    assert report["dropped"]["response_invalid"] == 1 and report["kept"] == 2


def parquet_file(path, rows: list[dict]):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def test_parquet_instruction_and_chat(tmp_path):
    src = parquet_file(tmp_path / "d.parquet", [
        {"question": f"parquet question {i} on topic {'abcdefgh'[i]}", "answer": f"answer {i}", "extra": i}
        for i in range(8)])
    report = curate_cfg(tmp_path / "a", base(src, format="parquet",
                                             columns={"instruction": "question", "response": "answer"}))
    assert report["input"] == 8 and report["kept"] == 8
    assert report["sources"][0]["format"] == "parquet"
    assert [r["line"] for r in ledger(tmp_path / "a")] == [str(i) for i in range(1, 9)]  # row numbers
    chat = parquet_file(tmp_path / "chat.parquet", [
        {"messages": [{"role": "user", "content": "Ping"}, {"role": "assistant", "content": "Pong"}]},
        {"messages": [{"role": "user", "content": "Only a question"}, {"role": "user", "content": "?"}]}])
    report = curate_cfg(tmp_path / "b", base(chat, shape="chat", columns={"messages": "messages"}))
    assert report["kept"] == 1 and report["quarantined"]["invalid_record"] == 1
    assert all_rows(tmp_path / "b")[0]["response"] == "Pong"


def test_parquet_wrong_type_and_missing_column(tmp_path):
    src = parquet_file(tmp_path / "d.parquet", [{"q": "fine question", "a": "ok"}, {"q": None, "a": "null question"},
                                                {"q": "another fine one", "a": "ok too"}])
    report = curate_cfg(tmp_path, base(src, columns={"instruction": "q", "response": "a"}))
    assert report["quarantined"]["wrong_type"] == 1 and report["kept"] == 2
    assert "q: got null, expected string" in quarantine(tmp_path)[0]["detail"]
    ints = parquet_file(tmp_path / "i.parquet", [{"q": f"question {i}", "a": i} for i in range(4)])
    with pytest.raises(CurationError, match=r"4 of 4 records \(100.0%\) are malformed.*wrong_type"):
        curate_cfg(tmp_path / "i", base(ints, columns={"instruction": "q", "response": "a"}))
    with pytest.raises(CurationError, match=r"d.parquet: the Parquet schema has columns \['q', 'a'\].*\['question'\]"):
        curate_cfg(tmp_path, base(src, columns={"instruction": "question", "response": "a"}))


def test_folder_of_mixed_formats(tmp_path):
    folder = tmp_path / "data"
    shutil.copytree(FIXTURES / "folder", folder)
    parquet_file(folder / "more" / "c.parquet", [{"q": f"folder parquet question {i} about plums", "a": f"answer {i}"}
                                                 for i in range(3)])
    cfg = base(folder, columns={"instruction": "q", "response": "a"})
    report = curate_cfg(tmp_path, cfg)
    assert [s["path"] for s in report["sources"]] == [f"{folder}/a.jsonl", f"{folder}/more/b.csv",
                                                       f"{folder}/more/c.parquet"]
    assert [s["records"] for s in report["sources"]] == [3, 3, 3] and report["kept"] == 9
    assert not any("hidden" in r["prompt"] for r in all_rows(tmp_path))
    assert [r["source"] for r in ledger(tmp_path)] == [f"{folder}/a.jsonl"] * 3 + [f"{folder}/more/b.csv"] * 3 + \
        [f"{folder}/more/c.parquet"] * 3
    only_csv = curate_cfg(tmp_path / "csv", base(folder, format="csv", columns={"instruction": "q", "response": "a"}))
    assert only_csv["input"] == 3
    check_invariant(tmp_path, report)


def test_csv_non_utf8_and_long_lines(tmp_path):
    src = tmp_path / "d.csv"
    src.write_bytes(b"q,a\nfirst question,one\ncaf\xe9 question,two\n" + b"long," + b"x" * 5000 + b"\n"
                    + b"last question,three\n")
    report = curate_cfg(tmp_path, base(src, columns={"instruction": "q", "response": "a"},
                                       quarantine={"max_share": 0.5, "max_line_bytes": 1024}))
    assert report["quarantined"]["not_utf8"] == 1 and report["quarantined"]["line_too_long"] == 1
    assert report["kept"] == 2
    assert {q["line"]: q["reason"] for q in quarantine(tmp_path)} == {3: "not_utf8", 4: "line_too_long"}
    check_invariant(tmp_path, report)


@pytest.mark.parametrize("content,fmt,match", [
    (b"", "csv", "d.csv: empty file"),
    (b"x,y\n1,2\n", "csv", r"d.csv: line 1: the header has columns \['x', 'y'\], but the data config maps \['q', 'a'\]"),
    (b"q,q,a\n1,2,3\n", "csv", "duplicate column names"),
    (b"not parquet", "parquet", "d.csv: not a readable Parquet file"),
])
def test_whole_file_problems_are_clear_errors(tmp_path, content, fmt, match):
    src = tmp_path / "d.csv"
    src.write_bytes(content)
    with pytest.raises(CurationError, match=match):
        curate_cfg(tmp_path, base(src, format=fmt, columns={"instruction": "q", "response": "a"}))
    assert not (tmp_path / "out" / "train.jsonl").exists()


def test_source_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(CurationError, match="has no data files"):
        curate_cfg(tmp_path, base(tmp_path / "empty", columns={"instruction": "q", "response": "a"}))
    (tmp_path / "x.txt").write_text("hi\n")
    with pytest.raises(CurationError, match="cannot tell the format"):
        curate_cfg(tmp_path, base(tmp_path / "x.txt", columns={"instruction": "q", "response": "a"}))
    (tmp_path / "e.jsonl").write_text("")
    with pytest.raises(CurationError, match="has no records"):
        curate_cfg(tmp_path, base(tmp_path / "e.jsonl", columns={"instruction": "q", "response": "a"}))


def test_splits_exist_for_each_shape(tmp_path):
    """Smoke: a shape's output has exactly the contract's keys."""
    cfg = base(FIXTURES / "alpaca.jsonl", shape="alpaca", columns={"instruction": "instruction", "output": "output"})
    curate_cfg(tmp_path, cfg)
    for s in SPLITS:
        for line in (tmp_path / "out" / f"{s}.jsonl").read_text().splitlines():
            assert list(json.loads(line)) == ["id", "prompt", "response", "label"]
