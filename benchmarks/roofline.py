"""llama.cpp decode speed per GGUF quant against the machine's memory-read roofline.

Decoding one token reads every weight once (a tied embedding is the output matrix, so it is read
whole; an untied one contributes one row) plus the KV cache written so far, and at batch size 1 on
a CPU that read is the bound: roofline tok/s = read bandwidth / bytes read per token. Bandwidth is
the best of several timed sums of a 512 MiB float32 array (16x the L3 of the machines we run on)
with torch at the same thread count as llama.cpp; decode is the best of several timed greedy runs
of a fixed token count (EOS ignored) through llama-cpp-python, with the CPU backend slmake loads
(`load_llama_cpp`: the ggml CPU variant is printed, so builds can be compared).

The GGUFs are built with the cpu target's own converter + quantizer from an HF folder (default: the
base stage's import, build/base) into --work, and reused there.

    python benchmarks/roofline.py [--model build/base] [--quants f16,q8_0,q4_k_m] [--threads 1,2]
                                  [--tokens 128] [--json out.json] [--cpu-variants best,haswell]

--cpu-variants reruns everything once per ggml CPU backend (SLMAKE_GGML_CPU; best = ggml's pick):
`haswell` is the AVX2 code the old AVX2-only build ran.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from slmake.runtimes.llamacpp import cpu_variant, load_llama_cpp  # noqa: E402
from slmake.targets.base import BuildContext  # noqa: E402
from slmake.targets.cpu import _gguf  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from figures import record  # noqa: E402

PROMPT = list(range(1000, 1064))   # 64 token ids: the same prompt for every quant


def read_bandwidth(threads: int, mib: int = 512, runs: int = 7) -> float:
    """Bytes/s of the best of `runs` full reads (sums) of a `mib` MiB array."""
    import torch

    torch.set_num_threads(threads)
    x = torch.ones(mib * 2**20 // 4, dtype=torch.float32)
    x.sum()   # fault the pages in
    best = min(_timed(x.sum) for _ in range(runs))
    return x.numel() * 4 / best


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def bytes_per_token(gguf: Path, position: float) -> dict:
    """Weight bytes one decode step reads, and the f16 KV cache bytes at context `position`."""
    from gguf import GGUFReader

    r = GGUFReader(gguf)
    tensors = {t.name: t for t in r.tensors}
    arch = r.fields["general.architecture"].contents()

    def meta(key: str) -> int:
        return int(r.fields[f"{arch}.{key}"].contents())

    weights = sum(int(t.n_bytes) for t in tensors.values())
    if "output.weight" in tensors:   # untied: the token embedding is only gathered, one row per token
        emb = tensors["token_embd.weight"]
        weights -= int(emb.n_bytes) - int(emb.n_bytes) // int(emb.shape[-1])
    head_dim = meta("embedding_length") // meta("attention.head_count")
    kv = meta("block_count") * 2 * meta("attention.head_count_kv") * head_dim * 2 * position
    return {"weights": weights, "kv": int(kv), "total": int(weights + kv)}


def decode_tok_s(gguf: Path, threads: int, tokens: int, runs: int = 3) -> tuple[float, float]:
    """(end-to-end tok/s through llama-cpp-python, llama.cpp's own decode tok/s from its perf
    counters: the same tokens without the Python wrapper's per-token work), best of `runs`."""
    llama_cpp = load_llama_cpp()
    llm = llama_cpp.Llama(str(gguf), n_ctx=len(PROMPT) + tokens + 8, n_threads=threads,
                          n_threads_batch=threads, verbose=False)
    n_vocab = llm.n_vocab()

    def run() -> tuple[float, float]:
        llm.reset()
        llm.eval(PROMPT)
        llama_cpp.llama_perf_context_reset(llm.ctx)
        t0 = time.perf_counter()
        for _ in range(tokens):
            logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(n_vocab,))
            llm.eval([int(logits.argmax())])
        wall = time.perf_counter() - t0
        perf = llama_cpp.llama_perf_context(llm.ctx)
        return tokens / wall, 1000 * perf.n_eval / perf.t_eval_ms

    try:
        run()   # warm-up: page the weights in
        results = [run() for _ in range(runs)]
        return max(r[0] for r in results), max(r[1] for r in results)
    finally:
        llm.close()


