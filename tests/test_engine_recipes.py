"""The engines' serving recipes a deploy package carries (slmake.serve.recipes), checked as far as a
CPU machine can: the chat template renders exactly the prompt slmake.prompt renders (Jinja2 with
the sandbox and options transformers and vLLM use); every vLLM flag, generation-config key and request
field is one vLLM 0.34.0's released source defines (tests/fixtures/engines: names read from the
PyPI sdist); the OVMS graph uses the calculator, side packets and options of OVMS 2026.3's LLM graph;
the schema sent for guided decoding is valid JSON Schema; all values come from the spec that writes
the Modelfile and llama-server.sh. The token-level check on a real tokenizer is the slow test at
the end (the micro build's)."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from slmake.prompt import format_prompt
from slmake.serve import recipes
from slmake.serve.llama_args import SAMPLING, context_tokens

FIXTURES = Path(__file__).parent / "fixtures/engines"
VLLM = json.loads((FIXTURES / f"vllm_{recipes.VLLM_VERSION}_names.json").read_text())
OVMS = json.loads((FIXTURES / "ovms_2026.3_llm_graph.json").read_text())
SCHEMA = {"type": "object", "additionalProperties": False, "required": ["category"],
          "properties": {"category": {"enum": ["network", "other"]}}}
TEMPLATES = ["### Ticket\n{instruction}\n### Triage\n",
             '<|im_start|>user\n{instruction}<|im_end|>\n<|im_start|>assistant\n',
             'Q: "{instruction}" \\ {{literal}}\t{{{{x}}}}\r\nA:']


def _spec(response_format="json", max_length=256, new=32):
    return {"train": {"max_length": max_length}, "eval": {"max_new_tokens": new},
            "data": {"name": "it tickets/v2", "response_format": response_format}}


def _contract(template=TEMPLATES[0], response_format="json"):
    return {"name": "cuda/hf_fp16_cuda", "data": "it tickets/v2", "prompt_template": template,
            "response_format": response_format, "response_schema": SCHEMA, "max_new_tokens": 32, "threads": None}


ENTRY = {"name": "hf_fp16_cuda", "format": "hf-safetensors", "precision": "fp16", "path": "hf_fp16",
         "runtime": "transformers"}


def _render(template: str, content: str) -> str:
    """As transformers' apply_chat_template (which vLLM's HF renderer calls) compiles a template."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    return env.from_string(template).render(messages=[{"role": "user", "content": content}],
                                            add_generation_prompt=True, bos_token="<s>", eos_token="</s>")


@pytest.mark.parametrize("template", TEMPLATES)
def test_chat_template_renders_the_training_prompt(template):
    jinja = recipes.chat_template(template)
    for raw in ("VPN drops every hour", 'quotes " and \\ backslash {braces} {{ jinja }}\nnew line', ""):
        assert _render(jinja, raw) == format_prompt(template, raw)


def test_every_package_engine_shares_one_template():
    from slmake import deploy

    contract = _contract()
    gguf = {"name": "gguf_q4_k_m", "format": "gguf", "precision": "q4_k_m", "path": "m/model.gguf"}
    files = deploy.llama_server_files(contract, gguf, _spec())
    assert files["llama-server.jinja"] == recipes.chat_template(contract["prompt_template"])
    ov = recipes.ovms_files(contract, {**ENTRY, "path": "ov_int4"}, _spec(), "CPU", {})
    assert ov["ov_int4/chat_template.jinja"] == files["llama-server.jinja"]


def test_vllm_command_uses_vllm_flags_and_the_spec():
    spec = _spec(max_length=200, new=24)
    args = recipes.vllm_args(_contract(), ENTRY, spec)
    assert args[:2] == ["serve", "hf_fp16"]
    flags = [a for a in args if a.startswith("--")]
    assert set(flags) <= set(VLLM["serve_flags"]), set(flags) - set(VLLM["serve_flags"])
    value = {f: args[args.index(f) + 1] for f in flags}
    assert value["--max-model-len"] == str(context_tokens(200, 24)) == "256"   # the Modelfile's num_ctx
    assert value["--chat-template"] == recipes.VLLM_TEMPLATE and value["--dtype"] == "float16"
    override = json.loads(value["--override-generation-config"])
    assert set(override) <= set(VLLM["override_generation_config"])
    assert override == {**SAMPLING, "max_new_tokens": 24}           # greedy as bench, the answer budget
    assert set(json.loads(value["--structured-outputs-config"])) <= set(VLLM["structured_outputs_config"])


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_vllm_request_fields_are_vllms_and_carry_the_constraint(fmt):
    import jsonschema

    request = recipes.vllm_request(_contract(response_format=fmt), _spec(fmt), "root ::= \"x\"", True, [2, 7])
    assert set(request) <= set(VLLM["chat_completion_request"]), set(request) - set(VLLM["chat_completion_request"])
    assert request["add_special_tokens"] is True and request["stop_token_ids"] == [2, 7]
    assert request["max_tokens"] == 32 and request["temperature"] == 0
    if fmt == "json":
        rf = request["response_format"]["json_schema"]
        assert re.fullmatch(r"[A-Za-z0-9_-]{1,64}", rf["name"]) and rf["schema"] == SCHEMA
        jsonschema.Draft202012Validator.check_schema(rf["schema"])
    else:
        assert set(request["structured_outputs"]) <= set(VLLM["structured_outputs_params"])
        assert request["structured_outputs"]["grammar"] == 'root ::= "x"'
    # bench decoded free (eval.constrained: false, or no grammar): so does the request
    assert not {"response_format", "structured_outputs"} & set(recipes.vllm_request(_contract(), _spec(), None,
                                                                                     False, []))


