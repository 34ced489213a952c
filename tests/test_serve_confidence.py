"""Confidence for routing (issue 20 item 3): token log-probabilities, the enum label's probability,
serve.min_confidence's "needs review" answers and the report's coverage/accuracy table. Pure
functions, and the real Engine + HTTP app over a scripted runner (no model); the e2e twin with a
real build and the `openai` client is test_serve_e2e.py's confidence test."""

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest

from slmake.runtimes.base import Greedy
from slmake.runtimes.confidence import (
    coverage_table,
    label_probability,
    label_target,
    needs_review,
    token_logprob,
    value_span,
)

LABELS = ["network", "email", "hardware"]
TEXT_SCHEMA = {"type": "string", "enum": LABELS}
JSON_SCHEMA = {"type": "object", "properties": {"category": {"enum": LABELS}, "note": {"type": "string"}}}


def test_token_logprob_is_the_log_softmax_with_the_best_alternatives():
    logits = np.array([1.0, 3.0, 2.0, 3.0, -1.0], dtype=np.float32)
    want = logits - math.log(np.exp(logits.astype(np.float64)).sum())
    lp, top = token_logprob(logits, 2, top=3)
    assert lp == pytest.approx(want[2], abs=1e-6)
    assert [i for i, _ in top] == [1, 3, 2]                    # best first, a tie broken by id
    assert [v for _, v in top] == pytest.approx([want[1], want[3], want[2]], abs=1e-6)
    assert token_logprob(logits.astype(np.float16), 2, 0) == (pytest.approx(lp, abs=1e-2), [])
    assert token_logprob(logits, 0, top=99)[1][-1][0] == 4    # top beyond the vocabulary: all of it


def test_value_span_and_label_target():
    text = '{"category": "network", "note": "a {\\"x\\": 1}"}'
    start, end = value_span(text, "category")
    assert text[start:end] == '"network"'
    start, end = value_span(text, "note")
    assert text[start:end] == '"a {\\"x\\": 1}"'
    assert value_span(text, "missing") is None and value_span("not json", "category") is None
    assert value_span('{"category": ', "category") is None     # cut off
    assert value_span("  network \n", None) == (2, 9)            # a text answer: the whole, stripped
    assert label_target(JSON_SCHEMA, "category") == (True, "category")
    assert label_target(JSON_SCHEMA, "note") == (False, None)    # not an enum
    assert label_target(TEXT_SCHEMA, None) == (True, None)
    assert label_target(None, "category") == (False, None)


def test_label_probability_multiplies_the_tokens_that_spell_the_label():
    pieces = ['{"', "category", '": "', "net", "work", '", "', "note", '": "', "x", '"}']
    decode = lambda ids: "".join(pieces[i] for i in ids)   # noqa: E731
    tokens = list(range(len(pieces)))
    lps = [-0.1 * (i + 1) for i in tokens]
    # the value '"network"' overlaps '": "' (its opening quote), "net", "work" and '", "' (its closing one)
    assert label_probability(tokens, lps, decode, "category") == pytest.approx(math.exp(-(0.3 + 0.4 + 0.5 + 0.6)))
    assert label_probability(tokens, None, decode, "category") is None
    assert label_probability(tokens, lps[:-1], decode, "category") is None   # not one per token
    assert label_probability([3, 4], [-0.2, -0.3], decode, None) == pytest.approx(math.exp(-0.5))


def test_coverage_table_and_needs_review_agree():
    probs, hits = [0.95, 0.8, 0.6, None, 0.3], [True, True, False, False, False]
    rows = {r["min_confidence"]: r for r in coverage_table(probs, hits, (0.0, 0.5, 0.9, 0.99))}
    assert rows[0.0] == {"min_confidence": 0.0, "answered": 5, "coverage": 1.0, "accuracy": 0.4}
    assert rows[0.5] == {"min_confidence": 0.5, "answered": 3, "coverage": 0.6, "accuracy": 0.6667}
    assert rows[0.9]["answered"] == 1 and rows[0.9]["accuracy"] == 1.0
    assert rows[0.99] == {"min_confidence": 0.99, "answered": 0, "coverage": 0.0, "accuracy": None}
    assert not needs_review(0.1, None) and needs_review(0.49, 0.5) and not needs_review(0.5, 0.5)
    assert needs_review(None, 0.5) and not needs_review(None, 0.0)   # unknown counts as 0, as in the table


