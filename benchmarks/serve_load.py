"""Load test: `slmake serve` against llama.cpp's own server (llama-cpp-python's) on the same GGUF.

Closed-loop clients (each sends its next request when the previous one answered) at concurrency
1, 4 and 16, a bounded number of requests each, on loopback. Prints requests/s, p50/p95/p99
latency and errors per server and concurrency, and the ratio slmake / bare. slmake runs twice:
with the response-schema grammar (its default) and without, so constrained decoding's cost is
reported separately. The bare server gets the prompt already rendered with the training template,
greedy settings (temperature 0, repeat penalty 1) and the same token budget and threads.

    python benchmarks/serve_load.py [--artifact cpu/gguf_q4_k_m] [--requests 12] [--levels 1,4,16]

It also writes reports/serve_load.json (`--out`): slmake's default server's requests/s per
concurrency, which the report's cost table uses instead of the bench estimate (`cost.load_report`;
rerun the report with `dvc repro -f -s report`).
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from figures import record


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd: list[str], port: int, health: str) -> subprocess.Popen:
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
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


def run_level(url: str, bodies: list[dict], concurrency: int, per_client: int) -> dict:
    def client(i: int) -> list[tuple[float, bool]]:
        out = []
        with httpx.Client(timeout=120) as http:
            for j in range(per_client):
                body = bodies[(i * per_client + j) % len(bodies)]
                t0 = time.perf_counter()
                try:
                    ok = http.post(url, json=body).status_code == 200
                except httpx.HTTPError:
                    ok = False
                out.append((time.perf_counter() - t0, ok))
        return out

    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        results = [r for rs in pool.map(client, range(concurrency)) for r in rs]
    wall = time.perf_counter() - t0
    lat = sorted(s for s, _ in results)
    q = statistics.quantiles(lat, n=100, method="inclusive") if len(lat) > 1 else lat * 99
    return {"requests": len(results), "rps": len(results) / wall, "p50": q[49] * 1000, "p95": q[94] * 1000,
            "p99": q[98] * 1000, "errors": sum(not ok for _, ok in results)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--artifact", default="cpu/gguf_q4_k_m")
    ap.add_argument("--requests", type=int, default=12, help="requests per client")
    ap.add_argument("--levels", default="1,4,16")
    ap.add_argument("--out", default="reports/serve_load.json", help="results for the cost table ('' = none)")
    args = ap.parse_args()
    pkg = Path("build/deploy") / args.artifact
    contract = json.loads((pkg / "serve.json").read_text())
    gguf = pkg / contract["artifact"]["path"]
    before, after = contract["prompt_template"].split("{instruction}")
    prompts = [json.loads(line)["prompt"] for line in Path("build/data/test.jsonl").read_text().splitlines()]
    raws = [p[len(before):len(p) - len(after)] for p in prompts]
    budget, threads = contract["max_new_tokens"], contract["threads"]
    levels = [int(x) for x in args.levels.split(",")]

    servers = {
        "llama.cpp server (bare)": ([sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--n_threads",
                                     str(threads), "--n_threads_batch", str(threads), "--n_ctx", "0"], "/v1/models",
                                    [{"prompt": p, "max_tokens": budget, "temperature": 0, "repeat_penalty": 1.0}
                                     for p in prompts]),
        "slmake serve, no grammar": ([sys.executable, "-m", "slmake.cli", "serve", args.artifact, "--request-log", "",
                                      "--no-schema-enforcement"], "/health",
                                     [{"prompt": r, "max_tokens": budget} for r in raws]),
        "slmake serve, schema grammar": ([sys.executable, "-m", "slmake.cli", "serve", args.artifact,
                                          "--request-log", ""], "/health",
                                         [{"prompt": r, "max_tokens": budget} for r in raws]),
    }
    table = {}
    for name, (cmd, health, bodies) in servers.items():
        port = free_port()
        proc = start(cmd + ["--port", str(port)], port, health)
        try:
            run_level(f"http://127.0.0.1:{port}/v1/completions", bodies, 1, 2)   # warm-up
            for c in levels:
                table[(name, c)] = r = run_level(f"http://127.0.0.1:{port}/v1/completions", bodies, c, args.requests)
                print(f"{name:<30} c={c:<3} {r['rps']:7.1f} req/s  p50 {r['p50']:7.1f} ms  p95 {r['p95']:7.1f} ms  "
                      f"p99 {r['p99']:7.1f} ms  errors {r['errors']}", flush=True)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    bare = "llama.cpp server (bare)"
    if args.out:
        from slmake.io import write_json_atomic

        default = "slmake serve, schema grammar"
        write_json_atomic(args.out, {"results": [
            {"artifact": args.artifact, "server": name, "concurrency": c, "requests_per_s": round(r["rps"], 2),
             "p50_ms": round(r["p50"], 1), "p95_ms": round(r["p95"], 1), "p99_ms": round(r["p99"], 1),
             "errors": r["errors"], "vs_bare": round(r["rps"] / table[(bare, c)]["rps"], 3)}
            for (name, c), r in table.items() if name == default]})
    results = [{"server": name, "concurrency": c, "req/s": round(r["rps"], 1), "p50 ms": round(r["p50"], 1),
                "p95 ms": round(r["p95"], 1), "p99 ms": round(r["p99"], 1), "errors": r["errors"],
                "req/s vs bare": round(r["rps"] / table[(bare, c)]["rps"], 2)}
               for (name, c), r in table.items()]
    record("serve_load", {"artifact": args.artifact, "threads": threads, "max tokens": budget,
                          "requests per client": args.requests, "results": results}, variant=args.artifact)
    print(f"\n{args.artifact}, {threads} threads, {budget} max tokens, {args.requests} requests per client\n")
    print("| server | concurrency | req/s | p50 ms | p95 ms | p99 ms | errors | req/s vs bare |")
    print("|---|---|---|---|---|---|---|---|")
    for (name, c), r in table.items():
        ratio = r["rps"] / table[(bare, c)]["rps"]
        print(f"| {name} | {c} | {r['rps']:.1f} | {r['p50']:.1f} | {r['p95']:.1f} | {r['p99']:.1f} | "
              f"{r['errors']} | {ratio:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
