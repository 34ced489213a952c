"""Evaluate the base and the fine-tuned fp32 models on the test split, and on the validation split.

The validation figures (``val_exact_match``, ``val_valid``, ``val_n``) are what a search decides on
(slmake.selection); the test split's are reported, never selected on.

The fine-tuned model's greedy outputs (token ids and text) become the reference every compiled
artifact is compared with: parity = share of prompts whose greedy output is identical.

Decoding is as served (``eval.constrained``, runtimes/guide.py): under the response schema's grammar
when serve enforces it. Each model decodes freely first; an output the grammar accepts token by token
is exactly what constrained greedy gives, so only the prompts whose free output it rejects decode
again under the grammar. The free figures (``exact_match_free``, ``valid_free``) come with it.
"""

from __future__ import annotations

from pathlib import Path

from tqdm import tqdm

from .io import evenly_spaced, read_jsonl
from .metrics import free_figures, score
from .runtimes.hf import HFRunner


def test_rows(splits: Path, limit: int | None) -> list[dict]:
    """The test split, or ``limit`` rows spread evenly over it."""
    return evenly_spaced(read_jsonl(splits / "test.jsonl"), limit)


def val_rows(splits: Path, limit: int | None) -> list[dict]:
    """The validation split, or ``limit`` rows spread evenly over it (eval.limit, as for the test
    split); [] when curate wrote none."""
    path = splits / "val.jsonl"
    return evenly_spaced(read_jsonl(path), limit) if path.is_file() else []


def val_figures(metrics: dict) -> dict:
    """A split's metrics as the ``val_`` keys reports/evaluate.json carries beside the test ones."""
    return {"val_exact_match": metrics["exact_match"], "val_valid": metrics["valid"], "val_n": metrics["n"]}


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
                 batch_size: int = 1, constraint=None) -> list[list[int]]:
    out: list[list[int]] = [[] for _ in prompts]
    kw = {"constraint": constraint} if constraint is not None else {}
    with tqdm(total=len(prompts), desc=desc, unit="prompt", mininterval=2) as bar:
        for idx in batches(prompts, batch_size):
            for i, toks in zip(idx, runner.generate_batch([prompts[i] for i in idx], max_new_tokens, **kw)):
                out[i] = toks
            bar.update(len(idx))
    return out


def generate_as_served(runner, prompts: list[list[int]], max_new_tokens: int, desc: str, batch_size: int = 1,
                       guide=None) -> tuple[list[list[int]], list[list[int]]]:
    """(outputs as served, free outputs). With a ``guide`` (guide.Guide), the prompts whose free output
    the grammar rejects are decoded again under it (batched among themselves); without one both
    lists are the free outputs."""
    free = generate_all(runner, prompts, max_new_tokens, desc, batch_size)
    if guide is None:
        return free, free
    # a free output shorter than the budget ended on an end-of-generation token
    redo = [i for i, t in enumerate(free)
            if not guide.accepts(t, len(t) < max_new_tokens, runner.eos, runner.n_vocab)]
    served = list(free)
    if redo:
        again = generate_all(runner, [prompts[i] for i in redo], max_new_tokens, f"{desc} (constrained)",
                             batch_size, constraint=guide)
        for i, toks in zip(redo, again):
            served[i] = toks
    return served, free


def evaluate_model(folder: Path, tokenizer, rows: list[dict], prompts: list[list[int]],
                   max_new_tokens: int, response_schema: dict, desc: str, threads: int | None = None,
                   batch_size: int = 1, guide=None):
    """(metrics, tokens, texts) as served: decoded under ``guide``'s grammar when there is one, with
    the free decode's figures beside (``exact_match_free``, ``valid_free``, ``constrained_changed``:
    share of prompts the grammar changed)."""
    return evaluate_splits(folder, tokenizer, [(rows, prompts, desc)], max_new_tokens, response_schema,
                           threads, batch_size, guide)[0]


def evaluate_splits(folder: Path, tokenizer, splits: list[tuple[list[dict], list[list[int]], str]],
                    max_new_tokens: int, response_schema: dict, threads: int | None = None,
                    batch_size: int = 1, guide=None) -> list[tuple[dict, list, list]]:
    """``evaluate_model`` for each (rows, prompts, desc) split, on one load of the model: each
    split is decoded exactly as alone (greedy, per batch), so sharing the runner changes no byte."""
    runner = HFRunner(folder, threads=threads)
    try:
        decoded = [generate_as_served(runner, prompts, max_new_tokens, desc, batch_size, guide)
                   for _, prompts, desc in splits]
    finally:
        runner.close()
    results = []
    for (rows, _, _), (tokens, free) in zip(splits, decoded):
        texts = [tokenizer.decode(t, skip_special_tokens=True) for t in tokens]
        expected = [r["response"] for r in rows]
        metrics = score(texts, expected, response_schema)
        metrics["constrained"] = guide is not None
        if guide is not None:
            free_texts = [tokenizer.decode(t, skip_special_tokens=True) for t in free]
            metrics.update(free_figures(free_texts, expected, response_schema, tokens, free))
        results.append((metrics, tokens, texts))
    return results
