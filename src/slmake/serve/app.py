"""The HTTP surface: OpenAI-compatible routes over one Engine, safe by default.

- ``/v1/models``, ``/v1/completions``, ``/v1/chat/completions``, ``/health``, ``/metrics``.
- A client sends the raw input (``prompt``, or the last user message); the engine applies the
  training prompt template. Decoding is greedy (the benchmarked behaviour): sampling parameters
  are accepted and ignored; ``n > 1`` is refused with a 400. ``stream: true`` streams server-sent
  events as OpenAI does; the last event carries the validation, and an answer that fails the
  response schema ends with an error event instead (never a silent invalid answer).
- An API key (``Authorization: Bearer …``) when one is configured: 401 without it.
- Request bodies above ``max_request_bytes`` get 413, malformed ones 400, answers that fail the
  response schema 422 — always an OpenAI-style JSON error, never a traceback.
- Requests queue for the engine's slots (one for the in-process engine, ``serve.slots`` for
  llama-server, which batches the requests in its slots); beyond ``max_queue`` waiting, 503 (retry later).
- ``max_tokens`` above the server's limit (the build's answer budget, or ``--max-tokens``) is served,
  not refused, as llama.cpp's server caps ``n_predict`` at its ``--n-predict``: the answer gets the
  limit, ``finish_reason`` is ``"length"`` where the limit cut it, and the response says so
  (header ``X-Slmake-Max-Tokens-Capped: <limit>``, field ``max_tokens_capped: {requested, applied}``).
- ``logprobs`` / ``top_logprobs`` as OpenAI defines them on both endpoints, the label's probability of
  an enum answer in ``slmake.confidence``, and ``serve.min_confidence``'s "needs review" answers
  (serve/logprobs.py); an engine without token probabilities answers a logprobs request with 400.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException

from .engine import Answer, Front, InputError
from .llama_server import EngineError
from .logprobs import MAX_TOP, NEEDS_REVIEW, chat_logprobs, completion_logprobs, needs_review, slmake_fields


@dataclass
class Limits:
    api_key: str | None = None
    max_request_bytes: int = 64 * 1024
    max_tokens: int | None = None          # default: the package's max_new_tokens
    max_queue: int = 64
    max_batch: int = 16                    # prompts per /v1/completions request
    min_confidence: float | None = None    # serve.min_confidence: below it, review_answer instead of the guess
    review_answer: str = ""                # serve.review_answer


CAP_HEADER = "X-Slmake-Max-Tokens-Capped"


class ApiError(Exception):
    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.kind, self.param = status, message, kind, param


def error_body(message: str, kind: str, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


class CompletionRequest(BaseModel):
    model_config = ConfigDict(extra="allow")   # OpenAI clients send fields we accept and ignore
    model: str | None = None
    prompt: str | list[str]
    max_tokens: int | None = None
    n: int = 1
    stream: bool = False
    logprobs: int | None = None            # the legacy API: alternatives per token (0: the chosen only)


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str | None = None
    messages: list[dict]
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    n: int = 1
    stream: bool = False
    logprobs: bool | None = None
    top_logprobs: int | None = None


class BodyLimit:
    """Pure ASGI middleware: refuse bodies above the limit with 413 before the app sees them, whether
    the client sent a Content-Length or streamed chunks (the body is buffered up to the limit and
    replayed to the app)."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        too_big = JSONResponse(error_body(f"request body exceeds {self.limit} bytes", "invalid_request_error",
                                          code="request_too_large"), status_code=413)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await too_big(scope, receive, send)
        buffered, size = [], 0
        while True:
            message = await receive()
            buffered.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > self.limit:
                return await too_big(scope, receive, send)
            if not message.get("more_body", False):
                break

        async def replay():
            return buffered.pop(0) if buffered else await receive()
        await self.app(scope, replay, send)


