"""The llama-server engine's pure parts and its start-up errors, without a model: which engine serves
a package, what is asked of llama-server and read back from it, and what the user reads when the
binary dies or never becomes ready (a fake binary; each test well under a second)."""

from __future__ import annotations

import itertools
import stat
from pathlib import Path

import pytest

from slmake.serve.llama_args import context_tokens
from slmake.serve.llama_server import (
    EngineError,
    LlamaServerEngine,
    parse_result,
    pick_engine,
    request_body,
    server_args,
    timing,
)


def test_pick_engine():
    binary = Path("/opt/llama-server")
    assert pick_engine("auto", "gguf", binary) == ("llama_server", None)
    assert pick_engine("auto", "onnx-genai", binary) == ("in_process", None)      # llama-server loads GGUF only
    assert pick_engine("in_process", "gguf", binary) == ("in_process", None)
    kind, note = pick_engine("auto", "gguf", None)
    assert kind == "in_process" and "llama-server is not built" in note and "one request at a time" in note
    with pytest.raises(EngineError, match="not built"):
        pick_engine("llama_server", "gguf", None)
    with pytest.raises(EngineError, match="GGUF packages only"):
        pick_engine("llama_server", "openvino-ir", binary)
    with pytest.raises(EngineError, match="not one of auto, llama_server, in_process"):
        pick_engine("vllm", "gguf", binary)


def test_server_args_and_request_are_benchs_greedy_decoding():
    args = server_args(Path("pkg/m.gguf"), port=9999, slots=4, threads=2, max_tokens=32, max_prompt_tokens=256)
    opt = {a: b for a, b in itertools.pairwise(args)}
    assert opt["-m"] == "pkg/m.gguf" and opt["--host"] == "127.0.0.1" and opt["--parallel"] == "4"
    assert opt["-c"] == str(4 * context_tokens(256, 32)) == str(4 * 320) and opt["-n"] == "32"
    assert opt["-t"] == opt["-tb"] == "2" and opt["--temp"] == "0" and opt["--top-k"] == "1"
    assert opt["-fa"] == "off" and "--no-cache-prompt" in args and "--api-key" not in args   # key: in the env
    body = request_body([1, 5, 7], 16, "root ::= \"x\"")
    assert body["prompt"] == [1, 5, 7] and body["n_predict"] == 16 and body["grammar"] == 'root ::= "x"'
    assert body["return_tokens"] and body["temperature"] == 0 and not body["cache_prompt"]
    assert "grammar" not in request_body([1], 16, None)


def test_parse_result_drops_the_end_token_and_maps_the_stop():
    assert parse_result({"tokens": [5, 6, 3], "stop_type": "eos"}) == ([5, 6], "stop")
    assert parse_result({"tokens": [5, 6, 7], "stop_type": "limit"}) == ([5, 6, 7], "length")
    assert parse_result({"tokens": [5], "stop_type": "word"}) == ([5], "stop")
    ttft, queued = timing({"timings": {"prompt_ms": 4.0, "predicted_ms": 10.0, "predicted_per_token_ms": 1.0}}, 0.020)
    assert ttft == pytest.approx(0.005) and queued == pytest.approx(0.006)
    assert timing({}, 0.01) == (0.0, 0.01)


def _package(tmp_path: Path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    from slmake.serve.package import Package

    tok = Tokenizer(models.WordLevel({"[UNK]": 0, "printer": 1}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(tmp_path / "tokenizer.json"))
    return Package(tmp_path, {"name": "cpu/fake", "target": "cpu", "prompt_template": "{instruction}",
                              "max_prompt_tokens": 64, "max_new_tokens": 8, "threads": 1, "tokenizer": "tokenizer.json",
                              "response_schema": None, "response_format": "json", "figures": {},
                              "artifact": {"name": "fake", "format": "gguf", "path": "m.gguf", "runtime": "llama.cpp"}})


def _binary(tmp_path: Path, script: str) -> Path:
    path = tmp_path / "llama-server"
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_a_child_that_dies_at_start_is_reported_with_its_log(tmp_path):
    binary = _binary(tmp_path, 'echo "error: failed to load model m.gguf"\nexit 3\n')
    log = tmp_path / "logs/llama-server.log"
    with pytest.raises(EngineError) as e:
        LlamaServerEngine(_package(tmp_path), binary=binary, threads=1, log=log)
    assert "exited with status 3 while starting" in str(e.value) and str(log) in str(e.value)
    assert "failed to load model m.gguf" in str(e.value)           # the log's tail, in the message


def test_a_child_that_never_becomes_ready_is_stopped(tmp_path):
    pid_file = tmp_path / "pid"
    binary = _binary(tmp_path, f'echo $$ > {pid_file}\necho "loading"\nexec sleep 30\n')
    with pytest.raises(EngineError, match="did not become ready within 0 s") as e:
        LlamaServerEngine(_package(tmp_path), binary=binary, threads=1, log=tmp_path / "l.log", start_timeout_s=0.3)
    assert "loading" in str(e.value)
    pid = int(pid_file.read_text())
    state = Path(f"/proc/{pid}/stat")
    assert not state.exists() or state.read_text().split(") ")[1][0] == "Z"   # stopped, not left running


FAKE_SERVER = r'''#!{python}
"""A stand-in llama-server: listens where --host says (a .sock path), answers /health and /completion."""
import json, socketserver, sys
from http.server import BaseHTTPRequestHandler
host = sys.argv[sys.argv.index("--host") + 1]
assert host.endswith(".sock") and "--port" not in sys.argv, sys.argv


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, body):
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self.reply({{"status": "ok"}})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        assert self.headers["Authorization"].startswith("Bearer ")
        self.reply({{"tokens": [1, 0], "stop_type": "eos", "timings": {{}}, "echo": body["prompt"]}})


class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


Server(host, Handler).serve_forever()
'''


def test_the_child_listens_on_a_private_unix_socket_that_close_removes(tmp_path):
    """No loopback port (nothing to race for, nothing another local user can connect to): the child
    gets a .sock path in a 0700 folder; both the sync and the async client reach it; close removes it."""
    import asyncio
    import sys

    binary = tmp_path / "llama-server"
    binary.write_text(FAKE_SERVER.format(python=sys.executable))
    binary.chmod(0o755)
    engine = LlamaServerEngine(_package(tmp_path), binary=binary, threads=1, log=tmp_path / "l.log")
    try:
        sock = engine.socket_path
        assert engine.port is None and sock.is_socket() and (sock.parent.stat().st_mode & 0o777) == 0o700
        assert engine.command[engine.command.index("--host") + 1] == str(sock)
        assert engine.answer("printer", 8).text == "printer"

        async def served():
            try:
                return (await engine.answer_async("printer", 8)).text
            finally:
                await engine.aclose()
        assert asyncio.run(served()) == "printer"
    finally:
        engine.close()
    assert not sock.parent.exists()
