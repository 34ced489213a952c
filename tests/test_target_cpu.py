"""The cpu target on a tiny random Llama, built once per module (~25 s).

Checks what a user relies on: every artifact builds; each GGUF is readable by llama.cpp and by an
independent reader (transformers); llama.cpp f16 greedy decoding equals transformers fp32 greedy;
a missing toolchain degrades to status "failed" with a reason; conversion is byte-deterministic.
"""

from __future__ import annotations

import hashlib
import shutil
import sys
from pathlib import Path

import pytest
import yaml

llama_cpp = pytest.importorskip("llama_cpp")
pytest.importorskip("onnxruntime_genai")
from e2e_utils import build_ctx  # noqa: E402
from slmake.targets import cpu  # noqa: E402
from slmake.targets.base import Artifact, Skipped  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
INT4 = yaml.safe_load((ROOT / "conf/targets/cpu.yaml").read_text())["cpu"]["onnx_genai"].get("int4", {})
# imatrix true: q4_k_m and iq4_xs are quantized with an importance matrix from the train split (null, the
# default, keeps the 4-bit types plain: tests/test_gguf_imatrix.py)
SETTINGS = {"gguf": {"quants": ["f16", "q8_0", "q4_k_m", "iq4_xs"], "imatrix": {"enabled": True, "max_prompts": 64}},
            "onnx_genai": {"precisions": ["int4"], "int4": INT4}}
WORDS = "the a cat dog sat on mat ran red blue house tree bank money card transfer my account near".split()
PROMPTS = ["the cat sat on the", "blue house near a tree", "money transfer to my account", "x"]
BENCH = {"threads": 1}
pytestmark = pytest.mark.slow  # builds every cpu artifact of a tiny model once per module (~20 s)
if not (Path(sys.prefix) / "share/slmake/llama.cpp/convert_hf_to_gguf.py").is_file():
    pytest.skip("llama.cpp converter not installed (requirements/llama_cpp.sh)", allow_module_level=True)


def _tiny_llama(root: Path) -> Path:
    import sentencepiece as spm
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, LlamaTokenizerFast

    texts = [" ".join(WORDS[(i * 7 + j * 3) % len(WORDS)] for j in range(10)) for i in range(400)]
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts), model_prefix=str(root / "tokenizer"), vocab_size=300, model_type="bpe",
        remove_extra_whitespaces=False, byte_fallback=True, pad_id=0, unk_id=1, bos_id=2, eos_id=3,
        num_threads=1, minloglevel=2)
    spm_dir, model_dir = root / "spm", root / "merged"
    spm_dir.mkdir()
    shutil.copy(root / "tokenizer.model", spm_dir / "tokenizer.model")
    # transformers 5: LlamaTokenizerFast(vocab_file=...) silently yields a 3-token vocab; from_pretrained
    # on a folder holding tokenizer.model converts the real one.
    tok = LlamaTokenizerFast.from_pretrained(str(spm_dir), legacy=False, add_bos_token=True)
    assert len(tok) == 300
    config = LlamaConfig(vocab_size=len(tok), hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=512,
                         bos_token_id=2, eos_token_id=3, pad_token_id=0, tie_word_embeddings=False)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(str(model_dir))
    tok.save_pretrained(str(model_dir))
    shutil.copy(root / "tokenizer.model", model_dir / "tokenizer.model")
    return model_dir


