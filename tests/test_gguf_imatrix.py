"""targets.cpu.gguf.imatrix without running llama.cpp: which types get the importance matrix, what
the calibration text is made of (the train split only), and the spec errors."""

from __future__ import annotations

import json

from slmake.compile import settings_problems
from slmake.targets.cpu import imatrix

BASE = {"gguf": {"quants": ["f16", "q8_0", "q4_k_m"]}, "onnx_genai": {"precisions": []}}


def test_which_types_use_the_importance_matrix():
    # null: below 4 bits only (at 4 bits the train split's matrix lost points on BANKING77); true: every taker
    assert not imatrix.uses_imatrix("q4_k_m", None) and not imatrix.uses_imatrix("iq4_xs", None)
    assert imatrix.uses_imatrix("q4_k_m", True) and imatrix.uses_imatrix("iq4_xs", True)
    assert imatrix.uses_imatrix("iq2_xxs", None) and imatrix.uses_imatrix("q2_k", None) and imatrix.uses_imatrix("q3_k_m", None)
    assert not imatrix.uses_imatrix("q4_0", None) and imatrix.uses_imatrix("q4_0", True)
    for quant in ("q8_0", "f16", "f32", "bf16"):   # llama.cpp ignores it for these
        assert not imatrix.uses_imatrix(quant, None) and not imatrix.uses_imatrix(quant, True)
    assert not any(imatrix.uses_imatrix(q, False) for q in ("q4_k_m", "iq4_xs", "q2_k"))


def test_calibration_text_is_the_first_train_rows_as_trained(tmp_path):
    rows = [{"prompt": f"### Ticket\nmsg {i}\n### Triage\n", "response": f"answer {i}"} for i in range(5)]
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in rows) + "\n" + json.dumps({"text": "no prompt"}) + "\n")
    text, n = imatrix.calibration_text(train, 3)
    assert n == 3 and text == "### Ticket\nmsg 0\n### Triage\nanswer 0\n\n### Ticket\nmsg 1\n### Triage\nanswer 1" \
        "\n\n### Ticket\nmsg 2\n### Triage\nanswer 2\n"
    assert imatrix.calibration_text(train, 100)[1] == 5


def test_spec_errors_name_the_key():
    ok = {**BASE, "gguf": {"quants": ["q4_k_m", "iq4_xs", "iq2_xxs"], "imatrix": {"enabled": None, "max_prompts": 64}}}
    assert settings_problems("cpu", ok) == []
    off = {**BASE, "gguf": {"quants": ["q4_k_m", "iq2_xxs"], "imatrix": {"enabled": False}}}
    [problem] = settings_problems("cpu", off)
    assert "targets.cpu.gguf.imatrix.enabled" in problem and "iq2_xxs" in problem
    bad = {**BASE, "gguf": {"quants": ["q4_k_m"], "imatrix": {"enabled": "yes", "max_prompts": 0, "x": 1}}}
    problems = " ".join(settings_problems("cpu", bad))
    assert "enabled" in problems and "max_prompts" in problems and "x" in problems
