"""Benchmark every artifact of one target, each in its own process.

A child process per artifact gives an honest peak RSS (the parent reads it with wait4) and keeps a
runtime that crashes from taking the others down. Figures: load time, time to first token and request
latency (prompt in, whole answer out: p50 and p95) on the task's own answers, decode tokens/s, peak
RSS, size, task accuracy on the test split, and parity with the fp32 reference (share of prompts with
identical greedy tokens). The validation split is scored the same way (``val_exact_match``, ``val_delta``
with its interval ``val_delta_ci95`` and lower bound ``val_delta_low``): what a search selects on (slmake.selection), the test split's
figures being reported, never selected on.

Decode speed is timed apart from the task's answers, as ``llama-bench``'s tg test does: each speed
prompt generates ``bench.decode_tokens`` tokens with end-of-generation suppressed, so a task whose
answers are one label long still has a decode rate (its answers have no decode interval to time).

What a user compares across experiments (``METRICS``) is kept apart from what describes a run
(status, reason, runtime, threads...): the first goes to a DVC metrics file that ``dvc exp show``
turns into columns, the second to a details file beside it; each artifact's greedy outputs go to
``build/bench/<target>/outputs.jsonl`` so a served answer can be checked against the benchmarked one.

Answers decode as served (``eval.constrained``, runtimes/guide.py): under the response schema's
grammar, the same GBNF serve hands the runtime. Each artifact decodes freely first; an output the
runtime's grammar accepts token by token is what constrained greedy gives, so only the rejected ones
decode again under it. The free figures (``exact_match_free``, ``valid_free``) go to the details.
The request latency is timed under the grammar (what a served request costs); decode tok/s stays
free (a label's grammar ends long before ``decode_tokens``).

Where the answer's label is an enum (``data.label_field``) and the runtime sees its logits, each test
answer's label probability is recorded as serve reports it (``label_p`` in outputs.jsonl,
runtimes/confidence.py), and the details file's ``confidence`` says what ``serve.min_confidence``
would do at a few thresholds: the share of test prompts answered and their accuracy. Reporting
only: nothing selects on the test split.
"""

from __future__ import annotations

import json
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tqdm import tqdm

from . import targets
from .io import evenly_spaced, read_jsonl
from .metrics import exact_hits, free_figures, paired_delta, parity, score
from .process_setup import cores
from .runtimes.confidence import coverage_table, label_probability, label_target
from .runtimes.guide import Guide
from .targets.base import Artifact, Skipped

# the figures `dvc exp show` shows per artifact; everything else is in the details file
METRICS = ("exact_match", "delta", "valid", "parity", "decode_tok_s", "ttft_ms", "request_ms_p50",
           "request_ms_p95", "peak_rss_mb", "size_mb", "val_exact_match", "val_delta", "val_delta_low")
DECODE_TOKENS = 64            # conf/bench's default, for callers that build the bench settings themselves
SIMULATOR_DECODE_TOKENS = 8   # a simulator that takes seconds per token (bench_limit) times this many at most


def split_results(results: dict) -> tuple[dict, dict, dict]:
    """{artifact: figures} -> (metrics, details, outputs): numbers to compare, descriptions, and the
    greedy outputs (popped from the figures)."""
    metrics, details, outputs = {}, {}, {}
    for name, r in results.items():
        r = dict(r)
        if "outputs" in r:
            outputs[name] = r.pop("outputs")
        nums = {k: r[k] for k in METRICS if r.get(k) is not None}
        if nums:
            metrics[name] = nums
        details[name] = {k: v for k, v in r.items() if k not in METRICS}
    return metrics, details, outputs


