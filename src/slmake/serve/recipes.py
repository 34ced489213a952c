"""The engines' own serving recipes in a deploy package, written from the spec that writes the Modelfile.

- **vLLM** (the cuda target's Hugging Face folder): ``vllm-serve.sh`` runs ``vllm serve`` on the
  folder with a chat template (``vllm.jinja``) that renders one user message exactly as training
  saw the prompt, the answer budget as the server-wide ``max_new_tokens``, bench's greedy sampling as
  the generation-config override, ``--max-model-len`` = one sequence's context (the Modelfile's
  num_ctx) and xgrammar for structured outputs; ``vllm-request.json`` is a request that carries the
  response schema (``response_format: json_schema``; a text answer's grammar as
  ``structured_outputs.grammar``) and the model's end-of-generation ids. Flags and request fields
  are those of vLLM ``VLLM_VERSION`` (tests check them against the names in its released source).
- **OpenVINO Model Server** (OpenVINO IR): ``ovms/config.json`` + ``ovms/graph.pbtxt``, the LLM
  text-generation graph (``HttpLLMCalculator``) on the IR folder, with the device and pipeline
  properties bench's runner used, the answer budget as ``max_tokens_limit``, and the same chat
  template as the IR folder's ``chat_template.jinja`` (which OVMS prefers to the tokenizer's);
  OpenAI-compatible on ``/v3/chat/completions`` and ``/v3/completions``.
- **ONNX Runtime GenAI** and the Qualcomm formats have no server of their own: SERVE.md says so.

Every engine's chat template is the same (``chat_template``): it renders one user message as
slmake.prompt.format_prompt does. The prompt must also match as tokens: training encoded it with the
tokenizer's special tokens (a Llama tokenizer's BOS), which llama-server adds to chat prompts and
vLLM's and OVMS's chat paths do not. Writing ``<s>`` into the template does not mend it: a
SentencePiece tokenizer then drops the word-start ``▁`` of the first word (``###`` instead of
``▁###``; measured on the default build's tokenizer, HF and OpenVINO alike). So the vLLM request
asks for the special tokens (``add_special_tokens: true``) when the tokenizer adds any, and OVMS is
sent the rendered prompt on ``/v3/completions``, which adds them as training did.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

from .llama_args import SAMPLING, context_tokens

PROMPT_SLOT = "{instruction}"
VLLM_VERSION = "0.34.0"      # the release whose CLI flags and request fields the recipe uses
VLLM_SH, VLLM_TEMPLATE, VLLM_REQUEST = "vllm-serve.sh", "vllm.jinja", "vllm-request.json"
OVMS_DIR = "ovms"
OVMS_PORT = 8000
RAW_INPUT = "<raw input>"    # the placeholder an example request carries


def template_parts(prompt_template: str) -> tuple[str, str]:
    """The literal text before and after the spec template's one ``{instruction}`` slot."""
    literal = prompt_template.replace("{{", "\0l").replace("}}", "\0r")
    if literal.count(PROMPT_SLOT) != 1 or re.search(r"[{}]", literal.replace(PROMPT_SLOT, "")):
        raise ValueError(f"data.prompt_template {prompt_template!r}: expected exactly one {PROMPT_SLOT} slot")
    before, after = literal.split(PROMPT_SLOT)
    return tuple(s.replace("\0l", "{").replace("\0r", "}") for s in (before, after))   # Python's {{ }}: { }


def jinja_str(text: str) -> str:
    """A Jinja string literal (Jinja2 and llama.cpp's and OpenVINO GenAI's engines read \\\\ \\" \\n \\r \\t)."""
    for a, b in (("\\", "\\\\"), ('"', '\\"'), ("\n", "\\n"), ("\r", "\\r"), ("\t", "\\t")):
        text = text.replace(a, b)
    return f'"{text}"'


def chat_template(prompt_template: str) -> str:
    """A Jinja chat template that renders the last message as the training prompt
    (slmake.prompt.format_prompt of its content)."""
    before, after = template_parts(prompt_template)
    return "{{- " + jinja_str(before) + " + messages[-1]['content'] + " + jinja_str(after) + " -}}\n"


def special_prefix(tokenizer_dir: Path) -> str:
    """The text of the special tokens the tokenizer puts before a prompt when training encodes it
    (a Llama tokenizer's ``<s>``; "" for most others); the engines' chat paths leave them out."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir), local_files_only=True)
    probe = "slmake probe"
    full, bare = tok(probe)["input_ids"], tok(probe, add_special_tokens=False)["input_ids"]
    if full[len(full) - len(bare):] != bare:
        raise ValueError(f"{tokenizer_dir}: the tokenizer adds special tokens after the prompt, "
                         "which no chat template prefix reproduces")
    return tok.decode(full[:len(full) - len(bare)], skip_special_tokens=False)


def stop_token_ids(model_dir: Path) -> list[int]:
    """The model's end-of-generation ids: generation_config.json's eos_token_id, else config.json's."""
    for name in ("generation_config.json", "config.json"):
        path = model_dir / name
        if path.is_file():
            eos = json.loads(path.read_text()).get("eos_token_id")
            if eos is not None:
                return sorted(set(eos if isinstance(eos, list) else [eos]))
    return []


