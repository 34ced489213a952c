"""What `slmake serve` records about every request: a JSONL request log and Prometheus metrics.

The log is what `slmake monitor` reads back, so its inputs and outputs go through the same PII
scrubber curation uses (slmake.data.pii) before a byte reaches the disk: raw PII is never written.
slmake.request_log writes it (rotated by size), in a process of its own for `slmake serve`
(``background=True``): the answer goes out first, the scrubbed line after it. Metrics live in a
CollectorRegistry of their own per Telemetry, so many servers (or tests) in one process do not collide.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from pathlib import Path

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

from .request_log import LogWriter, RequestLog

# Request latency buckets (s): small models answer in milliseconds on CPU, big ones in seconds.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Telemetry:
    """Request log (JSONL, PII-scrubbed, size-capped with rotation) + Prometheus metrics."""

    def __init__(self, artifact: str, log_path: str | Path | None, *, max_bytes: int = 50_000_000,
                 backups: int = 3, pii: dict | None = None, label_field: str | None = None,
                 max_field_chars: int = 8_000, scrub_names: bool = True, background: bool = False):
        if max_bytes < 1024:
            raise ValueError(f"Telemetry max_bytes: {max_bytes} is too small, expected >= 1024")
        if backups < 1:  # RotatingFileHandler never rotates with backupCount=0: the file would grow forever
            raise ValueError(f"Telemetry backups: {backups}, expected >= 1 (rotation needs one old file)")
        self.artifact = artifact
        self.log_path = Path(log_path) if log_path is not None else None
        self.log: RequestLog | LogWriter | None = None   # person names (an NER model) only where a log is written
        if self.log_path is not None:
            config = dict(max_bytes=max_bytes, backups=backups, pii=pii, names=scrub_names, label_field=label_field,
                          max_field_chars=max_field_chars)
            self.log = LogWriter(self.log_path, **config) if background else RequestLog(self.log_path, **config)
        self.registry = CollectorRegistry()
        reg, lab = self.registry, ["artifact", "endpoint"]
        self._requests = Counter("slmake_requests", "Requests served, by endpoint and HTTP status",
                                 [*lab, "status"], registry=reg)
        self._latency = Histogram("slmake_request_latency_seconds", "Request latency (whole request)", lab,
                                  buckets=LATENCY_BUCKETS, registry=reg)
        self._ttft = Histogram("slmake_time_to_first_token_seconds", "Time to first token", lab,
                               buckets=LATENCY_BUCKETS, registry=reg)
        self._queue = Histogram("slmake_queue_wait_seconds", "Time a request waited for the runner (load)", lab,
                                buckets=LATENCY_BUCKETS, registry=reg)
        self._prompt_tokens = Counter("slmake_prompt_tokens", "Prompt tokens processed", lab, registry=reg)
        self._completion_tokens = Counter("slmake_completion_tokens", "Completion tokens generated", lab,
                                          registry=reg)
        self._invalid = Counter("slmake_invalid_outputs", "Outputs that failed the response schema", lab,
                                registry=reg)
        self._review = Counter("slmake_needs_review", "Answers withheld for a person: the label's probability "
                               "was below serve.min_confidence", lab, registry=reg)

    def record(self, *, endpoint: str, input_text: str, output_text: str, prompt_tokens: int,
               completion_tokens: int, latency_s: float, ttft_s: float | None, schema_valid: bool | None,
               parsed: dict | None, status: int, error: str | None = None,
               queue_s: float | None = None, confidence: float | None = None, needs_review: bool = False) -> None:
        """Count the request in the metrics and append one scrubbed line to the log. ``latency_s`` is
        the whole request; ``queue_s`` the part spent waiting for the runner (None: not measured),
        the rest is service time."""
        lab = {"artifact": self.artifact, "endpoint": endpoint}
        self._requests.labels(**lab, status=str(status)).inc()
        if latency_s is not None and math.isfinite(latency_s):
            self._latency.labels(**lab).observe(latency_s)
        if ttft_s is not None and math.isfinite(ttft_s):
            self._ttft.labels(**lab).observe(ttft_s)
        timed = queue_s is not None and latency_s is not None and math.isfinite(queue_s) and math.isfinite(latency_s)
        if timed:
            self._queue.labels(**lab).observe(queue_s)
        self._prompt_tokens.labels(**lab).inc(max(0, prompt_tokens or 0))
        self._completion_tokens.labels(**lab).inc(max(0, completion_tokens or 0))
        if schema_valid is False:
            self._invalid.labels(**lab).inc()
        if needs_review:
            self._review.labels(**lab).inc()
        if self.log is None:
            return
        self.log.write([{   # unscrubbed: in memory (and the pipe to the writer) until the log scrubs it
            "ts": datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "artifact": self.artifact,
            "endpoint": endpoint,
            "input": input_text or "",
            "output": output_text or "",
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "latency_ms": None if latency_s is None else round(latency_s * 1000, 3),
            "ttft_ms": None if ttft_s is None else round(ttft_s * 1000, 3),
            "queue_ms": round(queue_s * 1000, 3) if timed else None,                 # waiting for the runner
            "service_ms": round((latency_s - queue_s) * 1000, 3) if timed else None,  # the runner's work
            "schema_valid": schema_valid,
            "parsed": parsed,
            "label": None,
            "confidence": None if confidence is None else round(confidence, 6),   # the label's probability
            "needs_review": needs_review,
            "status": status,
            "error": error or None,
        }])

    def metrics_body(self) -> tuple[bytes, str]:
        """(body, content_type) for GET /metrics, in the Prometheus text format."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def flush(self) -> None:
        """Wait until every recorded line is in the log."""
        if self.log is not None:
            self.log.flush()

    def close(self) -> None:
        """Write every line recorded so far, then close the log; idempotent."""
        if self.log is not None:
            self.log.close()
