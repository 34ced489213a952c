"""`data.prompt_template: chat_template`: prompts in the base model's own chat format.

An instruct model answers best when prompted the way it was tuned. Rather than teach every
consumer of prompts (curate, train, evaluate, bench, serve, the Ollama Modelfile) a tokenizer's
Jinja template, the check stage renders the model's chat template once for a single user turn
with `add_generation_prompt` and turns the result into an ordinary prompt template
("<|im_start|>user\\n{instruction}<|im_end|>\\n<|im_start|>assistant\\n"). It is stored in
build/check.data.json, which curate depends on, so a model with a different template re-curates.
Curate formats prompts with it exactly as with a hand-written template; deploy puts the same text
in the Modelfile. A template that does not place the instruction verbatim, exactly once (one that
rewrites the content) is refused, since no fixed prompt template could reproduce it.
"""

from __future__ import annotations

import json
from pathlib import Path

from . import gguf_tokenizer

CHAT = "chat_template"
CHECK_FILE = Path("build/check.data.json")
_PROBES = ("SLMAKEPROBEALPHA", "second probe, with {braces} and 2 lines\nhere")


class ChatTemplateError(Exception):
    """The model has no usable chat template; the message names the model and what to do."""


def _source(model: dict) -> tuple[str | None, dict, bool, str]:
    """(chat template, special token names, does the tokenizer add BOS itself, where it was read)."""
    if model["source"] != "hf":
        raise ChatTemplateError(f"data.prompt_template=chat_template: model.source={model['source']!r} has no chat "
                                "template (only an imported instruct model has one); write a data.prompt_template "
                                "with {instruction}")
    h = model["hf"]
    path = Path(h["path"])
    if not path.exists():
        raise ChatTemplateError(f"data.prompt_template=chat_template: model.hf.path={h['path']!r} is not a local "
                                "folder; the chat template is read from the model's local files")
    if h.get("gguf_file"):
        gguf = path / h["gguf_file"]
        meta = gguf_tokenizer.metadata(gguf)
        names = {k: v for k, v in gguf_tokenizer._names(meta).items() if v}
        add_bos = meta.get("ggml.add_bos_token", meta.get("ggml.model") == "llama")
        return meta.get("chat_template"), names, bool(add_bos), f"{gguf} (tokenizer.chat_template)"
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True,
                                        trust_remote_code=model.get("trust_remote_code", False))
    names = {k: getattr(tok, k) for k in ("bos_token", "eos_token", "unk_token", "pad_token") if getattr(tok, k)}
    ids = tok("x")["input_ids"]
    add_bos = tok.bos_token_id is not None and bool(ids) and ids[0] == tok.bos_token_id
    return tok.chat_template, names, add_bos, f"{path} (tokenizer_config.json / chat_template.jinja)"


def render(model: dict) -> str:
    """The model's chat template for one user turn + the assistant's header, as a prompt template
    with {instruction} (other braces escaped). Raises ChatTemplateError."""
    from transformers.utils.chat_template_utils import render_jinja_template

    template, names, add_bos, where = _source(model)
    if not template or not isinstance(template, str):
        raise ChatTemplateError(f"data.prompt_template=chat_template: {where} has no chat template; use a base "
                                "model with one (an instruct model) or write a data.prompt_template with {instruction}")

    def run(text: str) -> str:
        out = render_jinja_template([[{"role": "user", "content": text}]], chat_template=template,
                                    add_generation_prompt=True, **names)
        return out[0][0] if isinstance(out, tuple) else out[0] if isinstance(out, list) else out

    try:
        first, second = run(_PROBES[0]), run(_PROBES[1])
    except Exception as e:  # noqa: BLE001 - Jinja raises many types for a template that needs other inputs
        raise ChatTemplateError(f"data.prompt_template=chat_template: {where}: the chat template does not render a "
                                f"single user message ({type(e).__name__}: {e})") from None
    if first.count(_PROBES[0]) != 1 or first.replace(_PROBES[0], _PROBES[1]) != second:
        raise ChatTemplateError(f"data.prompt_template=chat_template: {where}: the chat template does not place the "
                                "user's message verbatim exactly once, so no fixed prompt template reproduces it; "
                                "write a data.prompt_template with {instruction}")
    bos = names.get("bos_token")
    if add_bos and bos and first.startswith(bos):   # the tokenizer adds BOS itself: not twice
        first = first[len(bos):]
    head, tail = first.split(_PROBES[0])
    return _escape(head) + "{instruction}" + _escape(tail)


def _escape(text: str) -> str:
    return text.replace("{", "{{").replace("}", "}}")


def resolved(data: dict, check_file: Path = CHECK_FILE) -> str:
    """The prompt template the data slice means: its own, or the rendered chat template the check
    stage stored (raises ChatTemplateError when the check stage has not run)."""
    if data["prompt_template"] != CHAT:
        return data["prompt_template"]
    try:
        return json.loads(Path(check_file).read_text())["chat_template"]
    except (OSError, ValueError, KeyError):
        raise ChatTemplateError(f"data.prompt_template=chat_template: {check_file} has no rendered chat template; "
                                "run the check stage first (dvc repro runs it)") from None


def problems(spec: dict, render_it: bool = True) -> list[str]:
    """The check stage's and `slmake check`'s view: chat_template needs a model with a usable one,
    and a teacher that is prompted with it (distillation does not render chat templates yet).
    `render_it=False` (a stage checking its own slices) skips the rendering the check stage did."""
    data = spec.get("data")
    if not isinstance(data, dict) or data.get("prompt_template") != CHAT or not isinstance(spec.get("model"), dict):
        return []
    out = []
    if isinstance(spec.get("distill"), dict) and spec["distill"].get("enabled"):
        out.append("data.prompt_template=chat_template: distill.enabled is true, but distillation prompts the "
                   "teacher with a written template; set data.prompt_template to a template with {instruction}")
    if spec["model"].get("source") != "hf" or render_it:
        try:
            render(spec["model"])
        except ChatTemplateError as e:
            out.append(str(e))
    return out