def _quote(args: list[str]) -> str:
    return " ".join(shlex.quote(a) for a in args)


def _script(title: str, engine: str, env: str, args: list[str]) -> str:
    return ("#!/bin/sh\n"
            f"# {title}, generated by slmake deploy from the spec that wrote the other commands.\n"
            f"# Set {env} to the executable if it is not on PATH. Extra arguments override these.\n"
            f'cd "$(dirname "$0")" && exec "${{{env}:-{engine}}}" {_quote(args)} "$@"\n')


# --- vLLM -------------------------------------------------------------------------------------

def vllm_args(contract: dict, entry: dict, spec: dict) -> list[str]:
    """``vllm serve``'s arguments for this package (run from the package folder)."""
    budget = spec["eval"]["max_new_tokens"]
    dtype = {"fp16": "float16", "bf16": "bfloat16", "fp32": "float32"}.get(entry["precision"], "auto")
    return ["serve", entry["path"], "--served-model-name", contract["name"], "--host", "127.0.0.1",
            "--port", "8000", "--dtype", dtype, "--seed", "0",
            "--max-model-len", str(context_tokens(spec["train"]["max_length"], budget)),
            "--chat-template", VLLM_TEMPLATE,
            "--override-generation-config", json.dumps({**SAMPLING, "max_new_tokens": budget}),
            "--structured-outputs-config", json.dumps({"backend": "xgrammar"})]


def constraint_fields(contract: dict, gbnf: str | None) -> dict:
    """The request fields that decode under the response schema (OpenAI's ``response_format``) or,
    for a text answer, under its grammar (vLLM's ``structured_outputs``); {} when bench decoded free."""
    if gbnf is None:
        return {}
    if contract["response_format"] == "text":
        return {"structured_outputs": {"grammar": gbnf}}
    name = re.sub(r"[^A-Za-z0-9_-]+", "_", contract["data"])[:64] or "response"
    return {"response_format": {"type": "json_schema",
                                "json_schema": {"name": name, "schema": contract["response_schema"], "strict": True}}}


def vllm_request(contract: dict, spec: dict, gbnf: str | None, special: bool, stops: list[int]) -> dict:
    """A chat request for the vLLM recipe: the raw input as the user message, greedy, the answer
    budget, the response schema's constraint, the tokenizer's special tokens when training had them
    (``special``) and the model's end-of-generation ids."""
    return {"model": contract["name"], "messages": [{"role": "user", "content": RAW_INPUT}],
            "max_tokens": spec["eval"]["max_new_tokens"], **SAMPLING, **constraint_fields(contract, gbnf),
            **({"add_special_tokens": True} if special else {}), **({"stop_token_ids": stops} if stops else {})}


def vllm_files(contract: dict, entry: dict, spec: dict, model_dir: Path, tokenizer_dir: Path,
               gbnf: str | None) -> dict[str, str]:
    """``vllm.jinja``, ``vllm-request.json`` and ``vllm-serve.sh`` for the HF folder ``model_dir``;
    ``tokenizer_dir``: the tokenizer training encoded prompts with."""
    request = vllm_request(contract, spec, gbnf, bool(special_prefix(tokenizer_dir)), stop_token_ids(model_dir))
    return {VLLM_TEMPLATE: chat_template(contract["prompt_template"]),
            VLLM_REQUEST: json.dumps(request, indent=2, ensure_ascii=False) + "\n",
            VLLM_SH: _script(f"vLLM {VLLM_VERSION} on {contract['name']} (continuous batching, guided JSON per "
                             "request: see vllm-request.json)", "vllm", "VLLM", vllm_args(contract, entry, spec))}


def vllm_section(contract: dict, entry: dict, spec: dict) -> list[str]:
    return [f"vLLM ({VLLM_VERSION}; a CUDA GPU), as `./{VLLM_SH}`: the chat template `{VLLM_TEMPLATE}` renders the "
            "training prompt token for token, greedy and the answer budget are the server's defaults, stops at "
            "the model's end-of-generation tokens; the response schema goes with each request "
            f"(`{VLLM_REQUEST}`: `response_format` json_schema, decoded by xgrammar):", "",
            "    vllm " + _quote(vllm_args(contract, entry, spec)),
            f"    curl -s localhost:8000/v1/chat/completions -H 'content-type: application/json' -d @{VLLM_REQUEST}",
            "", f"(replace `{RAW_INPUT}` in the request; `/v1/completions` takes the rendered prompt with the "
            "same `response_format`.)", ""]


# --- OpenVINO Model Server ----------------------------------------------------------------------

