"""Continuous batching for GGUF: `slmake serve`'s front over llama.cpp's own ``llama-server``.

``llama-server`` (built by requirements/llama_cpp.sh from the llama.cpp source that llama-cpp-python
and bench use; slmake.toolchain finds it) runs as a child process listening on a Unix socket in a
private temporary folder (``socket_path``; a free loopback port where the OS has no Unix sockets) with
``slots`` parallel slots: requests that overlap are decoded together, one batch per step
(continuous batching), instead of one after another. slmake's front stays in front of it exactly as
with the in-process engine: the training template and tokenizer turn the raw input into the very
ids bench decoded (sent as a token array, so llama.cpp's own tokenizer plays no part), the response
schema's grammar (the GBNF bench decoded under) goes with every request, the answer comes back as
token ids that slmake decodes and validates; the API key, limits, request log and metrics are the
front's. The child's own key is random per start and passed in its environment, so nothing on the
machine can reach the model around the front.

Greedy as bench: temperature 0, top-k 1, repeat penalty 1, llama.cpp's grammar sampler (the argmax
first, the whole vocabulary masked only when the grammar rejects it, as bench's runner does), flash
attention off (llama-cpp-python's default, so the arithmetic is bench's), no prompt cache (a cached
prefix is computed in another batch shape). A request decoded alone gives bench's tokens; decoded in
a batch beside others, llama.cpp's batched matrix products may round differently and flip an
answer whose two best tokens were tied to the last bits (1 of 200 on the default build at
concurrency 16; none sequentially).

The child dies with slmake: ``close`` terminates it (the server's shutdown after draining, on
SIGTERM/SIGINT), and the kernel kills it if slmake itself dies without cleaning up (PR_SET_PDEATHSIG,
Linux). It runs in its own session, so a terminal's Ctrl-C reaches slmake only, which drains the
requests in flight before it stops the child.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from .. import process_setup
from .engine import Answer, Front
from .llama_args import GREEDY, context_tokens
from .package import Package

DEFAULT_SLOTS = 4
# the child's log: outside logs/ (the monitor stage's dependency, which holds only served traffic),
# beside the other build logs
SERVE_LOGS = Path("build/logs/serve")
DEFAULT_MAX_WAITING = 64    # the HTTP layer's max_queue (`slmake serve --max-queue`)
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 10.0


ENGINES = ("auto", "llama_server", "in_process")    # serve.engine, `slmake serve --engine`


class EngineError(RuntimeError):
    """llama-server could not be started, or could not answer; the message names its log file."""


def pick_engine(choice: str, artifact_format: str | None, binary: Path | None) -> tuple[str, str | None]:
    """("llama_server" | "in_process", a line for the user or None). ``auto`` (the default) takes
    llama-server for a GGUF package when the binary is built and says why not otherwise;
    ``llama_server`` insists (EngineError when it cannot); ``in_process`` serves any runtime."""
    if choice not in ENGINES:
        raise EngineError(f"serve.engine: {choice!r} is not one of {', '.join(ENGINES)}")
    if choice == "in_process":
        return "in_process", None
    if artifact_format != "gguf":
        if choice == "llama_server":
            raise EngineError(f"serve.engine llama_server serves GGUF packages only (this one is "
                              f"{artifact_format}); use --engine in_process or auto")
        return "in_process", None
    if binary is None:
        missing = ("llama.cpp's llama-server is not built (requirements/llama_cpp.sh installs it beside "
                   "llama-cpp-python; or set SLMAKE_LLAMA_CPP_BIN to a folder holding it)")
        if choice == "llama_server":
            raise EngineError(missing)
        return "in_process", f"{missing}: serving in process, one request at a time (no batching)"
    return "llama_server", None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_args(model: Path, *, port: int, slots: int, threads: int, max_tokens: int,
                max_prompt_tokens: int, max_waiting: int = DEFAULT_MAX_WAITING,
                unix_socket: Path | None = None) -> list[str]:
    """llama-server's arguments: the model, loopback (or ``unix_socket``: llama-server listens on a
    path ending in .sock instead of a port), ``slots`` parallel slots over a context of
    ``slots`` x one slot's, the answer budget as its cap, the threads, bench's greedy settings, an
    HTTP thread for every connection the front may open (``slots`` + ``max_waiting``), and threads
    that sleep instead of spinning between batches (the front needs the cores too)."""
    listen = ["--host", str(unix_socket)] if unix_socket else ["--host", "127.0.0.1", "--port", str(port)]
    return ["-m", str(model), *listen, "--parallel", str(slots),
            "-c", str(slots * context_tokens(max_prompt_tokens, max_tokens)), "-n", str(max_tokens),
            "-t", str(threads), "-tb", str(threads), *GREEDY, "--no-cache-prompt", "--cont-batching", "--no-webui",
            "--threads-http", str(connections(slots, max_waiting) + 2), "--poll", "0"]


def connections(slots: int, max_waiting: int) -> int:
    """The front's connections to llama-server: one per request it lets in (the slots' and the
    queue's, ``--max-queue``; beyond them it answers 503), so every request waits in llama-server's
    own queue, in order. Not fewer: aiohttp's waiters for a pooled connection are not served in
    order, and under a burst some waited 2-3 s while later requests went first. llama-server gets as
    many HTTP threads (+2, for /health): one serves one keep-alive connection at a time, and a
    connection beyond them waited for another's 5 s idle timeout."""
    return slots + max_waiting