def _train_split(root: Path) -> Path:
    """A curated-looking train split (prompt + response rows) for the importance matrix."""
    import json

    rows = [{"prompt": f"### Ticket\n{' '.join(WORDS[(i * 5 + j) % len(WORDS)] for j in range(12))}\n### Triage\n",
             "response": WORDS[i % len(WORDS)]} for i in range(200)]
    (root / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    model = _tiny_llama(tmp_path_factory.mktemp("model"))
    out, data = tmp_path_factory.mktemp("cpu"), _train_split(tmp_path_factory.mktemp("data"))
    arts = cpu.compile(build_ctx(model, out, data), SETTINGS)
    return model, out, {a.name: a for a in arts}


def _prompt_ids(model: Path) -> list[list[int]]:
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(model / "tokenizer.model"))
    return [[2] + sp.encode(p) for p in PROMPTS]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_every_artifact_built(built):
    _, out, arts = built
    assert list(arts) == ["gguf_f16", "gguf_q8_0", "gguf_q4_k_m", "gguf_iq4_xs", "onnx_int4"]
    for a in arts.values():
        assert a.status == "built", a.reason
        assert (out / a.path).exists()
    assert arts["gguf_q4_k_m"].notes["tensor_types"].get("q4_k", 0) > 0   # hidden 256: real K-quants
    assert arts["gguf_iq4_xs"].notes["tensor_types"].get("iq4_xs", 0) > 0
    for name in ("gguf_q4_k_m", "gguf_iq4_xs"):   # calibrated on the train split only
        imat = arts[name].notes["imatrix"]
        assert imat["prompts"] == 64 and imat["chunks"] >= 2 and imat["tool"] == "llama-imatrix"
    assert "imatrix" not in arts["gguf_q8_0"].notes
    assert (out / "onnx_int4" / "genai_config.json").is_file()
    assert not list(out.rglob("*.partial"))


def test_gguf_loads_in_llama_cpp_and_transformers(built):
    from transformers import AutoModelForCausalLM

    model, out, arts = built
    ids = _prompt_ids(model)[0]
    for name in ("gguf_f16", "gguf_q8_0", "gguf_q4_k_m", "gguf_iq4_xs"):
        runner = cpu.open_runner(arts[name], out, BENCH)
        try:
            assert runner.generate(ids, 4).tokens
        finally:
            runner.close()
        hf = AutoModelForCausalLM.from_pretrained(str((out / arts[name].path).parent), gguf_file="model.gguf")
        assert hf.config.vocab_size == 300 and hf.config.num_hidden_layers == 2


def test_llama_cpp_greedy_equals_transformers_fp32(built, tmp_path):
    """Exact parity needs an f32 GGUF: on this random model the top logits are ~0.1 apart, and f16
    weights flip one prompt's 8th token. f16 must still agree on every prompt's first tokens."""
    from slmake.runtimes.hf import HFRunner

    model, out, arts = built
    f32 = cpu._convert(build_ctx(model.resolve(), tmp_path), "f32")
    ref = HFRunner(model, threads=1)
    r32, r16 = cpu.open_runner(f32, tmp_path, BENCH), cpu.open_runner(arts["gguf_f16"], out, BENCH)
    try:
        for ids in _prompt_ids(model):
            want = ref.generate(ids, 24).tokens
            got = r32.generate(ids, 24)
            assert got.tokens == want, (ids, got.tokens, want)
            assert r32.generate(ids, 24).tokens == want          # state is reset between prompts
            assert got.ttft_s > 0 and got.decode_s > 0
            assert r16.generate(ids, 24).tokens[:4] == want[:4]
    finally:
        r32.close()
        r16.close()


def test_onnx_int4_generates(built):
    model, out, arts = built
    runner = cpu.open_runner(arts["onnx_int4"], out, {"threads": 1})
    try:
        for ids in _prompt_ids(model):
            g = runner.generate(ids, 12)
            assert 0 < len(g.tokens) <= 12 and all(0 <= t < 300 and t != 3 for t in g.tokens)
    finally:
        runner.close()


