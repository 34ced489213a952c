"""Evaluate the base and the fine-tuned fp32 models on the test split.

The fine-tuned model's greedy outputs (token ids and text) become the reference every compiled
artifact is compared with: parity = share of prompts whose greedy output is identical.
"""

from __future__ import annotations

from pathlib import Path

from tqdm import tqdm

from .io import evenly_spaced, read_jsonl
from .metrics import score
from .runtimes.hf import HFRunner


def test_rows(splits: Path, limit: int | None) -> list[dict]:
    """The test split, or ``limit`` rows spread evenly over it."""
    return evenly_spaced(read_jsonl(splits / "test.jsonl"), limit)


def encode_prompts(tokenizer, rows: list[dict]) -> list[list[int]]:
    """Token ids with BOS, exactly as training saw the prompt."""
    return [tokenizer(r["prompt"])["input_ids"] for r in rows]


def batches(prompts: list[list[int]], batch_size: int) -> list[list[int]]:
    """Prompt indices grouped into batches of similar length (little padding). The grouping
    depends on the prompts and ``batch_size`` only -- never on threads or timing -- so the
    reference outputs are the same on every run."""
    order = sorted(range(len(prompts)), key=lambda i: (len(prompts[i]), i))
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def generate_all(runner, prompts: list[list[int]], max_new_tokens: int, desc: str,
                 batch_size: int = 1) -> list[list[int]]:
    out: list[list[int]] = [[] for _ in prompts]
    with tqdm(total=len(prompts), desc=desc, unit="prompt", mininterval=2) as bar:
        for idx in batches(prompts, batch_size):
            for i, toks in zip(idx, runner.generate_batch([prompts[i] for i in idx], max_new_tokens)):
                out[i] = toks
            bar.update(len(idx))
    return out


def evaluate_model(folder: Path, tokenizer, rows: list[dict], prompts: list[list[int]],
                   max_new_tokens: int, response_schema: dict, desc: str, threads: int | None = None,
                   batch_size: int = 1):
    runner = HFRunner(folder, threads=threads)
    try:
        tokens = generate_all(runner, prompts, max_new_tokens, desc, batch_size)
    finally:
        runner.close()
    texts = [tokenizer.decode(t, skip_special_tokens=True) for t in tokens]
    metrics = score(texts, [r["response"] for r in rows], response_schema)
    return metrics, tokens, texts
