"""The request log's file: every line PII-scrubbed before a byte reaches the disk, size-capped with
rotation (logging.handlers.RotatingFileHandler: at most ``max_bytes`` per file and ``backups`` old
files, so a busy server cannot fill the disk).

``RequestLog`` scrubs and writes in the caller's process. ``LogWriter`` (what `slmake serve` uses)
hands the lines down a pipe to a process of its own (``python -m slmake.request_log``), which scrubs whatever
piled up in one batch and writes it, at a lower CPU priority than the server (``lower_priority``). The person-name
model costs about 3 ms of CPU per ticket one at a time (half that batched); on the server's event
loop, or in a thread fighting it for Python's GIL, that took a third of `slmake serve`'s
throughput on unique tickets (benchmarks/serve_load.py --request-log). The lines keep their order
and their arrival time; ``flush`` waits until they are in the file, ``close`` (the server's
shutdown) writes every one. A writer a whole pipe (``PIPE_BYTES``) behind holds the next request
up: never a line dropped. Raw text crosses only the pipe to the writer, never the disk.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
from logging.handlers import RotatingFileHandler
from pathlib import Path

from .data.ner import NerUnavailable
from .data.pii import LOG_TYPES, PERSON, Scrubber

TRUNCATED = "…[truncated {n} chars]"
PIPE_BYTES = 1 << 20   # what the writer may be behind (about 1,000 lines) before a request waits for it
BATCH = 64        # lines it scrubs at once (the NER model's batch)
NICE = 10         # the writer's CPU priority: below the server's, with a share that keeps up with it


def scrubber_for(pii: dict | None, names: bool = True) -> Scrubber:
    """The request log's scrubber: the spec's ``data.pii`` slice (None: every built-in type, so a
    server that was not told otherwise still never logs raw PII), plus person names by the NER
    model (``names``, the default: people expect a log without names even where the training data
    keeps them). `slmake monitor` builds the same one to match feedback to the log."""
    cfg = {"enabled": True, "types": LOG_TYPES, "patterns": [], "presidio": False, **(pii or {})}
    types = [t for t in cfg["types"] if t != PERSON] + ([PERSON] if names and cfg["enabled"] else [])
    return Scrubber.from_config({**cfg, "types": types})


class RequestLog:
    """Scrub request lines (their texts in one batch) and append them to ``path``, rotating."""

    def __init__(self, path: str | Path, *, max_bytes: int = 50_000_000, backups: int = 3, pii: dict | None = None,
                 names: bool = True, label_field: str | None = None, max_field_chars: int = 8_000):
        self.path, self.label_field, self.max_field_chars = Path(path), label_field, max_field_chars
        self.path.parent.mkdir(parents=True, exist_ok=True)   # a bad path fails before the model loads
        self.scrubber = scrubber_for(pii, names=names)   # the NER model loads here, once per process
        self._handler = RotatingFileHandler(self.path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8")
        self._handler.setFormatter(logging.Formatter("%(message)s"))
        self._logger = logging.Logger(f"slmake.requests:{self.path}")  # not in the global registry
        self._logger.addHandler(self._handler)
        self._logger.setLevel(logging.INFO)
        self._logger.propagate = False
        self._lock = threading.Lock()   # the scrubber keeps counters; the handler has its own lock

    def write(self, lines: list[dict]) -> None:
        """``lines``: Telemetry.record's dicts, unscrubbed; written scrubbed, in order."""
        fields = ("input", "output", "error")
        with self._lock:
            s = self.scrubber
            texts = s.scrub_many([line.get(f) or "" for line in lines for f in fields])
            for i, line in enumerate(lines):
                for j, f in enumerate(fields):
                    if line.get(f):
                        line[f] = self._clip(texts[i * len(fields) + j])
                line["label"] = self._label(line.get("parsed"))
                if line.get("parsed") is not None:
                    line["parsed"] = s.scrub_json(line["parsed"])
            for line in lines:
                self._logger.info(json.dumps(line, ensure_ascii=False, default=str))

    def flush(self) -> None:
        """Nothing to wait for: ``write`` wrote."""

    def close(self) -> None:
        self._logger.removeHandler(self._handler)
        self._handler.close()

    def _clip(self, text: str) -> str:
        if len(text) <= self.max_field_chars:
            return text
        return text[: self.max_field_chars] + TRUNCATED.format(n=len(text) - self.max_field_chars)

    def _label(self, parsed) -> str | None:
        if not self.label_field or not isinstance(parsed, dict) or parsed.get(self.label_field) is None:
            return None
        value = parsed[self.label_field]
        return self.scrubber.scrub(value) if isinstance(value, str) else json.dumps(value)


class LogWriterError(RuntimeError):
    """The writer process could not start (the log's folder cannot be made, …): the log and why.
    A missing person-name model is NerUnavailable, as in the server's own process."""


