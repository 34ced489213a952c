"""Load test: `slmake serve` (llama-server engine) against bare llama-server and the in-process engine.

Closed-loop clients (each sends its next request when the previous one answered) at concurrency
1, 4 and 16 (`--levels`), a bounded number of requests each, on loopback, all on one asyncio loop
(aiohttp): the load generator's own CPU per request is small, since on a 2-core box it shares the
cores with the servers. Four servers on the same
GGUF, the same threads and the same response-schema grammar:

- `slmake serve` with its default engine: llama.cpp's llama-server as a child with `--slots` parallel
  slots (continuous batching), slmake's front in front (template, grammar per request, validation);
- bare llama-server, started with exactly the child's arguments (slmake.serve.llama_server.server_args)
  and the grammar as its default constraint, sent the prompt already rendered with the template;
- `slmake serve --engine in_process`: one generation at a time with bench's runner;
- `slmake serve --no-confidence` (llama-server engine): bare llama-server's work per token. By
  default slmake asks llama-server for each token's probability (n_probs: the enum label's
  confidence, `slmake.confidence`), a softmax and sort over the vocabulary per token that bare
  llama-server, sent no n_probs, does not do: this row is the like-for-like comparison.

Prints requests/s, p50/p95/p99 latency and errors per server and concurrency, and the ratios to
bare llama-server and to the in-process engine; then, for `slmake serve` streaming (`stream: true`)
at `--stream-levels`, the time to the first text piece against the time to the whole answer.

    python benchmarks/serve_load.py [--artifact cpu/gguf_q4_k_m] [--requests 12] [--levels 1,4,16] [--slots 4] [--rounds 3]
                                    [--engine-cores 1] [--request-log] [--then <src>]

`--request-log` has slmake's servers write their request log, as `slmake serve` does by default
(every line PII-scrubbed, person names by the NER model), each to a file of its own in a temporary
folder, and sends the prompts of every split (train, val, test), each level going on where the
last stopped: live traffic is new tickets, and a repeated one would come from the scrubber's
cache. Without it the servers run with `--request-log ''` (no log: the front's own cost only) on
the test split's prompts.

`--then <src>` adds the `slmake serve` of an earlier commit (its source folder, e.g. of a git worktree:
`git worktree add /tmp/at-filing 535db60^`, then `--then /tmp/at-filing/src`), run with this
environment on the same artifact and threads: "today's req/s" as it was when a goal was set,
measured beside the rest on the same box.

`--engine-cores 1` runs every llama-server (bare, and slmake's child) on core 1 only, with one thread
per core given, and the fronts and the clients on the other cores: the layout of a box with cores
to spare beside the engine's, where slmake's front does not take its CPU out of the engine's.

The four servers run side by side (an idle one uses no CPU) and every level is run on each in
turn, --rounds times; a figure is the median round, so load from elsewhere on the box weighs on all
four alike.

It also writes reports/serve_load.json (`--out`): slmake's default server's requests/s per
concurrency, which the report's cost table uses instead of the bench estimate (`cost.load_report`;
rerun the report with `dvc repro -f -s report`). Measure it with `--request-log`: a default
`slmake serve` writes its log.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from figures import record


def start(cmd: list[str], port: int, health: str, cores: set[int] | None = None,
          env: dict | None = None) -> subprocess.Popen:
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                            preexec_fn=(lambda: os.sched_setaffinity(0, cores)) if cores else None)
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}{health}", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.3)
        if proc.poll() is not None:
            raise SystemExit(f"server exited: {' '.join(cmd)}")
    proc.kill()
    raise SystemExit(f"server did not start: {' '.join(cmd)}")


def pin_engines(pid: int, cores: set[int]) -> int:
    """Move every thread of the llama-server processes under ``pid`` to ``cores``; how many processes."""
    import psutil

    moved = 0
    for child in psutil.Process(pid).children(recursive=True):
        if "llama-server" in child.name():
            for thread in child.threads():
                os.sched_setaffinity(thread.id, cores)
            moved += 1
    return moved


def _closed_loop(concurrency: int, per_client: int, one) -> tuple[list, float]:
    """``concurrency`` clients on one event loop, each awaiting ``one(session, i)`` ``per_client``
    times in turn (i: the request's number); (every result, wall seconds)."""
    import aiohttp

    async def main():
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                         timeout=aiohttp.ClientTimeout(total=120)) as session:
            async def client(c: int) -> list:
                return [await one(session, c * per_client + j) for j in range(per_client)]
            t0 = time.perf_counter()
            results = await asyncio.gather(*(client(c) for c in range(concurrency)))
            return [r for rs in results for r in rs], time.perf_counter() - t0
    return asyncio.run(main())


