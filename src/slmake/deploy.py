"""Deploy packages: every built artifact of a target, ready to serve.

Only artifacts that pass the quality gate (slmake.gate: the lower bound of their Δ-vs-fp32 interval
stays >= -``bench.max_drop``) are packaged; ``build/deploy/<target>/refused.json`` lists the others
with their Δ, interval and reason.

``build/deploy/<target>/<artifact>/`` holds the artifact (hard-linked, else copied), the tokenizer,
``serve.json`` (what ``slmake serve`` needs: runtime entry, prompt template, response schema,
limits), a Hugging Face model card (``README.md`` with a ``model-index`` of the measured figures),
the data card, ``lineage.json`` (what went in, by hash), ``SERVE.md`` (the exact commands) and, for
GGUF, an Ollama ``Modelfile`` whose TEMPLATE renders the prompt exactly as training saw it and
whose stop strings are the model's own end-of-generation tokens — the two things a GGUF imported
into Ollama by hand usually gets wrong (it then never stops, or answers in the wrong format).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
from pathlib import Path

import yaml

from . import gguf_meta
from .charts import accuracy_size  # matplotlib loads only when a chart is drawn
from .chat_template import CHAT, resolved
from .compile import MANIFEST_GLOB, manifest_path
from .gate import DEFAULT_MAX_DROP, gate, refused
from .io import atomic_dir, sha256_tree, write_json_atomic, write_text_atomic
from .runtimes.guide import decode_constraint
from .runtimes.llamacpp import load_llama_cpp
from .serve import recipes
from .serve.dashboard import dashboard_json
from .serve.llama_args import GREEDY, SAMPLING, context_tokens
from .serve.recipes import chat_template, template_parts
from .targets.intel_npu import pipeline_args

GO_PROMPT = "{{ .Prompt }}"
GRAFANA_DASHBOARD = "grafana-dashboard.json"   # the Prometheus metrics of `slmake serve` (serve/dashboard.py)


def package_target(target: str, compile_dir: Path, bench_dir: Path, evaluate_dir: Path, data_dir: Path,
                   data_card: Path, spec: dict, out_root: Path) -> list[str]:
    """Write one package per built artifact of ``target`` that passes the quality gate (slmake.gate,
    ``bench.max_drop``); return their names. The refused ones are listed, with their Δ and interval,
    in ``<out_root>/<target>/refused.json`` instead of a package."""
    listing = json.loads((compile_dir / "artifacts.json").read_text())
    figures = _load(bench_dir / f"{target}.json").get(target, {})
    details = _load(bench_dir / f"{target}.details.json").get(target, {})
    max_drop = spec["bench"].get("max_drop", DEFAULT_MAX_DROP)
    verdicts = gate({e["name"]: {**details.get(e["name"], {}), **figures.get(e["name"], {})}
                     for e in listing["artifacts"] if e["status"] == "built"}, max_drop)
    data_sha = sha256_tree(data_dir)
    made = []
    with atomic_dir(out_root / target) as tmp:
        write_json_atomic(tmp / "refused.json", {"max_drop": max_drop, "refused": refused(verdicts)})
        for entry in listing["artifacts"]:
            if entry["status"] != "built" or verdicts[entry["name"]]["verdict"] == "refused":
                continue
            name = entry["name"]
            pkg = tmp / name
            pkg.mkdir()
            _link_tree(compile_dir / entry["path"], pkg / entry["path"])
            shutil.copytree(evaluate_dir / "tokenizer", pkg / "tokenizer")
            manifest = _load(manifest_path(compile_dir / entry["path"], name))
            contract = serve_contract(target, entry, spec, figures.get(name, {}), details.get(name, {}))
            contract["gate"] = verdicts[name]   # why it ships: its Δ interval vs bench.max_drop
            # not write_json_atomic: it sorts keys, and the schema's property order is the order the
            # model was trained to answer in (the grammar keeps it)
            write_text_atomic(pkg / "serve.json", json.dumps(contract, indent=2, ensure_ascii=False) + "\n")
            if entry["format"] == "gguf":
                write_text_atomic(pkg / "Modelfile", modelfile(pkg / entry["path"], entry["path"], spec))
                for file, text in llama_server_files(contract, entry, spec).items():
                    write_text_atomic(pkg / file, text)
                os.chmod(pkg / LLAMA_SERVER_SH, 0o755)
            for file, text in engine_files(contract, entry, spec, pkg, manifest.get("toolchain", {})).items():
                write_text_atomic(pkg / file, text)
                if file.endswith(".sh"):
                    os.chmod(pkg / file, 0o755)
            chart = _accuracy_size_chart(target, figures, details, name)
            if chart:
                write_text_atomic(pkg / "accuracy_size.svg", chart)
            card = model_card(contract, spec, entry, "accuracy_size.svg" if chart else None)
            write_text_atomic(pkg / "README.md", card)
            write_text_atomic(pkg / GRAFANA_DASHBOARD, dashboard_json(contract["name"]))
            write_text_atomic(pkg / "SERVE.md", serve_commands(contract, entry, spec, manifest.get("toolchain", {})))
            if data_card.is_file():
                shutil.copyfile(data_card, pkg / "data_card.md")
            write_json_atomic(pkg / "lineage.json", {
                "artifact": {k: entry.get(k) for k in ("name", "format", "precision", "sha256", "size_bytes")},
                "inputs": {**manifest.get("inputs", {}), "curated_data_sha256": data_sha},
                "spec": {"model": spec["model"], "data": {k: spec["data"][k] for k in ("name", "source")},
                         "train": spec["train"], "targets": manifest.get("spec", {}).get("targets")},
                "toolchain": manifest.get("toolchain", {}), "slmake_version": manifest.get("slmake_version")})
            made.append(name)
    return made


def serve_contract(target: str, entry: dict, spec: dict, figures: dict, details: dict) -> dict:
    """Everything the server needs to answer exactly as bench measured: same runner entry, same
    prompt template, same token budget, same schema."""
    data = spec["data"]
    return {
        "name": f"{target}/{entry['name']}",
        "target": target,
        "artifact": {k: v for k, v in entry.items() if k not in ("sha256", "size_bytes")},
        "model": spec["model"]["name"],
        "data": data["name"],
        "prompt_template": resolved(data),   # chat_template: the model's own, as curate rendered prompts
        "response_format": data.get("response_format", "json"),
        # every format's schema: a JSON answer is parsed and validated, a text answer is validated as
        # the string it is (and both decode under the schema's grammar where the runtime has one)
        "response_schema": data["response_schema"],
        "label_field": data.get("label_field"),
        "pii": data.get("pii"),
        "max_new_tokens": spec["eval"]["max_new_tokens"],
        "max_prompt_tokens": spec["train"]["max_length"],
        "threads": spec["bench"]["threads"],
        "tokenizer": "tokenizer/tokenizer.json",
        "figures": figures,
        "status": details.get("status"),
        # eval.constrained, when set: false = benchmarked (so served) without the grammar; absent/null =
        # under the grammar whenever the runtime has one (serve's default)
        **({"constrained": spec["eval"]["constrained"]} if spec["eval"].get("constrained") is not None else {}),
    }


# --- Ollama -----------------------------------------------------------------------------------

def go_template(prompt_template: str) -> str:
    """The spec's Python template as an Ollama (Go text/template) TEMPLATE: ``{instruction}``
    becomes ``{{ .Prompt }}``; literal text is escaped so Go prints it unchanged."""
    if '"""' in prompt_template:
        raise ValueError('data.prompt_template contains """, which an Ollama Modelfile cannot quote')
    before, after = template_parts(prompt_template)

    def esc(text: str) -> str:   # Go template literal text: only "{{" starts an action
        return text.replace("{{", '{{ "{{" }}')
    return esc(before) + GO_PROMPT + esc(after)