def test_ovms_graph_is_ovms_llm_graph_with_the_runners_settings():
    from slmake.targets.intel_npu import pipeline_args

    notes = {"device": "npu", "max_prompt_len": 256, "min_response_len": 64, "npuw_online_pipeline": "NONE"}
    device, props = pipeline_args(notes, "int4_sym", None)
    files = recipes.ovms_files(_contract(), {**ENTRY, "path": "ov_int4"}, _spec(), device, props)
    graph = files["ovms/graph.pbtxt"]
    assert graph.count("{") == graph.count("}")
    assert f'calculator: "{OVMS["calculator"]}"' in graph
    assert all(f'input_side_packet: "{p}"' in graph for p in OVMS["side_packets"])
    block = graph.split("mediapipe.LLMCalculatorOptions]: {", 1)[1].split("\n    }", 1)[0]
    options = dict(line.strip().split(": ", 1) for line in block.strip().splitlines())
    assert set(options) <= set(OVMS["llm_calculator_options"]) and set(OVMS["required"]) <= set(options)
    assert options["models_path"] == '"../ov_int4"' and options["device"] == '"NPU"'
    assert options["max_tokens_limit"] == "32"
    assert json.loads(options["plugin_config"].strip("'")) == props == {
        "MAX_PROMPT_LEN": 256, "MIN_RESPONSE_LEN": 64, "NPUW_ONLINE_PIPELINE": "NONE"}
    config = json.loads(files["ovms/config.json"])
    assert config["model_config_list"][0]["config"]["name"] == "cuda/hf_fp16_cuda"
    cpu, cpu_props = pipeline_args({"device": "cpu_proxy"}, "fp32", 2)
    assert (cpu, cpu_props) == ("CPU", {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 2})
    command = recipes.ovms_command("NPU", {"openvino": "2026.4.1"})
    assert "openvino/model_server:2026.4-gpu" in command and "/dev/accel" in command


def test_serve_md_shows_the_scripts_command():
    files = {recipes.VLLM_SH: recipes._script("t", "vllm", "VLLM", recipes.vllm_args(_contract(), ENTRY, _spec()))}
    line = files[recipes.VLLM_SH].rsplit('"${VLLM:-vllm}" ', 1)[1].removesuffix(' "$@"\n')
    section = "\n".join(recipes.vllm_section(_contract(), ENTRY, _spec()))
    assert "    vllm " + line in section and shlex.split(line)[0] == "serve"


@pytest.mark.slow
def test_engine_templates_give_the_training_tokens(micro_repo, tmp_path):
    """On the micro build's tokenizer (a Llama SentencePiece one: BOS added): vLLM's path (the
    template rendered by transformers, tokenized with the request's add_special_tokens) and OVMS's
    (OpenVINO GenAI renders the chat template; /v3/completions tokenizes the rendered prompt with the
    OpenVINO tokenizer) give exactly the ids evaluate encoded the test split with."""
    from transformers import AutoTokenizer
    from transformers.utils.chat_template_utils import render_jinja_template

    pkg = micro_repo / "build/deploy/cpu/gguf_q4_k_m"
    contract = json.loads((pkg / "serve.json").read_text())
    tok = AutoTokenizer.from_pretrained(str(pkg / "tokenizer"))
    assert recipes.special_prefix(pkg / "tokenizer") == tok.bos_token == "<s>"
    jinja = recipes.chat_template(contract["prompt_template"])
    request = recipes.vllm_request(contract, _spec(), None, True, [])
    rows = [json.loads(x) for x in (micro_repo / "build/data/test.jsonl").read_text().splitlines()][:8]
    before, after = recipes.template_parts(contract["prompt_template"])
    for row in rows:
        raw = row["prompt"][len(before):len(row["prompt"]) - len(after)]
        assert format_prompt(contract["prompt_template"], raw) == row["prompt"]
        rendered = render_jinja_template([[{"role": "user", "content": raw}]], chat_template=jinja,
                                         add_generation_prompt=True)[0][0]
        ids = tok(rendered, add_special_tokens=request["add_special_tokens"])["input_ids"]
        assert ids == tok(row["prompt"])["input_ids"]
    # a BOS written into the template instead would not do: the first word loses its "▁"
    assert tok("<s>" + rows[0]["prompt"], add_special_tokens=False)["input_ids"] != tok(rows[0]["prompt"])["input_ids"]

    ov_genai = pytest.importorskip("openvino_genai")
    import openvino as ov
    from openvino_tokenizers import convert_tokenizer

    ov_tok, ov_detok = convert_tokenizer(tok, with_detokenizer=True)
    ov.save_model(ov_tok, str(tmp_path / "openvino_tokenizer.xml"))
    ov.save_model(ov_detok, str(tmp_path / "openvino_detokenizer.xml"))
    genai = ov_genai.Tokenizer(str(tmp_path))
    genai.set_chat_template(jinja)
    raw = "the printer on floor 3 jams on every page"
    assert genai.apply_chat_template([{"role": "user", "content": raw}], add_generation_prompt=True) == \
        format_prompt(contract["prompt_template"], raw)
    for row in rows:
        assert [int(i) for i in genai.encode(row["prompt"]).input_ids.data[0]] == tok(row["prompt"])["input_ids"]
