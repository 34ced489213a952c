"""Decoding as served (runtimes/guide.py, issue 18.1): eval.constrained's rule, and llguidance's mask in
the greedy loop over a real (tiny, trained here) byte-level BPE tokenizer: the free argmax is kept
whenever the grammar allows it, replaced by the best allowed token otherwise."""

import numpy as np
import pytest

from slmake.checks import check
from slmake.runtimes.base import Greedy
from slmake.runtimes.guide import Guide, decode_constraint
from slmake.runtimes.text_grammar import TextAnswer, text_gbnf

LABELS = ["network", "hardware", "email"]
EOS = 0


@pytest.fixture(scope="module")
def tokenizer_json():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(["network hardware email printer jammed vpn down banana"] * 20, trainer)
    return tok


def _ids(tok, text):
    return tok.encode(text).ids


def test_the_setting_follows_serve_by_default():
    schema = {"type": "string", "enum": LABELS}
    assert decode_constraint(None, schema, "text")[0] == text_gbnf(schema)     # serve enforces it: on
    assert decode_constraint(False, schema, "text") == (None, "eval.constrained: false")
    assert decode_constraint(None, None)[0] is None                           # nothing to constrain to
    gbnf, why = decode_constraint(None, {"type": "string", "pattern": "^(?=a)a$"}, "text")
    assert gbnf is None and "cannot express" in why                         # serve would not either
    with pytest.raises(ValueError, match=r"eval\.constrained: true"):
        decode_constraint(True, {"type": "string", "pattern": "^(?=a)a$"}, "text")
    with pytest.raises(ValueError, match=r"needs data\.response_schema"):
        decode_constraint(True, None)
    problems = check({"eval": {"constrained": True}, "data": {"response_schema": None}}, only=["eval"])
    assert any("eval.constrained: true" in p for p in problems)


def test_the_mask_keeps_an_allowed_argmax_and_replaces_a_rejected_one(tokenizer_json):
    tok = tokenizer_json
    n = tok.get_vocab_size()
    guide = Guide(text_gbnf({"type": "string", "enum": LABELS}), tok.to_str())
    want = _ids(tok, "email")

    # logits that favour "email" token by token: the free greedy path is allowed, so it is kept
    run = Greedy({EOS}, matcher=guide.matcher({EOS}, n))
    for t in [*want, EOS]:
        logits = np.zeros(n, dtype=np.float32)
        logits[t] = 5.0
        if run.step(run.pick(logits)):
            break
    assert run.tokens == want and run.finish == "stop"
    assert guide.accepts(want, True, {EOS}, n) and not guide.accepts(_ids(tok, "banana"), True, {EOS}, n)

    # logits that favour "banana": every pick is the best token the grammar allows instead
    run = Greedy({EOS}, matcher=guide.matcher({EOS}, n))
    banana = _ids(tok, "banana")
    for step in range(10):
        logits = np.zeros(n, dtype=np.float32)
        logits[banana[min(step, len(banana) - 1)]] = 9.0
        logits[EOS] = 1.0                      # end as soon as the grammar allows it
        if run.step(run.pick(logits)):
            break
    assert tok.decode(run.tokens) in LABELS and run.finish == "stop"


def test_the_mask_works_on_torch_logits_and_gbnf_is_llama_cpps(tokenizer_json):
    torch = pytest.importorskip("torch")
    tok = tokenizer_json
    n = tok.get_vocab_size()
    guide = Guide(text_gbnf({"type": "string", "enum": LABELS}), tok.to_str())
    m = guide.matcher({EOS}, n)
    logits = torch.zeros(n)
    logits[_ids(tok, "banana")[0]] = 3.0
    first = m.pick(logits)
    assert any(label.startswith(tok.decode([first])) for label in LABELS)
    pytest.importorskip("llama_cpp")
    from slmake.runtimes.llamacpp import gbnf_for

    assert gbnf_for(TextAnswer({"type": "string", "enum": LABELS})) == guide.gbnf