def test_greedy_records_the_kept_tokens_log_probabilities():
    run = Greedy({9}, logprobs=1)
    assert run.pick(np.array([0.0, 2.0, 1.0] + [-9.0] * 7, dtype=np.float32)) == 1
    run.step(1)
    run.note(np.array([5.0, 0.0, 0.0] + [-9.0] * 7, dtype=np.float32), 2)   # a runner's own grammar pick
    run.step(2)
    eos = np.full(10, -9.0, dtype=np.float32)
    eos[9] = 9.0
    assert run.pick(eos) == 9 and run.step(9)                  # end of generation: not kept, not recorded
    gen = run.result()
    assert gen.tokens == [1, 2] and len(gen.logprobs) == 2 and gen.top_logprobs[1][0][0] == 0
    assert gen.logprobs[1] < -4.9
    assert Greedy({9}).result().logprobs is None                # off by default


def test_llama_server_asks_for_and_parses_token_probabilities():
    from slmake.serve.llama_server import parse_probs, request_body

    assert "n_probs" not in request_body([1, 2], 8, None)
    assert request_body([1, 2], 8, None, 0)["n_probs"] == 1    # the chosen token's needs one
    assert request_body([1, 2], 8, None, 5)["n_probs"] == 5
    probs = [{"id": 7, "logprob": -0.5, "top_logprobs": [{"id": 7, "logprob": -0.5}, {"id": 3, "logprob": -1.0}]},
             {"id": 2, "logprob": -0.1, "top_logprobs": [{"id": 2, "logprob": -0.1}]},
             {"id": 0, "logprob": -0.01, "top_logprobs": []}]       # the end-of-generation token's
    assert parse_probs(probs, [7, 2], 1) == ([-0.5, -0.1], [[(7, -0.5)], [(2, -0.1)]])
    assert parse_probs(probs, [7, 5], 1) == (None, None)        # not these tokens
    assert parse_probs(probs, [7, 2], None) == (None, None) and parse_probs(None, [7], 0) == (None, None)


def test_report_renders_coverage_and_accuracy_per_artifact():
    from slmake.report import confidence_markdown

    table = {"label_field": "category", "rows": coverage_table([0.9, 0.4], [True, False], (0.0, 0.5))}
    rows = [{"target": "cpu", "artifact": "a", "status": "ok", "confidence": table},
            {"target": "cpu", "artifact": "b", "status": "ok"}]
    md = confidence_markdown(rows)
    assert "| min_confidence | cpu/a |" in md and "| off | 1.000 · 0.500 |" in md and "| 0.5 | 0.500 · 1.000 |" in md
    assert "cpu/b" not in md and confidence_markdown(rows[1:]) == ""


def test_spec_check_refuses_min_confidence_without_an_enum_label():
    from slmake.checks import confidence_problems

    assert confidence_problems({"response_schema": JSON_SCHEMA, "label_field": "category"}) == []
    assert "serve.min_confidence" in confidence_problems({"response_schema": JSON_SCHEMA, "label_field": "note"})[0]


# --- over HTTP: the real Engine and app over a scripted runner ------------------------------------

WORDS = ["[UNK]", "printer", "jammed", *LABELS]


class ScriptedRunner:
    """Answers ``label`` with the given log-probability (its alternatives: the other labels)."""

    supports_constraint = True

    def __init__(self, label: str, logprob: float, logprobs: bool = True):
        self.token, self.lp = WORDS.index(label), logprob
        if logprobs:
            self.supports_logprobs = True

    def check_constraint(self, constraint):
        pass

    def generate(self, ids, max_tokens, constraint=None, on_token=None, logprobs=None):
        gen = SimpleNamespace(tokens=[self.token], finish_reason="stop", ttft_s=0.01, logprobs=None, top_logprobs=None)
        if logprobs is not None:
            others = [WORDS.index(w) for w in LABELS if WORDS.index(w) != self.token]
            gen.logprobs = [self.lp]
            gen.top_logprobs = [[(self.token, self.lp), *[(o, self.lp - 1 - i) for i, o in enumerate(others)]][:logprobs]]
        if on_token:
            on_token(self.token)
        return gen

    def close(self):
        pass


class _SpanRecorder:
    """Stands in for serve.otel.Otel: what the app hands to each request's span."""

    def __init__(self):
        self.spans = []

    def record(self, **attributes):
        self.spans.append(attributes)

    def shutdown(self):
        pass


