"""Distillation without a model: the review gate (missing, wrong sample, unmarked, low acceptance,
good), teacher-output validation and quarantine, the network gate for a URL teacher, and a whole
labelling run against an OpenAI-compatible stub on loopback (few-shot prompt, ceiling, review sample,
labels in the data shape) that curate then takes in as one more source."""

from __future__ import annotations

import csv
import io
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest
import yaml

from slmake.checks import distill_problems
from slmake.data.config import resolve
from slmake.distill import DistillError
from slmake.distill.gate import GateError, curate_input, message, review
from slmake.distill.label import run
from slmake.distill.prompts import Judge, few_shot_prompt, record
from slmake.distill.teachers import EndpointTeacher

REPO = Path(__file__).resolve().parents[1]
TICKETS = (REPO / "data/it_tickets/tickets.jsonl").read_text().splitlines()
DATA = yaml.safe_load((REPO / "conf/data/it_tickets.yaml").read_text())
DISTILL = yaml.safe_load((REPO / "conf/distill/gguf_teacher.yaml").read_text())
TEMPLATE = DATA["prompt_template"]


def read_csv(path: Path) -> list[dict]:
    return list(csv.DictReader(io.StringIO(Path(path).read_text(encoding="utf-8"), newline="")))


def gold() -> dict[str, str]:
    """Ticket text -> its labelled response (what the stub teacher knows)."""
    return {json.loads(l)["ticket"]: json.loads(l)["response"] for l in TICKETS}


class Stub(BaseHTTPRequestHandler):
    """An OpenAI-compatible /v1/completions on 127.0.0.1: answers the last ticket of the prompt
    with its gold label, except every 7th input (not JSON) and every 11th (outside the schema)."""
    answers: ClassVar[dict[str, str]] = {}
    prompts: ClassVar[list] = []
    auth: ClassVar[list] = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        chat = self.path.endswith("/chat/completions")
        prompt = body["messages"][-1]["content"] if chat else body["prompt"]
        Stub.prompts.append(body["messages"] if chat else prompt)
        Stub.auth.append(self.headers.get("Authorization"))
        ticket = re.findall(r"### Ticket\n(.*?)\n### Triage\n", prompt, re.DOTALL)[-1]
        n = sorted(Stub.answers).index(ticket) if ticket in Stub.answers else 0
        text = Stub.answers.get(ticket, "{}")
        if n % 7 == 3:
            text = "I think this is a network issue"
        elif n % 11 == 5:
            text = json.dumps({"category": "coffee", "priority": "low", "action": "resolve"})
        choice = {"message": {"role": "assistant", "content": text}} if chat else {"text": f" {text}\n### Ticket\nnext"}
        out = json.dumps({"choices": [choice]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *a):
        pass


@pytest.fixture
def stub():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Stub)
    Stub.answers, Stub.prompts, Stub.auth = gold(), [], []
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


def project(tmp_path: Path, url: str, n_inputs: int = 60, n_labelled: int = 25) -> dict:
    """Inputs without responses (one line missing the column, one not JSON) and a labelled set."""
    (tmp_path / "data").mkdir()
    raw = [json.dumps({"ticket": json.loads(l)["ticket"]}) for l in TICKETS[100:100 + n_inputs]]
    raw[4] = json.dumps({"subject": "no ticket here"})
    raw[9] = "{not json"
    raw.append(json.dumps({"ticket": json.loads(TICKETS[100])["ticket"]}))   # a duplicate
    raw.append(json.dumps({"ticket": json.loads(TICKETS[1])["ticket"]}))     # already labelled
    (tmp_path / "data/inputs.jsonl").write_text("\n".join(raw) + "\n")
    (tmp_path / "data/labelled.jsonl").write_text("\n".join(TICKETS[:n_labelled]) + "\n")
    cfg = json.loads(json.dumps(DISTILL))
    cfg.update(inputs={"path": str(tmp_path / "data/inputs.jsonl"), "format": "auto", "column": None},
               labelled=str(tmp_path / "data/labelled.jsonl"), few_shot=2)
    cfg["teacher"].update(kind="openai", path=None, url=url, model="teacher", timeout_s=10)
    cfg["review"].update(path=str(tmp_path / "data/distill_review.csv"), sample_size=10, min_accept=0.8)
    return cfg