def stop_strings(gguf: Path) -> list[str]:
    """The text of every end-of-generation token in the GGUF's vocabulary (EOS, EOT, <|im_end|>):
    exactly what llama.cpp itself stops on, so Ollama stops where bench stopped."""
    llama_cpp = load_llama_cpp()
    llm = llama_cpp.Llama(str(gguf), vocab_only=True, verbose=False)
    try:
        vocab = llama_cpp.llama_model_get_vocab(llm.model)
        eog = [t for t in range(llm.n_vocab()) if llama_cpp.llama_vocab_is_eog(vocab, t)]
        return sorted({llm.detokenize([t], special=True).decode("utf-8", errors="replace") for t in eog} - {""})
    finally:
        llm.close()


def modelfile(gguf: Path, rel_path: str, spec: dict) -> str:
    template = go_template(resolved(spec["data"]))   # chat_template: the model's chat format, one user turn
    num_ctx = context_tokens(spec["train"]["max_length"], spec["eval"]["max_new_tokens"])
    lines = [f"# Ollama Modelfile: {spec['model']['name']} fine-tuned on {spec['data']['name']} (built by slmake)",
             "# ollama create <name> -f Modelfile && ollama run <name> \"<raw input>\"",
             *([("# TEMPLATE is the base model's own chat template (data.prompt_template: chat_template), "
                 "rendered for one user turn")] if spec["data"]["prompt_template"] == CHAT else []),
             f"FROM ./{rel_path}",
             f'TEMPLATE """{template}"""',
             *(f"PARAMETER stop {json.dumps(s)}" for s in stop_strings(gguf)),
             f"PARAMETER temperature {SAMPLING['temperature']}",
             f"PARAMETER top_k {SAMPLING['top_k']}",
             f"PARAMETER repeat_penalty {SAMPLING['repetition_penalty']}",   # Ollama's default 1.1 changes greedy answers
             f"PARAMETER num_ctx {num_ctx}",
             f"PARAMETER num_predict {spec['eval']['max_new_tokens']}"]
    return "\n".join(lines) + "\n"