def build_ggufs(model: Path, quants: list[str], work: Path) -> dict[str, Path]:
    paths = {q: work / f"gguf_{q}" / "model.gguf" for q in quants}
    missing = [q for q, p in paths.items() if not p.is_file()]
    if missing:
        print(f"building {', '.join(missing)} from {model} into {work} (llama.cpp converter + quantizer)")
        ctx = BuildContext(merged=model, out=work, data=work, logs=work / "logs")
        for art in _gguf(ctx, missing):
            if art.status != "built":
                sys.exit(f"roofline: {art.name}: {art.reason}")
    return paths


def _without(argv: list[str], flags: tuple[str, ...]) -> list[str]:
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a in flags:
            skip = True
        elif not a.startswith(tuple(f"{f}=" for f in flags)):
            out.append(a)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, default=ROOT / "build/base", help="HF safetensors folder")
    ap.add_argument("--quants", default="f16,q8_0,q4_k_m")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "slmake-roofline")
    ap.add_argument("--json", type=Path, help="also write the rows here")
    ap.add_argument("--cpu-variants", help="comma-separated ggml CPU backends to compare (best = ggml's pick)")
    args = ap.parse_args()
    if args.cpu_variants:   # one process per backend: ggml loads one per process
        argv = _without(sys.argv[1:], ("--cpu-variants", "--json"))
        for v in args.cpu_variants.split(","):
            env = {k: x for k, x in os.environ.items() if k != "SLMAKE_GGML_CPU"}
            env.update({} if v == "best" else {"SLMAKE_GGML_CPU": v})
            out = ["--json", str(args.json.with_suffix(f".{v}.json"))] if args.json else []
            subprocess.run([sys.executable, __file__, *argv, *out], env=env, check=True)
        return
    if not (args.model / "config.json").is_file():
        sys.exit(f"roofline: {args.model}: not an HF model folder (no config.json); pass --model")
    work = args.work / args.model.resolve().as_posix().strip("/").replace("/", "_")
    ggufs = build_ggufs(args.model, args.quants.split(","), work)
    threads = [int(t) for t in args.threads.split(",")]
    bandwidth = {t: read_bandwidth(t) for t in threads}
    variant = cpu_variant()
    print(f"llama.cpp CPU backend: {variant}; read bandwidth: "
          + ", ".join(f"{bw / 1e9:.1f} GB/s ({t} thr)" for t, bw in bandwidth.items()))
    print(f"{'quant':8} {'thr':>3} {'MB/token':>9} {'GB/s':>6} {'roofline':>9} {'tok/s':>7} {'% roof':>7} "
          f"{'llama.cpp tok/s':>15} {'% roof':>7}")
    rows = []
    for q, path in ggufs.items():
        per_token = bytes_per_token(path, len(PROMPT) + args.tokens / 2)
        for t in threads:
            measured, inner = decode_tok_s(path, t, args.tokens)
            roof = bandwidth[t] / per_token["total"]
            rows.append({"quant": q, "threads": t, "bytes_per_token": per_token, "bandwidth_Bps": round(bandwidth[t]),
                         "roofline_tok_s": round(roof, 1), "decode_tok_s": round(measured, 1),
                         "pct_roofline": round(100 * measured / roof, 1), "llama_cpp_tok_s": round(inner, 1),
                         "llama_cpp_pct_roofline": round(100 * inner / roof, 1), "cpu_variant": variant})
            print(f"{q:8} {t:>3} {per_token['total'] / 1e6:>9.1f} {bandwidth[t] / 1e9:>6.1f} {roof:>9.1f} "
                  f"{measured:>7.1f} {100 * measured / roof:>6.1f}% {inner:>15.1f} {100 * inner / roof:>6.1f}%")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    quants = [{"quant": r["quant"], "threads": r["threads"],
               "MB read / token": round(r["bytes_per_token"]["total"] / 1e6, 1),
               "roofline tok/s": r["roofline_tok_s"], "decode tok/s": r["decode_tok_s"],
               "% of roofline": r["pct_roofline"], "llama.cpp's own tok/s": r["llama_cpp_tok_s"]}
              for r in rows]
    bw_gbs = {f"{t} threads": round(bw / 1e9, 1) for t, bw in bandwidth.items()}
    record("roofline", {"model": args.model.resolve().name, "cpu variant": variant,
                        "read bandwidth GB/s": bw_gbs, "quants": quants},
           variant=os.environ.get("SLMAKE_GGML_CPU"))   # a pinned ggml CPU variant gets its own record


if __name__ == "__main__":
    main()
