"""evaluate's batched greedy generation: the same tokens as the one-prompt loop bench and serve use,
rows that end early leave the batch, and the batch grouping depends on the prompts only."""

from __future__ import annotations

import random

import pytest

from slmake.evaluate import batches, generate_all
from slmake.runtimes.hf import HFRunner


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                      bos_token_id=1, eos_token_id=2, pad_token_id=0)
    folder = tmp_path_factory.mktemp("tiny")
    LlamaForCausalLM(cfg).save_pretrained(str(folder))
    return folder


def _prompts(n: int, seed: int = 0) -> list[list[int]]:
    rng = random.Random(seed)
    return [[1] + [rng.randrange(3, 96) for _ in range(rng.randrange(2, 20))] for _ in range(n)]


def test_batches_group_by_length_and_cover_every_prompt():
    prompts = _prompts(23)
    got = batches(prompts, 5)
    assert [len(b) for b in got] == [5, 5, 5, 5, 3]
    assert sorted(i for b in got for i in b) == list(range(23))
    lengths = [len(prompts[i]) for b in got for i in b]
    assert lengths == sorted(lengths)
    assert batches(prompts, 5) == got  # no hidden state: same prompts, same grouping


def test_batched_tokens_equal_one_prompt_loop(tiny_model):
    runner = HFRunner(tiny_model)
    prompts = _prompts(12)
    single = [runner.generate(p, 10).tokens for p in prompts]
    # an EOS that some prompts reach mid-way and others never: rows leave the batch at different steps
    counts = {}
    for toks in single:
        for t in set(toks[2:]):
            counts[t] = counts.get(t, 0) + 1
    eos = min(counts, key=lambda t: (abs(counts[t] - len(prompts) / 2), t))
    runner.eos = {eos}
    single = [runner.generate(p, 10).tokens for p in prompts]
    assert any(len(t) < 10 for t in single) and any(len(t) == 10 for t in single)
    batched = generate_all(runner, prompts, 10, "test", batch_size=5)
    assert batched == single
    assert generate_all(runner, prompts, 10, "test", batch_size=5) == batched  # run to run
    runner.close()