def _client(tmp_path, monkeypatch, runner, schema=TEXT_SCHEMA, fmt="text", otel=None, confidence=True, **limits):
    from fastapi.testclient import TestClient
    from tokenizers import Tokenizer, models, pre_tokenizers

    from slmake.serve import engine as engine_mod
    from slmake.serve.app import Limits, create_app
    from slmake.serve.engine import Engine
    from slmake.serve.package import Package
    from slmake.telemetry import Telemetry

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(tmp_path / "tokenizer.json"))
    contract = {"name": "cpu/fake", "target": "cpu", "prompt_template": "{instruction}", "max_prompt_tokens": 64,
                "max_new_tokens": 4, "threads": 1, "tokenizer": "tokenizer.json", "response_schema": schema,
                "response_format": fmt, "label_field": None, "figures": {},
                "artifact": {"name": "fake", "format": "onnx", "precision": "int4", "path": "m", "runtime": "fake"}}
    monkeypatch.setattr(engine_mod.targets, "load", lambda target: SimpleNamespace(
        open_runner=lambda art, folder, opts: runner))
    engine = Engine(Package(tmp_path, contract), confidence=confidence)
    telemetry = Telemetry("cpu/fake", tmp_path / "requests.jsonl")
    return TestClient(create_app(engine, Limits(**limits), telemetry, otel)), telemetry


def _events(response) -> list[dict]:
    return [json.loads(line[6:]) for line in response.text.splitlines() if line.startswith("data: {")]


def test_logprobs_in_openai_shapes_and_the_label_probability(tmp_path, monkeypatch):
    client, _ = _client(tmp_path, monkeypatch, ScriptedRunner("email", math.log(0.8)))
    r = client.post("/v1/completions", json={"prompt": "printer jammed", "logprobs": 2}).json()
    choice = r["choices"][0]
    assert choice["text"] == "email" and choice["finish_reason"] == "stop"
    assert choice["logprobs"] == {"tokens": ["email"], "token_logprobs": [pytest.approx(math.log(0.8))],
                                  "top_logprobs": [{"email": pytest.approx(math.log(0.8)),
                                                    "network": pytest.approx(math.log(0.8) - 1)}],
                                  "text_offset": [0]}
    assert choice["slmake"]["confidence"] == {"label_field": None, "label": "email", "probability": 0.8}
    assert "needs_review" not in choice["slmake"]                   # no threshold: nothing withheld
    r = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "printer jammed"}],
                                                  "logprobs": True, "top_logprobs": 1}).json()
    content = r["choices"][0]["logprobs"]["content"]
    assert content == [{"token": "email", "logprob": pytest.approx(math.log(0.8)), "bytes": list(b"email"),
                        "top_logprobs": [{"token": "email", "logprob": pytest.approx(math.log(0.8)),
                                          "bytes": list(b"email")}]}]
    plain = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}]}).json()
    assert plain["choices"][0]["logprobs"] is None and plain["choices"][0]["slmake"]["confidence"]["probability"] == 0.8
    events = _events(client.post("/v1/chat/completions", json={
        "messages": [{"role": "user", "content": "printer jammed"}], "logprobs": True, "stream": True}))
    assert "".join(e["choices"][0]["delta"].get("content", "") for e in events) == "email"
    assert events[-1]["choices"][0]["logprobs"]["content"][0]["token"] == "email"     # in the last chunk
    assert events[-1]["slmake"]["confidence"]["probability"] == 0.8
    bad = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}], "top_logprobs": 2})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "top_logprobs"
    bad = client.post("/v1/completions", json={"prompt": "x", "logprobs": 21})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "logprobs"


