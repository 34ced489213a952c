"""The server's request log and metrics: PII never reaches the disk, the log stays under its size
cap, concurrent requests each get one whole line, and /metrics counts what happened."""

import json
import os
import threading

import pytest
from prometheus_client.parser import text_string_to_metric_families

from slmake.telemetry import Telemetry

PII_INPUT = ("Laptop stolen, call me on +44 20 7946 0958 or mail jane.doe@example.com; "
             "card 4111 1111 1111 1111, IBAN GB82 WEST 1234 5698 7654 32, from 10.1.2.3")
RAW = ["+44 20 7946 0958", "jane.doe@example.com", "4111 1111 1111 1111", "GB82 WEST 1234 5698 7654 32", "10.1.2.3"]


def _record(t: Telemetry, **kw):
    args = dict(endpoint="/v1/completions", input_text="printer jammed on floor 2", output_text='{"category": "printing"}',
                prompt_tokens=12, completion_tokens=7, latency_s=0.05, ttft_s=0.01, schema_valid=True,
                parsed={"category": "printing"}, status=200)
    args.update(kw)
    t.record(**args)


def _lines(path):
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]


def test_log_line_has_every_field_and_no_raw_pii(tmp_path):
    log = tmp_path / "logs" / "requests.jsonl"
    t = Telemetry("cpu/gguf_q8_0", log, label_field="category")
    _record(t, input_text=PII_INPUT, output_text='{"category": "security", "note": "mail jane.doe@example.com"}',
            parsed={"category": "security", "note": "mail jane.doe@example.com"}, latency_s=0.1234, ttft_s=0.0056)
    text = log.read_text(encoding="utf-8")
    for raw in RAW:
        assert raw not in text, raw
    (line,) = _lines(log)
    assert set(line) == {"ts", "artifact", "endpoint", "input", "output", "prompt_tokens", "completion_tokens",
                         "latency_ms", "ttft_ms", "queue_ms", "service_ms", "schema_valid", "parsed", "label",
                         "confidence", "needs_review", "status", "error"}
    assert line["confidence"] is None and line["needs_review"] is False   # not an enum answer's probability
    assert line["queue_ms"] is None and line["service_ms"] is None     # the caller did not time the queue
    assert line["ts"].endswith("Z") and line["artifact"] == "cpu/gguf_q8_0"
    for placeholder in ("<PHONE>", "<EMAIL>", "<CARD>", "<IBAN>", "<IP>"):
        assert placeholder in line["input"], (placeholder, line["input"])
    assert line["parsed"] == {"category": "security", "note": "mail <EMAIL>"}
    assert "<EMAIL>" in line["output"]
    assert line["label"] == "security"
    assert (line["latency_ms"], line["ttft_ms"], line["status"], line["error"]) == (123.4, 5.6, 200, None)


def test_spec_pii_slice_applies_its_own_patterns(tmp_path):
    log = tmp_path / "r.jsonl"
    pii = {"enabled": True, "types": ["email"], "patterns": [{"name": "employee_id", "regex": r"EMP-\d{6}"}],
           "presidio": False}
    t = Telemetry("a", log, pii=pii)
    _record(t, input_text="EMP-123456 needs a reset, bob@corp.example.org", parsed=None, schema_valid=False,
            status=502, error="invalid output from EMP-654321")
    (line,) = _lines(log)
    assert line["input"] == "<EMPLOYEE_ID> needs a reset, <EMAIL>"
    assert line["error"] == "invalid output from <EMPLOYEE_ID>"
    assert line["label"] is None and line["schema_valid"] is False


@pytest.mark.slow
def test_log_rotates_and_stays_under_its_cap(tmp_path):
    log = tmp_path / "r.jsonl"
    t = Telemetry("a", log, max_bytes=4096, backups=2)
    for i in range(500):
        _record(t, input_text=f"request number {i:04d} " + "x" * 100)
    files = sorted(tmp_path.iterdir())
    assert [f.name for f in files] == ["r.jsonl", "r.jsonl.1", "r.jsonl.2"]
    assert all(f.stat().st_size <= 4096 for f in files)
    kept = [json.loads(x)["input"] for f in (log.with_name("r.jsonl.2"), log.with_name("r.jsonl.1"), log)
            for x in f.read_text().splitlines()]
    assert kept[-1].startswith("request number 0499")        # the newest are kept, in order
    assert not any(k.startswith("request number 0000") for k in kept)  # the oldest were dropped


def test_huge_fields_are_clipped_so_one_request_cannot_blow_the_cap(tmp_path):
    log = tmp_path / "r.jsonl"
    t = Telemetry("a", log, max_bytes=4096, backups=1, max_field_chars=500)
    _record(t, input_text="y" * 1_000_000)
    (line,) = _lines(log)
    assert len(line["input"]) < 600 and line["input"].endswith("[truncated 999500 chars]")


def test_backups_zero_is_refused(tmp_path):
    with pytest.raises(ValueError, match="backups"):
        Telemetry("a", tmp_path / "r.jsonl", backups=0)


@pytest.mark.slow
def test_concurrent_requests_each_write_one_whole_line(tmp_path):
    log = tmp_path / "r.jsonl"
    t = Telemetry("a", log)

    def worker(k):
        for i in range(100):
            _record(t, input_text=f"thread {k} request {i} " + "z" * (i % 37))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    lines = _lines(log)
    assert len(lines) == 800
    assert len({x["input"] for x in lines}) == 800