# --- llama.cpp's llama-server -------------------------------------------------------------------

LLAMA_SERVER_SH = "llama-server.sh"
LLAMA_SERVER_SLOTS = 4   # parallel slots (continuous batching); the context is split between them


def llama_server_args(contract: dict, entry: dict, spec: dict, slots: int = LLAMA_SERVER_SLOTS) -> list[str]:
    """llama-server's arguments for this package (run from the package folder), from the spec that
    also writes the Modelfile: the model, greedy decoding as bench ran it, the answer budget, one
    slot's context = the Modelfile's num_ctx, flash attention off (bench's and slmake serve's
    attention: with it on, 1 answer in 200 differed on the default build), the training template as a chat template (for
    /v1/chat/completions; /completion and /v1/completions take the rendered prompt as is), and the
    response schema as the default constraint of every request (--json-schema-file; a text answer's
    grammar as --grammar-file). llama-server stops on the GGUF's end-of-generation tokens, the
    Modelfile's stop strings."""
    per_slot = context_tokens(spec["train"]["max_length"], spec["eval"]["max_new_tokens"])
    args = ["-m", entry["path"], "--host", "127.0.0.1", "--port", "8080", "--parallel", str(slots),
            "-c", str(per_slot * slots), "-n", str(spec["eval"]["max_new_tokens"]),
            *GREEDY, "--jinja", "--chat-template-file", "llama-server.jinja", "--no-webui"]
    if contract.get("threads"):
        args += ["-t", str(contract["threads"]), "-tb", str(contract["threads"])]
    gbnf, _ = _constraint(contract)
    if gbnf is not None:
        args += (["--grammar-file", "answer.gbnf"] if contract["response_format"] == "text"
                 else ["--json-schema-file", "response_schema.json"])
    return args


def llama_server_files(contract: dict, entry: dict, spec: dict) -> dict[str, str]:
    """The files the llama-server command reads, and the command itself as ``llama-server.sh``."""
    files = {"llama-server.jinja": chat_template(contract["prompt_template"])}   # llama-server adds BOS itself
    gbnf, _ = _constraint(contract)
    if gbnf is not None:
        if contract["response_format"] == "text":
            files["answer.gbnf"] = gbnf
        else:
            files["response_schema.json"] = json.dumps(contract["response_schema"], indent=2, ensure_ascii=False) + "\n"
    command = " ".join(shlex.quote(a) for a in llama_server_args(contract, entry, spec))
    files[LLAMA_SERVER_SH] = (
        "#!/bin/sh\n"
        f"# llama.cpp's llama-server on {contract['name']} ({LLAMA_SERVER_SLOTS} slots, continuous batching),\n"
        "# generated by slmake deploy from the spec that wrote the Modelfile. llama-server: built by\n"
        "# requirements/llama_cpp.sh (<venv>/bin), or set LLAMA_SERVER. Extra arguments override these.\n"
        f'cd "$(dirname "$0")" && exec "${{LLAMA_SERVER:-llama-server}}" {command} "$@"\n')
    return files