def request_body(ids: list[int], max_tokens: int, gbnf: str | None, top: int | None = None) -> dict:
    """One /completion request: the prompt as token ids (bench's, BOS included), the budget, greedy,
    the answer back as token ids, the grammar when the answer is constrained. ``top`` (None: off):
    each token's probability and the ``top`` best alternatives (llama-server's ``n_probs``, at least
    1 so that the chosen token's comes back; its pre-sampling probabilities, the model's softmax
    before the grammar, as slmake's runners compute them)."""
    body = {"prompt": ids, "n_predict": max_tokens, "temperature": 0.0, "top_k": 1, "repeat_penalty": 1.0,
            "return_tokens": True, "cache_prompt": False, "stream": False}
    if gbnf is not None:
        body["grammar"] = gbnf
    if top is not None:
        body.update(n_probs=max(1, top), post_sampling_probs=False)
    return body


def parse_probs(probs: list[dict] | None, tokens: list[int], top: int | None
                ) -> tuple[list[float] | None, list[list[tuple[int, float]]] | None]:
    """(each token's log-probability, its ``top`` best (id, log-probability)) from llama-server's
    ``completion_probabilities`` for the generated ``tokens`` (the end-of-generation token's entry
    dropped with it); (None, None) when they are absent or do not match the tokens."""
    if top is None or not probs or len(probs) < len(tokens):
        return None, None
    probs = probs[:len(tokens)]
    if any(p.get("id") != t for p, t in zip(probs, tokens)):
        return None, None
    return ([float(p["logprob"]) for p in probs],
            [[(int(a["id"]), float(a["logprob"])) for a in (p.get("top_logprobs") or [])[:top]] for p in probs])


def parse_result(result: dict) -> tuple[list[int], str]:
    """(the generated ids without the end-of-generation token, finish_reason) of a /completion
    response. llama-server returns the end-of-generation id it stopped on; bench does not keep it."""
    tokens = list(result.get("tokens") or [])
    stop = result.get("stop_type")
    if stop == "eos" and tokens:
        tokens = tokens[:-1]
    return tokens, ("length" if stop == "limit" else "stop")


def timing(result: dict, latency_s: float) -> tuple[float, float]:
    """(ttft_s, queue_s) from llama-server's timings: the prompt's time plus one token's is the time
    to the first token once a slot had the request; what the whole latency has beyond the slot's
    work is the wait for a slot (and the hop)."""
    t = result.get("timings") or {}
    prompt_s = float(t.get("prompt_ms") or 0) / 1000
    work_s = prompt_s + float(t.get("predicted_ms") or 0) / 1000
    ttft = prompt_s + float(t.get("predicted_per_token_ms") or 0) / 1000
    return ttft, max(0.0, latency_s - work_s)


def _die_with_parent() -> None:   # runs in the child between fork and exec
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)   # PR_SET_PDEATHSIG
    except Exception:  # not Linux: close() and the signal handlers still stop it
        pass


