"""Scratch pretraining runs for any step count: torch's OneCycleLR divided by zero at steps=10."""

import pytest


class _Tok:
    eos_token_id = 1

    def __call__(self, text):
        return {"input_ids": [2 + (ord(c) % 30) for c in text]}


@pytest.mark.parametrize("steps", [1, 2, 3, 10, 20])
def test_pretrain_runs_for_short_budgets(steps):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from slmake.base_model import pretrain

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=40, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64))
    stats = pretrain(model, _Tok(), ["a short document"] * 20, {"steps": steps, "batch_size": 2, "block_size": 8,
                                                                 "lr": 1e-3, "threads": 1}, seed=0)
    assert stats["pretrain_steps"] == steps and stats["pretrain_loss"] > 0