def engine_files(contract: dict, entry: dict, spec: dict, pkg: Path, toolchain: dict) -> dict[str, str]:
    """The engines' own recipes (slmake.serve.recipes): vLLM for a Hugging Face folder, OpenVINO
    Model Server for an OpenVINO IR; paths relative to the package folder ``pkg``."""
    gbnf, _ = _constraint(contract)
    schema = ({"response_schema.json": json.dumps(contract["response_schema"], indent=2, ensure_ascii=False) + "\n"}
              if contract.get("response_schema") else {})   # what a client validates answers against
    if entry["format"] == "hf-safetensors":
        return {**schema, **recipes.vllm_files(contract, entry, spec, pkg / entry["path"], pkg / "tokenizer", gbnf)}
    if entry["format"] == "openvino-ir":
        device, properties = pipeline_args(entry.get("notes", {}), entry["precision"], contract.get("threads"))
        return {**schema, **recipes.ovms_files(contract, entry, spec, device, properties)}
    return {}


def _constraint(contract: dict) -> tuple[str | None, str | None]:
    return decode_constraint(contract.get("constrained"), contract.get("response_schema"),
                             contract.get("response_format", "json"))


# --- model card -------------------------------------------------------------------------------

def _accuracy_size_chart(target: str, figures: dict, details: dict, name: str) -> str | None:
    """The target's accuracy vs size chart (slmake.charts) with this artifact ringed; None when bench
    measured none of them."""
    rows = [{"target": target, "artifact": n, **details.get(n, {}), **f} for n, f in sorted(figures.items())]
    if not any(r.get("exact_match") is not None and r.get("size_mb") is not None for r in rows):
        return None
    return accuracy_size(rows, highlight=f"{target}/{name}")


def model_card(contract: dict, spec: dict, entry: dict, chart: str | None = None) -> str:
    figures, model, data = contract["figures"], spec["model"], spec["data"]
    metrics = [(k, figures.get(k), label) for k, label in (
        ("exact_match", "Exact match (test split)"), ("valid", "Schema-valid rate"),
        ("parity", "Greedy parity vs the fp32 reference"), ("decode_tok_s", f"Decode tokens/s ({contract['threads']} threads)"),
        ("ttft_ms", "Time to first token (ms)"), ("size_mb", "Artifact size (MB)"), ("peak_rss_mb", "Peak RSS (MB)"))]
    front = {
        "base_model": _base_model(model),
        "license": _license(model, data),
        "datasets": [data["name"]],
        "pipeline_tag": "text-generation",
        "library_name": {"gguf": "gguf", "onnx-genai": "onnxruntime-genai", "openvino-ir": "openvino"}.get(
            entry["format"], "transformers"),
        "tags": ["slmake", contract["target"], entry["format"], entry["precision"]],
        "model-index": [{"name": f"{model['name']}-{data['name']}-{contract['target']}-{entry['name']}",
                         "results": [{"task": {"type": "text-generation", "name": data["name"]},
                                      "dataset": {"type": data["name"], "name": data["name"], "split": "test"},
                                      "metrics": [{"type": k, "value": v, "name": label}
                                                  for k, v, label in metrics if v is not None]}]}],
    }
    rows = "\n".join(f"| {label} | {v} |" for _, v, label in metrics if v is not None) or "| (not benchmarked) | |"
    answers = ("Responses are plain text (not JSON), a string that satisfies"
               if contract["response_format"] == "text" else "Responses follow")
    return (f"---\n{yaml.safe_dump(front, sort_keys=False, allow_unicode=True)}---\n\n"
            f"# {contract['name']}: {model['name']} fine-tuned on {data['name']}\n\n"
            f"{data.get('card', {}).get('description') or ''}\n\n"
            f"Artifact `{entry['name']}` ({entry['format']}, {entry['precision']}), runtime {entry['runtime']}.\n"
            "Built by slmake; measured on the held-out test split by `bench@" + contract["target"] + "`.\n\n"
            f"| figure | value |\n|---|---|\n{rows}\n\n"
            + (f"![Accuracy vs size of the {contract['target']} artifacts (this one ringed; colour: decode "
               f"tokens/s)]({chart})\n\n" if chart else "")
            + "## Use\n\nSend the raw input only; the prompt template below is applied for you by "
            "`slmake serve` and by the Ollama Modelfile:\n\n"
            f"```\n{contract['prompt_template']}```\n\n"
            + (f"{answers} this JSON Schema (enforced while decoding where the runtime supports it, "
               f"validated always):\n\n```json\n{json.dumps(contract['response_schema'], indent=2)}\n```\n\n"
               if contract["response_schema"] else "")
            + "See `SERVE.md` for the commands, `data_card.md` for the data, `lineage.json` for what went in.\n")


