"""data.prompt_template: chat_template — the base model's own chat format, rendered once by the
check stage into an ordinary prompt template that curate, serve and the Modelfile then use."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from slmake import chat_template
from slmake.prompt import format_prompt

ROOT = Path(__file__).resolve().parents[1]
SMOLLM = ROOT / ".venv/share/slmake/models/smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf"
needs_smollm = pytest.mark.skipif(not SMOLLM.is_file(), reason=f"{SMOLLM} not fetched (install.sh does)")
SMOLLM_CHAT = ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
               "<|im_start|>user\n{instruction}<|im_end|>\n<|im_start|>assistant\n")


def _model(path: Path, gguf: str | None = None) -> dict:
    return {"source": "hf", "trust_remote_code": False, "hf": {"path": str(path), "gguf_file": gguf}}


def _folder(tmp_path: Path, template: str | None) -> Path:
    """A SentencePiece tokenizer folder (adds BOS) with the given chat template."""
    from slmake import base_model

    texts = ["the printer is jammed", "VPN drops every ten minutes", "reset my password please"] * 20
    base_model.train_tokenizer(texts, 300, tmp_path)
    cfg = {"tokenizer_class": "LlamaTokenizer", "add_bos_token": True, "legacy": False, "bos_token": "<s>",
           "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"}
    if template:
        cfg["chat_template"] = template
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(cfg))
    return tmp_path


@pytest.mark.slow
@needs_smollm
def test_gguf_chat_template_renders_as_a_prompt_template():
    template = chat_template.render(_model(SMOLLM.parent, SMOLLM.name))
    assert template == SMOLLM_CHAT
    assert format_prompt(template, "VPN {down}").endswith("user\nVPN {down}<|im_end|>\n<|im_start|>assistant\n")


def test_bos_in_the_template_is_not_added_twice(tmp_path):
    folder = _folder(tmp_path, "{{ bos_token }}[INST] {{ messages[0]['content'] }} [/INST]")
    assert chat_template.render(_model(folder)) == "[INST] {instruction} [/INST]"   # the tokenizer adds <s>


@pytest.mark.parametrize("template, message", [
    (None, "has no chat template"),
    ("{{ messages[0]['content'] | upper }}", "verbatim exactly once"),
    ("{{ messages[0]['content'] }}{{ messages[0]['content'] }}", "verbatim exactly once"),
    ("{{ raise_exception('system message required') }}", "does not render a single user message"),
])
def test_unusable_chat_templates_are_refused(tmp_path, template, message):
    with pytest.raises(chat_template.ChatTemplateError, match=message):
        chat_template.render(_model(_folder(tmp_path, template)))


def test_problems_name_the_model_and_distillation():
    spec = {"data": {"prompt_template": "chat_template"}, "model": {"source": "scratch"},
            "distill": {"enabled": True}}
    problems = chat_template.problems(spec)
    assert any("model.source='scratch' has no chat template" in p for p in problems)
    assert any("distill.enabled is true" in p for p in problems)
    assert chat_template.problems({**spec, "data": {"prompt_template": "{instruction}"}}) == []


@pytest.mark.slow
def test_slmake_check_refuses_chat_template_on_a_scratch_model():
    r = subprocess.run([str(Path(sys.executable).parent / "slmake"), "check", "data.prompt_template=chat_template"],
                       cwd=ROOT, capture_output=True, text=True, check=False)
    assert r.returncode != 0 and "has no chat template" in r.stderr + r.stdout


def test_resolved_reads_the_check_stage_rendering(tmp_path):
    check = tmp_path / "check.data.json"
    data = {"prompt_template": "chat_template"}
    with pytest.raises(chat_template.ChatTemplateError, match="run the check stage first"):
        chat_template.resolved(data, check)
    check.write_text(json.dumps({"files": {}, "chat_template": SMOLLM_CHAT}))
    assert chat_template.resolved(data, check) == SMOLLM_CHAT
    assert chat_template.resolved({"prompt_template": "Q: {instruction}\nA: "}, check) == "Q: {instruction}\nA: "


@needs_smollm
def test_modelfile_and_serve_contract_follow_the_chat_template(tmp_path, monkeypatch):
    pytest.importorskip("llama_cpp")
    from slmake import deploy

    monkeypatch.chdir(tmp_path)
    (tmp_path / "build").mkdir()
    (tmp_path / "build/check.data.json").write_text(json.dumps({"chat_template": SMOLLM_CHAT}))
    spec = {"model": {"name": "smollm2"}, "data": {"name": "d", "prompt_template": "chat_template",
                                                    "response_schema": {"type": "object"}},
            "train": {"max_length": 256}, "eval": {"max_new_tokens": 32}, "bench": {"threads": None}}
    text = deploy.modelfile(SMOLLM, "model.gguf", spec)
    assert ('TEMPLATE """<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face'
            '<|im_end|>\n<|im_start|>user\n{{ .Prompt }}<|im_end|>\n<|im_start|>assistant\n"""') in text
    assert "base model's own chat template" in text and 'PARAMETER stop "<|im_end|>"' in text
    contract = deploy.serve_contract("cpu", {"name": "gguf_q8_0"}, spec, {}, {})
    assert contract["prompt_template"] == SMOLLM_CHAT
