"""`slmake serve [package]`: start the OpenAI-compatible server on a deploy package."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from ..data.ner import NerUnavailable
from ..request_log import LogWriterError
from ..toolchain import llama_cpp_tool
from .engine import Engine
from .llama_server import DEFAULT_SLOTS, ENGINES, SERVE_LOGS, EngineError, LlamaServerEngine, pick_engine
from .otel import Otel  # imports OpenTelemetry itself only when an OTLP endpoint is set
from .package import PackageError, resolve, spec_section


def add_parser(sub) -> None:
    p = sub.add_parser("serve", help="OpenAI-compatible HTTP server on a built artifact (a deploy package)")
    p.add_argument("package", nargs="?", default=None,
                   help="<target>/<artifact> (e.g. cpu/gguf_q4_k_m) or a package folder; default: the pick "
                        "among the deployed artifacts benchmarked on this machine (highest validation "
                        "accuracy under params.yaml's search.constraints)")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", default=os.environ.get("SLMAKE_API_KEY"),
                   help="require `Authorization: Bearer <key>` (default: $SLMAKE_API_KEY; none = open)")
    p.add_argument("--max-request-bytes", type=int, default=64 * 1024)
    p.add_argument("--max-tokens", type=int, default=None,
                   help="cap on max_tokens (default: the build's budget); a request asking for more is "
                        "served with this many (finish_reason \"length\" if it cut the answer)")
    p.add_argument("--max-queue", type=int, default=64, help="requests allowed to wait before 503")
    p.add_argument("--threads", type=int, default=None, help="runtime threads (default: the bench setting)")
    p.add_argument("--engine", choices=ENGINES, default=None,
                   help="auto: llama.cpp's llama-server (continuous batching in parallel slots) for a GGUF "
                        "package when it is built, else in process; llama_server: that or an error; in_process: "
                        "one generation at a time in this process, any runtime (default: params.yaml's "
                        "serve.engine, else auto)")
    p.add_argument("--slots", type=int, default=None,
                   help=f"llama-server's parallel slots: requests decoded together (default: params.yaml's "
                        f"serve.slots, else {DEFAULT_SLOTS})")
    p.add_argument("--min-confidence", type=float, default=None,
                   help="answer \"needs review\" (serve.review_answer, finish_reason needs_review) instead of a "
                        "guess whose enum label's probability is below this (default: params.yaml's "
                        "serve.min_confidence, else off)")
    p.add_argument("--no-confidence", action="store_true",
                   help="do not compute the enum label's probability (slmake.confidence is null): llama-server then "
                        "skips each token's probabilities, a bare llama-server's work per token; a request that "
                        "asks for logprobs still gets them. Not with --min-confidence")
    p.add_argument("--no-schema-enforcement", action="store_true",
                   help="decode without the response-schema grammar (answers are still validated)")
    p.add_argument("--request-log", default="logs/requests.jsonl",
                   help="PII-scrubbed JSONL request log for `slmake monitor` ('' = none)")
    p.add_argument("--log-names", choices=("scrub", "keep"), default="scrub",
                   help="person names in the request log: scrub (default; an offline NER model replaces "
                        "them with <NAME>) or keep (the spec's data.pii types only)")
    p.add_argument("--log-max-bytes", type=int, default=50_000_000, help="rotate the request log at this size")
    p.add_argument("--log-backups", type=int, default=3, help="rotated request-log files kept")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..telemetry import Telemetry  # prometheus_client

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    spec = spec_section()   # params.yaml, read once: search.constraints for the pick, serve.* for the engine
    try:
        package = resolve(args.package, constraints=dict((spec.get("search") or {}).get("constraints") or {})
                          if args.package is None else None)
    except PackageError as e:
        print(f"slmake serve: {e}", file=sys.stderr)
        return 2
    except ValueError as e:   # search.constraints names a constraint selection does not know
        print(f"slmake serve: params.yaml search.constraints: {e}", file=sys.stderr)
        return 2
    if package.why:
        print(f"slmake serve: serving {package.name}, {package.why}", file=sys.stderr, flush=True)
    c = package.contract
    if args.host not in ("127.0.0.1", "localhost", "::1") and not args.api_key:
        print(f"slmake serve: warning: listening on {args.host} without an API key", file=sys.stderr)
    try:
        telemetry = Telemetry(c["name"], Path(args.request_log) if args.request_log else None,
                              max_bytes=args.log_max_bytes, backups=args.log_backups, pii=c.get("pii"),
                              label_field=c.get("label_field"), scrub_names=args.log_names == "scrub",
                              background=True)   # the answer first; the line scrubbed in a process of its own
    except NerUnavailable as e:
        print(f"slmake serve: {e} (or start with --log-names keep)", file=sys.stderr)
        return 2
    except LogWriterError as e:
        print(f"slmake serve: {e} (--request-log '' serves without a log)", file=sys.stderr)
        return 2
    serve = spec.get("serve") or {}
    choice = args.engine or serve.get("engine") or "auto"
    slots = args.slots or serve.get("slots") or DEFAULT_SLOTS
    args.min_confidence = args.min_confidence if args.min_confidence is not None else serve.get("min_confidence")
    args.review_answer = serve.get("review_answer") or ""
    if args.min_confidence is not None and not 0 < args.min_confidence <= 1:
        print(f"slmake serve: min_confidence: {args.min_confidence} is not a probability in (0, 1]", file=sys.stderr)
        return 2
    if args.min_confidence is not None and args.no_confidence:
        print(f"slmake serve: --no-confidence: min_confidence {args.min_confidence} (serve.min_confidence or "
              "--min-confidence) needs the label's probability; drop one of them", file=sys.stderr)
        return 2
    binary = llama_cpp_tool("llama-server")
    try:
        kind, note = pick_engine(choice, c["artifact"].get("format"), binary)
    except EngineError as e:
        print(f"slmake serve: {e}", file=sys.stderr)
        return 2
    if note:
        print(f"slmake serve: {note}", file=sys.stderr, flush=True)
    try:
        if kind == "llama_server":
            engine = LlamaServerEngine(package, binary=binary, enforce_schema=not args.no_schema_enforcement,
                                       threads=args.threads, slots=slots,
                                       max_tokens=args.max_tokens or c["max_new_tokens"],
                                       log=SERVE_LOGS / f"llama-server-{args.port}.log",
                                       max_waiting=args.max_queue, confidence=not args.no_confidence)
        else:
            engine = Engine(package, enforce_schema=not args.no_schema_enforcement, threads=args.threads,
                            confidence=not args.no_confidence)
    except (EngineError, ValueError) as e:
        print(f"slmake serve: {e}", file=sys.stderr)
        return 2
    try:
        return _serve(args, engine, telemetry, kind)
    finally:
        engine.close()   # idempotent: the app's shutdown closed it already, unless uvicorn never started
        telemetry.close()


def _serve(args, engine, telemetry, kind: str) -> int:
    import uvicorn

    from .app import Limits, create_app  # fastapi

    c = engine.contract
    limits = Limits(api_key=args.api_key or None, max_request_bytes=args.max_request_bytes,
                    max_tokens=args.max_tokens, max_queue=args.max_queue,
                    min_confidence=args.min_confidence, review_answer=args.review_answer)
    otel = Otel.from_env(model=c["name"], output_type=c.get("response_format"), server_address=args.host,
                         server_port=args.port)   # None (no OpenTelemetry import) unless OTEL_EXPORTER_OTLP_* is set
    try:
        app = create_app(engine, limits, telemetry, otel)
    except ValueError as e:   # serve.min_confidence on a package without an enum label or probabilities
        print(f"slmake serve: {e}", file=sys.stderr)
        return 2
    mode = "grammar-constrained" if engine.constrained else ("validated" if engine.schema else "free text")
    if engine.unconstrained_why:
        print(f"slmake serve: no grammar for the response schema: {engine.unconstrained_why}", file=sys.stderr)
    how = (f"llama-server, {engine.slots} slots, {engine.threads} threads" if kind == "llama_server"
           else "in process")
    if limits.min_confidence is not None:
        mode += f"; below {limits.min_confidence} label confidence: needs review"
    print(f"slmake serve: {c['name']} ({c['artifact']['runtime']}; engine: {how}; schema: {mode}) "
          f"on http://{args.host}:{args.port}/v1", file=sys.stderr, flush=True)
    if otel is not None:
        print(f"slmake serve: OpenTelemetry: {otel.signals} over OTLP/HTTP", file=sys.stderr, flush=True)
    server = _draining_server(uvicorn.Config(app, host=args.host, port=args.port, log_level="warning",
                                              timeout_graceful_shutdown=30))
    server.run()
    return 0


def _draining_server(config):
    """uvicorn's Server, except that a SIGTERM/SIGINT it drained cleanly exits 0 instead of being
    re-raised after shutdown (uvicorn >= 0.29 re-raises it, so the exit status said "killed")."""
    import uvicorn

    class DrainingServer(uvicorn.Server):
        def handle_exit(self, sig, frame):
            super().handle_exit(sig, frame)
            self._captured_signals.clear()

    return DrainingServer(config)
