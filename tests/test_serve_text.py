"""Serving text answers against their schema, and max_tokens capped instead of refused: the real
deploy contract, Engine and HTTP app over a scripted runner (no model; the e2e twin with a real
build is test_serve_text_e2e.py)."""

import json
from types import SimpleNamespace

import pytest

from slmake.deploy import model_card, serve_contract
from slmake.runtimes.llamacpp import gbnf_for
from slmake.runtimes.text_grammar import TextAnswer, TextGrammarUnsupported
from slmake.serve.engine import Engine

LABELS = ["network", "email", "hardware"]
TEXT_SCHEMA = {"type": "string", "enum": LABELS}
JSON_SCHEMA = {"type": "object", "required": ["category"], "properties": {"category": {"enum": LABELS}}}
BUDGET = 8                                            # the build's eval.max_new_tokens
WORDS = ["[UNK]", "printer", "jammed", "vpn", "down", *LABELS, "banana", "word", " network ",
         '{"category": "network"}', '{"category": "banana"}']


class ScriptedRunner:
    """Answers every prompt with the scripted token ids (cut at max_tokens, as a runtime's budget
    does); records what it was asked."""

    supports_constraint = True

    def __init__(self, answer: list[str], reject: Exception | None = None):
        self.ids, self.reject, self.calls, self.checked = [WORDS.index(w) for w in answer], reject, [], []

    def check_constraint(self, constraint):
        self.checked.append(constraint)
        if self.reject:
            raise self.reject

    def generate(self, ids, max_tokens, constraint=None):
        self.calls.append({"max_tokens": max_tokens, "constraint": constraint})
        cut = len(self.ids) > max_tokens
        return SimpleNamespace(tokens=self.ids[:max_tokens], finish_reason="length" if cut else "stop", ttft_s=0.01)

    def close(self):
        pass


def _engine(tmp_path, monkeypatch, fmt, schema, answer, *, enforce=True, reject=None, constrained=None):
    from tokenizers import Tokenizer, models, pre_tokenizers

    from slmake.serve import engine as engine_mod
    from slmake.serve.package import Package

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(tmp_path / "tokenizer.json"))
    contract = {"name": "cpu/fake", "target": "cpu", "prompt_template": "{instruction}", "max_prompt_tokens": 64,
                "max_new_tokens": BUDGET, "threads": 1, "tokenizer": "tokenizer.json", "response_schema": schema,
                "response_format": fmt, "label_field": None, "figures": {},
                "artifact": {"name": "fake", "format": "gguf", "precision": "q8_0", "path": "m.gguf",
                             "runtime": "llama.cpp"}}
    if constrained is not None:
        contract["constrained"] = constrained
    runner = ScriptedRunner(answer, reject)
    monkeypatch.setattr(engine_mod.targets, "load", lambda target: SimpleNamespace(
        open_runner=lambda art, folder, opts: runner))
    return Engine(Package(tmp_path, contract), enforce_schema=enforce), runner


def _client(engine, log=None):
    from fastapi.testclient import TestClient

    from slmake.serve.app import Limits, create_app
    from slmake.telemetry import Telemetry

    telemetry = Telemetry("cpu/fake", log) if log else None
    return TestClient(create_app(engine, Limits(), telemetry)), telemetry


# --- the deploy package carries the schema of either response format ---------------------------

def _spec(fmt, schema):
    return {"model": {"name": "tiny"}, "train": {"max_length": 256}, "eval": {"max_new_tokens": BUDGET},
            "bench": {"threads": None},
            "data": {"name": "d", "prompt_template": "### T\n{instruction}\n### A\n", "response_format": fmt,
                     "response_schema": schema, "label_field": None, "pii": None}}


@pytest.mark.parametrize("fmt,schema", [("text", TEXT_SCHEMA), ("json", JSON_SCHEMA)])
def test_package_contract_carries_the_schema_of_every_response_format(fmt, schema):
    entry = {"name": "gguf_f16", "format": "gguf", "precision": "f16", "path": "m.gguf", "runtime": "llama.cpp",
             "status": "built", "sha256": "x", "size_bytes": 1}
    contract = serve_contract("cpu", entry, _spec(fmt, schema), {}, {})
    assert contract["response_format"] == fmt and contract["response_schema"] == schema
    card = model_card(contract, {**_spec(fmt, schema), "model": {"name": "tiny", "source": "scratch"}}, entry)
    assert json.dumps(schema, indent=2) in card
    assert ("plain text (not JSON)" in card) == (fmt == "text")


# --- text answers: grammar constraint, validation, 422, request log -----------------------------

def test_text_answers_decode_under_the_bare_string_grammar(tmp_path, monkeypatch):
    engine, runner = _engine(tmp_path, monkeypatch, "text", TEXT_SCHEMA, ["network"])
    # the runner gets a guide.Guide: the GBNF bench decodes under too (runtimes/guide.py)
    assert engine.constrained and [g.gbnf for g in runner.checked] == [gbnf_for(TextAnswer(TEXT_SCHEMA))]
    ans = engine.answer("printer jammed", BUDGET)
    assert runner.calls[-1]["constraint"].gbnf == gbnf_for(TextAnswer(TEXT_SCHEMA))
    assert (ans.text, ans.schema_valid, ans.error, ans.parsed) == ("network", True, None, None)
    json_engine, json_runner = _engine(tmp_path, monkeypatch, "json", JSON_SCHEMA, ['{"category": "network"}'])
    json_engine.answer("printer jammed", BUDGET)
    assert json_runner.calls[-1]["constraint"].gbnf == gbnf_for(JSON_SCHEMA)   # JSON answers: the JSON Schema's


