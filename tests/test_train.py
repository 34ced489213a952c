"""Training on a tiny scratch model: LoRA is byte-reproducible, QLoRA (bitsandbytes nf4) runs on CPU."""

import copy
import json

import pytest
import yaml

from slmake.base_model import build_scratch
from slmake.io import sha256_tree
from slmake.train import TrainError, train_lora

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
        metrics = train_lora(train_cfg, workdir / "base", workdir / "data", out, _NoLive(), seed=0)
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
    metrics = train_lora(cfg, workdir / "base", workdir / "data", out, _NoLive(), seed=0)
    assert metrics["steps"] == 2
    from transformers import AutoModelForCausalLM

    merged = AutoModelForCausalLM.from_pretrained(str(out / "merged"))
    assert not hasattr(merged.config, "quantization_config") or merged.config.quantization_config is None


def test_train_refuses_without_pythonhashseed(workdir, train_cfg, monkeypatch):
    monkeypatch.delenv("PYTHONHASHSEED", raising=False)
    with pytest.raises(TrainError, match="PYTHONHASHSEED=0"):
        train_lora(train_cfg, workdir / "base", workdir / "data", workdir, _NoLive(), seed=0)