def run_level(url: str, bodies: list[dict], concurrency: int, per_client: int, start: int = 0) -> dict:
    import aiohttp

    async def one(session, i: int) -> tuple[float, bool]:
        t0 = time.perf_counter()
        try:
            async with session.post(url, json=bodies[(start + i) % len(bodies)]) as r:
                await r.read()
                ok = r.status == 200
        except aiohttp.ClientError:
            ok = False
        return time.perf_counter() - t0, ok

    results, wall = _closed_loop(concurrency, per_client, one)
    lat = sorted(s for s, _ in results)
    q = statistics.quantiles(lat, n=100, method="inclusive") if len(lat) > 1 else lat * 99
    return {"requests": len(results), "rps": len(results) / wall, "p50": q[49] * 1000, "p95": q[94] * 1000,
            "p99": q[98] * 1000, "errors": sum(not ok for _, ok in results)}


def stream_level(url: str, bodies: list[dict], concurrency: int, per_client: int) -> dict:
    """Streamed requests (``stream: true``): time to the first text piece and to the whole answer."""
    async def one(session, i: int) -> tuple[float, float, bool]:
        t0, first, ok = time.perf_counter(), None, False
        async with session.post(url, json={**bodies[i % len(bodies)], "stream": True}) as r:
            async for raw in r.content:
                line = raw.decode().rstrip("\r\n")
                if line.startswith("data: {") and first is None and '"text": ""' not in line:
                    first = time.perf_counter() - t0
                ok = ok or line == "data: [DONE]"
            ok = ok and r.status == 200
        return first or time.perf_counter() - t0, time.perf_counter() - t0, ok

    results, _ = _closed_loop(concurrency, per_client, one)
    first, whole = sorted(r[0] for r in results), sorted(r[1] for r in results)
    return {"requests": len(results), "ttft_p50": statistics.median(first) * 1000,
            "whole_p50": statistics.median(whole) * 1000, "errors": sum(not r[2] for r in results)}