def test_a_build_benchmarked_free_is_served_free(tmp_path, monkeypatch):
    """eval.constrained: false reaches serve.json: bench decoded without the grammar, so serve does too."""
    engine, runner = _engine(tmp_path, monkeypatch, "text", TEXT_SCHEMA, ["network"], constrained=False)
    engine.answer("printer jammed", BUDGET)
    assert not engine.constrained and runner.checked == [] and runner.calls[-1]["constraint"] is None


def test_text_answer_off_the_labels_is_422_and_logged_invalid(tmp_path, monkeypatch):
    log = tmp_path / "requests.jsonl"
    engine, runner = _engine(tmp_path, monkeypatch, "text", TEXT_SCHEMA, ["banana"], enforce=False)
    assert not engine.constrained and runner.checked == []
    client, telemetry = _client(engine, log)
    with client:
        r = client.post("/v1/completions", json={"prompt": "vpn down"})
        assert r.status_code == 422 and r.json()["error"]["type"] == "invalid_output"
        assert "'banana' is not one of" in r.json()["error"]["message"]
        runner.ids = [WORDS.index(" network ")]         # padded: ends stripped as training's were
        r = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "vpn down"}]})
        assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "network"
    telemetry.close()
    rows = [json.loads(x) for x in log.read_text().splitlines()]
    assert [(r["status"], r["schema_valid"]) for r in rows] == [(422, False), (200, True)]


def test_a_long_enum_is_counted_not_listed_in_the_error(tmp_path, monkeypatch):
    schema = {"type": "string", "enum": [f"label_{i}" for i in range(151)]}
    engine, _ = _engine(tmp_path, monkeypatch, "text", schema, ["banana"], enforce=False)
    ans = engine.answer("vpn down", BUDGET)
    assert ans.schema_valid is False and "not one of the 151 allowed values" in ans.error and len(ans.error) < 200


def test_a_schema_the_grammar_cannot_express_is_still_validated(tmp_path, monkeypatch):
    why = TextGrammarUnsupported("pattern '^(?=a)': cannot express it")
    engine, runner = _engine(tmp_path, monkeypatch, "text", {"type": "string", "pattern": "^(?=n)n"}, ["banana"],
                             reject=why)
    assert not engine.constrained and "cannot express" in engine.unconstrained_why
    ans = engine.answer("vpn down", BUDGET)
    assert runner.calls[-1]["constraint"] is None and ans.schema_valid is False and "does not match" in ans.error


# --- max_tokens: capped at the server's limit, never refused for being large --------------------

def test_max_tokens_above_the_budget_is_capped_and_says_so(tmp_path, monkeypatch):
    from slmake.serve.app import CAP_HEADER

    engine, runner = _engine(tmp_path, monkeypatch, "text", None, ["word"] * 12)   # no schema: free text
    client, _ = _client(engine)
    with client:
        r = client.post("/v1/completions", json={"prompt": "vpn down", "max_tokens": 4096})
        assert r.status_code == 200 and runner.calls[-1]["max_tokens"] == BUDGET
        assert r.headers[CAP_HEADER] == str(BUDGET)
        assert r.json()["max_tokens_capped"] == {"requested": 4096, "applied": BUDGET}
        assert r.json()["choices"][0]["finish_reason"] == "length"        # the cap cut the answer
        assert r.json()["usage"]["completion_tokens"] == BUDGET
        r = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "vpn down"}],
                                                      "max_completion_tokens": 100, "max_tokens": 1})
        assert r.status_code == 200 and r.json()["max_tokens_capped"]["requested"] == 100
        runner.ids = runner.ids[:3]
        r = client.post("/v1/completions", json={"prompt": "vpn down", "max_tokens": 1000})
        assert r.json()["choices"][0]["finish_reason"] == "stop"          # capped, but the answer fit
        r = client.post("/v1/completions", json={"prompt": "vpn down", "max_tokens": 2})
        assert runner.calls[-1]["max_tokens"] == 2 and CAP_HEADER not in r.headers
        assert "max_tokens_capped" not in r.json() and r.json()["choices"][0]["finish_reason"] == "length"
        r = client.post("/v1/completions", json={"prompt": "vpn down"})
        assert runner.calls[-1]["max_tokens"] == BUDGET and CAP_HEADER not in r.headers
        r = client.post("/v1/completions", json={"prompt": "vpn down", "max_tokens": 0})
        assert r.status_code == 400 and r.json()["error"]["param"] == "max_tokens"


def test_a_schema_answer_cut_by_the_cap_is_422_naming_the_cut(tmp_path, monkeypatch):
    engine, _ = _engine(tmp_path, monkeypatch, "json", JSON_SCHEMA, ["word"] * 12)
    client, _ = _client(engine)
    with client:
        r = client.post("/v1/completions", json={"prompt": "vpn down", "max_tokens": 512})
    assert r.status_code == 422 and f"cut off at max_tokens = {BUDGET}" in r.json()["error"]["message"]
