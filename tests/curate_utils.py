"""Helpers the curation tests share (test_curate*.py, test_malformed_data_corpus.py): configs for
the IT-tickets data (`cfg_for`) and for plain question/answer data (`base`), running curation into
a test's tmp_path, reading back its splits, ledger and quarantine, and the ledger invariant."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from slmake.data.curate import run_curation
from slmake.data.ledger import read_ledger

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "curate"
SPLITS = ("train", "val", "test")
CATEGORIES = ["network", "hardware", "software", "access", "email", "security", "printing", "other"]
SCHEMA = {
    "type": "object", "additionalProperties": False, "required": ["category", "priority", "action"],
    "properties": {"category": {"enum": CATEGORIES},
                   "priority": {"enum": ["low", "medium", "high", "critical"]},
                   "action": {"enum": ["resolve", "escalate", "refuse"]}},
}


def cfg_for(src, **over) -> dict:
    """The pre-existing minimal config (no new keys): everything else comes from schema defaults."""
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


def outputs(tmp_path: Path) -> dict[str, Path]:
    r = tmp_path / "reports"
    return {"ledger_path": r / "ledger.csv", "quarantine_path": r / "quarantine.jsonl", "card_path": r / "card.md"}


def curate_cfg(tmp_path: Path, cfg: dict) -> dict:
    return run_curation(cfg, tmp_path / "out", tmp_path / "reports" / "curation.json", **outputs(tmp_path))


def run(tmp_path: Path, lines: list, **over) -> dict:
    src = write_lines(tmp_path / "in.jsonl", lines)
    return curate_cfg(tmp_path, cfg_for(src, **over))


def read_split(tmp_path: Path, split: str) -> list[dict]:
    return [json.loads(l) for l in (tmp_path / "out" / f"{split}.jsonl").read_text().splitlines()]


def all_rows(tmp_path: Path) -> list[dict]:
    return [r for s in SPLITS for r in read_split(tmp_path, s)]


def ledger(tmp_path: Path) -> list[dict]:
    return read_ledger(tmp_path / "reports" / "ledger.csv")


def quarantine(tmp_path: Path) -> list[dict]:
    return [json.loads(l) for l in (tmp_path / "reports" / "quarantine.jsonl").read_text().splitlines()]


def check_invariant(tmp_path: Path, report: dict) -> None:
    """kept + dropped + quarantined == input, in the report, the ledger and the files."""
    assert report["kept"] + report["dropped_total"] + report["quarantined_total"] == report["input"]
    assert report["dropped_total"] == sum(report["dropped"].values())
    assert report["quarantined_total"] == sum(report["quarantined"].values())
    rows = ledger(tmp_path)
    assert len(rows) == report["input"]
    fates = Counter(r["fate"] for r in rows)
    assert fates["kept"] == report["kept"] and fates["dropped"] == report["dropped_total"]
    assert fates["quarantined"] == report["quarantined_total"]
    assert Counter(r["reason"] for r in rows if r["fate"] == "dropped") == +Counter(report["dropped"])
    assert Counter(r["reason"] for r in rows if r["fate"] == "quarantined") == +Counter(report["quarantined"])
    written = Counter()
    for s in SPLITS:
        written[s] = len(read_split(tmp_path, s))
    assert dict(written) == report["splits"]
    assert sum(int(r["copies"]) for r in rows if r["fate"] == "kept") == sum(written.values())
    assert len(quarantine(tmp_path)) == report["quarantined_total"]


TEXT = {"type": "string", "minLength": 1}


def base(source, **over) -> dict:
    """Plain question/answer text data (response_format text): the ingest tests' config."""
    cfg = {"name": "t", "source": str(source), "format": "auto", "prompt_template": "Q: {instruction}\nA: ",
           "response_format": "text", "response_schema": TEXT, "split": {"val": 0.2, "test": 0.2},
           "max_chars": 1000, "quarantine": {"max_share": 0.5}}
    cfg.update(over)
    return cfg


QA = {"instruction": "q", "response": "a"}


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path