def test_onnx_int4_follows_the_int4_settings(built):
    """The default int4 settings reach the quantizer: the builder's options or slmake's scale_min
    record are in the notes, and the LM head has the precision the settings ask for."""
    import onnx

    _, out, arts = built
    notes = arts["onnx_int4"].notes
    chosen = cpu._builder_args(SETTINGS, "int4")   # no base known here: auto is the builder's k_quant
    if "scale_min" in chosen:
        assert notes["int4"]["int4_matmuls"] == 2 * 5 and notes["int4"]["quantized_from"] == "fine-tuned"
    else:
        assert notes.get("builder_options", []) == chosen["options"]
        assert INT4["algorithm"] != "auto" or "algo_config=k_quant" in chosen["options"]
    graph = onnx.load(str(out / "onnx_int4/model.onnx"), load_external_data=False).graph
    head = [n for n in graph.node if n.name.startswith("/lm_head/")]
    bits = {a.name: a.i for n in head for a in n.attribute if a.name == "bits"}
    want = INT4.get("lm_head", "int4")
    if want == "float":
        assert [n.op_type for n in head] == ["MatMul"]
    else:
        assert [n.op_type for n in head] == ["MatMulNBits"] and bits["bits"] == int(want[3:])


def test_scale_min_keeps_a_lora_change_of_the_base(built, tmp_path):
    """With the base model known (build/base), scale_min quantizes the base and carries what a
    LoRA changed at exactly its rank (the numerics: tests/test_ort_scale_min.py), and the artifact
    runs in ONNX Runtime GenAI. Greedy tokens are not compared: on this random model the base's own
    int4 rounding flips them."""
    import torch
    from transformers import AutoModelForCausalLM

    model, _, _ = built
    tuned = tmp_path / "tuned"
    hf = AutoModelForCausalLM.from_pretrained(str(model))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for layer in hf.model.layers:    # a rank-2 change to q and down, as a merged LoRA leaves it
            for lin in (layer.self_attn.q_proj, layer.mlp.down_proj):
                out_f, in_f = lin.weight.shape
                lin.weight += 0.02 * torch.randn(out_f, 2, generator=g) @ torch.randn(2, in_f, generator=g)
    hf.save_pretrained(str(tuned))
    for f in model.glob("tokenizer*"):
        shutil.copy(f, tuned / f.name)
    ctx = build_ctx(tuned, tmp_path / "out")
    ctx.base = model.resolve()
    settings = {"gguf": {"quants": []}, "onnx_genai": {"precisions": ["int4"], "int4": {"algorithm": "scale_min"}}}
    (art,) = cpu.compile(ctx, settings)
    assert art.status == "built", art.reason
    assert art.notes["int4"]["quantized_from"] == "base" and art.notes["int4"]["fine_tune_rank"] == 2 * 2 * 2
    runner = cpu.open_runner(art, tmp_path / "out", BENCH)
    try:
        for ids in _prompt_ids(model):
            g = runner.generate(ids, 8)
            assert 0 < len(g.tokens) <= 8 and all(0 <= t < 300 for t in g.tokens)
    finally:
        runner.close()


def test_missing_toolchains_fail_softly(built, tmp_path, monkeypatch):
    model, out, _ = built
    monkeypatch.setenv(cpu.CONVERTER_ENV, str(tmp_path / "nowhere" / "convert_hf_to_gguf.py"))
    monkeypatch.setitem(sys.modules, "onnxruntime_genai", None)     # find_spec -> None, as if absent
    arts = cpu.compile(build_ctx(model, tmp_path / "a"), SETTINGS)
    assert [a.status for a in arts] == ["failed"] * 5
    assert "llama_cpp.sh" in arts[0].reason and "gguf_f16" in arts[1].reason
    assert "onnxruntime-genai" in arts[4].reason
    with pytest.raises(Skipped):
        cpu.open_runner(arts[0], tmp_path / "a", BENCH)
    # quantizer missing while the converter works: only the quantized types fail
    ctx = build_ctx(model, tmp_path / "b")
    shutil.copytree(out / "gguf_f16", tmp_path / "b" / "gguf_f16")
    f16 = Artifact("gguf_f16", "gguf", "f16", "gguf_f16/model.gguf", "llama.cpp")
    monkeypatch.setitem(sys.modules, "llama_cpp", None)
    q = cpu._quantize(ctx, f16, "q8_0")
    assert q.status == "failed" and "llama-cpp-python" in q.reason
    # no train split to calibrate on: the imatrix types fail and say why, the others still build
    monkeypatch.setitem(sys.modules, "llama_cpp", llama_cpp)
    monkeypatch.delenv(cpu.CONVERTER_ENV)
    arts = cpu.compile(build_ctx(model, tmp_path / "c"), {**SETTINGS, "onnx_genai": {"precisions": []}})
    assert [a.status for a in arts] == ["built", "built", "failed", "failed"]
    assert "importance matrix" in arts[2].reason and "train.jsonl" in arts[2].reason


