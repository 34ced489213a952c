"""What OpenTelemetry costs `slmake serve` per request: the CPU of serve.otel.Otel.record (one span and
the GenAI histograms) and of the SDK's export threads, exporting over OTLP/HTTP to a sink on loopback.

    python benchmarks/otel_cost.py [--requests 3000] [--rate 300]

OpenTelemetry is off unless OTEL_EXPORTER_OTLP_ENDPOINT is set; this is what turning it on adds.
Requests are recorded at ``--rate`` per second (a loaded server's pace: faster than the
BatchSpanProcessor exports, its queue would fill and drop spans, which no server sees), each with the
attributes a served completion carries. The sink (a plain HTTP server answering 200) runs in a
process of its own, so its CPU is not counted. Printed and recorded per configuration: the CPU per
request in the calling thread (what `slmake serve`'s event loop spends, beside its ~2 ms of front
work: docs/guide/serving.md) and in the whole process (the export threads too), in microseconds, less
the same paced loop's with nothing recorded.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from figures import record

SINK = """
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class Sink(BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200); self.send_header("content-length", "0"); self.end_headers()
    def log_message(self, *args):
        pass
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Sink).serve_forever()
"""
REQUEST = dict(endpoint="completions", max_tokens=32, stream=False, latency_s=0.05, ttft_s=0.01, queue_s=0.001,
               prompt_tokens=60, completion_tokens=20, finish_reason="stop", schema_valid=True, confidence=0.9,
               needs_review=False)


class Nothing:
    """The paced loop alone (its clock reads and sleeps cost CPU too): the baseline subtracted."""

    def record(self, **_):
        pass

    def shutdown(self):
        pass


def measure(traces: bool, metrics: bool, requests: int, rate: float) -> dict:
    """CPU per recorded request (us): in the calling thread and in the whole process (not yet less the
    pacing loop's)."""
    from slmake.serve.otel import Otel

    otel = (Otel(model="cpu/gguf_q4_k_m", output_type="json", server_address="127.0.0.1", server_port=8000,
                 traces=traces, metrics=metrics) if traces or metrics else Nothing())
    for _ in range(200):   # warm: the SDK's lazy imports and first export
        otel.record(**REQUEST)
    time.sleep(1)
    gap = 1.0 / rate
    process, thread, start = time.process_time(), time.thread_time(), time.perf_counter()
    for i in range(requests):
        otel.record(**REQUEST)
        delay = start + (i + 1) * gap - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
    time.sleep(6)   # a BatchSpanProcessor export interval (5 s) and more: the spans recorded are exported
    thread_us = (time.thread_time() - thread) / requests * 1e6
    process_us = (time.process_time() - process) / requests * 1e6
    otel.shutdown()
    return {"calling thread us": thread_us, "process us": process_us}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--rate", type=float, default=300.0, help="requests recorded per second")
    args = ap.parse_args()
    from slmake.serve.llama_server import free_port

    port = free_port()
    sink = subprocess.Popen([sys.executable, "-c", SINK, str(port)])
    os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://127.0.0.1:{port}"
    os.environ.setdefault("OTEL_METRIC_EXPORT_INTERVAL", "5000")
    try:
        time.sleep(0.5)
        base = measure(False, False, args.requests, args.rate)
        rows = {}
        for name, traces, metrics, sampled in (("traces and metrics", True, True, None),
                                               ("traces only", True, False, None), ("metrics only", False, True, None),
                                               ("traces sampled 10 % and metrics", True, True, "0.1")):
            if sampled:   # the SDK's own sampler variables, read when the TracerProvider is made
                os.environ.update(OTEL_TRACES_SAMPLER="traceidratio", OTEL_TRACES_SAMPLER_ARG=sampled)
            rows[name] = {k: round(v - base[k]) for k, v in measure(traces, metrics, args.requests, args.rate).items()}
            for key in ("OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG"):
                os.environ.pop(key, None)
            print(f"{name:>32}: {rows[name]['calling thread us']:>5} us in the calling thread, "
                  f"{rows[name]['process us']:>5} us in the process, per request", flush=True)
    finally:
        sink.terminate()
        sink.wait()
    figures = {"requests per configuration": args.requests, "rate (req/s)": args.rate,
               "pacing loop alone (us, subtracted)": {k: round(v) for k, v in base.items()},
               "CPU per request (us)": rows}
    record("otel_cost", figures, title="OpenTelemetry's CPU per served request (OTLP/HTTP to loopback)", notes=(
        "serve.otel.Otel.record as slmake serve calls it once per answered request: one SERVER span with the "
        "GenAI attributes and four histogram records, exported by the SDK's BatchSpanProcessor and "
        "PeriodicExportingMetricReader (interval 5 s) over OTLP/HTTP to a sink in another process. "
        "'calling thread' is what the server's event loop spends; 'process' adds the export threads, "
        "which take the GIL from the event loop while they encode and send. Most of the calling thread's share is "
        "the SDK's checking and hashing of attributes (cProfile: _clean_attribute_value, _hash_attributes), for "
        "every histogram record and span. A trace sampler (OTEL_TRACES_SAMPLER=traceidratio, 10 %) saves the "
        "export threads' share of the spans it drops, not the calling thread's."))
    return 0


if __name__ == "__main__":
    sys.exit(main())