def ovms_graph(entry: dict, spec: dict, device: str, properties: dict) -> str:
    """The OVMS LLM text-generation graph (MediaPipe ``HttpLLMCalculator``) on the IR folder."""
    options = [f'models_path: "../{entry["path"]}"', f'device: "{device}"',
               f"max_tokens_limit: {spec['eval']['max_new_tokens']}"]
    if properties:
        options.append(f"plugin_config: '{json.dumps(properties, sort_keys=True)}'")
    if device != "NPU":    # continuous batching (the NPU runs OVMS's stateful pipeline, one at a time)
        options.append("max_num_seqs: 4")
    body = "\n".join(f"      {o}" for o in options)
    return f"""input_stream: "HTTP_REQUEST_PAYLOAD:input"
output_stream: "HTTP_RESPONSE_PAYLOAD:output"
node: {{
  name: "LLMExecutor"
  calculator: "HttpLLMCalculator"
  input_stream: "LOOPBACK:loopback"
  input_stream: "HTTP_REQUEST_PAYLOAD:input"
  input_side_packet: "LLM_NODE_RESOURCES:llm"
  input_side_packet: "LLM_NODE_EXECUTION_CONTEXTS:llm_ctx"
  output_stream: "LOOPBACK:loopback"
  output_stream: "HTTP_RESPONSE_PAYLOAD:output"
  input_stream_info: {{
    tag_index: 'LOOPBACK:0',
    back_edge: true
  }}
  node_options: {{
    [type.googleapis.com / mediapipe.LLMCalculatorOptions]: {{
{body}
    }}
  }}
  input_stream_handler {{
    input_stream_handler: "SyncSetInputStreamHandler",
    options {{
      [mediapipe.SyncSetInputStreamHandlerOptions.ext] {{
        sync_set {{
          tag_index: "LOOPBACK:0"
        }}
      }}
    }}
  }}
}}
"""


def ovms_files(contract: dict, entry: dict, spec: dict, device: str, properties: dict) -> dict[str, str]:
    """``ovms/config.json``, ``ovms/graph.pbtxt`` and the IR folder's ``chat_template.jinja``."""
    config = {"model_config_list": [{"config": {"name": contract["name"], "base_path": "."}}]}
    return {f"{OVMS_DIR}/config.json": json.dumps(config, indent=2) + "\n",
            f"{OVMS_DIR}/graph.pbtxt": ovms_graph(entry, spec, device, properties),
            f"{entry['path']}/chat_template.jinja": chat_template(contract["prompt_template"])}


def ovms_image(toolchain: dict, device: str) -> str:
    """OVMS's image for the OpenVINO release that exported the IR (its major.minor); the ``-gpu``
    image carries the GPU and NPU drivers (OVMS's NPU demo)."""
    version = ".".join(str(toolchain.get("openvino") or "").split(".")[:2]) or "latest"
    return f"openvino/model_server:{version}{'-gpu' if device == 'NPU' else ''}"


def ovms_command(device: str, toolchain: dict) -> list[str]:
    npu = ["--device", "/dev/accel", "--group-add=$(stat -c %g /dev/dri/render* | head -n 1)"] if device == "NPU" else []
    return ["docker", "run", "--rm", "-p", f"{OVMS_PORT}:{OVMS_PORT}", *npu, "-v", "$PWD:/package:ro",
            ovms_image(toolchain, device), "--rest_port", str(OVMS_PORT), "--config_path", f"/package/{OVMS_DIR}/config.json"]


def ovms_section(contract: dict, device: str, toolchain: dict, gbnf: str | None) -> list[str]:
    request = {"model": contract["name"], "prompt": "<the prompt rendered with the template in README.md>",
               "max_tokens": contract["max_new_tokens"], "temperature": SAMPLING["temperature"]}
    return [f"OpenVINO Model Server (its LLM graph `{OVMS_DIR}/graph.pbtxt` on the IR, device {device} and pipeline "
            "properties as bench ran it, the answer budget as `max_tokens_limit`), from this folder:", "",
            "    " + " ".join(a if a.startswith(("$PWD", "--group-add")) else shlex.quote(a)
                              for a in ovms_command(device, toolchain)),
            f"    curl -s localhost:{OVMS_PORT}/v3/completions -H 'content-type: application/json' "
            f"-d {shlex.quote(json.dumps(request))}", "",
            "`/v3/completions` tokenizes the rendered prompt as training did (with the tokenizer's special tokens). "
            "`/v3/chat/completions` renders the raw input with the IR folder's `chat_template.jinja` (the training "
            "template) but tokenizes it without special tokens: the same tokens only for a tokenizer that adds none.",
            "",
            "OVMS can also constrain answers (`response_format` json_schema, OpenVINO GenAI's xgrammar), but bench "
            "decoded OpenVINO answers free: with this vocabulary GenAI's structured output is not greedy (see "
            "slmake.runtimes.openvino), so validate answers against `response_schema.json` as `slmake serve` does."
            if gbnf is not None else "", ""]


# --- runtimes without a server ------------------------------------------------------------------

def no_server_section(entry: dict) -> list[str]:
    return [f"{entry['runtime']} has no HTTP server of its own (ONNX Runtime GenAI and ONNX Runtime are "
            "libraries), so `slmake serve` above is this package's server: it runs the artifact as bench did, "
            "applies the training template and checks every answer against the response schema.", ""]
