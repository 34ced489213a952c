"""Nothing phones home: under a socket guard (tests/netguard) the libraries a stage uses make no
attempt to reach another machine once process_setup.offline() has run, and the guard itself does
catch an attempt (so a 0 means something)."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from slmake import process_setup

GUARD = Path(__file__).parent / "netguard"


def guarded(code: str, tmp_path: Path, offline: bool) -> tuple[subprocess.CompletedProcess, list[str]]:
    log = tmp_path / "net.log"
    env = {k: v for k, v in os.environ.items() if k not in process_setup.OFFLINE}  # start from a plain env
    env.update(PYTHONPATH=os.pathsep.join([str(GUARD), str(Path(__file__).parents[1] / "src")]),
               SLMAKE_NETGUARD_LOG=str(log), OMP_NUM_THREADS="1", HF_HOME=str(tmp_path / "hf"))
    prelude = "from slmake import process_setup\nprocess_setup.offline()\n" if offline else ""
    res = subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    return res, log.read_text().splitlines() if log.exists() else []


def test_offline_sets_every_switch(monkeypatch):
    for k in process_setup.OFFLINE:
        monkeypatch.delenv(k, raising=False)
    process_setup.offline(allow_network=True)
    assert "HF_HUB_OFFLINE" not in os.environ
    process_setup.offline()
    assert all(os.environ[k] == v for k, v in process_setup.OFFLINE.items())


@pytest.mark.slow
def test_the_guard_catches_an_attempt(tmp_path):
    res, attempts = guarded("""
        import huggingface_hub
        try:
            huggingface_hub.hf_hub_download("gpt2", "config.json")
        except Exception as e:
            print(type(e).__name__)
    """, tmp_path, offline=False)
    assert attempts and "huggingface.co" in attempts[0], (attempts, res.stderr[-2000:])


HF_STACK = """
    import json
    from pathlib import Path
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM
    from datasets import Dataset
    from huggingface_hub.utils import send_telemetry
    from trl import SFTConfig, SFTTrainer
    from peft import LoraConfig
    from dvclive import Live
    from safetensors.torch import save_file

    send_telemetry("slmake-test", library_name="slmake")        # a library's own ping
    tok_dir = Path({tok!r})
    tok = AutoTokenizer.from_pretrained(tok_dir)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64)
    LlamaForCausalLM(cfg).save_pretrained("model")
    tok.save_pretrained("model")
    model = AutoModelForCausalLM.from_pretrained("model")
    AutoTokenizer.from_pretrained("model")
    data = Dataset.from_list([{{"prompt": "a b", "completion": " c"}}] * 4)
    args = SFTConfig(output_dir="out", max_steps=1, per_device_train_batch_size=2, report_to="none",
                     use_cpu=True, save_strategy="no", logging_steps=1, disable_tqdm=True, max_length=16)
    with Live(dir="live", dvcyaml=None, save_dvc_exp=False, report=None) as live:
        trainer = SFTTrainer(model=model, args=args, train_dataset=data, processing_class=tok,
                             peft_config=LoraConfig(r=2, target_modules=["q_proj"], task_type="CAUSAL_LM"))
        trainer.train()
        live.log_metric("x", 1.0)
    try:
        import nncf  # noqa: F401  (its telemetry object is made at import)
        from openvino_telemetry import Telemetry
        t = Telemetry(app_name="ovc", app_version="0", tid="G-TEST", backend="ga4",
                      enable_opt_in_dialog=False, disable_in_ci=True)
        t.send_event("ovc", "convert", "test")
        t.force_shutdown(1.0)
    except ImportError:
        pass
    print("done")
"""


@pytest.mark.slow
def test_train_stack_makes_no_attempt_when_offline(tmp_path):
    """Tokenizer, model, datasets, trl's SFTTrainer (which pings its telemetry), peft, dvclive,
    huggingface_hub telemetry, NNCF and OpenVINO's telemetry, all under the guard: 0 attempts."""
    from e2e_utils import tiny_llama

    tok = tiny_llama(tmp_path / "tiny")
    res, attempts = guarded(HF_STACK.format(tok=str(tok)), tmp_path, offline=True)
    assert res.returncode == 0 and "done" in res.stdout, res.stderr[-3000:]
    assert attempts == []
