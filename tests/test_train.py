"""Training on a tiny scratch model: LoRA is byte-reproducible, QLoRA (bitsandbytes nf4) runs on CPU."""

import copy
import json

import pytest
import yaml

from slmake.base_model import build_scratch
from slmake.io import sha256_tree
from slmake.train import TrainError, train

pytestmark = pytest.mark.e2e

TICKETS = [("VPN drops every hour", "network", "medium"), ("Printer on floor 3 jams", "printing", "low"),
           ("I clicked a phishing link", "security", "critical"), ("Need Excel licence", "software", "low"),
           ("Laptop screen cracked", "hardware", "medium"), ("Reset my password please", "access", "low")]


class _NoLive:
    def log_metric(self, *a, **k): ...
    def next_step(self): ...
    step = 0


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    splits = root / "data"
    splits.mkdir()
    rows = []
    for i in range(48):
        text, cat, prio = TICKETS[i % len(TICKETS)]
        resp = json.dumps({"category": cat, "priority": prio})
        rows.append({"id": str(i), "prompt": f"### Ticket\n{text} (#{i})\n### Triage\n", "response": resp, "label": cat})
    for name, part in (("train", rows[:40]), ("val", rows[40:44]), ("test", rows[44:])):
        (splits / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part))
    base = root / "base"
    base.mkdir()
    spec = yaml.safe_load(open("conf/model/llama_tiny_scratch.yaml"))
    spec["scratch"].update(vocab_size=400, hidden_size=64, intermediate_size=128, num_layers=1, num_heads=2,
                           num_kv_heads=2, pretrain={"steps": 5, "batch_size": 4, "block_size": 32, "lr": 1e-3, "threads": 1})
    build_scratch(spec, splits / "train.jsonl", base, seed=0)
    return root


@pytest.fixture
def train_cfg():
    cfg = yaml.safe_load(open("conf/train/lora_fp32_cpu.yaml"))
    cfg.update(max_steps=4, batch_size=4, threads=1)
    return cfg


def test_lora_is_byte_reproducible(workdir, train_cfg, monkeypatch):
    monkeypatch.setenv("PYTHONHASHSEED", "0")
    hashes = []
    for run in ("a", "b"):
        out = workdir / f"lora_{run}"
        out.mkdir()
        metrics = train(train_cfg, workdir / "base", workdir / "data", out, _NoLive(), seed=0)
        assert metrics["steps"] == 4
        hashes.append((sha256_tree(out / "adapter"), sha256_tree(out / "merged")))
        cfg = json.loads((out / "adapter/adapter_config.json").read_text())
        assert cfg["base_model_name_or_path"] == "base"  # no absolute path in the artifact
        assert "transformers_version" not in json.loads((out / "merged/config.json").read_text())
    assert hashes[0] == hashes[1]


def test_qlora_nf4_trains_and_merges_on_cpu(workdir, train_cfg, monkeypatch):
    pytest.importorskip("bitsandbytes")
    monkeypatch.setenv("PYTHONHASHSEED", "0")
    cfg = copy.deepcopy(train_cfg)
    cfg.update(method="qlora", max_steps=2, quant={"type": "nf4", "double_quant": True, "compute_dtype": "bfloat16"})
    out = workdir / "qlora"
    out.mkdir()
    metrics = train(cfg, workdir / "base", workdir / "data", out, _NoLive(), seed=0)
    assert metrics["steps"] == 2
    from transformers import AutoModelForCausalLM

    merged = AutoModelForCausalLM.from_pretrained(str(out / "merged"))
    assert not hasattr(merged.config, "quantization_config") or merged.config.quantization_config is None


def test_train_refuses_without_pythonhashseed(workdir, train_cfg, monkeypatch):
    monkeypatch.delenv("PYTHONHASHSEED", raising=False)
    with pytest.raises(TrainError, match="PYTHONHASHSEED=0"):
        train(train_cfg, workdir / "base", workdir / "data", workdir, _NoLive(), seed=0)


class _Recorder(_NoLive):
    """Collects what the trainer logs to dvclive."""

    def __init__(self):
        self.metrics = []

    def log_metric(self, name, value):
        self.metrics.append((name, value))


def test_full_finetune_trains_every_weight_reproducibly_and_compiles_for_cpu(workdir, monkeypatch):
    """train.method=full: loss drops, every weight moves, no adapter, a rebuild gives the same
    safetensors bytes, and the cpu target builds the merged folder as it is."""
    import torch
    from safetensors.torch import load_file

    monkeypatch.setenv("PYTHONHASHSEED", "0")
    cfg = yaml.safe_load(open("conf/train/full_fp32_cpu.yaml"))
    cfg.update(max_steps=30, batch_size=4, lr=1e-3, threads=1)
    hashes, live = [], _Recorder()
    for run in ("a", "b"):
        out = workdir / f"full_{run}"
        out.mkdir()
        metrics = train(cfg, workdir / "base", workdir / "data", out, live if run == "a" else _NoLive(), seed=0)
        assert metrics["steps"] == 30 and metrics["resumed_from_step"] == 0
        assert sorted(p.name for p in out.iterdir()) == ["merged"]  # no adapter, no trainer litter
        hashes.append(sha256_tree(out / "merged"))
    assert hashes[0] == hashes[1]
    losses = [v for k, v in live.metrics if k == "train/loss"]
    assert len(losses) == 3 and losses[-1] < 0.8 * losses[0], losses
    base = load_file(workdir / "base/model.safetensors")
    tuned = load_file(workdir / "full_a/merged/model.safetensors")
    assert set(base) == set(tuned)
    assert all(not torch.equal(base[k], tuned[k]) for k in base if "norm" not in k)
    assert json.loads((workdir / "full_a/merged/config.json").read_text())["use_cache"] is True

    # every target compiles build/train/merged unchanged: the cpu target's GGUF and ONNX here
    pytest.importorskip("llama_cpp")
    pytest.importorskip("onnxruntime_genai")
    from e2e_utils import build_ctx
    from slmake.targets import cpu

    out = workdir / "full_cpu"
    arts = cpu.compile(build_ctx(workdir / "full_a/merged", out), {"gguf": {"quants": ["f16"]},
                                                                  "onnx_genai": {"precisions": ["fp32"]}})
    assert [(a.name, a.status, a.reason) for a in arts] == [("gguf_f16", "built", ""), ("onnx_fp32", "built", "")]
    runner = cpu.open_runner(arts[0], out, {"threads": 1})
    try:
        assert isinstance(runner.generate([2, 10, 11], 4).tokens, list)  # llama.cpp loads and decodes it
    finally:
        runner.close()
