"""What `slmake serve` records about every request: a JSONL request log and Prometheus metrics.

The log is what `slmake monitor` reads back, so its inputs and outputs go through the same PII
scrubber curation uses (slmake.data.pii) before a byte reaches the disk: raw PII is never written.
The log rotates by size (logging.handlers.RotatingFileHandler: at most ``max_bytes`` per file and
``backups`` old files), so a busy server cannot fill the disk. Metrics live in a CollectorRegistry
of their own per Telemetry, so many servers (or tests) in one process do not collide.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from datetime import datetime, timezone
from logging.handlers import RotatingFileHandler
from pathlib import Path

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

from .data.pii import LOG_TYPES, PERSON, Scrubber

# Request latency buckets (s): small models answer in milliseconds on CPU, big ones in seconds.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
TRUNCATED = "…[truncated {n} chars]"


def scrubber_for(pii: dict | None, names: bool = True) -> Scrubber:
    """The request log's scrubber: the spec's ``data.pii`` slice (None: every built-in type, so a
    server that was not told otherwise still never logs raw PII), plus person names by the NER
    model (``names``, the default: people expect a log without names even where the training data
    keeps them). `slmake monitor` builds the same one to match feedback to the log."""
    cfg = {"enabled": True, "types": LOG_TYPES, "patterns": [], "presidio": False, **(pii or {})}
    types = [t for t in cfg["types"] if t != PERSON] + ([PERSON] if names and cfg["enabled"] else [])
    return Scrubber.from_config({**cfg, "types": types})


class Telemetry:
    """Request log (JSONL, PII-scrubbed, size-capped with rotation) + Prometheus metrics."""

    def __init__(self, artifact: str, log_path: str | Path | None, *, max_bytes: int = 50_000_000,
                 backups: int = 3, pii: dict | None = None, label_field: str | None = None,
                 max_field_chars: int = 8_000, scrub_names: bool = True):
        if max_bytes < 1024:
            raise ValueError(f"Telemetry max_bytes: {max_bytes} is too small, expected >= 1024")
        if backups < 1:  # RotatingFileHandler never rotates with backupCount=0: the file would grow forever
            raise ValueError(f"Telemetry backups: {backups}, expected >= 1 (rotation needs one old file)")
        self.artifact, self.label_field, self.max_field_chars = artifact, label_field, max_field_chars
        self.log_path = Path(log_path) if log_path is not None else None
        # Person names (an NER model, loaded here, once per process) only where a log is written.
        self._scrubber = scrubber_for(pii, names=scrub_names and self.log_path is not None)
        self._lock = threading.Lock()
        self._logger = None
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            handler = RotatingFileHandler(self.log_path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8")
            handler.setFormatter(logging.Formatter("%(message)s"))
            self._logger = logging.Logger(f"slmake.requests:{self.log_path}")  # not in the global registry
            self._logger.addHandler(handler)
            self._logger.setLevel(logging.INFO)
            self._logger.propagate = False
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

    def _clip(self, text: str) -> str:
        if len(text) <= self.max_field_chars:
            return text
        return text[: self.max_field_chars] + TRUNCATED.format(n=len(text) - self.max_field_chars)

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
        if self._logger is None:
            return
        with self._lock:  # the scrubber keeps counters; the handler has its own lock for the file
            s = self._scrubber
            line = {
                "ts": datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                "artifact": self.artifact,
                "endpoint": endpoint,
                "input": self._clip(s.scrub(input_text or "")),
                "output": self._clip(s.scrub(output_text or "")),
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "latency_ms": None if latency_s is None else round(latency_s * 1000, 3),
                "ttft_ms": None if ttft_s is None else round(ttft_s * 1000, 3),
                "queue_ms": round(queue_s * 1000, 3) if timed else None,                 # waiting for the runner
                "service_ms": round((latency_s - queue_s) * 1000, 3) if timed else None,  # the runner's work
                "schema_valid": schema_valid,
                "parsed": s.scrub_json(parsed) if parsed is not None else None,
                "label": self._label(parsed),
                "confidence": None if confidence is None else round(confidence, 6),   # the label's probability
                "needs_review": needs_review,
                "status": status,
                "error": self._clip(s.scrub(error)) if error else None,
            }
        self._logger.info(json.dumps(line, ensure_ascii=False, default=str))

    def _label(self, parsed) -> str | None:
        if not self.label_field or not isinstance(parsed, dict) or parsed.get(self.label_field) is None:
            return None
        value = parsed[self.label_field]
        return self._scrubber.scrub(value) if isinstance(value, str) else json.dumps(value)

    def metrics_body(self) -> tuple[bytes, str]:
        """(body, content_type) for GET /metrics, in the Prometheus text format."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def close(self) -> None:
        if self._logger is not None:
            for h in list(self._logger.handlers):
                h.close()
                self._logger.removeHandler(h)
