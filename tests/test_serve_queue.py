"""Queue wait vs service time: what `slmake serve` logs for each request, so `slmake monitor` judges
the server's work and reports load apart. The real Engine.answer and HTTP app, over a fake runner
that takes a known time (no model needed)."""

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pytest

from slmake.serve.engine import Engine

SERVICE_S = 0.15


class _SlowRunner:
    """One generation takes SERVICE_S; refuses to be entered twice at once (the engine's lock)."""

    def __init__(self):
        self.busy = threading.Lock()
        self.callers: set[int] = set()

    def generate(self, ids, max_tokens, **kw):
        assert self.busy.acquire(blocking=False), "the runner was entered concurrently"
        self.callers.add(threading.get_ident())
        try:
            time.sleep(SERVICE_S)
            return SimpleNamespace(tokens=[1, 2], finish_reason="stop", ttft_s=0.01)
        finally:
            self.busy.release()

    def close(self):
        pass


def _engine(tmp_path, monkeypatch) -> Engine:
    """A real Engine over a package folder with a real (word-level) tokenizer; only the target's
    runner is replaced by the slow fake."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    from slmake.serve import engine as engine_mod
    from slmake.serve.package import Package

    words = ["[UNK]", "printer", "jammed", "laptop", "dead", "vpn", "down"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(tmp_path / "tokenizer.json"))
    contract = {"name": "cpu/fake", "target": "cpu", "prompt_template": "{instruction}", "max_prompt_tokens": 64,
                "max_new_tokens": 8, "threads": 1, "tokenizer": "tokenizer.json", "response_schema": None,
                "response_format": "json", "label_field": None, "figures": {},
                "artifact": {"name": "fake", "format": "gguf", "precision": "q8_0", "path": "m.gguf",
                             "runtime": "llama.cpp"}}
    monkeypatch.setattr(engine_mod.targets, "load", lambda target: SimpleNamespace(
        open_runner=lambda art, folder, opts: _SlowRunner()))
    return Engine(Package(tmp_path, contract))


def test_engine_splits_queue_wait_from_service_time(tmp_path, monkeypatch):
    engine = _engine(tmp_path, monkeypatch)
    start = threading.Barrier(4)

    def ask(i):
        start.wait()
        return engine.answer(f"printer {i} jammed", 8)
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(ask, range(4)))
    waits = sorted(a.queue_s for a in answers)
    for a in answers:
        assert a.latency_s - a.queue_s == pytest.approx(SERVICE_S, abs=0.05)   # service: the runner's work
    assert waits[0] < 0.05                        # the first one found the runner free
    assert waits[-1] == pytest.approx(3 * SERVICE_S, abs=0.1)   # the last waited for the three before it
    # a request that came in earlier (thread pool busy) counts that wait as queueing too
    late = engine.answer("vpn down", 8, arrived=time.perf_counter() - 0.5)
    assert late.queue_s >= 0.5 and late.latency_s - late.queue_s == pytest.approx(SERVICE_S, abs=0.05)
    # every generation ran on the engine's one runner thread, none on the callers' (llama.cpp's OpenMP
    # keeps a thread team per calling thread: several callers made each generation ~5x slower)
    assert len(engine.runner.callers) == 1 and threading.get_ident() not in engine.runner.callers
    engine.close()


def test_request_log_carries_queue_and_service_time(tmp_path, monkeypatch):
    from fastapi.testclient import TestClient

    from slmake.serve.app import Limits, create_app
    from slmake.telemetry import Telemetry

    log = tmp_path / "requests.jsonl"
    telemetry = Telemetry("cpu/fake", log, label_field="category")
    app = create_app(_engine(tmp_path, monkeypatch), Limits(), telemetry)
    with TestClient(app) as client, ThreadPoolExecutor(6) as pool:
        codes = list(pool.map(lambda i: client.post("/v1/completions", json={"prompt": f"laptop {i} dead"}).status_code,
                              range(6)))
    telemetry.close()
    assert codes == [200] * 6
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    assert len(lines) == 6
    for r in lines:
        assert r["service_ms"] == pytest.approx(SERVICE_S * 1000, abs=50)
        assert r["latency_ms"] == pytest.approx(r["queue_ms"] + r["service_ms"], abs=0.01)
    assert max(r["queue_ms"] for r in lines) > 3 * SERVICE_S * 1000   # six at once: the later ones queued
