"""The cuda target on a tiny random Llama, built once per module (~40 s), on a host without a GPU.

Checks: the fp16 safetensors folder is fp16, complete (config, generation config, tokenizer) and
byte-reproducible from any path; the ORT GenAI models are built for the cuda provider; the *_cuda
entries are skipped with a reason and probe() says why; the *_cpu_check entries load the same files
on the CPU: the fp16 folder (upcast to fp32) matches transformers fp32 greedy exactly, ORT fp16 /
int4 parity is computed; bench.py's generic worker handles both kinds of entry.
"""

from __future__ import annotations

import json
import shutil
import sys

import pytest

pytest.importorskip("onnxruntime_genai")
from e2e_utils import BENCH, NEW, build_ctx
from slmake.compile import settings_problems
from slmake.io import sha256_tree
from slmake.metrics import parity
from slmake.targets import cuda, tools
from slmake.targets.base import Skipped

pytestmark = pytest.mark.e2e
SETTINGS = {"hf_fp16": True, "onnx_genai": {"precisions": ["fp16", "int4"]}}


@pytest.fixture(scope="module")
def built(tmp_path_factory, tiny_reference):
    model, ids, want = tiny_reference
    out = tmp_path_factory.mktemp("cuda")
    arts = {a.name: a for a in cuda.compile(build_ctx(model, out), SETTINGS)}
    return model, out, arts, ids, want


def _tokens(art, out, ids):
    runner = cuda.open_runner(art, out, BENCH)
    try:
        return [runner.generate(i, NEW).tokens for i in ids]
    finally:
        runner.close()


def test_every_artifact_built(built):
    _, out, arts, _, _ = built
    assert list(arts) == [f"{a}_{d}" for a in ("hf_fp16", "onnx_fp16", "onnx_int4") for d in ("cuda", "cpu_check")]
    for a in arts.values():
        assert a.status == "built", a.reason
        assert (out / a.path).is_dir()
    for p in ("onnx_fp16", "onnx_int4"):
        cfg = json.loads((out / p / "genai_config.json").read_text())
        assert "cuda" in json.dumps(cfg["model"]["decoder"]["session_options"]["provider_options"])
    assert not list(out.glob("*.partial"))


def test_hf_fp16_folder_is_fp16_complete_and_reproducible(built, tmp_path):
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM

    model, out, _, _, _ = built
    folder = out / "hf_fp16"
    for f in ("config.json", "generation_config.json", "tokenizer.json", "tokenizer.model", "tokenizer_config.json"):
        assert (folder / f).is_file(), f
    config = json.loads((folder / "config.json").read_text())
    assert config["dtype"] == "float16" and "transformers_version" not in config
    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        assert {str(f.get_tensor(k).dtype) for k in f.keys()} == {"torch.float16"}
    import torch
    hf = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float16)
    assert next(hf.parameters()).dtype == torch.float16 and hf.config.num_hidden_layers == 2
    # same bytes when built again, from a copy of the merged model somewhere else
    shutil.copytree(model, tmp_path / "elsewhere")
    again = cuda._hf_fp16(build_ctx(tmp_path / "elsewhere", tmp_path / "out"))
    assert sha256_tree(tmp_path / "out" / again.path) == sha256_tree(folder)


def test_probe_and_cuda_entries_skipped(built):
    _, out, arts, _, _ = built
    p = cuda.probe()
    if p.present:
        pytest.skip(f"this host has a GPU: {p.reason}")
    assert "no CUDA device" in p.reason
    for name in ("hf_fp16_cuda", "onnx_fp16_cuda", "onnx_int4_cuda"):
        with pytest.raises(Skipped) as e:
            cuda.open_runner(arts[name], out, BENCH)
        assert str(e.value).strip()


def test_cpu_checks_parity(built):
    """fp16 weights upcast to fp32 compute reproduce transformers fp32 greedy exactly on this model;
    ORT fp16 and int4 parity is measured (int4 on a random model diverges after a few tokens)."""
    _, out, arts, ids, want = built
    assert _tokens(arts["hf_fp16_cpu_check"], out, ids) == want
    fp16 = _tokens(arts["onnx_fp16_cpu_check"], out, ids)
    assert [t[:4] for t in fp16] == [t[:4] for t in want]
    int4 = _tokens(arts["onnx_int4_cpu_check"], out, ids)
    assert all(0 < len(t) <= NEW and all(0 <= x < 320 and x != 3 for x in t) for t in int4)
    print(f"parity vs transformers fp32: onnx_fp16 {parity(fp16, want)}, onnx_int4 {parity(int4, want)}")


def test_invalid_builder_graph_is_a_failed_artifact(built, tmp_path):
    """onnxruntime-genai 0.18 exits 0 on -p fp32 -e cuda but writes a graph ORT cannot load."""
    art = tools.build_ort_genai(build_ctx(built[0], tmp_path), "fp32", "cuda")
    if art.status == "failed":
        assert "produced by no node" in art.reason and not (tmp_path / "onnx_fp32").exists()


def test_bench_worker_runs_entries(built, tmp_path):
    from slmake.bench import _worker

    model, out, arts, ids, want = built
    (tmp_path / "tokenizer").mkdir()
    for f in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model"):
        (tmp_path / "tokenizer" / f).write_bytes((model / f).read_bytes())
    rows = [{"prompt_ids": i, "tokens": t, "expected": "x"} for i, t in zip(ids, want)]
    (tmp_path / "reference.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    job = {"target": "cuda", "compile_dir": str(out), "reference_dir": str(tmp_path), "bench": BENCH,
           "max_new_tokens": NEW, "response_schema": {"type": "string"}}
    res = _worker({**job, "artifact": arts["hf_fp16_cpu_check"].to_dict()})
    assert res["status"] == "ok" and res["parity"] == 1.0, res
    if not cuda.probe().present:
        res = _worker({**job, "artifact": arts["hf_fp16_cuda"].to_dict()})
        assert res["status"] == "skipped" and res["reason"]


def test_missing_toolchain_fails_softly(built, tmp_path, monkeypatch):
    model = built[0]
    monkeypatch.setitem(sys.modules, "onnxruntime_genai", None)
    arts = {a.name: a for a in cuda.compile(build_ctx(model, tmp_path), SETTINGS)}
    assert arts["hf_fp16_cuda"].status == "built"
    assert arts["onnx_int4_cuda"].status == "failed" and "onnxruntime-genai" in arts["onnx_int4_cuda"].reason
    with pytest.raises(Skipped):
        cuda.open_runner(arts["onnx_int4_cpu_check"], tmp_path, BENCH)


def test_bad_inputs_raise(built, tmp_path):
    with pytest.raises(ValueError, match=r"config.json"):
        cuda.compile(build_ctx(tmp_path, tmp_path / "out"), SETTINGS)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="safetensors"):
        cuda.compile(build_ctx(tmp_path, tmp_path / "out"), SETTINGS)
    # settings are validated once, by the driver, against the target's schema
    problems = settings_problems("cuda", {"hf_fp16": False, "onnx_genai": {"precisions": ["int3"]}})
    assert problems == ["targets.cuda.onnx_genai.precisions.0: 'int3' is not one of ['fp16', 'int4', 'bf16']"]
    assert "nothing to build" in settings_problems("cuda", {"hf_fp16": False, "onnx_genai": {"precisions": []}})[0]