def serve_commands(contract: dict, entry: dict, spec: dict, toolchain: dict | None = None) -> str:
    name = contract["name"]
    out = [f"# Serving {name}", "",
           "OpenAI-compatible API (greedy, prompt template and response schema applied by the server):", "",
           f"    slmake serve {name}            # from the project root, or:",
           f"    slmake serve build/deploy/{name}", "",
           "Then, e.g.: `curl -s localhost:8000/v1/completions -H 'content-type: application/json' "
           f"-d '{{\"model\": \"{name}\", \"prompt\": \"<raw input>\"}}'`.", "",
           f"Monitoring: Prometheus metrics at /metrics (`{GRAFANA_DASHBOARD}` is a Grafana dashboard for them); "
           "OpenTelemetry traces and GenAI metrics over OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.", ""]
    if entry["format"] == "gguf":
        tag = re.sub(r"[^a-z0-9._-]+", "-", f"{contract['model']}-{contract['data']}-{entry['name']}".lower())
        out += ["Ollama (the Modelfile carries the training prompt template and stop tokens):", "",
                f"    ollama create {tag} -f Modelfile", f"    ollama run {tag} \"<raw input>\"", "",
                "llama-cpp-python's own server (send prompts already rendered with the template in README.md):", "",
                f"    python -m llama_cpp.server --model {entry['path']} --n_ctx 0", "",
                f"llama.cpp's llama-server ({LLAMA_SERVER_SLOTS} parallel slots, continuous batching; the response "
                "schema constrains every request; /v1/chat/completions applies the training template, "
                "/completion and /v1/completions take the rendered prompt), as `./llama-server.sh`:", "",
                "    llama-server " + " ".join(shlex.quote(a) for a in llama_server_args(contract, entry, spec)), ""]
    elif entry["format"] == "hf-safetensors":
        out += recipes.vllm_section(contract, entry, spec)
    elif entry["format"] == "openvino-ir":
        device, _ = pipeline_args(entry.get("notes", {}), entry["precision"], contract.get("threads"))
        out += recipes.ovms_section(contract, device, toolchain or {}, _constraint(contract)[0])
    else:
        out += recipes.no_server_section(entry)
    return "\n".join(out)


# --- helpers ----------------------------------------------------------------------------------

def _load(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def _link_tree(src: Path, dest: Path) -> None:
    """Hard links where the filesystem allows (a package costs no disk), copies elsewhere."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    files = [src] if src.is_file() else sorted(p for p in src.rglob("*") if p.is_file())
    for f in files:
        if f.match(MANIFEST_GLOB):   # the compile dir's own bookkeeping; lineage.json replaces it
            continue
        target = dest if src.is_file() else dest / f.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(f, target)
        except OSError:
            shutil.copyfile(f, target)


def _base_model(model: dict) -> str:
    if model["source"] == "scratch":
        return f"{model['name']} (pretrained from scratch by slmake)"
    hf = model.get("hf") or {}
    return (hf.get("gguf_file") and f"{hf['path']}/{hf['gguf_file']}") or hf.get("path") or model["name"]


def _license(model: dict, data: dict) -> str:
    """The base model's licence as it declares it (GGUF general.license, or the folder's card);
    a scratch model is made from the data alone, so it carries the data's licence."""
    hf = model.get("hf") or {}
    if model["source"] == "hf" and hf.get("gguf_file"):
        try:
            licence = gguf_meta.read(Path(hf["path"]) / hf["gguf_file"]).fields.get("general.license")
            if licence is not None:
                return licence
        except Exception:  # an unreadable file is the base stage's error to report, not ours
            pass
    if model["source"] == "hf" and hf.get("path"):
        readme = Path(hf["path"]) / "README.md"
        m = re.match(r"---\n(.*?)\n---", readme.read_text(errors="replace"), re.S) if readme.is_file() else None
        if m:
            with_license = yaml.safe_load(m.group(1)) or {}
            if isinstance(with_license, dict) and with_license.get("license"):
                return str(with_license["license"])
    declared = str((data.get("card") or {}).get("license") or "")
    first = declared.split()[0].lower() if declared.split() else ""
    return first or "other"
