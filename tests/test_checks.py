"""Semantic checks (slmake.checks, slmake.model_files) and the `check` stage: every spec that would
fail later fails here first, with the key and the reason; the model's bytes are fingerprinted."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from slmake.checks import check, stage_params
from slmake.model_files import HashCache, ModelFileError, facts, fingerprint
from slmake.spec import compose, validate

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def spec():
    return compose(ROOT / "conf")


def with_(spec: dict, **paths) -> dict:
    """A copy of ``spec`` with dotted keys (``model__scratch__num_heads``) set."""
    spec = copy.deepcopy(spec)
    for dotted, value in paths.items():
        *parents, last = dotted.split("__")
        node = spec
        for p in parents:
            node = node[p]
        node[last] = value
    return spec


def problems(spec: dict) -> str:
    found = validate(spec) or check(spec)
    return "\n".join(found)


LLAMA = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj",
         "mlp.up_proj", "mlp.down_proj")


def hf_folder(root: Path, hidden=64, heads=4, kv=2, positions=512, tied=False, extra: dict | None = None,
              modules=LLAMA) -> Path:
    """A Llama-shaped HF folder: config.json + a safetensors file with real headers (no torch)."""
    from safetensors.numpy import save_file

    root.mkdir(parents=True, exist_ok=True)
    cfg = {"model_type": "llama", "hidden_size": hidden, "num_attention_heads": heads, "num_key_value_heads": kv,
           "max_position_embeddings": positions, "tie_word_embeddings": tied, **(extra or {})}
    (root / "config.json").write_text(json.dumps(cfg))
    t = {"model.embed_tokens.weight": np.zeros((16, hidden), np.float32),
         "model.norm.weight": np.zeros(hidden, np.float32)}
    for m in modules:
        t[f"model.layers.0.{m}.weight"] = np.zeros((4, 4), np.float32)
    if not tied:
        t["lm_head.weight"] = np.zeros((16, hidden), np.float32)
    save_file(t, str(root / "model.safetensors"))
    return root


def hf_model(path: Path, **kw) -> dict:
    return {"name": "m", "source": "hf", "allow_network": False, "trust_remote_code": False,
            "hf": {"path": str(path), "revision": None, "gguf_file": None, **kw}}


# ----------------------------------------------------------------------------- model shapes

@pytest.mark.parametrize("keys,expected", [
    ({"num_heads": 3}, "model.scratch.num_heads: 3 does not divide hidden_size=256"),
    ({"num_kv_heads": 3}, "model.scratch.num_kv_heads: 3 does not divide num_heads=4"),
    ({"hidden_size": 80, "num_heads": 16, "num_kv_heads": 16}, "model.scratch.num_heads: 16 heads give head size 5"),
    ({"hidden_size": 48, "num_heads": 16, "num_kv_heads": 16}, "head size 3, which is odd"),
    ({"max_position_embeddings": 64}, "model.scratch.pretrain.block_size: 128 exceeds"),
])
def test_scratch_shapes(spec, keys, expected):
    s = with_(spec, **{f"model__scratch__{k}": v for k, v in keys.items()})
    assert expected in problems(s)


def test_default_spec_has_no_problems(spec):
    assert check(spec) == []


def test_max_length_beyond_positions(spec):
    assert "train.max_length: 1024 exceeds the base model's 512 positions (model.scratch)" in \
        problems(with_(spec, train__max_length=1024))


def test_lora_targets_must_exist_in_scratch_llama(spec):
    out = problems(with_(spec, train__lora__target_modules=["q_proj", "c_attn", "self_attn.v_proj", "mlp"]))
    assert "train.lora.target_modules: ['c_attn', 'mlp'] not in the base model (model.scratch)" in out
    assert "'q_proj'" in out  # the message lists what the model has


def test_hf_folder_modules_shapes_and_positions(tmp_path, spec):
    folder = hf_folder(tmp_path / "m", hidden=64, heads=4, kv=2, positions=128, modules=LLAMA[:4] + LLAMA[-1:])
    f = facts(hf_model(folder))
    assert f.hidden == 64 and f.heads == 4 and f.kv_heads == 2 and f.max_positions == 128
    assert "model.layers.0.self_attn.q_proj" in f.modules and "model.norm" not in f.modules  # 1-D: no LoRA
    s = with_(spec, model=hf_model(folder), train__max_length=256)
    out = problems(s)
    assert "train.max_length: 256 exceeds the base model's 128 positions" in out
    assert "['gate_proj', 'up_proj'] not in the base model" in out  # this toy model has no gate/up


def test_hf_folder_bad_shapes(tmp_path, spec):
    folder = hf_folder(tmp_path / "m", hidden=60, heads=8, kv=3)
    out = problems(with_(spec, model=hf_model(folder)))
    assert "config.json: num_attention_heads: 8 does not divide hidden_size=60" in out
    assert "num_key_value_heads: 3 does not divide num_attention_heads=8" in out
    ok = hf_folder(tmp_path / "h", hidden=60, heads=8, kv=4, extra={"head_dim": 16})  # declared head_dim
    assert "does not divide" not in problems(with_(spec, model=hf_model(ok)))


def test_tied_lm_head_counts_as_a_module(tmp_path):
    assert "lm_head" in facts(hf_model(hf_folder(tmp_path / "m", tied=True))).modules


@pytest.mark.parametrize("make,expected", [
    (lambda p: p / "missing", "does not exist"),
    (lambda p: (p / "f.txt").write_text("x") and p / "f.txt", "is a file"),
    (lambda p: p, "has no config.json"),
])
def test_hf_path_problems(tmp_path, spec, make, expected):
    out = problems(with_(spec, model=hf_model(make(tmp_path))))
    assert "model.hf.path:" in out and expected in out


def test_pickle_only_folder_is_refused_as_pickle(tmp_path, spec):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x04")
    out = problems(with_(spec, model=hf_model(tmp_path)))
    assert "only pickle weights ['pytorch_model.bin']: refused" in out and "arbitrary code" in out


def test_gguf_file_missing_names_the_ones_present(tmp_path, spec):
    (tmp_path / "a.gguf").write_bytes(b"")
    out = problems(with_(spec, model=hf_model(tmp_path, gguf_file="b.gguf")))
    assert "model.hf.gguf_file:" in out and "['a.gguf']" in out


def test_gguf_facts_from_metadata(tmp_path, spec):
    gguf = pytest.importorskip("gguf")
    path = tmp_path / "m.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_context_length(256)
    w.add_embedding_length(64)
    w.add_head_count(4)
    w.add_head_count_kv(4)
    w.add_block_count(1)
    for name in ("token_embd", "blk.0.attn_q", "blk.0.attn_k", "blk.0.attn_v", "blk.0.attn_output"):
        w.add_tensor(f"{name}.weight", np.zeros((4, 64), np.float32))
    w.add_tensor("blk.0.attn_norm.weight", np.zeros(64, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    model = hf_model(tmp_path, gguf_file="m.gguf")
    f = facts(model)
    assert (f.hidden, f.heads, f.kv_heads, f.max_positions) == (64, 4, 4, 256)
    assert "model.layers.0.self_attn.o_proj" in f.modules
    out = problems(with_(spec, model=model, train__max_length=512))
    assert "exceeds the base model's 256 positions" in out and "['gate_proj', 'up_proj', 'down_proj'] not in" in out


def test_hub_id_needs_network(spec):
    out = problems(with_(spec, model=hf_model(Path("org/some-model"))))
    assert "model.hf.path: org/some-model does not exist" in out
    online = with_(spec, model={**hf_model(Path("org/some-model")), "allow_network": True})
    assert problems(online) == ""  # nothing local to check: the hub is asked at build time


# ----------------------------------------------------------------------------- data and targets

@pytest.mark.parametrize("key,value,expected", [
    ("source", "no/such/file.jsonl", "data.source: no/such/file.jsonl not found"),
    ("prompt_template", "{instruction} {oops", "data.prompt_template:"),
    ("prompt_template", "{instruction} {context}", "data.prompt_template:"),
    ("response_schema", {"type": "objekt"}, "data.response_schema: not a valid JSON Schema"),
    ("label_field", "colour", "data.label_field: got 'colour'"),
    ("split", {"val": 0.5, "test": 0.5}, "data.split: val + test = 1.0"),
    ("filters", {"drop_rules": [{"name": "bad", "regex": "([a-z"}]}, "data.filters.drop_rules.0.regex"),
    ("filters", {"tokenizer": "no/tokenizer"}, "data.filters.tokenizer: no/tokenizer is not a folder"),
])
def test_data_problems(spec, key, value, expected):
    assert expected in problems(with_(spec, **{f"data__{key}": value}))


def test_empty_source_folder(tmp_path, spec):
    (tmp_path / "notes.txt").write_text("not data")
    assert f"data.source: folder {tmp_path} has no data files" in problems(with_(spec, data__source=str(tmp_path)))


def test_unknown_target_lists_the_known_ones(spec):
    s = with_(spec, targets={"cpu": spec["targets"]["cpu"], "nope": {}})
    assert "targets: unknown key(s) ['nope']; allowed keys: ['cpu', 'cuda', 'intel_npu', 'qualcomm_npu']" in problems(s)


def test_only_checks_the_slices_a_stage_reads(spec):
    s = with_(spec, data__source="missing.jsonl", train__max_length=4096)
    assert check(s, only=["model", "seed"]) == []
    assert check(s, only=["train", "seed"]) == ["train.max_length: 4096 exceeds the base model's 512 positions "
                                                "(model.scratch)"]
    assert check(s, only=["data"]) == []  # only curate (and the check stage) need the source itself


def test_stage_params_runs_semantic_checks(tmp_path, spec, capsys):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(with_(spec, model__scratch__num_heads=3)))
    with pytest.raises(SystemExit) as exc:
        stage_params("model", "seed", path=tmp_path / "params.yaml")
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "model.scratch.num_heads: 3 does not divide hidden_size=256" in err and "Traceback" not in err


# ----------------------------------------------------------------------------- fingerprint

def test_fingerprint_follows_the_model_bytes(tmp_path):
    folder = hf_folder(tmp_path / "m")
    model = hf_model(folder)
    cache = HashCache(tmp_path / "cache.json")
    before = fingerprint(model, cache)
    assert set(before["files"]) == {"config.json", "model.safetensors"}
    cache.save()
    assert fingerprint(model, HashCache(tmp_path / "cache.json")) == before  # from the cache
    data = bytearray((folder / "model.safetensors").read_bytes())
    data[-1] ^= 1  # one bit of one weight
    (folder / "model.safetensors").write_bytes(bytes(data))
    after = fingerprint(model, HashCache(tmp_path / "cache.json"))
    assert after["files"]["model.safetensors"] != before["files"]["model.safetensors"]
    assert after["files"]["config.json"] == before["files"]["config.json"]
    assert fingerprint({"source": "scratch"}) == {"source": "scratch"}


def test_fingerprint_refuses_missing_model(tmp_path):
    with pytest.raises(ModelFileError, match="does not exist"):
        fingerprint(hf_model(tmp_path / "gone"))


# ----------------------------------------------------------------------------- the check stage

def run_check_stage(cwd: Path):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run([sys.executable, str(ROOT / "stages/check.py")], cwd=cwd, env=env,
                          capture_output=True, text=True)


def test_check_stage_writes_constant_ok_and_model_fingerprint(tmp_path, spec):
    (tmp_path / "data").mkdir()
    (tmp_path / "data/d.jsonl").write_text('{"ticket": "x", "response": "{}"}\n')
    folder = hf_folder(tmp_path / "model")
    good = with_(spec, data__source="data/d.jsonl", model=hf_model(Path("model")))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(good))
    res = run_check_stage(tmp_path)
    assert res.returncode == 0, res.stderr
    ok = (tmp_path / "build/check.ok").read_bytes()
    first = json.loads((tmp_path / "build/check.model.json").read_text())
    assert ok == b"ok\n" and set(first["files"]) == {"config.json", "model.safetensors"}

    (folder / "config.json").write_text((folder / "config.json").read_text() + " ")  # a swapped file
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(with_(good, train__lr=0.01)))
    assert run_check_stage(tmp_path).returncode == 0
    assert (tmp_path / "build/check.ok").read_bytes() == ok  # never invalidates downstream stages
    second = json.loads((tmp_path / "build/check.model.json").read_text())
    assert second["files"]["config.json"] != first["files"]["config.json"]

    (tmp_path / "params.yaml").write_text(yaml.safe_dump(with_(good, train__lora__target_modules=["qkv"])))
    bad = run_check_stage(tmp_path)
    assert bad.returncode != 0 and "Traceback" not in bad.stderr
    assert "train.lora.target_modules: ['qkv'] not in the base model" in bad.stderr


def test_check_stage_names_yaml_problems(tmp_path):
    (tmp_path / "params.yaml").write_text("train:\n  lr: 0.1\n  lr: 0.2\n")
    res = run_check_stage(tmp_path)
    assert res.returncode != 0 and "Traceback" not in res.stderr
    assert "params.yaml, line 3, key 'train.lr': duplicate key 'lr' (first on line 2)" in res.stderr


# ----------------------------------------------------------------------------- base_model refuses too

def test_import_hf_refuses_pickle_only_folder_as_pickle(tmp_path):
    from slmake.base_model import BaseModelError, import_hf

    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x04")
    with pytest.raises(BaseModelError, match=r"only pickle weights \['pytorch_model.bin'\]: refused"):
        import_hf(hf_model(tmp_path), tmp_path / "out")


def test_build_scratch_checks_shapes_before_training(tmp_path, spec):
    from slmake.base_model import BaseModelError, build_scratch

    model = with_(spec, model__scratch__num_heads=3)["model"]
    with pytest.raises(BaseModelError, match=r"model.scratch.num_heads: 3 does not divide hidden_size=256"):
        build_scratch(model, tmp_path / "no-train-split.jsonl", tmp_path, 0)
