"""OpenTelemetry from `slmake serve`: real requests through the HTTP app export, over OTLP/HTTP to
a receiver on loopback, one span per request and the GenAI model-server metrics, named by the
GenAI semantic conventions; nothing is exported unless an OTLP endpoint is set. The real Engine
and app over a scripted runner (no model)."""

from __future__ import annotations

import gzip
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import pytest

from slmake.runtimes.base import Generation
from slmake.serve.otel import Otel, wanted

LABELS = ["network", "email"]
SCHEMA = {"type": "object", "required": ["category"], "properties": {"category": {"enum": LABELS}}}
WORDS = ["[UNK]", "printer", "jammed", "vpn", "down", "banana", '{"category": "network"}', '{"category": "banana"}']


class _Runner:
    """Answers a valid JSON object, or one off the schema when the prompt says "banana"."""

    def generate(self, ids, max_tokens, constraint=None, on_token=None, **kw):
        answer = WORDS.index('{"category": "banana"}' if WORDS.index("banana") in ids else '{"category": "network"}')
        if on_token is not None:
            on_token(answer)
        return Generation(tokens=[answer], ttft_s=0.002, decode_s=0.0, finish_reason="stop")

    def close(self):
        pass


def _engine(tmp_path, monkeypatch):
    from tokenizers import Tokenizer, models, pre_tokenizers

    from slmake.serve import engine as engine_mod
    from slmake.serve.engine import Engine
    from slmake.serve.package import Package

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(tmp_path / "tokenizer.json"))
    contract = {"name": "cpu/fake", "target": "cpu", "prompt_template": "{instruction}", "max_prompt_tokens": 64,
                "max_new_tokens": 8, "threads": 1, "tokenizer": "tokenizer.json", "response_schema": SCHEMA,
                "response_format": "json", "label_field": "category", "figures": {}, "constrained": False,
                "artifact": {"name": "fake", "format": "gguf", "precision": "q8_0", "path": "m.gguf",
                             "runtime": "llama.cpp"}}
    monkeypatch.setattr(engine_mod.targets, "load", lambda target: SimpleNamespace(
        open_runner=lambda art, folder, opts: _Runner()))
    return Engine(Package(tmp_path, contract))


class _Receiver:
    """An OTLP/HTTP receiver on 127.0.0.1: decodes what arrives at /v1/traces and /v1/metrics."""

    def __init__(self):
        from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        self.got = {"/v1/traces": [], "/v1/metrics": []}
        kinds = {"/v1/traces": ExportTraceServiceRequest, "/v1/metrics": ExportMetricsServiceRequest}
        got = self.got

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path not in kinds or self.headers.get("Content-Type") != "application/x-protobuf":
                    self.send_response(404)
                    self.end_headers()
                    return
                msg = kinds[self.path]()
                msg.ParseFromString(body)
                got[self.path].append(msg)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True).start()

    def spans(self) -> list:
        return [s for req in self.got["/v1/traces"] for rs in req.resource_spans for ss in rs.scope_spans
                for s in ss.spans]

    def metrics(self) -> dict:
        """name -> [(attributes, histogram point)] over every export."""
        out = {}
        for req in self.got["/v1/metrics"]:
            for rm in req.resource_metrics:
                for sm in rm.scope_metrics:
                    for m in sm.metrics:
                        for p in m.histogram.data_points:
                            out.setdefault(m.name, []).append((_attrs(p.attributes), p))
        return out

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def _value(v):
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    return getattr(v, kind)


def _attrs(kvs) -> dict:
    return {kv.key: _value(kv.value) for kv in kvs}


def test_nothing_is_exported_without_an_otlp_endpoint():
    assert wanted({}) == (False, False)
    assert Otel.from_env(model="m", environ={"OTEL_SERVICE_NAME": "x"}) is None
    assert wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}) == (True, True)
    assert wanted({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}) == (True, False)
    assert wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_METRICS_EXPORTER": "none"}) == (True, False)
    assert wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "true"}) == (False, False)


