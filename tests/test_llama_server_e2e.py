"""The llama-server command of a GGUF deploy package, run for real on the micro build.

deploy writes `llama-server.sh` (llama.cpp's own server: slots, continuous batching, the response
schema as every request's default constraint, the training template as the chat template) from the
spec that writes the Modelfile. Started from the package folder with the llama-server that
requirements/llama_cpp.sh builds, it must answer /completion and /v1/completions with schema-valid
answers equal to the ones bench measured, and render chat messages exactly as training did.
"""

from __future__ import annotations

import json
import shlex
import socket
import subprocess
import time

import pytest

from slmake.prompt import format_prompt
from slmake.toolchain import llama_cpp_tool

pytestmark = pytest.mark.e2e
httpx = pytest.importorskip("httpx")
jsonschema = pytest.importorskip("jsonschema")
SERVER = llama_cpp_tool("llama-server")
if SERVER is None:
    pytest.skip("llama-server not built (requirements/llama_cpp.sh)", allow_module_level=True)
ARTIFACT = "gguf_q4_k_m"


def test_llama_server_command_serves_the_package(micro_repo, tmp_path):
    pkg = micro_repo / "build/deploy/cpu" / ARTIFACT
    contract = json.loads((pkg / "serve.json").read_text())
    script = (pkg / "llama-server.sh").read_text()
    command = script.rsplit('"${LLAMA_SERVER:-llama-server}" ', 1)[1].removesuffix(' "$@"\n')
    assert "llama-server " + command in (pkg / "SERVE.md").read_text()   # SERVE.md shows the same command
    args = shlex.split(command)
    assert args[args.index("-m") + 1] == contract["artifact"]["path"]
    assert args[args.index("--json-schema-file") + 1] == "response_schema.json"
    assert json.loads((pkg / "response_schema.json").read_text()) == contract["response_schema"]
    assert args[args.index("-n") + 1] == str(contract["max_new_tokens"]) and "--parallel" in args

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path / "llama-server.log"
    proc = subprocess.Popen([str(pkg / "llama-server.sh"), "--port", str(port), "-t", "1", "-tb", "1"],
                            env={"PATH": "/usr/bin:/bin", "LLAMA_SERVER": str(SERVER)},
                            stdout=open(log, "w"), stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            assert proc.poll() is None, log.read_text()[-3000:]
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.time() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        bench = {}   # bench.limit may score an evenly spaced subset of the test split
        for line in (micro_repo / "build/bench/cpu/outputs.jsonl").read_text().splitlines():
            out = json.loads(line)
            if out["artifact"] == ARTIFACT:
                bench[out["id"]] = out["text"]
        rows = [json.loads(line) for line in (micro_repo / "build/data/test.jsonl").read_text().splitlines()]
        rows = [r for r in rows if r["id"] in bench][:4]
        assert rows, "bench scored none of the test split's rows"
        for row in rows:
            r = httpx.post(f"{base}/completion", json={"prompt": row["prompt"]}, timeout=60).json()
            answer = r["content"]
            jsonschema.validate(json.loads(answer), contract["response_schema"])
            assert r["generation_settings"]["grammar"], "the response schema is not the default constraint"
            assert r["stop_type"] == "eos", r   # stopped on the model's end-of-generation token, as bench
            assert answer == bench[row["id"]], (row["id"], answer, bench[row["id"]])   # served = benchmarked
        v1 = httpx.post(f"{base}/v1/completions", json={"prompt": rows[0]["prompt"]}, timeout=60).json()
        assert v1["choices"][0]["text"] == bench[rows[0]["id"]]
        raw = "the printer on floor 3 jams on every page"
        rendered = httpx.post(f"{base}/apply-template", json={"messages": [{"role": "user", "content": raw}]},
                              timeout=10).json()["prompt"]
        assert rendered == format_prompt(contract["prompt_template"], raw)   # the training template, byte-exact
        chat = httpx.post(f"{base}/v1/chat/completions", json={"messages": [{"role": "user", "content": raw}]},
                          timeout=60).json()
        jsonschema.validate(json.loads(chat["choices"][0]["message"]["content"]), contract["response_schema"])
    finally:
        proc.terminate()
        proc.wait(timeout=10)