def bench_target(name: str, compile_dir: Path, reference_dir: Path, bench: dict, max_new_tokens: int,
                 response_schema: dict, grammar: str | None = None, label_field: str | None = None) -> dict:
    """Return {artifact_name: figures} for every artifact the target built (or failed to build).

    Two passes. Accuracy/parity (hundreds of greedy generations) runs several artifacts at once,
    splitting bench.threads between them: one decode stream of a small model barely uses a second
    core (SmolLM2 q8_0: 138 tok/s on 1 thread, ~150 on 2), so on 2 cores two artifacts at 1 thread
    each cut SmolLM2's bench stage from 148 to 111 s, with the same greedy tokens (each output is
    computed whole by one thread). The speed figures then run one artifact at a time with
    bench.threads, on an idle box. ``grammar``: the GBNF answers decode under (guide.decode_constraint),
    None for free decoding. ``label_field``: data.label_field, whose probability each test answer
    records when the schema makes it an enum."""
    listing = json.loads((compile_dir / "artifacts.json").read_text())
    module = targets.load(name)
    probe = module.probe()
    results, jobs = {}, {}
    for entry in listing["artifacts"]:
        art = Artifact.from_dict({k: v for k, v in entry.items() if k not in ("sha256", "size_bytes")})
        if art.status != "built":
            results[art.name] = {"status": "not_built", "reason": art.reason}
            continue
        jobs[art.name] = {"target": name, "artifact": entry, "compile_dir": str(compile_dir),
                          "reference_dir": str(reference_dir), "bench": bench, "max_new_tokens": max_new_tokens,
                          "response_schema": response_schema, "grammar": grammar, "label_field": label_field}
    total = bench["threads"] or cores()
    workers = _memory_workers([job["artifact"]["size_bytes"] for job in jobs.values()], min(len(jobs), total))
    accuracy_bench = {**bench, "threads": max(1, total // workers)}
    with ThreadPoolExecutor(workers) as pool:
        futures = {n: pool.submit(_run_child, {**job, "bench": accuracy_bench, "phase": "accuracy"})
                   for n, job in jobs.items()}
        accuracy = {n: f.result() for n, f in tqdm(futures.items(), desc=f"bench@{name} accuracy", unit="artifact")}
    for n, job in tqdm(jobs.items(), desc=f"bench@{name} speed", unit="artifact"):
        res = accuracy[n]
        if res.get("status") == "ok":
            speed = _run_child({**job, "phase": "speed"})
            if speed.get("status") == "ok":
                rss = max(res.pop("peak_rss_mb", 0), speed.pop("peak_rss_mb", 0))
                res = {**res, **speed, "peak_rss_mb": rss, "accuracy_threads": accuracy_bench["threads"]}
            else:
                res = speed
        res["size_mb"] = round(job["artifact"]["size_bytes"] / 1e6, 3)
        res["hardware_present"] = probe.present
        results[n] = res
    return {a["name"]: results[a["name"]] for a in listing["artifacts"]}   # the listing's order


def available_memory() -> int | None:
    """Bytes the kernel says can be allocated without swapping (MemAvailable), None if unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _memory_workers(sizes: list[int], workers: int) -> int:
    """As many concurrent accuracy runs as the largest artifacts' weights (x1.5 for the runtime's
    buffers and KV cache) fit in free memory: two f16 7B models at once would swap a 24 GB box."""
    free = available_memory()
    if free is None:
        return 1
    biggest = sorted(sizes, reverse=True)
    while workers > 1 and 1.5 * sum(biggest[:workers]) > free:
        workers -= 1
    return max(1, workers)


def _run_child(job: dict) -> dict:
    with tempfile.TemporaryDirectory() as td:
        job_path, out_path = Path(td) / "job.json", Path(td) / "result.json"
        job_path.write_text(json.dumps(job))
        proc = subprocess.Popen([sys.executable, "-m", "slmake.bench", str(job_path), str(out_path)],
                                stderr=subprocess.PIPE, text=True)
        # wait4 gives this child's own rusage: ru_maxrss is its peak RSS in KiB on Linux
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        err = proc.stderr.read() if proc.stderr else ""
        if out_path.exists():
            res = json.loads(out_path.read_text())
            if res.get("status") == "ok":
                res["peak_rss_mb"] = round(usage.ru_maxrss / 1024, 1)
            return res
        tail = " | ".join(err.strip().splitlines()[-3:]) or "no output on stderr"
        how = (f"was killed by {signal.Signals(-proc.returncode).name}" if proc.returncode < 0
               else f"exited {proc.returncode}")
        return {"status": "failed", "reason": f"bench process {how}: {tail}"}


def _worker(job: dict) -> dict:
    """Runs inside the child: load, then job["phase"]: "accuracy" (accuracy/parity over the test
    rows), "speed" (timed repeats) or "all" (both, one load). Decodes with the light `tokenizers`
    library, not transformers, so peak RSS is the runtime's."""
    phase = job.get("phase", "all")
    from tokenizers import Tokenizer

    module = targets.load(job["target"])
    art = Artifact.from_dict({k: v for k, v in job["artifact"].items() if k not in ("sha256", "size_bytes")})
    bench, max_new = job["bench"], job["max_new_tokens"]
    ref_dir = Path(job["reference_dir"])
    limit, speed_prompts, repeats = bench["limit"], bench["speed_prompts"], bench["repeats"]
    decode_tokens = bench.get("decode_tokens", DECODE_TOKENS)
    if art.notes.get("bench_limit"):  # a slow simulator: its target caps the prompts it runs
        cap = art.notes["bench_limit"]
        limit, speed_prompts, repeats = min(limit or cap, cap), 1, 1
        decode_tokens = min(decode_tokens, SIMULATOR_DECODE_TOKENS)
    reference = evenly_spaced(read_jsonl(ref_dir / "reference.jsonl"), limit)
    val_path = ref_dir / "val_reference.jsonl"   # bench.limit spreads the validation split the same way
    val_reference = evenly_spaced(read_jsonl(val_path), limit) if val_path.is_file() else []

    t0 = time.perf_counter()
    try:
        runner = module.open_runner(art, Path(job["compile_dir"]), bench)
    except Skipped as e:
        return {"status": "skipped", "reason": str(e)}
    load_s = time.perf_counter() - t0
    result = {"status": "ok", "runtime": art.runtime}
    guide, served = None, {}
    if job.get("grammar") and getattr(runner, "supports_constraint", False):   # as serve decides
        guide = Guide(job["grammar"], (ref_dir / "tokenizer" / "tokenizer.json").read_text(encoding="utf-8"))
        served = {"constraint": guide}
    result["decode"] = "constrained" if guide is not None else "free"
    try:
        if phase in ("accuracy", "all"):   # only this pass decodes text
            tok = Tokenizer.from_file(str(ref_dir / "tokenizer" / "tokenizer.json"))
            enum, field = label_target(job["response_schema"], job.get("label_field"))
            want = 0 if enum and getattr(runner, "supports_logprobs", False) else None   # the label's probability
            gens, outs, texts, free = _answers(runner, guide, reference, max_new, tok, job["response_schema"], want)
            result.update(free)
            expected = [r["expected"] for r in reference]
            task = score(texts, expected, job["response_schema"])
            ref_texts = [tok.decode(r["tokens"], skip_special_tokens=True) for r in reference]
            hits = exact_hits(texts, expected)
            result.update(paired_delta(hits, exact_hits(ref_texts, expected)))
            probs = [None] * len(gens)
            if want is not None:
                decode = lambda t: tok.decode(t, skip_special_tokens=True)   # noqa: E731
                probs = [_round(label_probability(g.tokens, g.logprobs, decode, field)) for g in gens]
                result["confidence"] = {"label_field": field, "rows": coverage_table(probs, hits),
                                        "method": "label probability = product of the probabilities of the tokens "
                                                  "spelling the label (runtimes/confidence.py); test split"}
            if val_reference:   # the validation split, decoded the same way: what selection reads
                _, _, vtexts, _ = _answers(runner, guide, val_reference, max_new, tok, job["response_schema"])
                vexpected = [r["expected"] for r in val_reference]
                vtask = score(vtexts, vexpected, job["response_schema"])
                vref = [tok.decode(r["tokens"], skip_special_tokens=True) for r in val_reference]
                vdelta = paired_delta(exact_hits(vtexts, vexpected), exact_hits(vref, vexpected))
                result.update({"val_exact_match": vtask["exact_match"], "val_valid": vtask["valid"],
                               "val_n": vtask["n"], "val_delta": vdelta["delta"],
                               "val_delta_ci95": vdelta["delta_ci95"],
                               "val_delta_low": round(vdelta["delta"] - vdelta["delta_ci95"], 4)})
            result.update({
                "parity": parity(outs, [r["tokens"] for r in reference]),
                "exact_match": task["exact_match"],
                "valid": task["valid"],
                "field_accuracy": task.get("field_accuracy", {}),
                "n": task["n"],
                "outputs": [{"id": r.get("id"), "tokens": t, "text": x, "finish_reason": g.finish_reason,
                             **({"label_p": p} if want is not None else {})}
                            for r, t, x, g, p in zip(reference, outs, texts, gens, probs)],
            })
        if phase in ("speed", "all"):
            speed_prompts = [r["prompt_ids"] for r in reference[:speed_prompts]]
            for p in speed_prompts[:1] * bench["warmup"]:
                runner.generate(p, max_new, **served)
            ttfts, requests = [], []
            for p in speed_prompts:   # the task's own answers, decoded as served: what a user waits for
                for _ in range(repeats):
                    g = runner.generate(p, max_new, **served)
                    ttfts.append(g.ttft_s)
                    requests.append(g.ttft_s + g.decode_s)
            result.update({
                "load_s": round(load_s, 4),
                "ttft_ms": round(statistics.median(ttfts) * 1000, 3) if ttfts else None,
                "request_ms_p50": round(statistics.median(requests) * 1000, 3) if requests else None,
                "request_ms_p95": round(_nearest_rank(requests, 0.95) * 1000, 3) if requests else None,
                "request_method": f"prompt in to whole answer out (greedy, max {max_new} new tokens): "
                                  f"{len(speed_prompts)} prompts x {repeats} repeats",
                **decode_speed(runner, speed_prompts, decode_tokens),
                "threads": bench["threads"],
                **getattr(runner, "details", {}),   # what the runtime says about itself (llama.cpp's CPU variant)
            })
    finally:
        runner.close()
    return result


def _round(p: float | None) -> float | None:
    return None if p is None else round(p, 4)


def _answers(runner, guide, reference: list[dict], max_new: int, tok, response_schema: dict,
             logprobs: int | None = None):
    """(generations, their tokens, their texts, free figures) for the reference rows, decoded as served:
    freely, then again under ``guide`` where the runtime's grammar rejects the free answer.
    ``logprobs`` (None: off): the generations carry their tokens' log-probabilities."""
    lp = {} if logprobs is None else {"logprobs": logprobs}
    gens = [runner.generate(r["prompt_ids"], max_new, **lp) for r in reference]
    free = {}
    if guide is not None:
        free_tokens = [g.tokens for g in gens]
        free_texts = [tok.decode(t, skip_special_tokens=True) for t in free_tokens]
        for i, r in enumerate(reference):
            if not _accepts(runner, guide, gens[i], tok):
                gens[i] = runner.generate(r["prompt_ids"], max_new, constraint=guide, **lp)
        free = free_figures(free_texts, [r["expected"] for r in reference], response_schema,
                            [g.tokens for g in gens], free_tokens)
    outs = [g.tokens for g in gens]
    return gens, outs, [tok.decode(t, skip_special_tokens=True) for t in outs], free


def _accepts(runner, guide, gen, tok) -> bool:
    """Whether the runtime's grammar would decode exactly this free output (the runner's own grammar
    engine where it has one, llama.cpp's; llguidance on the same GBNF otherwise)."""
    stopped = gen.finish_reason == "stop"
    if hasattr(runner, "accepts"):
        return runner.accepts(guide, gen.tokens, stopped)
    n_vocab = max(getattr(runner, "n_vocab", 0) or 0, tok.get_vocab_size(with_added_tokens=True))
    return guide.accepts(gen.tokens, stopped, runner.eos, n_vocab)


def decode_speed(runner, prompts: list[list[int]], tokens: int) -> dict:
    """Decode tokens/s as llama-bench's tg test measures it: each prompt generates ``tokens`` tokens
    with end-of-generation suppressed (the runtime's own way: logits of EOS set to -inf), and the
    rate is (tokens - 1) / time after the first token, median over the prompts. Independent of how
    long the task's answers are. A runtime's context can end a run early; the method says so."""
    rates, made = [], []
    for p in prompts:
        g = runner.generate(p, tokens, ignore_eos=True)
        made.append(len(g.tokens))
        if len(g.tokens) > 1 and g.decode_s > 0:
            rates.append((len(g.tokens) - 1) / g.decode_s)
    counts = f"{min(made)}-{max(made)}" if made and min(made) != max(made) else str(made[0] if made else 0)
    return {"decode_tok_s": round(statistics.median(rates), 2) if rates else None,
            "decode_method": f"{counts} generated tokens per prompt (of {tokens} asked), end-of-generation "
                             f"suppressed, median of {len(rates)} prompts"}


def _nearest_rank(values: list[float], q: float) -> float:
    """The q-quantile by the nearest-rank rule: a value that was measured (with 12 samples, p95 is the
    slowest one)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


if __name__ == "__main__":  # the child process
    job_file, out_file = sys.argv[1], sys.argv[2]
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    result = _worker(json.loads(Path(job_file).read_text()))
    Path(out_file).write_text(json.dumps(result))
