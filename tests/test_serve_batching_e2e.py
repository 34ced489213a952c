"""`slmake serve`'s default engine for GGUF: llama.cpp's llama-server as a child process with
parallel slots (continuous batching), slmake's front in front, on the micro build (conftest.micro_repo).

One server start checks the lot: the engine it says it runs, answers equal to bench's outputs (sent
one at a time), concurrent requests answered schema-valid and decoded in several slots at once,
the request log, a SIGTERM that drains the request in flight and stops the child with it. A second
start is SIGKILLed: the kernel takes the child down too (no orphan llama-server).
"""

from __future__ import annotations

import json
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from e2e_utils import logged_lines, start_serve
from slmake.toolchain import llama_cpp_tool

pytestmark = pytest.mark.e2e
httpx = pytest.importorskip("httpx")
openai = pytest.importorskip("openai")
if llama_cpp_tool("llama-server") is None:
    pytest.skip("llama-server not built (requirements/llama_cpp.sh)", allow_module_level=True)

ARTIFACT = "cpu/gguf_q4_k_m"
KEY = "batching-key"


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"   # a zombie is gone
    except (OSError, IndexError):
        return False


def _gone(pid: int, within_s: float = 15) -> bool:
    deadline = time.time() + within_s
    while time.time() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.1)
    return False


def _llama_server_child(proc) -> int:
    kids = [k for k in _children(proc.pid) if "llama-server" in Path(f"/proc/{k}/cmdline").read_bytes().decode()]
    assert len(kids) == 1, kids
    return kids[0]