def fill(cfg: dict, out: Path, accept=lambda row: "yes") -> list[dict]:
    rows = read_csv(out / "review_sample.csv")
    for r in rows:
        r["accept"] = accept(r)
    with open(cfg["review"]["path"], "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return rows


def test_labelling_run_few_shot_ceiling_quarantine_and_review_sample(tmp_path, stub):
    cfg, out = project(tmp_path, stub), tmp_path / "build/distill"
    info = run(cfg, DATA, out)
    # few-shot: two labelled examples, each with its response, precede the input's own prompt
    first = Stub.prompts[0]
    assert first.count("### Ticket\n") == 3 and first.endswith("### Triage\n")
    shot = json.loads(TICKETS[int(info["few_shot"][0].rsplit(":", 1)[1]) - 1])
    assert f"### Ticket\n{shot['ticket']}\n### Triage\n{shot['response']}\n\n" in first
    # the ceiling: on the 23 labelled records that are not few-shot; the stub spoils some of them
    ceiling = info["ceiling"]
    assert ceiling["n"] == 23 and 0.6 < ceiling["exact_match"] < 1.0
    rows = [json.loads(l) for l in (out / "ceiling.jsonl").read_text().splitlines()]
    assert ceiling["exact_match"] == round(sum(r["exact"] for r in rows) / 23, 4)
    # inputs: 62 read; 2 unreadable, 1 duplicate, 1 already labelled; the rest labelled or quarantined
    n = info["inputs"]
    assert (n["read"], n["unreadable"], n["duplicate"], n["already_labelled"]) == (62, 2, 1, 1)
    q = [json.loads(l) for l in (out / "quarantine.jsonl").read_text().splitlines()]
    assert n["labelled"] + n["quarantined"] == 58 and len(q) == n["quarantined"] + 2 == info["quarantined"]
    by_reason = {r["reason"] for r in q}
    assert {"not_json", "schema", "missing_field", "invalid_json"} <= by_reason, by_reason
    schema_q = next(r for r in q if r["reason"] == "schema")
    assert "category" in schema_q["detail"] and "coffee" in schema_q["output"]
    assert re.fullmatch(r".*inputs\.jsonl:\d+", schema_q["source"])
    assert next(r for r in q if r["reason"] == "missing_field")["source"].endswith("inputs.jsonl:5")
    # labels: in the data shape, canonical, schema-valid, each traceable to its input line
    labels = [json.loads(l) for l in (out / "labelled.jsonl").read_text().splitlines()]
    assert len(labels) == n["labelled"]
    g = gold()
    assert all(json.loads(r["response"]) == json.loads(g[r["ticket"]]) for r in labels)
    assert set(labels[0]) == {"ticket", "response", "distill_id", "distill_line"}
    # the review sample: 10 seeded rows, accept empty; the same seed draws the same sample
    sample = read_csv(out / "review_sample.csv")
    assert len(sample) == 10 and all(r["accept"] == "" for r in sample)
    again = run(cfg, DATA, tmp_path / "again")
    assert (tmp_path / "again/review_sample.csv").read_bytes() == (out / "review_sample.csv").read_bytes()
    assert again["ceiling"] == info["ceiling"]


def test_gate_refuses_until_a_matching_review_accepts_enough(tmp_path, stub):
    cfg, out = project(tmp_path, stub, n_inputs=30), tmp_path / "build/distill"
    run(cfg, DATA, out)
    reviewed = cfg["review"]["path"]
    with pytest.raises(GateError, match=rf"{re.escape(reviewed)}: not found.*copy .*review_sample.csv to"):
        review(cfg, out)
    # unmarked rows: named by line
    rows = fill(cfg, out, lambda r: "")
    with pytest.raises(GateError, match=r"10 row\(s\) have no decision in `accept`: line 2, line \d+, .* and 2 more; mark each row yes or no"):
        review(cfg, out)
    # a different sample (a relabelled output): refused, names both files
    rows[0]["output_sha256"] = "0" * 16
    with open(reviewed, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows({**r, "accept": "yes"} for r in rows)
    with pytest.raises(GateError, match=r"reviews a different sample than .*review_sample.csv \(1 reviewed row"):
        review(cfg, out)
    # low acceptance: 7 of 10 < 0.8
    marks = iter(["no", "no", "no"] + ["yes"] * 7)
    fill(cfg, out, lambda r: next(marks))
    with pytest.raises(GateError, match=r"accepted 7 of 10 sampled labels \(70%\), below distill.review.min_accept=0.8"):
        review(cfg, out)
    # good: 9 of 10; the rejected label is left out of what curate reads
    marks = iter(["y", "1", "accept", "no"] + ["yes"] * 6)
    rows = fill(cfg, out, lambda r: next(marks))
    verdict = review(cfg, out)
    assert (verdict.accepted, verdict.sample, verdict.rejected) == (9, 10, [rows[3]["id"]])
    with curate_input(DATA, cfg, out) as (data, summary):
        src = data["source"]
        assert src[0] == {"path": DATA["source"]} and src[1]["origin"] == f"distill:teacher@{stub.split('/')[2]}"
        ids = [json.loads(l)["distill_id"] for l in Path(src[1]["path"]).read_text().splitlines()]
        labelled = (out / "labelled.jsonl").read_text().splitlines()
        assert len(ids) == len(labelled) - 1 and rows[3]["id"] not in ids
        assert summary["review"] == {"file": reviewed, "accepted": 9, "sample": 10, "rate": 0.9, "min_accept": 0.8,
                                     "rejected": 1}
        assert "9/10 accepted (90%, minimum 0.8)" in message(summary)
    off = {**cfg, "enabled": False}
    with curate_input(DATA, off, out) as (data, summary):
        assert data is DATA and summary is None


def test_distilled_labels_are_curated_like_any_source(tmp_path, stub):
    """Curate takes the accepted labels as one more source: the ledger names their origin, and
    dedup/PII run across sources (a label for a text already in data.source is not a second copy)."""
    from slmake.data.curate import run_curation
    from slmake.data.ledger import read_ledger

    cfg, out = project(tmp_path, stub, n_inputs=40), tmp_path / "build/distill"
    run(cfg, DATA, out)
    fill(cfg, out)
    (tmp_path / "gold.jsonl").write_text("\n".join(TICKETS[:80]) + "\n")
    data = {**DATA, "source": str(tmp_path / "gold.jsonl")}
    with curate_input(data, cfg, out) as (mixed, _):
        report = run_curation(mixed, tmp_path / "splits", tmp_path / "curation.json",
                              ledger_path=tmp_path / "ledger.csv", quarantine_path=tmp_path / "q.jsonl",
                              card_path=tmp_path / "card.md")
    ledger = read_ledger(tmp_path / "ledger.csv")
    origins = {r["source"] for r in ledger}
    n_labels = len((out / "labelled.jsonl").read_text().splitlines())
    assert origins == {str(tmp_path / "gold.jsonl"), mixed["source"][1]["origin"]}
    assert sum(r["source"].startswith("distill:") for r in ledger) == n_labels
    assert report["input"] == 80 + n_labels


def test_judge_validates_against_the_response_schema():
    judge = Judge(resolve(DATA))
    ok = judge(' ```json\n{"action": "resolve", "category": "email", "priority": "low"}\n```')
    assert ok.response == '{"category": "email", "priority": "low", "action": "resolve"}'
    assert judge('{"category": "email", "priority": "low", "action": "resolve"}\n### Ticket\nmore').response
    assert judge("   ").reason == "empty_output"
    assert judge("email, low").reason == "not_json"
    bad = judge('{"category": "email", "priority": "urgent", "action": "resolve"}')
    assert bad.reason == "schema" and "priority" in bad.detail and "urgent" in bad.detail
    extra = judge('{"category": "email", "priority": "low", "action": "resolve", "why": "x"}')
    assert extra.reason == "schema" and "why" in extra.detail


def test_records_follow_the_data_shape():
    data = resolve(DATA)
    assert record(data, "vpn down", '{"a": 1}') == {"ticket": "vpn down", "response": '{"a": 1}'}
    cls = resolve({**DATA, "shape": "classification", "columns": {"text": "text", "label": "intent"},
                   "label_field": None, "negatives": {"min_share": 0},
                   "response_schema": {"type": "object", "required": ["label"],
                                       "properties": {"label": {"enum": ["a", "b"]}}}})
    assert record(cls, "hello", '{"label": "b"}') == {"text": "hello", "intent": "b"}
    chat = resolve({**DATA, "shape": "chat", "columns": {"messages": "messages"}})
    assert record(chat, "hi", "{}")["messages"][1] == {"role": "assistant", "content": "{}"}
    p = few_shot_prompt(TEMPLATE, [("a", "{}")], "b")
    assert p == "### Ticket\na\n### Triage\n{}\n\n### Ticket\nb\n### Triage\n"


def test_url_teacher_refused_without_allow_network(tmp_path):
    cfg = project(tmp_path, "http://198.51.100.7:8000/v1")
    problems = distill_problems(cfg)
    assert len(problems) == 1 and "distill.teacher.url: http://198.51.100.7:8000/v1 is not on this machine" in problems[0]
    assert "distill.teacher.allow_network=true" in problems[0]
    with pytest.raises(DistillError, match="not on this machine"):
        EndpointTeacher(cfg["teacher"], "###")
    with pytest.raises(DistillError, match="not on this machine"):   # run() refuses before any request
        run(cfg, DATA, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    allowed = {**cfg, "teacher": {**cfg["teacher"], "allow_network": True}}
    assert distill_problems(allowed) == []
    for url in ("http://127.0.0.1:9/v1", "http://localhost:9/v1", "http://[::1]:9/v1"):
        assert distill_problems({**cfg, "teacher": {**cfg["teacher"], "url": url}}) == []


def test_spec_checks_name_the_key(tmp_path):
    cfg = project(tmp_path, "http://127.0.0.1:9/v1")
    assert distill_problems({**cfg, "enabled": False, "inputs": None}) == []
    missing = {**cfg, "inputs": {**cfg["inputs"], "path": str(tmp_path / "nope.jsonl")}, "labelled": None}
    problems = distill_problems(missing)
    assert any(p.startswith("distill.inputs: ") and "nope.jsonl not found" in p for p in problems)
    assert any(p.startswith("distill.labelled: null") for p in problems)
    gguf = {**cfg, "teacher": {**cfg["teacher"], "kind": "gguf", "path": str(tmp_path / "t.gguf")}}
    assert distill_problems(gguf) == [f"distill.teacher.path: {tmp_path / 't.gguf'} is not a file (expected a .gguf model)"]
    raw = {**cfg, "teacher": {**cfg["teacher"], "send": "input"}}
    assert any("distill.few_shot: 2 examples cannot be sent" in p for p in distill_problems(raw))


def test_labelled_set_errors_name_file_and_line(tmp_path, stub):
    cfg = project(tmp_path, stub)
    lines = TICKETS[:5]
    lines[2] = json.dumps({"ticket": "x", "response": '{"category": "coffee"}'})
    Path(cfg["labelled"]).write_text("\n".join(lines) + "\n")
    with pytest.raises(DistillError, match=r"distill.labelled: .*labelled.jsonl:3: response_invalid"):
        run(cfg, DATA, tmp_path / "out")
    Path(cfg["labelled"]).write_text("\n".join(TICKETS[:2]) + "\n")
    with pytest.raises(DistillError, match=r"2 records, but distill.few_shot=2 leaves none"):
        run(cfg, DATA, tmp_path / "out")


def test_chat_api_sends_the_template_few_shot_turns_and_the_key(tmp_path, stub, monkeypatch):
    cfg = project(tmp_path, stub, n_inputs=12, n_labelled=6)
    cfg["teacher"].update(api="chat", api_key_env="TEACHER_KEY")
    monkeypatch.delenv("TEACHER_KEY", raising=False)
    with pytest.raises(DistillError, match="the environment variable TEACHER_KEY is not set"):
        run(cfg, DATA, tmp_path / "out")
    monkeypatch.setenv("TEACHER_KEY", "sk-test")
    info = run(cfg, DATA, tmp_path / "out")
    turns = Stub.prompts[0]
    assert [m["role"] for m in turns] == ["user", "assistant", "user", "assistant", "user"]
    assert all(m["content"].startswith("### Ticket\n") and m["content"].endswith("### Triage\n")
               for m in turns if m["role"] == "user")
    assert json.loads(turns[1]["content"]) and set(Stub.auth) == {"Bearer sk-test"}
    assert info["inputs"]["labelled"] > 0 and info["ceiling"]["n"] == 4