def test_requests_export_genai_spans_and_metrics_over_otlp(tmp_path, monkeypatch):
    from fastapi.testclient import TestClient

    from slmake.serve.app import Limits, create_app

    receiver = _Receiver()
    try:
        for var in ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "OTEL_SDK_DISABLED",
                    "OTEL_TRACES_EXPORTER", "OTEL_METRICS_EXPORTER", "OTEL_RESOURCE_ATTRIBUTES"):
            monkeypatch.delenv(var, raising=False)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url)
        monkeypatch.setenv("OTEL_SERVICE_NAME", "ticket-triage")
        otel = Otel.from_env(model="cpu/fake", output_type="json", server_address="127.0.0.1", server_port=8000)
        assert otel is not None and otel.signals == "traces and metrics"
        with TestClient(create_app(_engine(tmp_path, monkeypatch), Limits(), None, otel)) as client:
            ok = client.post("/v1/chat/completions", json={"model": "cpu/fake", "max_tokens": 5,
                                                           "messages": [{"role": "user", "content": "vpn down"}]})
            assert ok.status_code == 200, ok.text
            bad = client.post("/v1/completions", json={"prompt": "banana printer"})
            assert bad.status_code == 422
            streamed = client.post("/v1/completions", json={"prompt": "printer jammed", "stream": True})
            assert streamed.status_code == 200 and streamed.text.rstrip().endswith("data: [DONE]")
        # leaving the app (its shutdown) flushed both signals to the receiver
    finally:
        receiver.close()

    resources = [_attrs(rs.resource.attributes) for req in receiver.got["/v1/traces"] for rs in req.resource_spans]
    assert resources and all(r["service.name"] == "ticket-triage" for r in resources)
    spans = {s.name + (" stream" if _attrs(s.attributes)["gen_ai.request.stream"] else ""): s
             for s in receiver.spans()}
    assert set(spans) == {"chat cpu/fake", "text_completion cpu/fake", "text_completion cpu/fake stream"}
    chat = _attrs(spans["chat cpu/fake"].attributes)
    assert spans["chat cpu/fake"].kind == 2   # SPAN_KIND_SERVER
    assert chat["gen_ai.operation.name"] == "chat" and chat["gen_ai.provider.name"] == "slmake"
    assert chat["gen_ai.request.model"] == chat["gen_ai.response.model"] == "cpu/fake"
    assert chat["gen_ai.request.max_tokens"] == 5
    assert chat["gen_ai.response.finish_reasons"] == ["stop"]
    assert chat["gen_ai.usage.input_tokens"] == 2 and chat["gen_ai.usage.output_tokens"] == 1
    assert chat["gen_ai.output.type"] == "json" and chat["slmake.schema_valid"] is True
    assert chat["slmake.needs_review"] is False and "slmake.confidence" not in chat   # no probabilities here
    assert (chat["server.address"], chat["server.port"]) == ("127.0.0.1", 8000)
    assert "error.type" not in chat and spans["chat cpu/fake"].status.code != 2
    span = spans["chat cpu/fake"]
    assert 0 < span.end_time_unix_nano - span.start_time_unix_nano < 10e9
    bad_span = spans["text_completion cpu/fake"]
    bad_attrs = _attrs(bad_span.attributes)
    assert bad_attrs["error.type"] == "invalid_output" and bad_span.status.code == 2   # STATUS_CODE_ERROR
    assert bad_attrs["slmake.schema_valid"] is False and bad_attrs["gen_ai.request.max_tokens"] == 8
    stream = _attrs(spans["text_completion cpu/fake stream"].attributes)
    assert stream["gen_ai.response.time_to_first_chunk"] >= 0 and "error.type" not in stream

    metrics = receiver.metrics()
    duration = metrics["gen_ai.server.request.duration"]
    assert sum(p.count for _, p in duration) == 3
    assert {(a["gen_ai.operation.name"], a.get("error.type")) for a, _ in duration} == {
        ("chat", None), ("text_completion", None), ("text_completion", "invalid_output")}
    assert all(a["gen_ai.provider.name"] == "slmake" and a["gen_ai.request.model"] == "cpu/fake" for a, _ in duration)
    assert list(duration[0][1].explicit_bounds)[:3] == [0.01, 0.02, 0.04]    # the conventions' buckets
    ttft = metrics["gen_ai.server.time_to_first_token"]
    assert sum(p.count for _, p in ttft) == 2                                  # successful responses only
    tokens = {a["gen_ai.token.type"]: p for a, p in metrics["gen_ai.client.token.usage"]
              if a["gen_ai.operation.name"] == "chat"}
    assert (tokens["input"].sum, tokens["output"].sum) == (2, 1)


@pytest.mark.slow
@pytest.mark.e2e
def test_slmake_serve_exports_over_otlp_when_the_endpoint_is_set(micro_repo, monkeypatch, tmp_path):
    """The CLI's wiring: `slmake serve` on the micro build reads OTEL_EXPORTER_OTLP_ENDPOINT from its
    environment, and a SIGTERM'd server flushes the span and metrics of the request it answered."""
    import os
    import signal

    import httpx

    from e2e_utils import start_serve

    receiver = _Receiver()
    try:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url)
        monkeypatch.setenv("OTEL_SERVICE_NAME", "micro-e2e")
        proc, base = start_serve(micro_repo, "cpu/gguf_q4_k_m", "--request-log", "", log=tmp_path / "serve.log")
        try:
            r = httpx.post(f"{base}/v1/chat/completions", timeout=60,
                           json={"messages": [{"role": "user", "content": "vpn drops every hour"}], "max_tokens": 7})
            assert r.status_code in (200, 422), r.text
            os.kill(proc.pid, signal.SIGTERM)
            assert proc.wait(timeout=30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
    finally:
        receiver.close()
    assert "OpenTelemetry: traces and metrics over OTLP/HTTP" in (tmp_path / "serve.log").read_text()
    (span,) = receiver.spans()
    attrs = _attrs(span.attributes)
    usage = r.json().get("usage") if r.status_code == 200 else None
    assert span.name == "chat cpu/gguf_q4_k_m" and attrs["gen_ai.request.max_tokens"] == 7
    assert attrs["gen_ai.usage.input_tokens"] > 0 and attrs["gen_ai.usage.output_tokens"] > 0
    if usage:
        assert (attrs["gen_ai.usage.input_tokens"], attrs["gen_ai.usage.output_tokens"]) == (
            usage["prompt_tokens"], usage["completion_tokens"])
    metrics = receiver.metrics()
    assert sum(p.count for _, p in metrics["gen_ai.server.request.duration"]) == 1
