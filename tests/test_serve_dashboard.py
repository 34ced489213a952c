"""The Grafana dashboard in every deploy package charts what `slmake serve` really exports: each
query's metrics and label matchers are read off the Prometheus exposition of the real app after
real requests (scripted runner, no model), and every exported metric is on some panel."""

from __future__ import annotations

import json
import re

from prometheus_client.parser import text_string_to_metric_families

from slmake.serve.dashboard import dashboard_json, grafana_dashboard
from test_serve_otel import _engine

METRIC = re.compile(r"\b(slmake_[a-z_]+)(\{([^}]*)\})?")
MATCHER = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"')


SAMPLES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}


def _exported(tmp_path, monkeypatch) -> dict[str, set[str] | None]:
    """sample name -> its label names, as GET /metrics shows them after answered and failed requests;
    None for a metric the server declares (# TYPE) but has not counted yet (needs review, with
    serve.min_confidence off), whose label names the exposition does not show."""
    from fastapi.testclient import TestClient

    from slmake.serve.app import Limits, create_app
    from slmake.telemetry import Telemetry

    telemetry = Telemetry("cpu/fake", None)
    with TestClient(create_app(_engine(tmp_path, monkeypatch), Limits(), telemetry)) as client:
        assert client.post("/v1/completions", json={"prompt": "vpn down"}).status_code == 200
        assert client.post("/v1/completions", json={"prompt": "banana"}).status_code == 422
        body = client.get("/metrics").text
    out: dict[str, set[str] | None] = {}
    for family in text_string_to_metric_families(body):
        for suffix in SAMPLES.get(family.type, ("",)):
            out[family.name + suffix] = None
        for s in family.samples:
            out[s.name] = (out.get(s.name) or set()) | set(s.labels)
    return out


def test_dashboard_queries_name_metrics_the_server_exports(tmp_path, monkeypatch):
    exported = _exported(tmp_path, monkeypatch)
    board = json.loads(dashboard_json("cpu/gguf_q4_k_m"))
    assert board == grafana_dashboard("cpu/gguf_q4_k_m")
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["artifact"]["current"]["value"] == ["cpu/gguf_q4_k_m"]
    queries = [t["expr"] for p in board["panels"] for t in p["targets"]]
    queries.append(variables["artifact"]["definition"])
    charted = set()
    for expr in queries:
        found = METRIC.findall(expr)
        assert found, expr
        for name, _, selector in found:
            assert name in exported, f"{name} (in {expr!r}) is not exported; /metrics has {sorted(exported)}"
            for label, _ in MATCHER.findall(selector):
                assert exported[name] is None or label in exported[name], (
                    f"{name} has no label {label!r} (labels: {exported[name]})")
            charted.add(re.sub(r"_(bucket|sum|count|total)$", "", name))
        for by in re.findall(r"by \(([^)]*)\)", expr):
            for label in (x.strip() for x in by.split(",")):
                assert any(label in (labels or ()) for n, labels in exported.items() if n in expr), (label, expr)
    families = {re.sub(r"_(bucket|sum|count|total|created)$", "", n) for n in exported}
    assert families <= charted, f"exported but on no panel: {sorted(families - charted)}"
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids)) and all(p["datasource"]["uid"] == "${datasource}" for p in board["panels"])
