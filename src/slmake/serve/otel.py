"""OpenTelemetry for `slmake serve`: one span and the GenAI model-server metrics per answered
request, exported over OTLP (HTTP/protobuf) — only when the standard environment asks for it.

Nothing here is imported, and nothing leaves the machine, unless ``OTEL_EXPORTER_OTLP_ENDPOINT``
(or a signal's own ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_METRICS_ENDPOINT``)
is set; ``OTEL_SDK_DISABLED=true`` or ``OTEL_{TRACES,METRICS}_EXPORTER=none`` turn a signal off.
Everything else the OTLP exporter reads (headers, timeout, compression, certificates,
``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_METRIC_EXPORT_INTERVAL``) is the SDK's
own handling of the standard variables.

Names follow the OpenTelemetry GenAI semantic conventions (model-server side):

- span ``{gen_ai.operation.name} {gen_ai.request.model}``, kind SERVER, with ``gen_ai.operation.name``
  (``chat`` | ``text_completion``), ``gen_ai.provider.name``, ``gen_ai.request.model``,
  ``gen_ai.request.max_tokens``, ``gen_ai.request.stream``, ``gen_ai.response.model``,
  ``gen_ai.response.finish_reasons``, ``gen_ai.usage.input_tokens``, ``gen_ai.usage.output_tokens``,
  ``gen_ai.output.type``, ``server.address``/``server.port``, ``error.type`` on failures, and
  slmake's own ``slmake.schema_valid``, ``slmake.queue.duration`` (s), ``slmake.confidence`` (the enum
  label's probability, when known) and ``slmake.needs_review`` (withheld under serve.min_confidence);
- histograms ``gen_ai.server.request.duration``, ``gen_ai.server.time_to_first_token``,
  ``gen_ai.server.time_per_output_token`` (s) and ``gen_ai.client.token.usage`` ({token}, by
  ``gen_ai.token.type``), with the bucket boundaries the conventions recommend.

Providers are this object's own (not the global ones), so several servers or tests in one process
do not collide; the request log and Prometheus metrics (slmake.telemetry) are unaffected.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping

PROVIDER = "slmake"                       # gen_ai.provider.name: a custom value (a self-hosted server)
SERVICE_NAME = "slmake-serve"             # service.name unless OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES say
OPERATIONS = {"chat.completions": "chat", "completions": "text_completion"}   # app endpoint -> operation

# Explicit bucket boundaries the GenAI semantic conventions recommend for each histogram.
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
TPOT_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5)
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)


def wanted(environ: Mapping[str, str] | None = None) -> tuple[bool, bool]:
    """(traces, metrics): which signals the environment asks to export over OTLP."""
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False, False
    common = bool(env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip())

    def on(signal: str) -> bool:
        if env.get(f"OTEL_{signal}_EXPORTER", "otlp").strip().lower() == "none":
            return False
        return common or bool(env.get(f"OTEL_EXPORTER_OTLP_{signal}_ENDPOINT", "").strip())
    return on("TRACES"), on("METRICS")


class Otel:
    """Spans and GenAI metrics for served requests, exported over OTLP/HTTP. Build it with
    ``from_env`` (None when nothing is to be exported); ``exporters`` lets a caller (a test) pass
    its own span/metric exporters instead of the environment's OTLP ones."""

    def __init__(self, *, model: str, output_type: str | None = None, server_address: str | None = None,
                 server_port: int | None = None, traces: bool = True, metrics: bool = True,
                 exporters: tuple | None = None):
        from opentelemetry.sdk.resources import Resource

        self.model, self.output_type = model, output_type
        self._server = {k: v for k, v in (("server.address", server_address), ("server.port", server_port))
                        if v is not None}
        resource = Resource.create({})
        if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
            resource = resource.merge(Resource({"service.name": SERVICE_NAME}))
        span_exporter, metric_exporter = exporters or (None, None)
        self._tracer_provider = self._meter_provider = self._tracer = None
        if traces:
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor

            if span_exporter is None:
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
                span_exporter = OTLPSpanExporter()
            self._tracer_provider = TracerProvider(resource=resource)
            self._tracer_provider.add_span_processor(BatchSpanProcessor(span_exporter))
            self._tracer = self._tracer_provider.get_tracer("slmake.serve")
        if metrics:
            from opentelemetry.sdk.metrics import MeterProvider
            from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

            if metric_exporter is None:
                from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
                metric_exporter = OTLPMetricExporter()
            self._meter_provider = MeterProvider(resource=resource,
                                                 metric_readers=[PeriodicExportingMetricReader(metric_exporter)])
            meter = self._meter_provider.get_meter("slmake.serve")
            self._duration = meter.create_histogram(
                "gen_ai.server.request.duration", unit="s",
                description="Generative AI server request duration such as time-to-last byte or last output token.",
                explicit_bucket_boundaries_advisory=DURATION_BUCKETS)
            self._ttft = meter.create_histogram(
                "gen_ai.server.time_to_first_token", unit="s",
                description="Time to generate first token for successful responses.",
                explicit_bucket_boundaries_advisory=TTFT_BUCKETS)
            self._tpot = meter.create_histogram(
                "gen_ai.server.time_per_output_token", unit="s",
                description="Time per output token generated after the first token for successful responses.",
                explicit_bucket_boundaries_advisory=TPOT_BUCKETS)
            self._tokens = meter.create_histogram(
                "gen_ai.client.token.usage", unit="{token}", description="Number of input and output tokens used.",
                explicit_bucket_boundaries_advisory=TOKEN_BUCKETS)

    @classmethod
    def from_env(cls, *, model: str, output_type: str | None = None, server_address: str | None = None,
                 server_port: int | None = None, environ: Mapping[str, str] | None = None) -> Otel | None:
        """An Otel exporting the signals the standard OTEL_* variables ask for, or None (and no
        OpenTelemetry import) when they ask for none."""
        traces, metrics = wanted(environ)
        if not (traces or metrics):
            return None
        return cls(model=model, output_type=output_type, server_address=server_address, server_port=server_port,
                   traces=traces, metrics=metrics)

    def record(self, *, endpoint: str, requested_model: str | None = None, max_tokens: int | None = None,
               stream: bool = False, latency_s: float | None = None, ttft_s: float | None = None,
               queue_s: float | None = None, prompt_tokens: int | None = None,
               completion_tokens: int | None = None, finish_reason: str | None = None,
               schema_valid: bool | None = None, error_type: str | None = None, response_id: str | None = None,
               confidence: float | None = None, needs_review: bool | None = None, end_ns: int | None = None) -> None:
        """One request that just ended (at ``end_ns``, default now) after ``latency_s``: its span and
        metrics. ``error_type`` (e.g. ``invalid_output``, ``engine_unavailable``) marks a failure."""
        operation = OPERATIONS.get(endpoint, endpoint)
        end_ns = time.time_ns() if end_ns is None else end_ns
        latency_s = max(0.0, latency_s or 0.0)
        common = {"gen_ai.operation.name": operation, "gen_ai.provider.name": PROVIDER,
                  "gen_ai.request.model": requested_model or self.model, "gen_ai.response.model": self.model,
                  **self._server}
        if error_type:
            common["error.type"] = error_type
        if self._tracer is not None:
            from opentelemetry.trace import SpanKind, Status, StatusCode

            attrs = {**common, "gen_ai.request.stream": stream}
            optional = {"gen_ai.request.max_tokens": max_tokens, "gen_ai.response.id": response_id,
                        "gen_ai.usage.input_tokens": prompt_tokens, "gen_ai.usage.output_tokens": completion_tokens,
                        "gen_ai.output.type": self.output_type, "slmake.schema_valid": schema_valid,
                        "slmake.queue.duration": queue_s, "slmake.confidence": confidence,
                        "slmake.needs_review": needs_review,
                        "gen_ai.response.time_to_first_chunk": ttft_s if stream else None}
            attrs.update({k: v for k, v in optional.items() if v is not None})
            if finish_reason:
                attrs["gen_ai.response.finish_reasons"] = [finish_reason]
            span = self._tracer.start_span(f"{operation} {common['gen_ai.request.model']}", kind=SpanKind.SERVER,
                                           attributes=attrs, start_time=end_ns - int(latency_s * 1e9))
            if error_type:
                span.set_status(Status(StatusCode.ERROR, error_type))
            span.end(end_time=end_ns)
        if self._meter_provider is not None:
            self._duration.record(latency_s, common)
            if error_type:
                return
            if ttft_s is not None:
                self._ttft.record(ttft_s, common)
                if completion_tokens and completion_tokens > 1 and latency_s >= ttft_s:
                    self._tpot.record((latency_s - ttft_s) / (completion_tokens - 1), common)
            for kind, n in (("input", prompt_tokens), ("output", completion_tokens)):
                if n is not None:
                    self._tokens.record(n, {**common, "gen_ai.token.type": kind})

    @property
    def signals(self) -> str:
        """What is exported, in words: "traces and metrics", "traces" or "metrics"."""
        return " and ".join(name for name, on in (("traces", self._tracer_provider), ("metrics", self._meter_provider))
                            if on is not None) or "nothing"

    def shutdown(self) -> None:
        """Export what is pending and stop (the server's shutdown; idempotent)."""
        for provider in (self._tracer_provider, self._meter_provider):
            if provider is not None:
                provider.shutdown()
        self._tracer_provider = self._meter_provider = self._tracer = None