def test_bad_inputs_raise(tmp_path):
    with pytest.raises(ValueError, match=r"config.json"):
        cpu.compile(build_ctx(tmp_path, tmp_path / "out"), SETTINGS)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="safetensors"):
        cpu.compile(build_ctx(tmp_path, tmp_path / "out"), SETTINGS)


def test_conversion_and_quantization_are_deterministic(built, tmp_path):
    model, out, arts = built
    ctx = build_ctx(model.resolve(), tmp_path)
    again = cpu._convert(ctx, "f16")
    assert _sha(tmp_path / again.path) == _sha(out / arts["gguf_f16"].path)
    q = cpu._quantize(ctx, again, "q8_0")
    assert _sha(tmp_path / q.path) == _sha(out / arts["gguf_q8_0"].path)


def test_imatrix_quantization_is_deterministic_and_calibrated(built, tmp_path, monkeypatch):
    """Same train split -> same importance matrix and quant bytes, at 1 thread as at 2; the matrix
    is what changes the quant (vs the plain quantizer), and the split's text is what it was made of."""
    from slmake.targets.cpu import imatrix

    model, out, arts = built
    (tmp_path / "data").mkdir()
    data = _train_split(tmp_path / "data")
    monkeypatch.setattr(imatrix, "THREADS", 1)
    ctx = build_ctx(model.resolve(), tmp_path / "a", data)
    f16 = Artifact("gguf_f16", "gguf", "f16", "gguf_f16/model.gguf", "llama.cpp")
    shutil.copytree(out / "gguf_f16", tmp_path / "a" / "gguf_f16")
    imat = imatrix.compute(tmp_path / "a" / f16.path, data / "train.jsonl", ctx.logs, 64)
    assert imat[1]["sha256"] == arts["gguf_q4_k_m"].notes["imatrix"]["sha256"]
    q = cpu._quantize(ctx, f16, "q4_k_m", imat)
    assert _sha(tmp_path / "a" / q.path) == _sha(out / arts["gguf_q4_k_m"].path)
    shutil.copytree(out / "gguf_f16", tmp_path / "b" / "gguf_f16")
    plain = cpu._quantize(build_ctx(model.resolve(), tmp_path / "b"), f16, "q4_k_m")
    assert _sha(tmp_path / "b" / plain.path) != _sha(out / arts["gguf_q4_k_m"].path)
    text, n = imatrix.calibration_text(data / "train.jsonl", 3)
    assert n == 3 and text.count("### Triage") == 3


def test_a_scale_min_failure_fails_the_artifact_softly(built, tmp_path, monkeypatch):
    """An error inside the quantizer becomes the artifact's reason (naming it and its log), not a
    traceback that stops the other artifacts."""
    from slmake.targets import ort_scale_min

    def broken(*args, **kwargs):
        raise ValueError("cannot reshape array of size 480 into shape (960,newaxis)")

    monkeypatch.setattr(ort_scale_min, "quantize_folder", broken)
    model, _, _ = built
    settings = {"gguf": {"quants": []}, "onnx_genai": {"precisions": ["int4"], "int4": {"algorithm": "scale_min"}}}
    (art,) = cpu.compile(build_ctx(model, tmp_path / "out"), settings)
    assert art.status == "failed" and "ort_scale_min could not quantize" in art.reason
    assert "ValueError: cannot reshape" in art.reason and "onnx_int4.quantize.log" in art.reason
    assert not (tmp_path / "out" / "onnx_int4").exists()