def _samples(t: Telemetry) -> dict:
    body, ctype = t.metrics_body()
    assert ctype.startswith("text/plain")
    out = {}
    for fam in text_string_to_metric_families(body.decode()):
        for s in fam.samples:
            out[(s.name, tuple(sorted((k, v) for k, v in s.labels.items() if k != "le")), s.labels.get("le"))] = s.value
    return out


def test_metrics_count_requests_tokens_latency_and_invalid_outputs(tmp_path):
    t = Telemetry("cpu/x", None)  # metrics only: no log file
    _record(t, latency_s=0.02)
    _record(t, latency_s=0.2, schema_valid=False, prompt_tokens=5, completion_tokens=3)
    _record(t, endpoint="/v1/chat/completions", status=400, latency_s=0.001, ttft_s=None, prompt_tokens=0,
            completion_tokens=0, schema_valid=None, parsed=None)
    s = _samples(t)
    lab = (("artifact", "cpu/x"), ("endpoint", "/v1/completions"))
    assert s[("slmake_requests_total", tuple(sorted(lab + (("status", "200"),))), None)] == 2
    chat = (("artifact", "cpu/x"), ("endpoint", "/v1/chat/completions"), ("status", "400"))
    assert s[("slmake_requests_total", chat, None)] == 1
    assert s[("slmake_prompt_tokens_total", lab, None)] == 17
    assert s[("slmake_completion_tokens_total", lab, None)] == 10
    assert s[("slmake_invalid_outputs_total", lab, None)] == 1
    assert s[("slmake_request_latency_seconds_count", lab, None)] == 2
    assert s[("slmake_request_latency_seconds_bucket", lab, "0.025")] == 1
    assert s[("slmake_request_latency_seconds_sum", lab, None)] == pytest.approx(0.22)
    assert not list(tmp_path.iterdir())


def test_each_telemetry_has_its_own_registry(tmp_path):
    a, b = Telemetry("a", None), Telemetry("b", None)
    _record(a)
    assert b"artifact=\"a\"" in a.metrics_body()[0]
    assert b"artifact=\"a\"" not in b.metrics_body()[0]


def test_writer_process_writes_the_same_lines_in_order_and_close_writes_the_rest(tmp_path):
    """slmake serve's log (background=True): a process of its own scrubs and writes; its lines are
    the in-process log's, in order; flush() waits for them; close() writes what is left."""
    lines = [dict(input_text=f"{i}: call me on +44 20 7946 0958, Aiko Andersson", parsed={"category": f"c{i}"})
             for i in range(40)]
    here, there = tmp_path / "here.jsonl", tmp_path / "there.jsonl"
    t, bg = Telemetry("a", here, label_field="category"), Telemetry("a", there, label_field="category", background=True)
    assert bg.log._proc.pid != os.getpid()
    for kw in lines[:30]:
        _record(t, **kw)
        _record(bg, **kw)
    bg.flush()
    assert len(_lines(there)) == 30
    for kw in lines[30:]:
        _record(t, **kw)
        _record(bg, **kw)
    bg.close()
    bg.close()   # idempotent
    drop = ("ts",)
    got, want = ([{k: v for k, v in x.items() if k not in drop} for x in _lines(f)] for f in (there, here))
    assert got == want and got[5]["input"] == "5: call me on <PHONE>, <NAME>" and got[39]["label"] == "c39"


def test_writer_process_gone_the_server_writes_the_log_itself(tmp_path, capsys):
    log = tmp_path / "r.jsonl"
    t = Telemetry("a", log, background=True, scrub_names=False)   # (no NER model to load, twice)
    _record(t, input_text="before, mail jane.doe@example.com")
    t.flush()
    t.log._proc.kill()
    t.log._proc.wait()
    _record(t, input_text="after, mail jane.doe@example.com")
    t.flush()
    t.close()
    assert [x["input"] for x in _lines(log)] == ["before, mail <EMAIL>", "after, mail <EMAIL>"]
    assert "its writer process exited" in capsys.readouterr().err


def test_writer_process_that_cannot_start_says_why(tmp_path, monkeypatch):
    """A log folder that cannot be made names the log; a missing person-name model is the same
    NerUnavailable the server's own process raises (serve's cli adds the --log-names hint)."""
    from slmake.data.ner import NerUnavailable
    from slmake.request_log import LogWriterError

    with pytest.raises(LogWriterError, match=r"request log /proc/nope/r.jsonl: FileNotFoundError"):
        Telemetry("a", "/proc/nope/r.jsonl", background=True)
    (tmp_path / "spacy").mkdir()
    (tmp_path / "spacy" / "__init__.py").write_text("raise ImportError('no spaCy here')\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))   # the writer process finds this spacy first
    with pytest.raises(NerUnavailable, match="person-name detection needs spaCy"):
        Telemetry("a", tmp_path / "r.jsonl", background=True)
    t = Telemetry("a", tmp_path / "r.jsonl", background=True, scrub_names=False)   # no model needed: it starts
    _record(t, input_text="Aiko Andersson, jane.doe@example.com")
    t.close()
    assert _lines(tmp_path / "r.jsonl")[0]["input"] == "Aiko Andersson, <EMAIL>"