def test_llama_server_engine_batches_serves_bench_answers_and_leaves_no_orphan(micro_repo):
    from jsonschema import Draft202012Validator

    contract = json.loads((micro_repo / "build/deploy" / ARTIFACT / "serve.json").read_text())
    validator = Draft202012Validator(contract["response_schema"])
    before, after = contract["prompt_template"].split("{instruction}")
    rows = [json.loads(line) for line in (micro_repo / "build/data/test.jsonl").read_text().splitlines()]
    raw = {r["id"]: r["prompt"][len(before):len(r["prompt"]) - len(after)] for r in rows}
    bench = [json.loads(line) for line in (micro_repo / "build/bench/cpu/outputs.jsonl").read_text().splitlines()]
    bench = [r for r in bench if r["artifact"] == ARTIFACT.split("/")[1]]
    assert bench

    log = micro_repo / "batching.log"
    proc, base = start_serve(micro_repo, ARTIFACT, "--api-key", KEY, "--slots", "3", "--log-names", "keep",
                             "--request-log", "batching_requests.jsonl", log=log)
    auth = {"Authorization": f"Bearer {KEY}"}
    try:
        assert "engine: llama-server, 3 slots" in log.read_text()     # auto: the GGUF goes to llama-server
        child = _llama_server_child(proc)
        port = base.rsplit(":", 1)[1]
        child_log = micro_repo / f"build/logs/serve/llama-server-{port}.log"
        assert child_log.is_file()
        with httpx.Client(base_url=base, headers=auth, timeout=60) as http:
            # one at a time: bench's tokens exactly (the same ids in, llama.cpp's grammar sampler, greedy)
            for r in bench:
                got = http.post("/v1/completions", json={"prompt": raw[r["id"]]}).json()["choices"][0]
                assert (got["text"], got["finish_reason"]) == (r["text"], r["finish_reason"]), r["id"]
            chat = http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": raw[bench[0]["id"]]}]})
            assert chat.json()["choices"][0]["message"]["content"] == bench[0]["text"]
            assert chat.json()["usage"]["completion_tokens"] == len(bench[0]["tokens"])
            # together: every answer valid, decoded in parallel slots; a list prompt goes in together too
            inputs = [raw[r["id"]] for r in bench][:9]
            with ThreadPoolExecutor(9) as pool:
                answers = list(pool.map(lambda t: http.post("/v1/completions", json={"prompt": t}), inputs))
            assert all(a.status_code == 200 for a in answers)
            assert all(validator.is_valid(json.loads(a.json()["choices"][0]["text"])) for a in answers)
            batch = http.post("/v1/completions", json={"prompt": inputs[:3]}).json()["choices"]
            assert [c["index"] for c in batch] == [0, 1, 2] and all(validator.is_valid(json.loads(c["text"])) for c in batch)
            slots = {line.split("id ")[1].split("|")[0].strip() for line in child_log.read_text().splitlines()
                     if "slot launch_slot_" in line}
            assert len(slots) >= 2, slots                           # requests overlapped in different slots
            assert http.post("/v1/completions", json={"prompt": "x" * 20_000}).status_code == 400   # front's limit
        # stream: true (OpenAI's server-sent events, read by the openai client): the pieces make bench's
        # answer, the last chunk carries the validation; an answer that fails the schema ends in an error
        client = openai.OpenAI(base_url=f"{base}/v1", api_key=KEY, max_retries=0, timeout=60)
        chunks = list(client.completions.create(model=ARTIFACT, prompt=raw[bench[0]["id"]], stream=True))
        assert len(chunks) > 2 and "".join(c.choices[0].text for c in chunks) == bench[0]["text"]
        assert chunks[-1].choices[0].finish_reason == bench[0]["finish_reason"]
        assert chunks[-1].slmake["schema_valid"] is True and chunks[-1].usage.completion_tokens == len(bench[0]["tokens"])
        chat = list(client.chat.completions.create(model=ARTIFACT, stream=True,
                                                   messages=[{"role": "user", "content": raw[bench[1]["id"]]}]))
        assert chat[0].choices[0].delta.role == "assistant"
        assert "".join(c.choices[0].delta.content or "" for c in chat) == bench[1]["text"]
        with pytest.raises(openai.APIError, match="cut off at max_tokens = 3"):
            list(client.completions.create(model=ARTIFACT, prompt=raw[bench[0]["id"]], stream=True, max_tokens=3))
        streams = 3
        expected = len(bench) + 1 + len(inputs) + 3 + streams
        entries = logged_lines(micro_repo / "batching_requests.jsonl", expected)
        assert len(entries) == expected
        assert sum(not e["schema_valid"] for e in entries) == 1                  # the stream cut at 3 tokens

        with ThreadPoolExecutor(1) as pool:   # SIGTERM: the request in flight is answered, then all stop
            inflight = pool.submit(httpx.post, f"{base}/v1/completions", headers=auth, timeout=60,
                                   json={"prompt": "vpn drops every hour"})
            deadline = time.time() + 10
            while time.time() < deadline and not inflight.done() and httpx.get(f"{base}/health").json()["queued"] == 0:
                pass
            os.kill(proc.pid, signal.SIGTERM)
            assert inflight.result().status_code == 200
        assert proc.wait(timeout=30) == 0
        assert _gone(child), "llama-server outlived slmake serve"
    finally:
        if proc.poll() is None:
            proc.kill()

    # killed outright (no shutdown code runs): the kernel stops the child (PR_SET_PDEATHSIG)
    proc, base = start_serve(micro_repo, ARTIFACT, "--slots", "1", "--log-names", "keep", "--request-log", "",
                             log=micro_repo / "batching_kill.log")
    try:
        child = _llama_server_child(proc)
        os.kill(child, signal.SIGKILL)                               # first: the engine dies under the front
        assert _gone(child)
        r = httpx.get(f"{base}/health")
        assert r.status_code == 503 and "llama-server exited" in r.json()["error"] and "build/logs/serve/llama-server-" in r.json()["error"]
        r = httpx.post(f"{base}/v1/completions", json={"prompt": "printer jam"}, timeout=30)
        assert r.status_code == 503 and "llama-server exited" in r.json()["error"]["message"]
    finally:
        proc.kill()
        proc.wait(timeout=10)
    proc, base = start_serve(micro_repo, ARTIFACT, "--slots", "1", "--log-names", "keep", "--request-log", "",
                             log=micro_repo / "batching_kill.log")
    try:
        child = _llama_server_child(proc)
        proc.kill()
        proc.wait(timeout=10)
        assert _gone(child), "llama-server orphaned by a SIGKILLed slmake serve"
    finally:
        if proc.poll() is None:
            proc.kill()


def test_in_process_engine_streams_the_benchmarked_answer(micro_repo, monkeypatch):
    """`--engine in_process` streams too: the runner's tokens, as they come, make bench's answer."""
    import asyncio

    from slmake.serve.engine import Answer, Engine
    from slmake.serve.package import resolve

    monkeypatch.chdir(micro_repo)
    engine = Engine(resolve(ARTIFACT))
    try:
        before, after = engine.contract["prompt_template"].split("{instruction}")
        bench = next(json.loads(x) for x in (micro_repo / "build/bench/cpu/outputs.jsonl").read_text().splitlines()
                     if json.loads(x)["artifact"] == ARTIFACT.split("/")[1])
        row = next(json.loads(x) for x in (micro_repo / "build/data/test.jsonl").read_text().splitlines()
                   if json.loads(x)["id"] == bench["id"])

        async def collect():
            return [item async for item in engine.stream(row["prompt"][len(before):len(row["prompt"]) - len(after)],
                                                         engine.contract["max_new_tokens"])]
        items = asyncio.run(collect())
        assert isinstance(items[-1], Answer) and items[-1].schema_valid and len(items) > 2
        assert "".join(items[:-1]) == items[-1].text == bench["text"]
    finally:
        engine.close()