def create_app(engine: Front, limits: Limits, telemetry=None, otel=None) -> FastAPI:
    """``engine``: serve.engine.Engine (in process, one generation at a time) or
    serve.llama_server.LlamaServerEngine (llama-server's slots; its ``answer_async`` is awaited, so
    requests overlap and llama-server batches them). ``telemetry``: slmake.telemetry.Telemetry (request
    log, /metrics); ``otel``: serve.otel.Otel (OTLP spans and GenAI metrics), or None."""
    name = engine.package.name
    max_tokens = limits.max_tokens or engine.contract["max_new_tokens"]
    state = {"waiting": 0}
    if limits.min_confidence is not None and (not engine.label_enum or engine.logprobs_unavailable):
        raise ValueError("serve.min_confidence needs " + (engine.logprobs_unavailable or
                         "an enum label (the response schema's data.label_field, or a text answer's enum)"))

    @asynccontextmanager
    async def lifespan(app):
        yield
        if hasattr(engine, "aclose"):
            await engine.aclose()
        engine.close()   # after uvicorn drained in-flight requests (SIGTERM / Ctrl-C)
        if telemetry is not None:
            telemetry.close()   # the request log's last lines
        if otel is not None:
            otel.shutdown()  # export the last spans and metrics

    app = FastAPI(title="slmake serve", lifespan=lifespan, docs_url=None, redoc_url=None)

    @app.exception_handler(ApiError)
    async def _api_error(request, exc: ApiError):
        return JSONResponse(error_body(exc.message, exc.kind, exc.param), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _bad_request(request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ())[1:]) or "body"
        return JSONResponse(error_body(f"malformed request: {where}: {first.get('msg', 'invalid')}",
                                       "invalid_request_error", where), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request, exc: StarletteHTTPException):
        return JSONResponse(error_body(str(exc.detail), "invalid_request_error"), status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def _internal(request, exc: Exception):   # never a traceback on the wire
        return JSONResponse(error_body(f"internal error: {type(exc).__name__}", "server_error"), status_code=500)

    def authorize(request: Request) -> None:
        if limits.api_key is None:
            return
        given = request.headers.get("authorization", "")
        token = given[7:] if given.lower().startswith("bearer ") else ""
        if not hmac.compare_digest(token.encode(), limits.api_key.encode()):
            raise ApiError(401, "missing or wrong API key (send Authorization: Bearer <key>)",
                           "authentication_error")

    def check_common(model: str | None, n: int, requested: int | None) -> int:
        if model not in (None, name):
            raise ApiError(404, f"model {model!r} is not served here; this server serves {name!r}", param="model")
        if n != 1:
            raise ApiError(400, "n must be 1: decoding is greedy, every choice would be the same", param="n")
        if requested is not None and requested < 1:
            raise ApiError(400, "max_tokens must be at least 1", param="max_tokens")
        return max_tokens if requested is None else min(requested, max_tokens)

    def capped_body(requested: int | None) -> dict:
        """The body field that says a request asked for more than the limit; {} otherwise."""
        if requested is None or requested <= max_tokens:
            return {}
        return {"max_tokens_capped": {"requested": requested, "applied": max_tokens}}

    def capped(requested: int | None, response: Response) -> dict:
        """``capped_body``, with its header on ``response``."""
        body = capped_body(requested)
        if body:
            response.headers[CAP_HEADER] = str(max_tokens)
        return body

    def top_requested(top: int | None, param: str) -> int | None:
        """The alternatives per token a request asked for (None: no logprobs), checked."""
        if top is None:
            return None
        if not 0 <= top <= MAX_TOP:
            raise ApiError(400, f"{param} must be between 0 and {MAX_TOP}", param=param)
        if engine.logprobs_unavailable:
            raise ApiError(400, f"{param}: not available here: {engine.logprobs_unavailable}", param=param)
        return top

    def reviewed(ans: Answer) -> Answer:
        """The answer as the client gets it: serve.review_answer instead of a low-confidence guess."""
        if not needs_review(ans, limits.min_confidence):
            return ans
        return replace(ans, text=limits.review_answer, finish_reason=NEEDS_REVIEW, token_logprobs=None)

    def admit() -> None:
        if state["waiting"] >= limits.max_queue + engine.slots - 1:
            raise ApiError(503, f"server busy: {state['waiting']} requests already queued; retry later",
                           "server_busy")

    def log(ans: Answer, raw: str, endpoint: str, budget: int | None = None, stream: bool = False) -> None:
        review = needs_review(ans, limits.min_confidence)
        if otel is not None:
            otel.record(endpoint=endpoint, max_tokens=budget, stream=stream, latency_s=ans.latency_s,
                        ttft_s=ans.ttft_s, queue_s=ans.queue_s, prompt_tokens=ans.prompt_tokens,
                        completion_tokens=ans.completion_tokens,
                        finish_reason=NEEDS_REVIEW if review else ans.finish_reason,  # as the client got it
                        schema_valid=ans.schema_valid, error_type="invalid_output" if ans.error else None,
                        confidence=ans.confidence, needs_review=review)
        if telemetry is not None:
            telemetry.record(endpoint=endpoint, input_text=raw, output_text=ans.text,
                             prompt_tokens=ans.prompt_tokens, completion_tokens=ans.completion_tokens,
                             latency_s=ans.latency_s, ttft_s=ans.ttft_s, schema_valid=ans.schema_valid,
                             parsed=ans.parsed, status=422 if ans.error else 200, error=ans.error,
                             queue_s=ans.queue_s, confidence=ans.confidence, needs_review=review)

    def streamed(raw: str, budget: int, endpoint: str, chunk, requested: int | None, top: int | None = None,
                 shape=None) -> StreamingResponse:
        """Server-sent events as OpenAI streams them: ``chunk(text, finish_reason)`` pieces as the
        tokens come (under the grammar), then a last chunk with finish_reason, usage and the validation
        (``slmake: {schema_valid, ...}``) — or, for an answer that fails the response schema, an error
        event (the 422's body) instead: never a silent invalid answer. Then ``data: [DONE]``. The last
        chunk's choice carries the tokens' ``logprobs`` (``shape``: the endpoint's object) when ``top``
        asked for them. With ``serve.min_confidence`` the text is held until the label's probability
        is known: then one chunk with the answer, or with ``serve.review_answer`` (finish_reason
        ``needs_review``), never a low-confidence guess already streamed."""
        hold = limits.min_confidence is not None
        admit()
        try:
            engine.request_ids(raw)            # a prompt refused before the stream starts: a plain 400
        except InputError as e:
            raise ApiError(400, str(e), param="prompt") from None

        def event(body: dict) -> str:
            return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

        async def events():
            state["waiting"] += 1
            t0 = time.perf_counter()
            try:
                ans = None
                async for item in engine.stream(raw, budget, time.perf_counter(), logprobs=top):
                    if isinstance(item, Answer):
                        ans = item
                    elif not hold:
                        yield event(chunk(item, None))
            except EngineError as e:
                if otel is not None:
                    otel.record(endpoint=endpoint, max_tokens=budget, stream=True, latency_s=time.perf_counter() - t0,
                                error_type="engine_unavailable")
                yield event(error_body(f"the engine is unavailable: {e}", "server_error"))
                return
            finally:
                state["waiting"] -= 1
            log(ans, raw, endpoint, budget, stream=True)
            if ans.error:
                yield event(error_body(ans.error, "invalid_output", code="invalid_output"))
            else:
                shown = reviewed(ans)
                if hold and shown.text:
                    yield event(chunk(shown.text, None))
                last = chunk("", shown.finish_reason)
                if top is not None and shape is not None:
                    last["choices"][0]["logprobs"] = shape(shown)
                last.update(usage=usage([ans]), slmake=slmake_fields(ans, engine, limits.min_confidence),
                            **capped_body(requested))
                yield event(last)
            yield "data: [DONE]\n\n"

        headers = {CAP_HEADER: str(max_tokens)} if capped_body(requested) else {}
        return StreamingResponse(events(), media_type="text/event-stream", headers=headers)

    async def run(raw: str, budget: int, endpoint: str, top: int | None = None) -> Answer:
        admit()
        state["waiting"] += 1
        t0 = time.perf_counter()
        try:
            if hasattr(engine, "answer_async"):    # llama-server: requests overlap, its slots batch them
                ans = await engine.answer_async(raw, budget, time.perf_counter(), logprobs=top)
            else:                                  # in process: a worker thread waits for the runner
                ans = await anyio.to_thread.run_sync(engine.answer, raw, budget, time.perf_counter(), top)
        except InputError as e:
            raise ApiError(400, str(e), param="prompt") from None
        except EngineError as e:
            if otel is not None:
                otel.record(endpoint=endpoint, max_tokens=budget, latency_s=time.perf_counter() - t0,
                            error_type="engine_unavailable")
            raise ApiError(503, f"the engine is unavailable: {e}", "server_error") from None
        finally:
            state["waiting"] -= 1
        log(ans, raw, endpoint, budget)
        if ans.error:
            raise ApiError(422, ans.error, "invalid_output")
        return ans

    def usage(answers: list[Answer]) -> dict:
        p, c = sum(a.prompt_tokens for a in answers), sum(a.completion_tokens for a in answers)
        return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}

    @app.get("/health")
    async def health():
        down = engine.health() if hasattr(engine, "health") else None
        if down:
            return JSONResponse({"status": "error", "model": name, "error": down}, status_code=503)
        return {"status": "ok", "model": name, "queued": state["waiting"]}

    @app.get("/metrics")
    async def metrics():
        if telemetry is None:
            raise ApiError(404, "metrics are off (start slmake serve with a request log / metrics enabled)")
        body, content_type = telemetry.metrics_body()
        return Response(body, media_type=content_type)

    @app.get("/v1/models")
    async def models(request: Request):
        authorize(request)
        return {"object": "list", "data": [{"id": name, "object": "model", "created": 0, "owned_by": "slmake"}]}

    @app.post("/v1/completions")
    async def completions(req: CompletionRequest, request: Request, response: Response):
        authorize(request)
        budget = check_common(req.model, req.n, req.max_tokens)
        top = top_requested(req.logprobs, "logprobs")
        prompts = [req.prompt] if isinstance(req.prompt, str) else req.prompt
        if not 1 <= len(prompts) <= limits.max_batch:
            raise ApiError(400, f"prompt must be a string or a list of 1..{limits.max_batch} strings", param="prompt")
        if req.stream:
            if len(prompts) != 1:
                raise ApiError(400, "stream=true takes one prompt", param="prompt")
            cid, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
            return streamed(prompts[0], budget, "completions", lambda text, finish: {
                "id": cid, "object": "text_completion", "created": created, "model": name,
                "choices": [{"index": 0, "text": text, "finish_reason": finish, "logprobs": None}]}, req.max_tokens,
                top, completion_logprobs)
        answers = await asyncio.gather(*(run(p, budget, "completions", top) for p in prompts), return_exceptions=True)
        for a in answers:   # together, so llama-server batches them; the first error answers the request
            if isinstance(a, BaseException):
                raise a
        shown = [reviewed(a) for a in answers]
        return {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
                "model": name, "usage": usage(answers),
                "choices": [{"index": i, "text": s.text, "finish_reason": s.finish_reason,
                             "logprobs": completion_logprobs(s) if top is not None else None,
                             "slmake": slmake_fields(a, engine, limits.min_confidence)}
                            for i, (a, s) in enumerate(zip(answers, shown))], **capped(req.max_tokens, response)}

    @app.post("/v1/chat/completions")
    async def chat(req: ChatRequest, request: Request, response: Response):
        authorize(request)
        requested = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
        budget = check_common(req.model, req.n, requested)
        if req.top_logprobs is not None and not req.logprobs:
            raise ApiError(400, "top_logprobs needs logprobs: true", param="top_logprobs")
        top = top_requested(req.top_logprobs or 0, "top_logprobs") if req.logprobs else None
        raw = last_user_text(req.messages)
        if req.stream:
            cid, created, first = f"chatcmpl-{uuid.uuid4().hex}", int(time.time()), [True]

            def chunk(text: str, finish: str | None) -> dict:
                delta = {"role": "assistant", "content": text} if first else ({"content": text} if text else {})
                first.clear()
                return {"id": cid, "object": "chat.completion.chunk", "created": created, "model": name,
                        "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]}
            return streamed(raw, budget, "chat.completions", chunk, requested, top, chat_logprobs)
        ans = await run(raw, budget, "chat.completions", top)
        shown = reviewed(ans)
        return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
                "model": name, "usage": usage([ans]),
                "choices": [{"index": 0, "finish_reason": shown.finish_reason,
                             "message": {"role": "assistant", "content": shown.text},
                             "logprobs": chat_logprobs(shown) if top is not None else None,
                             "slmake": slmake_fields(ans, engine, limits.min_confidence)}],
                **capped(requested, response)}

    return BodyLimit(app, limits.max_request_bytes)


def last_user_text(messages: list[dict]) -> str:
    """The task's raw input is the last user message (system prompts are the training template's
    job); content may be a string or a list of text parts."""
    for m in reversed(messages):
        if m.get("role") == "user":
            content = m.get("content")
            if isinstance(content, list):
                content = "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
            if isinstance(content, str):
                return content
            break
    raise ApiError(400, "messages must contain a user message with text content", param="messages")