def main() -> int:
    from slmake.process_setup import resolve_threads
    from slmake.runtimes.guide import decode_constraint
    from slmake.serve.llama_server import free_port, server_args
    from slmake.toolchain import llama_cpp_tool

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--artifact", default="cpu/gguf_q4_k_m")
    ap.add_argument("--requests", type=int, default=12, help="requests per client")
    ap.add_argument("--levels", default="1,4,16")
    ap.add_argument("--stream-levels", default="1,16", help="concurrency levels of the streamed requests")
    ap.add_argument("--rounds", type=int, default=3, help="repeats of every level (the median is reported)")
    ap.add_argument("--slots", type=int, default=4, help="llama-server's parallel slots (both llama-servers)")
    ap.add_argument("--out", default="reports/serve_load.json", help="results for the cost table ('' = none)")
    ap.add_argument("--engine-cores", default="", help="comma-separated cores for every llama-server (one thread "
                    "each); the fronts and the clients get the others (default: all share every core)")
    ap.add_argument("--then", default="", help="the src folder of an earlier slmake (a git worktree at an old "
                    "commit): its `slmake serve`, same artifact and threads, joins the servers compared")
    ap.add_argument("--request-log", action="store_true", help="slmake's servers write their request log "
                    "(slmake serve's default; PII and names scrubbed), each to a temporary file")
    args = ap.parse_args()
    engine_cores = {int(c) for c in args.engine_cores.split(",") if c}
    others = set(os.sched_getaffinity(0)) - engine_cores
    if engine_cores and (not others or not engine_cores <= set(os.sched_getaffinity(0))):
        raise SystemExit(f"--engine-cores {args.engine_cores}: must be some, not all, of this process's cores "
                         f"{sorted(os.sched_getaffinity(0))}")
    if engine_cores:
        os.sched_setaffinity(0, others)   # the clients
    pkg = Path("build/deploy") / args.artifact
    contract = json.loads((pkg / "serve.json").read_text())
    before, after = contract["prompt_template"].split("{instruction}")
    splits = ("train", "val", "test") if args.request_log else ("test",)   # a log: every ticket new, as live
    prompts = [json.loads(line)["prompt"] for split in splits
               for line in Path(f"build/data/{split}.jsonl").read_text().splitlines()]
    raws = [p[len(before):len(p) - len(after)] for p in prompts]
    budget = contract["max_new_tokens"]
    threads = len(engine_cores) if engine_cores else resolve_threads(contract["threads"])
    levels = [int(x) for x in args.levels.split(",")]
    stream_levels = [int(x) for x in args.stream_levels.split(",") if x]
    binary = llama_cpp_tool("llama-server")
    if binary is None:
        raise SystemExit("llama-server is not built (requirements/llama_cpp.sh)")
    gbnf, _ = decode_constraint(contract.get("constrained"), contract.get("response_schema"),
                                contract.get("response_format", "json"))
    grammar = Path(tempfile.mkdtemp()) / "answer.gbnf"
    grammar.write_text(gbnf or "")
    raw_bodies = [{"prompt": r, "max_tokens": budget} for r in raws]

    def bare(port: int) -> list[str]:
        return [str(binary), *server_args(pkg / contract["artifact"]["path"], port=port, slots=args.slots,
                                          threads=threads, max_tokens=budget,
                                          max_prompt_tokens=contract["max_prompt_tokens"]),
                *(["--grammar-file", str(grammar)] if gbnf else [])]

    logs = Path(tempfile.mkdtemp(prefix="serve-load-logs-"))
    log_of = {}   # server name: its request log (--request-log)

    def log_for(name: str) -> str:
        """``--request-log``'s value for server ``name``: a file of its own, or '' (no log)."""
        if not args.request_log:
            return ""
        log_of[name] = logs / f"{len(log_of)}.jsonl"
        return str(log_of[name])

    def slmake(name: str, engine: str, *extra: str):
        log = log_for(name)
        return lambda port: [sys.executable, "-m", "slmake.cli", "serve", args.artifact, "--request-log", log,
                             "--engine", engine, "--slots", str(args.slots), "--threads", str(threads),
                             "--port", str(port), *extra]

    new, old, bare_name = "slmake serve (llama-server engine)", "slmake serve (in-process engine)", "llama-server (bare)"
    quiet = "slmake serve --no-confidence (llama-server engine)"
    servers = {   # name: (command for a port, health path, request bodies)
        bare_name: (bare, "/health", [{"prompt": p, "max_tokens": budget} for p in prompts]),
        new: (slmake(new, "llama_server"), "/health", raw_bodies),
        quiet: (slmake(quiet, "llama_server", "--no-confidence"), "/health", raw_bodies),
        old: (slmake(old, "in_process"), "/health", raw_bodies),
    }
    then = ""
    env_of = {}   # server name: its environment (the earlier slmake's source first on the path)
    if args.then:
        src = Path(args.then).resolve()
        rev = subprocess.run(["git", "-C", str(src), "rev-parse", "--short=7", "HEAD"], capture_output=True,
                             text=True).stdout.strip() or src.name
        then = f"slmake serve at {rev}"
        then_log = log_for(then)   # (that day's CLI has no --engine/--slots: it served in process)
        servers[then] = (lambda port: [sys.executable, "-m", "slmake.cli", "serve", args.artifact, "--request-log",
                                       then_log, "--threads", str(threads), "--port", str(port)],
                         "/health", raw_bodies)
        env_of[then] = {**os.environ, "PYTHONPATH": str(src)}
    lag = {}   # server name: seconds its log's writer went on after the level's last answer (median round)

    def caught_up(name: str, requests: int) -> None:
        """Wait until ``name``'s request log holds ``requests`` lines: a writer still busy with the last
        level's lines would otherwise take CPU from the next server's measurement."""
        if name not in log_of:
            return
        t0 = time.perf_counter()
        while (sum(1 for _ in open(log_of[name])) if log_of[name].exists() else 0) < requests:
            if time.perf_counter() - t0 > 300:
                raise SystemExit(f"{name}: its request log has fewer than {requests} lines after 300 s")
            time.sleep(0.02)
        lag.setdefault(name, []).append(time.perf_counter() - t0)
    # all four up at once (idle ones use no CPU), the levels interleaved across them and repeated
    # --rounds times, each figure the median round: the box's other load then weighs on all four alike
    up, runs, sent = {}, {}, {}
    try:
        for name, (cmd, health, _) in servers.items():
            port = free_port()
            # pinned: the engines on engine_cores (the in-process engine whole: its front is its process),
            # slmake's fronts on the others, their llama-server children moved to engine_cores
            whole = name in (bare_name, old, then)
            up[name] = (start(cmd(port), port, health, (engine_cores if whole else others) if engine_cores else None,
                              env_of.get(name)),
                        f"http://127.0.0.1:{port}/v1/completions")
            if engine_cores and not whole and pin_engines(up[name][0].pid, engine_cores) != 1:
                raise SystemExit(f"{name}: no llama-server child to move to cores {args.engine_cores}")
            run_level(up[name][1], servers[name][2], 1, 2)   # warm-up
            sent[name] = 2
            caught_up(name, 2)
        for rnd in range(args.rounds):
            for c in levels:
                for name, (_, url) in up.items():
                    r = run_level(url, servers[name][2], c, args.requests, sent.get(name, 0))
                    sent[name] = sent.get(name, 0) + c * args.requests   # the next level goes on to new prompts
                    caught_up(name, sent[name])
                    runs.setdefault((name, c), []).append(r)
                    print(f"round {rnd + 1} {name:<36} c={c:<3} {r['rps']:7.1f} req/s  p50 {r['p50']:7.1f} ms  "
                          f"p95 {r['p95']:7.1f} ms  p99 {r['p99']:7.1f} ms  errors {r['errors']}", flush=True)
        streaming = {}   # time to the first streamed piece vs the whole answer, slmake's default engine
        for c in stream_levels:
            streaming[c] = r = stream_level(up[new][1], raw_bodies, c, args.requests)
            print(f"stream {new} c={c:<3} first piece p50 {r['ttft_p50']:7.1f} ms  whole answer p50 "
                  f"{r['whole_p50']:7.1f} ms  errors {r['errors']}", flush=True)
    finally:
        for proc, _ in up.values():
            proc.terminate()
            proc.wait(timeout=30)
        shutil.rmtree(logs, ignore_errors=True)
    table = {key: sorted(rs, key=lambda r: r["rps"])[len(rs) // 2] for key, rs in runs.items()}
    table = {(name, c): table[(name, c)] for name in servers for c in levels}
    if args.out:
        from slmake.io import write_json_atomic

        write_json_atomic(args.out, {"results": [
            {"artifact": args.artifact, "server": name, "concurrency": c, "requests_per_s": round(r["rps"], 2),
             "p50_ms": round(r["p50"], 1), "p95_ms": round(r["p95"], 1), "p99_ms": round(r["p99"], 1),
             "errors": r["errors"], "vs_bare": round(r["rps"] / table[(bare_name, c)]["rps"], 3)}
            for (name, c), r in table.items() if name == new]})
    results = [{"server": name, "concurrency": c, "req/s": round(r["rps"], 1), "p50 ms": round(r["p50"], 1),
                "p95 ms": round(r["p95"], 1), "p99 ms": round(r["p99"], 1), "errors": r["errors"],
                "req/s vs bare llama-server": round(r["rps"] / table[(bare_name, c)]["rps"], 2),
                "req/s vs in-process": round(r["rps"] / table[(old, c)]["rps"], 2),
                **({f"req/s vs {then}": round(r["rps"] / table[(then, c)]["rps"], 2)} if then else {})}
               for (name, c), r in table.items()]
    record("serve_load", {"artifact": args.artifact, "threads": threads, "engine cores": args.engine_cores or "all",
                          "request log": "on (scrubbed, names by NER)" if args.request_log else "off",
                          "slots": args.slots, "max tokens": budget,
                          "requests per client": args.requests, "rounds (median)": args.rounds, "results": results,
                          **({"request log catching up after a level, median s": {
                              name: round(statistics.median(v), 2) for name, v in lag.items()}} if lag else {}),
                          "streamed (slmake serve, llama-server engine)": [
                              {"concurrency": c, "first piece p50 ms": round(r["ttft_p50"], 1),
                               "whole answer p50 ms": round(r["whole_p50"], 1), "errors": r["errors"]}
                              for c, r in streaming.items()],
                          "goal": ">= 0.95x bare llama-server at every level (like for like: --no-confidence), "
                                  ">= 2x the req/s at 16 of slmake serve when the goal was set (--then)"},
           variant=args.artifact + (f"-engine-cores-{len(engine_cores)}" if engine_cores else "")
           + ("-request-log" if args.request_log else ""),
           title="Serving: slmake serve (llama-server engine) vs bare llama-server and the in-process engine"
                 + (f", the engines on {len(engine_cores)} core(s) of their own" if engine_cores else "")
                 + (", slmake writing its request log" if args.request_log else ""),
           notes=(f"{args.artifact}, {threads} runtime threads, {args.slots} slots, {budget}-token budget, grammar on "
                  f"for all {len(servers)}, closed-loop clients x {args.requests} requests each on loopback, the levels "
                  f"interleaved across the {len(servers)} servers, median of {args.rounds} rounds; "
                  + (f"'{then}' is `slmake serve` as it was at that commit (its source on PYTHONPATH, this "
                     "environment, the same package and threads; one request at a time in process). " if then else "")
                  + (f"every engine on core(s) {args.engine_cores} (the in-process server whole), slmake's fronts "
                     "and the clients (one asyncio loop) on the others. " if engine_cores else
                     "the clients (one asyncio loop) share the cores with the servers. ")
                  + "Bare llama-server runs with the child's exact arguments and gets the "
                  "rendered prompt; slmake's front adds the template, tokenizer, per-request grammar and validation, "
                  "and by default asks for each token's probability (the label's confidence), which "
                  "--no-confidence turns off."
                  + (" slmake's servers write the request log (`slmake serve`'s default: every line PII-scrubbed, "
                     "person names by spaCy's NER model), bare llama-server none; the prompts of every split, "
                     f"{len(prompts)}, each level going on to new ones." if args.request_log else "")))
    print(f"\n{args.artifact}, {threads} threads, {args.slots} slots, {budget} max tokens, "
          f"{args.requests} requests per client\n")
    print("| " + " | ".join(results[0]) + " |")
    print("|" + "---|" * len(results[0]))
    for row in results:
        print("| " + " | ".join(str(v) for v in row.values()) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