class LogWriter:
    """``RequestLog`` in a process of its own, the lines sent down a pipe of ``PIPE_BYTES`` (a write
    into it costs the server microseconds; only a writer that far behind makes it wait); the same
    ``write``/``flush``/``close``. A writer that dies hands the log back to this process."""

    def __init__(self, path: str | Path, **config):
        self.path, self._config, self._fallback = Path(path), config, None
        self._proc = subprocess.Popen([sys.executable, "-m", "slmake.request_log",
                                       json.dumps({"path": str(path), **config})],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, encoding="utf-8")
        ready = self._proc.stdout.readline().strip()   # after the scrubber's model loaded (or failed to)
        if ready != "ready":
            self._proc.stdin.close()
            self._proc.wait()
            failed = json.loads(ready) if ready.startswith("{") else {
                "error": f"the request log's writer exited with status {self._proc.returncode}"}
            if failed.get("ner"):
                raise NerUnavailable(failed["error"])
            raise LogWriterError(f"request log {self.path}: {failed['error']}")
        try:
            import fcntl

            fcntl.fcntl(self._proc.stdin.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        except (ImportError, AttributeError, OSError):   # not Linux, or above /proc/sys/fs/pipe-max-size
            pass
        self._flushes = 0
        self._lock = threading.Lock()   # one line at a time into the pipe (the in-process engine's threads)

    def write(self, lines: list[dict]) -> None:
        with self._lock:
            for line in lines:
                self._send(line)

    def flush(self) -> None:
        with self._lock:
            if self._fallback is None and self._proc.poll() is None:
                self._flushes += 1
                if self._send({"_flush": self._flushes}):
                    self._proc.stdout.readline()   # the writer's answer: every line before it is written

    def close(self) -> None:
        """Every line recorded so far written, then the writer stopped; idempotent."""
        with self._lock:
            if self._fallback is not None:
                self._fallback.close()
                return
            try:
                self._proc.stdin.close()   # the writer writes what it has and exits
            except OSError:
                pass
            self._proc.wait()

    def _send(self, item: dict) -> bool:
        """True when the writer process took ``item``; else this process writes it (not a flush)."""
        if self._fallback is None:
            try:
                self._proc.stdin.write(json.dumps(item, ensure_ascii=False, default=str) + "\n")
                self._proc.stdin.flush()   # each line: a writer that died fails on the line it did not get
                return True
            except (BrokenPipeError, OSError, ValueError):
                print(f"slmake serve: request log {self.path}: its writer process exited (status "
                      f"{self._proc.poll()}); writing the log in the server's process from here on",
                      file=sys.stderr, flush=True)
                self._fallback = RequestLog(self.path, **self._config)
        if "_flush" not in item:
            self._fallback.write([item])
        return False


def lower_priority() -> None:
    """nice 10: the server's threads first (on a small box llama.cpp's threads want every core, and
    one preempted thread holds up the whole step), yet a share of the CPU (about a tenth against
    one busy process) that keeps the writer up with a loaded server. SCHED_IDLE (idle cores only)
    measured no better on a 2-core box, and under sustained overload it would starve the writer."""
    try:
        os.nice(NICE)
    except OSError:
        pass


def main(argv: list[str] | None = None) -> int:
    """The writer process: JSON lines in on stdin, scrubbed lines out to the log; ``{"_flush": n}``
    answered with ``n`` on stdout once every line before it is written."""
    config = json.loads((argv or sys.argv[1:])[0])
    lower_priority()
    for sig in (signal.SIGINT, signal.SIGTERM):   # a terminal's Ctrl-C, a service manager's stop: the server
        signal.signal(sig, signal.SIG_IGN)         # drains, then closes the pipe; the writer ends on that
    try:
        log = RequestLog(config.pop("path"), **config)
    except Exception as e:  # noqa: BLE001 - the parent raises it (NerUnavailable or LogWriterError)
        ner = isinstance(e, NerUnavailable)
        print(json.dumps({"error": str(e) if ner else f"{type(e).__name__}: {e}", "ner": ner}), flush=True)
        return 2
    print("ready", flush=True)
    lines: queue.Queue = queue.Queue()

    def read():   # a thread, so that the main loop takes what piled up in one batch
        for raw in sys.stdin:
            lines.put(json.loads(raw))
        lines.put(None)
    threading.Thread(target=read, daemon=True).start()
    while True:
        batch = [lines.get()]
        while len(batch) < BATCH and batch[-1] is not None and "_flush" not in batch[-1]:
            try:
                batch.append(lines.get_nowait())
            except queue.Empty:
                break
        end = batch[-1] if batch[-1] is None or "_flush" in batch[-1] else False
        todo = batch[:-1] if end is not False else batch
        try:
            if todo:
                log.write(todo)
        except Exception as e:  # noqa: BLE001 - a full disk must not stop the server; say so, go on
            print(f"slmake serve: request log {log.path}: {len(todo)} line(s) not written: "
                  f"{type(e).__name__}: {e}", file=sys.stderr, flush=True)
        if end is None:
            log.close()
            return 0
        if end:
            print(end["_flush"], flush=True)


if __name__ == "__main__":
    sys.exit(main())
