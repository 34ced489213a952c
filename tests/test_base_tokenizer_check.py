"""The base stage's tokenizer check on GGUF imports, on the case users hit: a SentencePiece-family
GGUF (Gemma-style here, built by llama.cpp's converter from a tokenizer trained here).

transformers 5.5's own reading of such a GGUF (a Unigram over BPE scores, no BOS) disagreed with
llama.cpp on every curated text; the rebuilt tokenizer agrees on all of them, and the check turns
a disagreement into an error that names the file, the tokenizer type, the count and the example.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("llama_cpp")
from slmake import base_model, gguf_tokenizer

ROOT = Path(__file__).resolve().parents[1]
CONVERTER = Path(sys.prefix) / "share/slmake/llama.cpp/convert_hf_to_gguf.py"
pytestmark = [pytest.mark.e2e, pytest.mark.skipif(not CONVERTER.is_file(), reason=f"{CONVERTER} missing")]
TICKETS = [json.loads(line) for line in (ROOT / "data/it_tickets/tickets.jsonl").read_text().splitlines()[:60]]


@pytest.fixture(scope="module")
def gemma_gguf(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny Gemma 2 GGUF in its own folder, and a curated-data folder."""
    from transformers import Gemma2Config

    root = tmp_path_factory.mktemp("gemma")
    hf, out, data = root / "hf", root / "gguf", root / "data"
    for d in (hf, out, data):
        d.mkdir()
    rows = [{"prompt": f"### Ticket\n{t['ticket']}\n### Triage\n", "response": t["response"]} for t in TICKETS]
    base_model.train_tokenizer([r["prompt"] for r in rows] + [r["response"] for r in rows], 400, hf,
                               add_dummy_prefix=False, pad_id=0, eos_id=1, bos_id=2, unk_id=3, pad_piece="<pad>",
                               eos_piece="<eos>", bos_piece="<bos>", unk_piece="<unk>")
    (hf / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "GemmaTokenizer", "add_bos_token": True, "bos_token": "<bos>", "eos_token": "<eos>",
        "unk_token": "<unk>", "pad_token": "<pad>"}))
    import torch
    from transformers import Gemma2ForCausalLM

    torch.manual_seed(0)
    Gemma2ForCausalLM(Gemma2Config(vocab_size=400, hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                                   num_attention_heads=2, num_key_value_heads=1, head_dim=32, query_pre_attn_scalar=32,
                                   max_position_embeddings=512)).save_pretrained(hf)
    r = subprocess.run([sys.executable, str(CONVERTER), str(hf), "--outtype", "f32", "--outfile", str(out / "m.gguf")],
                       capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, check=False)
    assert r.returncode == 0, r.stderr[-2000:]
    (data / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return out / "m.gguf", data


def _texts(data: Path) -> list[str]:
    rows = [json.loads(line) for line in (data / "train.jsonl").read_text().splitlines()]
    return [r[k] for r in rows for k in ("prompt", "response")]


def test_transformers_own_reading_is_refused_with_a_clear_error(gemma_gguf):
    from transformers import AutoTokenizer

    gguf, data = gemma_gguf
    theirs = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    result = gguf_tokenizer.agreement(theirs, gguf, _texts(data))
    assert result["agree"] == 0 and result["texts"] == 120   # the user's "204 of 204"
    assert result["first_difference"]["llama_cpp"][0] == 2 != result["first_difference"]["hf"][0]  # no BOS
    with pytest.raises(gguf_tokenizer.TokenizerError) as e:
        gguf_tokenizer.require_agreement(theirs, gguf, _texts(data), "build/data/*.jsonl")
    msg = str(e.value)
    for part in (str(gguf), "llama/default", "120 of 120 texts", "build/data/*.jsonl", "### Ticket", "'<bos>'"):
        assert part in msg, (part, msg)


def test_rebuilt_tokenizer_agrees_and_the_base_check_records_it(gemma_gguf, tmp_path):
    gguf, data = gemma_gguf
    tok = gguf_tokenizer.from_gguf(gguf, tmp_path)
    tok.save_pretrained(str(tmp_path))
    assert (tmp_path / "tokenizer.model").is_file()          # for llama.cpp's converter at export
    cfg = {"source": "hf", "hf": {"path": str(gguf.parent), "gguf_file": gguf.name}}
    check = base_model.check_gguf_tokenizer(cfg, tmp_path, data)
    assert check["agreement"] == 1.0 and check["texts"] == 120 and check["tokenizer"] == "llama/default"
    loaded = base_model.load_tokenizer(tmp_path)
    assert loaded("x y")["input_ids"][0] == loaded.bos_token_id == 2 and loaded.eos_token == "<eos>"
    assert len(loaded) == 400


def test_base_check_stops_on_a_broken_tokenizer(gemma_gguf, tmp_path):
    from transformers import AutoTokenizer

    gguf, data = gemma_gguf
    AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name).save_pretrained(str(tmp_path))
    cfg = {"source": "hf", "hf": {"path": str(gguf.parent), "gguf_file": gguf.name}}
    with pytest.raises(base_model.BaseModelError, match=r"disagrees with llama.cpp's tokenizer .* on 120 of 120"):
        base_model.check_gguf_tokenizer(cfg, tmp_path, data)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(base_model.BaseModelError, match="no curated prompts"):
        base_model.check_gguf_tokenizer(cfg, tmp_path, empty)
    assert base_model.check_gguf_tokenizer({"source": "scratch"}, tmp_path, data) is None


def test_base_stage_records_the_agreement(gemma_gguf, tmp_path):
    """stages/base.py on the GGUF: build/base/slmake_base.json carries the check's figure."""
    gguf, data = gemma_gguf
    slmake = Path(sys.executable).parent / "slmake"
    r = subprocess.run([str(slmake), "check", "model=hf_local", f"model.hf.path={gguf.parent}",
                        f"model.hf.gguf_file={gguf.name}", "--write", str(tmp_path / "params.yaml")],
                       cwd=ROOT, capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr[-2000:]
    (tmp_path / "build").mkdir()
    (tmp_path / "build/data").symlink_to(data)
    r = subprocess.run([sys.executable, str(ROOT / "stages/base.py")], cwd=tmp_path, capture_output=True, text=True,
                       env={**os.environ, "OMP_NUM_THREADS": "1"}, check=False)
    assert r.returncode == 0, r.stderr[-3000:]
    info = json.loads((tmp_path / "build/base/slmake_base.json").read_text())
    assert info["tokenizer_check"] == {"tokenizer": "llama/default", "texts": 120, "agree": 120, "agreement": 1.0,
                                       "first_difference": None}