def test_min_confidence_answers_needs_review_instead_of_a_guess(tmp_path, monkeypatch):
    spans = _SpanRecorder()
    client, telemetry = _client(tmp_path, monkeypatch, ScriptedRunner("email", math.log(0.4)), otel=spans,
                                min_confidence=0.5, review_answer="needs a person")
    r = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "printer jammed"}],
                                                  "logprobs": True}).json()
    choice = r["choices"][0]
    assert (choice["finish_reason"], choice["message"]["content"], choice["logprobs"]) == (
        "needs_review", "needs a person", None)
    assert choice["slmake"]["needs_review"] is True and choice["slmake"]["guess"] == "email"
    assert choice["slmake"]["confidence"]["probability"] == 0.4
    events = _events(client.post("/v1/completions", json={"prompt": "printer jammed", "stream": True}))
    assert [e["choices"][0]["text"] for e in events] == ["needs a person", ""]   # the guess never streamed
    assert events[-1]["choices"][0]["finish_reason"] == "needs_review" and events[-1]["slmake"]["needs_review"]
    log = [json.loads(line) for line in (tmp_path / "requests.jsonl").read_text().splitlines()]
    assert [(e["needs_review"], e["confidence"]) for e in log] == [(True, 0.4), (True, 0.4)]
    # the OTel span says what the client got (finish reason needs_review), beside the model's confidence
    assert [(s["finish_reason"], s["needs_review"], s["confidence"]) for s in spans.spans] == [
        ("needs_review", True, 0.4), ("needs_review", True, 0.4)]
    assert 'slmake_needs_review_total{artifact="cpu/fake",endpoint="chat.completions"} 1.0' in \
        telemetry.metrics_body()[0].decode()
    sure, _ = _client(tmp_path, monkeypatch, ScriptedRunner("email", math.log(0.9)), min_confidence=0.5)
    choice = sure.post("/v1/completions", json={"prompt": "printer jammed"}).json()["choices"][0]
    assert (choice["text"], choice["finish_reason"], choice["slmake"]["needs_review"]) == ("email", "stop", False)


def test_an_engine_without_probabilities_says_so(tmp_path, monkeypatch):
    client, _ = _client(tmp_path, monkeypatch, ScriptedRunner("email", -0.1, logprobs=False))
    r = client.post("/v1/completions", json={"prompt": "printer jammed", "logprobs": 0})
    assert r.status_code == 400 and "engine in_process" in r.json()["error"]["message"]
    ok = client.post("/v1/completions", json={"prompt": "printer jammed"}).json()["choices"][0]
    assert ok["text"] == "email" and ok["slmake"]["confidence"] is None
    with pytest.raises(ValueError, match="min_confidence"):
        _client(tmp_path, monkeypatch, ScriptedRunner("email", -0.1, logprobs=False), min_confidence=0.5)
    with pytest.raises(ValueError, match="enum label"):
        _client(tmp_path, monkeypatch, ScriptedRunner("email", -0.1), schema={"type": "string"}, min_confidence=0.5)


class AskedRunner(ScriptedRunner):
    """ScriptedRunner, recording the alternatives per token each generation was asked for."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.asked = []

    def generate(self, ids, max_tokens, constraint=None, on_token=None, logprobs=None):
        self.asked.append(logprobs)
        return super().generate(ids, max_tokens, constraint=constraint, on_token=on_token, logprobs=logprobs)


def test_probabilities_cost_only_what_the_request_needs(tmp_path, monkeypatch):
    """The label's confidence needs each token's probability but not its text: the per-token pieces
    (a prefix decode per token) are made only for a client that asked for logprobs. `slmake serve
    --no-confidence` asks the engine for no probabilities at all unless the client does."""
    from slmake.serve.engine import Front

    pieces = []
    real = Front.token_logprobs
    monkeypatch.setattr(Front, "token_logprobs", lambda self, *a: pieces.append(1) or real(self, *a))
    runner = AskedRunner("email", math.log(0.8))
    client, _ = _client(tmp_path, monkeypatch, runner)
    plain = client.post("/v1/completions", json={"prompt": "printer jammed"}).json()["choices"][0]
    assert (runner.asked, pieces, plain["logprobs"], plain["slmake"]["confidence"]["probability"]) == ([0], [], None, 0.8)
    asked = client.post("/v1/completions", json={"prompt": "printer jammed", "logprobs": 1}).json()["choices"][0]
    assert (runner.asked[-1], len(pieces), asked["logprobs"]["tokens"]) == (1, 1, ["email"])

    runner, pieces[:] = AskedRunner("email", math.log(0.8)), []
    client, _ = _client(tmp_path, monkeypatch, runner, confidence=False)
    plain = client.post("/v1/completions", json={"prompt": "printer jammed"}).json()["choices"][0]
    assert (runner.asked, pieces, plain["text"], plain["slmake"]["confidence"]) == ([None], [], "email", None)
    asked = client.post("/v1/completions", json={"prompt": "printer jammed", "logprobs": 0}).json()["choices"][0]
    assert runner.asked[-1] == 0 and asked["logprobs"]["token_logprobs"] == [pytest.approx(math.log(0.8))]
    assert asked["slmake"]["confidence"]["probability"] == 0.8   # computed when the probabilities are there