class LlamaServerEngine(Front):
    """The front (prompt ids, grammar, validation) over a llama-server child with ``slots`` slots.
    ``answer_async`` is what the HTTP layer awaits (requests overlap, llama-server batches them);
    ``answer`` is the same for a caller without an event loop."""

    def __init__(self, package: Package, *, binary: Path, enforce_schema: bool = True, threads: int | None = None,
                 slots: int = DEFAULT_SLOTS, max_tokens: int | None = None, log: Path | None = None,
                 max_waiting: int = DEFAULT_MAX_WAITING, confidence: bool = True,
                 start_timeout_s: float = START_TIMEOUT_S):
        super().__init__(package, enforce_schema=enforce_schema, confidence=confidence)
        c = package.contract
        if slots < 1:
            raise ValueError(f"serve.slots must be at least 1, not {slots}")
        self.slots, self.max_waiting = slots, max_waiting
        self.threads = threads or process_setup.resolve_threads(c["threads"])
        self.max_tokens = max_tokens or c["max_new_tokens"]
        self.constrained = self.gbnf is not None   # llama.cpp's grammar sampler, as bench's runner
        # a Unix socket in a 0700 folder: no port to race another process for between free_port and
        # the child's bind, and nothing but this user can even connect to the child
        self._sockdir = Path(tempfile.mkdtemp(prefix="slmake-serve-")) if hasattr(socket, "AF_UNIX") else None
        self.socket_path = self._sockdir / "llama-server.sock" if self._sockdir else None
        self.port = None if self.socket_path else free_port()
        self.base = "http://llama-server" if self.socket_path else f"http://127.0.0.1:{self.port}"
        self.log = Path(log) if log else SERVE_LOGS / f"llama-server-{self.port or os.getpid()}.log"
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self._key = secrets.token_urlsafe(24)
        self._headers = {"Authorization": f"Bearer {self._key}"}
        self._clients: dict = {}
        self.command = [str(binary), *server_args(package.folder / c["artifact"]["path"], port=self.port,
                                                  slots=slots, threads=self.threads, max_tokens=self.max_tokens,
                                                  max_prompt_tokens=c["max_prompt_tokens"],
                                                  max_waiting=max_waiting, unix_socket=self.socket_path)]
        env = {**os.environ, "LLAMA_API_KEY": self._key}   # not on the command line (ps shows that)
        main = threading.current_thread() is threading.main_thread()   # PDEATHSIG follows the forking thread
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(self.command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                         env=env, start_new_session=True,   # a terminal's Ctrl-C reaches slmake
                                         preexec_fn=_die_with_parent if main and sys.platform == "linux" else None)
        try:
            self._wait_ready(start_timeout_s)
            self._check_grammar()
        except BaseException:
            self.close()
            raise

    # --- the child process ---------------------------------------------------------------------

    def _tail(self, lines: int = 15) -> str:
        try:
            text = self.log.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return ""
        return "\n".join("    " + line for line in text)

    def _sync_client(self, timeout):
        import httpx

        transport = httpx.HTTPTransport(uds=str(self.socket_path)) if self.socket_path else None
        return httpx.Client(base_url=self.base, headers=self._headers, timeout=timeout, transport=transport)

    def _wait_ready(self, timeout_s: float) -> None:
        import httpx

        deadline = time.monotonic() + timeout_s
        with self._sync_client(2) as http:
            while True:
                if self.proc.poll() is not None:
                    raise EngineError(f"llama-server exited with status {self.proc.returncode} while starting; "
                                      f"its log, {self.log}, ends:\n{self._tail()}")
                try:   # (a socket not bound yet: no connect attempt, whose failure leaks a socket in httpcore)
                    if (not self.socket_path or self.socket_path.exists()) and http.get("/health").status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise EngineError(f"llama-server did not become ready within {timeout_s:.0f} s; its log, "
                                      f"{self.log}, ends:\n{self._tail()}")
                time.sleep(0.1)

    def _check_grammar(self) -> None:
        """Once at start, not a failed request each time: a grammar llama.cpp cannot compile."""
        if not self.constrained:
            return
        try:
            self._post(request_body(self.prompt_ids("x"), 1, self.gbnf))
        except EngineError as e:
            if self.health():
                raise
            self.constrained, self.unconstrained_why = False, str(e)

    def health(self) -> str | None:
        """None while the child runs, else why it does not."""
        if self.proc.poll() is None:
            return None
        return f"llama-server exited with status {self.proc.returncode}; its log: {self.log}"

    def close(self) -> None:
        """Stop the child (SIGTERM, SIGKILL after STOP_TIMEOUT_S); idempotent."""
        sync = self._clients.pop("sync", None)
        if sync is not None:
            sync.close()
        proc = getattr(self, "proc", None)
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if getattr(self, "_sockdir", None) is not None:
            shutil.rmtree(self._sockdir, ignore_errors=True)

    async def aclose(self) -> None:
        """The event loop's client sessions (before the loop ends)."""
        for key, client in list(self._clients.items()):
            if key != "sync":
                await client.close()
                del self._clients[key]

    # --- requests --------------------------------------------------------------------------------

    def _error(self, status: int | None, detail: str) -> EngineError:
        why = self.health()
        if why:
            return EngineError(why)
        return EngineError(f"llama-server answered {status}: {detail[:300]}" if status else
                           f"llama-server did not answer ({detail}); its log: {self.log}")

    def _result(self, response) -> dict:
        if response.status_code != 200:
            raise self._error(response.status_code, response.text)
        return response.json()

    def _post(self, body: dict) -> dict:
        import httpx

        client = self._clients.get("sync")
        if client is None:
            client = self._clients["sync"] = self._sync_client(httpx.Timeout(600, connect=5))
        try:
            return self._result(client.post("/completion", json=body))
        except httpx.HTTPError as e:
            raise self._error(None, f"{type(e).__name__}: {e}") from None

    async def _session(self):
        import asyncio

        import aiohttp

        loop = asyncio.get_running_loop()   # a session's connections belong to one event loop
        session = self._clients.get(loop)
        if session is None:
            # idle connections dropped before llama-server's own 5 s keep-alive timeout closes them
            pool = {"limit": connections(self.slots, self.max_waiting), "keepalive_timeout": 4}
            connector = (aiohttp.UnixConnector(path=str(self.socket_path), **pool) if self.socket_path
                         else aiohttp.TCPConnector(**pool))
            session = self._clients[loop] = aiohttp.ClientSession(
                self.base, headers=self._headers, timeout=aiohttp.ClientTimeout(total=600, connect=5),
                connector=connector)
        return session

    async def _apost(self, body: dict) -> dict:
        """aiohttp, not httpx, here: its client costs the front about half the CPU per request, and on
        a small box the front's CPU is taken from llama-server's."""
        import aiohttp

        session = await self._session()
        try:
            async with session.post("/completion", json=body) as response:
                if response.status != 200:
                    raise self._error(response.status, await response.text())
                return await response.json()
        except (TimeoutError, aiohttp.ClientError) as e:
            raise self._error(None, f"{type(e).__name__}: {e}") from None

    async def stream(self, raw_input: str, max_tokens: int, arrived: float | None = None,
                     logprobs: int | None = None):
        """``answer_async``, streamed: llama-server's tokens as they come (its server-sent events),
        decoded by slmake's tokenizer into text pieces, then the validated Answer (the last item)."""
        import json

        import aiohttp

        t0 = time.perf_counter() if arrived is None else arrived
        ids, body = self._body(raw_input, max_tokens, logprobs)
        session = await self._session()
        made, shown, last, probs = [], "", {}, []
        try:
            # its own connection, closed after: llama-server closes a connection after a streamed answer,
            # and one put back in the pool failed the next request written to it
            async with session.post("/completion", json={**body, "stream": True},
                                    headers={"Connection": "close"}) as response:
                if response.status != 200:
                    raise self._error(response.status, await response.text())
                async for line in response.content:
                    if not line.startswith(b"data: "):
                        continue
                    last = json.loads(line[6:])
                    made += last.get("tokens") or []
                    probs += last.get("completion_probabilities") or []
                    delta, shown = self.text_delta(made, shown)
                    if delta:
                        yield delta
                    if last.get("stop"):
                        break
        except (TimeoutError, aiohttp.ClientError) as e:
            raise self._error(None, f"{type(e).__name__}: {e}") from None
        if not last.get("stop"):
            raise self._error(None, "the stream ended before the answer did")
        yield self._answer(ids, {**last, "tokens": made, "completion_probabilities": probs}, max_tokens, t0,
                           logprobs)

    def _answer(self, ids: list[int], result: dict, max_tokens: int, t0: float, logprobs: int | None) -> Answer:
        """``logprobs``: what the client asked for (None: only the label's confidence, if anything)."""
        tokens, finish = parse_result(result)
        ttft, queued = timing(result, time.perf_counter() - t0)
        lps, alts = parse_probs(result.get("completion_probabilities"), tokens, self.logprob_top(logprobs))
        return self.finish(ids, tokens, finish, max_tokens, t0, ttft, queued, lps, alts, pieces=logprobs is not None)

    def _body(self, raw_input: str, max_tokens: int, logprobs: int | None = None) -> tuple[list[int], dict]:
        ids = self.request_ids(raw_input)
        return ids, request_body(ids, max_tokens, self.gbnf if self.constrained else None, self.logprob_top(logprobs))

    def answer(self, raw_input: str, max_tokens: int, arrived: float | None = None,
               logprobs: int | None = None) -> Answer:
        t0 = time.perf_counter() if arrived is None else arrived
        ids, body = self._body(raw_input, max_tokens, logprobs)
        return self._answer(ids, self._post(body), max_tokens, t0, logprobs)

    async def answer_async(self, raw_input: str, max_tokens: int, arrived: float | None = None,
                           logprobs: int | None = None) -> Answer:
        t0 = time.perf_counter() if arrived is None else arrived
        ids, body = self._body(raw_input, max_tokens, logprobs)
        return self._answer(ids, await self._apost(body), max_tokens, t0, logprobs)
