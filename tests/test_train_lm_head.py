"""The train stage's LM head scores only the completion's positions on CPU (train.completion_positions_only):
same loss and gradients as TRL's every-position path, on far fewer rows."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
trl_utils = pytest.importorskip("trl.trainer.utils")

from slmake.train import completion_positions_only  # noqa: E402


def _tiny_model():
    from transformers import LlamaConfig, LlamaForCausalLM
    from trl.trainer.utils import add_fused_lm_head

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
    model = LlamaForCausalLM(cfg).float()
    add_fused_lm_head(model, outputs=("log_probs", "entropy", "is_top1"))
    return model


def _batch():
    torch.manual_seed(1)
    ids = torch.randint(0, 96, (3, 12))
    labels = ids.clone()
    labels[:, :8] = -100  # the prompt
    labels[2, 10:] = -100  # padding after a shorter completion
    return ids, labels


def _loss_and_rows(model, monkeypatch):
    rows = []
    original = trl_utils._ChunkedLogProbFunction.apply

    def recording(hidden, *args):
        rows.append(hidden.shape[0])
        return original(hidden, *args)

    monkeypatch.setattr(trl_utils._ChunkedLogProbFunction, "apply", recording)
    model.zero_grad()
    ids, labels = _batch()
    out = model(input_ids=ids, labels=labels, fused_lm_head=True)
    out.loss.backward()
    grads = [p.grad.clone() for p in model.parameters()]
    monkeypatch.setattr(trl_utils._ChunkedLogProbFunction, "apply", original)
    return out.loss.detach(), rows, grads


def test_only_labelled_positions_reach_the_lm_head_with_the_same_loss_and_gradients(monkeypatch):
    model = _tiny_model()
    full_loss, full_rows, full_grads = _loss_and_rows(model, monkeypatch)
    with completion_positions_only():
        loss, rows, grads = _loss_and_rows(model, monkeypatch)
    _, labels = _batch()
    assert full_rows == [3 * 11]  # every shifted position
    assert rows == [int((labels[:, 1:] != -100).sum())] == [10]
    assert torch.allclose(loss, full_loss, atol=1e-6)
    for g, fg in zip(grads, full_grads, strict=True):
        assert torch.allclose(g, fg, atol=1e-6)


def test_the_hook_is_restored_and_leaves_other_devices_alone():
    original = trl_utils._use_triton
    with completion_positions_only():
        assert trl_utils._use_triton(torch.device("cpu"))
        assert trl_utils._use_triton(torch.device("meta")) == original(torch.device("meta"))
    assert trl_utils._use_triton is original
    with pytest.raises(RuntimeError), completion_positions_only():
        raise RuntimeError("a failed step")
    assert trl_utils._use_triton is original


def test_the_logits_tile_is_no_wider_than_the_vocabulary_with_the_same_loss_and_gradients(monkeypatch):
    widths = []
    original_empty = torch.empty

    def recording_empty(*size, **kw):
        if kw.get("dtype") == torch.float32 and len(size) == 1 and len(size[0]) == 2:
            widths.append(size[0][1])
        return original_empty(*size, **kw)

    model = _tiny_model()
    with completion_positions_only():
        wide_loss, _, wide_grads = _loss_and_rows(model, monkeypatch)
    monkeypatch.setattr(torch, "empty", recording_empty)
    with completion_positions_only(vocab_size=96):
        loss, _, grads = _loss_and_rows(model, monkeypatch)
    monkeypatch.setattr(torch, "empty", original_empty)
    assert widths == [96, 96]  # the forward's tile and the backward's
    assert trl_utils._CHUNKED_LOGPROB_CHUNK_SIZE == 32768  # restored
    assert torch.equal(loss, wide_loss)  # one chunk either way: the same sums, bit for bit
    for g, wg in zip(grads, wide_grads, strict=True):
        assert torch.equal(g, wg)
