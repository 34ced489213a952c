"""Curation: every drop rule, row accounting, deterministic leak-free splits, atomic outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from slmake.data import curate
from slmake.data.curate import RULES, CurationError, format_prompt, run_curation

REPO = Path(__file__).resolve().parents[1]
CATEGORIES = ["network", "hardware", "software", "access", "email", "security", "printing", "other"]
SCHEMA = {
    "type": "object", "additionalProperties": False, "required": ["category", "priority", "action"],
    "properties": {"category": {"enum": CATEGORIES},
                   "priority": {"enum": ["low", "medium", "high", "critical"]},
                   "action": {"enum": ["resolve", "escalate", "refuse"]}},
}


def cfg_for(src: Path, **over) -> dict:
    cfg = {"name": "it_tickets", "source": str(src), "format": "jsonl",
           "columns": {"instruction": "ticket", "response": "response"},
           "prompt_template": "### Ticket\n{instruction}\n### Triage\n", "response_schema": SCHEMA,
           "label_field": "category", "split": {"val": 0.1, "test": 0.1}, "max_chars": 2000}
    cfg.update(over)
    return cfg


def resp(category="network", priority="low", action="resolve") -> str:
    return json.dumps({"category": category, "priority": priority, "action": action})


def row(ticket, response=None) -> str:
    return json.dumps({"ticket": ticket, "response": resp() if response is None else response})


def write_lines(path: Path, lines: list) -> Path:
    path.write_bytes(b"".join((l if isinstance(l, bytes) else l.encode()) + b"\n" for l in lines))
    return path


def run(tmp_path: Path, lines: list, **over) -> dict:
    src = write_lines(tmp_path / "in.jsonl", lines)
    return run_curation(cfg_for(src, **over), tmp_path / "out", tmp_path / "report.json")


def read_split(tmp_path: Path, split: str) -> list[dict]:
    return [json.loads(l) for l in (tmp_path / "out" / f"{split}.jsonl").read_text().splitlines()]


def all_rows(tmp_path: Path) -> list[dict]:
    return [r for s in ("train", "val", "test") for r in read_split(tmp_path, s)]


@pytest.mark.parametrize("line,rule", [
    (b"\xff\xfe not utf-8", "not_utf8"),
    ("{not json", "invalid_json"),
    (json.dumps({"ticket": "no response"}), "missing_field"),
    (json.dumps({"ticket": 5, "response": resp()}), "wrong_type"),
    (json.dumps(["a", "list"]), "wrong_type"),
    (row(" \t\x00 "), "empty"),
    ("", "empty"),
    (row("x" * 2001), "too_long"),
    (row("bad response", "not json"), "response_invalid"),
    (row("bad enum", resp(priority="whenever")), "response_invalid"),
    (row("extra key", json.dumps({"category": "email", "priority": "low", "action": "resolve", "x": 1})),
     "response_invalid"),
])
def test_each_drop_rule(tmp_path, line, rule):
    report = run(tmp_path, [row("a good ticket"), line])
    assert report["dropped"][rule] == 1
    assert report["kept"] == 1 and report["dropped_total"] == 1 and report["input"] == 2
    assert set(report["dropped"]) == set(RULES)


def test_duplicates_and_conflicts(tmp_path):
    report = run(tmp_path, [
        row("Printer jammed"), row("Printer  jammed "),            # same after whitespace collapse
        row("Printer jammed", resp("printing")),                   # same text, different label
        row("Cafe\u0301 wifi down"), row("Caf\u00e9 wifi down"),  # same after NFC
    ])
    assert report["dropped"]["duplicate"] == 2
    assert report["dropped"]["conflicting_duplicate"] == 1
    assert report["kept"] == 2
    assert report["kept"] + report["dropped_total"] == report["input"] == 5


def test_output_records_and_canonical_response(tmp_path):
    shuffled = json.dumps({"action": "escalate", "priority": "high", "category": "security"})
    run(tmp_path, [row("Clicked\ta phishing\x07 link  ", shuffled)])
    (rec,) = all_rows(tmp_path)
    assert list(rec) == ["id", "prompt", "response", "label"]
    assert rec["prompt"] == format_prompt("### Ticket\n{instruction}\n### Triage\n", "Clicked a phishing link")
    assert rec["response"] == '{"category": "security", "priority": "high", "action": "escalate"}'
    assert rec["label"] == "security" and len(rec["id"]) == 16


def test_deterministic_and_no_straddling(tmp_path):
    lines = [row(f"ticket number {i}", resp(CATEGORIES[i % 8])) for i in range(300)]
    lines += lines[:50]  # duplicates of earlier rows
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    ra, rb = run(a, lines), run(b, lines)
    assert ra.pop("source") != rb.pop("source")
    assert ra == rb and ra["dropped"]["duplicate"] == 50
    for s in ("train", "val", "test"):
        assert (a / "out" / f"{s}.jsonl").read_bytes() == (b / "out" / f"{s}.jsonl").read_bytes()
    ids = [r["id"] for r in all_rows(a)]
    assert len(ids) == len(set(ids)) == 300  # each instruction in exactly one split
    assert all(ra["splits"][s] > 0 for s in ("train", "val", "test"))


def test_failure_keeps_previous_outputs(tmp_path, monkeypatch):
    lines = [row(f"ticket {i}") for i in range(50)]
    run(tmp_path, lines)
    before = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()}
    with pytest.raises(CurationError, match="data.split.val"):
        run(tmp_path, lines, split={"val": 2, "test": 0.1})
    calls = iter(range(10**6))

    def boom(template, instruction):  # fail mid-stream, after some rows were written
        if next(calls) == 20:
            raise OSError("disk full")
        return format_prompt(template, instruction)

    monkeypatch.setattr(curate, "format_prompt", boom)
    with pytest.raises(CurationError, match="disk full"):
        run(tmp_path, [row(f"other {i}") for i in range(50)])
    after = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()}
    assert after == before  # same files, no temp files left behind


@pytest.mark.parametrize("over,match", [
    ({"source": "/nonexistent/x.jsonl"}, "not found"),
    ({"columns": {"instruction": "ticket"}}, "columns.response"),
    ({"prompt_template": "no slot"}, "prompt_template"),
    ({"prompt_template": "{instruction} {other}"}, "prompt_template"),
    ({"response_schema": {"type": "nope"}}, "response_schema"),
    ({"label_field": "colour"}, "label_field"),
    ({"split": {"val": 0.5, "test": 0.5}}, "data.split"),
    ({"max_chars": 0}, "max_chars"),
    ({"format": "csv"}, "format"),
])
def test_config_errors(tmp_path, over, match):
    src = write_lines(tmp_path / "in.jsonl", [row("hello")])
    with pytest.raises(CurationError, match=match):
        run_curation(cfg_for(src, **over), tmp_path / "out", tmp_path / "r.json")
    assert not (tmp_path / "out" / "train.jsonl").exists()


def test_default_dataset(tmp_path):
    src = REPO / "data" / "it_tickets" / "tickets.jsonl"
    report = run_curation(cfg_for(src), tmp_path / "out", tmp_path / "report.json")
    assert report["dropped_total"] / report["input"] < 0.02
    assert report["dropped"]["duplicate"] > 0
    assert all(report["splits"][s] > 0 for s in ("train", "val", "test"))
    assert set(report["labels"]["train"]) == set(CATEGORIES)
    assert json.loads((tmp_path / "report.json").read_text()) == report
