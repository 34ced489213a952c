"""Semantic checks: what the JSON Schema cannot say about a spec, checked before any work starts.

The schema says `num_heads` is an integer; only a check can say it must divide `hidden_size`.
Everything here is cheap (no model is loaded, no data is read past a folder listing) so it runs in
`slmake check`, in the `check` stage that every DVC stage depends on (a bad spec fails there,
before DVC removes any stage's outputs), and again in each stage for the slices it reads.
Each problem is one line: the key path, the value, what was expected.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from .model_files import HashCache, ModelFacts, ModelFileError, facts


def check(spec: dict, only: Iterable[str] | None = None, cache: HashCache | None = None) -> list[str]:
    """Every semantic problem of ``spec`` (or of its slices ``only``, as a stage reads them).

    Assumes the spec passed the JSON Schema (spec.validate) for those slices."""
    whole = only is None
    keys = set(spec) if whole else set(only)
    problems: list[str] = []
    model: ModelFacts | None = None
    model_problem = None
    if "model" in spec and keys & {"model", "train"}:
        try:
            model = facts(spec["model"], cache)
        except ModelFileError as e:
            model_problem = str(e)
    if "data" in keys:
        problems += data_problems(spec["data"], check_source=whole)
        from .chat_template import problems as chat_problems   # data.prompt_template: chat_template

        problems += chat_problems(spec, render_it=whole)
    if "model" in keys:
        if model_problem:
            problems.append(model_problem)
        elif model is not None:
            problems += shape_problems(model, "model.scratch" if spec["model"]["source"] == "scratch" else None)
            if spec["model"]["source"] == "scratch":
                problems += _scratch_problems(spec["model"]["scratch"])
    if "train" in keys:
        problems += method_problems(spec["train"])
    if "train" in keys and model is not None:
        problems += train_problems(spec["train"], model)
    if "targets" in keys and isinstance(spec.get("targets"), dict):
        problems += target_problems(spec["targets"])
    if "distill" in keys and isinstance(spec.get("distill"), dict):
        problems += distill_problems(spec["distill"])
    return sorted(dict.fromkeys(problems))


def target_problems(targets_spec: dict) -> list[str]:
    """Each enabled target's own semantic checks (e.g. nothing to build, the Qualcomm SoC/HTP
    table): what compile would refuse, caught before DVC removes anything."""
    from . import targets

    problems = []
    for name, settings in targets_spec.items():
        if name in targets.REGISTRY:
            problems += targets.load(name).check(settings)
    return problems


def distill_problems(d: dict) -> list[str]:
    """distill, when enabled: its files exist, the teacher is runnable, a URL off this machine only
    with distill.teacher.allow_network (the network gate: README "Distillation")."""
    if not d["enabled"]:
        return []
    from .data.errors import CurationError
    from .data.ingest import find_sources
    from .distill.teachers import endpoint_problem

    out = []
    for key, path, fmt in (("distill.inputs", (d["inputs"] or {}).get("path"), (d["inputs"] or {}).get("format")),
                           ("distill.labelled", d["labelled"], "auto")):
        if path is None:
            out.append(f"{key}: null; distill.enabled needs it (raw inputs / a small labelled set)")
            continue
        try:
            find_sources(path, fmt)
        except CurationError as e:
            out.append(str(e).replace("data.source", key, 1))
    t = d["teacher"]
    if t["kind"] == "openai":
        out += [p for p in [endpoint_problem(t)] if p]
    else:
        p = Path(t["path"]) if t["path"] else None
        if p is None:
            out.append(f"distill.teacher.path: null; a {t['kind']} teacher needs its "
                       + ("GGUF file" if t["kind"] == "gguf" else "model folder"))
        elif t["kind"] == "gguf" and not p.is_file():
            out.append(f"distill.teacher.path: {p} is not a file (expected a .gguf model)")
        elif t["kind"] == "hf" and not (p / "config.json").is_file():
            out.append(f"distill.teacher.path: {p} is not a transformers model folder (no config.json)")
        if t["send"] == "input":
            out.append(f"distill.teacher.send: 'input' is for an openai endpoint that applies the template "
                       f"itself; a {t['kind']} teacher is always sent the task's prompt")
    if t["kind"] == "openai" and t["send"] == "input" and d["few_shot"]:
        out.append(f"distill.few_shot: {d['few_shot']} examples cannot be sent with distill.teacher.send=input "
                   "(the raw input only); set few_shot: 0 or send: prompt")
    return out


def check_params(path: str | Path = "params.yaml", cache: HashCache | None = None) -> tuple[dict | None, list[str]]:
    """What the check stage runs: read params.yaml strictly, then the JSON Schema, then these checks.
    Returns (spec or None, problems)."""
    from .spec import SpecError, load_params, validate

    try:
        spec = load_params(path)
    except SpecError as e:
        return None, [str(e)]
    return spec, validate(spec) or check(spec, cache=cache)


def data_problems(data: dict, check_source: bool = True) -> list[str]:
    """The data slice: its own semantic checks (templates format, regexes compile, the response
    schema is a schema, splits leave room for train, ...) and that the source has data files."""
    from .data.config import resolve
    from .data.errors import CurationError

    problems = []
    try:
        cfg = resolve(data)
    except CurationError as e:
        return _lines(str(e))
    if check_source:
        from .data.ingest import find_sources

        try:
            find_sources(cfg["source"], cfg["format"])
        except CurationError as e:
            problems += _lines(str(e))
    return problems


def _lines(message: str) -> list[str]:
    """A CurationError message as problem lines ("invalid data config:\n  - a\n  - b" -> [a, b])."""
    items = [line.strip()[2:] for line in message.splitlines() if line.strip().startswith("- ")]
    return items or [message]


def shape_problems(m: ModelFacts, prefix: str | None = None) -> list[str]:
    """Attention shapes that cannot build: heads must divide the hidden size (unless the model
    declares its head_dim), KV heads must divide heads, RoPE needs an even head size."""
    name = (lambda k: f"{prefix}.{k}") if prefix else (lambda k: f"{m.where}: {k}")
    keys = ("hidden_size", "num_heads", "num_kv_heads") if prefix else \
        ("hidden_size", "num_attention_heads", "num_key_value_heads")
    out = []
    if m.hidden and m.heads:
        if m.head_dim is None and m.hidden % m.heads:
            out.append(f"{name(keys[1])}: {m.heads} does not divide {keys[0]}={m.hidden} "
                       f"(each attention head gets hidden_size / num_heads dimensions)")
        elif (m.head_dim or m.hidden // m.heads) % 2:
            out.append(f"{name(keys[1])}: {m.heads} heads give head size {m.head_dim or m.hidden // m.heads}, "
                       "which is odd; rotary position embeddings need an even head size")
    if m.heads and m.kv_heads and m.heads % m.kv_heads:
        out.append(f"{name(keys[2])}: {m.kv_heads} does not divide {keys[1]}={m.heads} "
                   "(grouped-query attention shares each KV head among a whole number of heads)")
    return out


def _scratch_problems(s: dict) -> list[str]:
    out = []
    block, positions = s["pretrain"]["block_size"], s["max_position_embeddings"]
    if block > positions:
        out.append(f"model.scratch.pretrain.block_size: {block} exceeds model.scratch.max_position_embeddings="
                   f"{positions} (the model would pretrain on positions it does not have)")
    return out


def lora_matches(target: str, modules: Iterable[str]) -> bool:
    """peft's rule for a list of target names: the module's name is the target or ends in .target."""
    return any(name == target or name.endswith("." + target) for name in modules)


def method_problems(train: dict) -> list[str]:
    """Settings the chosen method would silently ignore: LoRA/QLoRA keys under full fine-tuning."""
    if train.get("method") != "full":
        return []
    return [f"train.{k}: set, but train.method is full (every weight is trained; {k} applies to "
            f"lora/qlora only): remove it or pick method lora/qlora" for k in ("lora", "quant") if k in train]


def train_problems(train: dict, m: ModelFacts) -> list[str]:
    out = []
    if m.max_positions and train["max_length"] > m.max_positions:
        out.append(f"train.max_length: {train['max_length']} exceeds the base model's {m.max_positions} "
                   f"positions ({m.where})")
    if m.modules and train["method"] != "full":
        missing = [t for t in train["lora"]["target_modules"] if not lora_matches(t, m.modules)]
        if missing:
            leaves = sorted({n.rsplit(".", 1)[-1] for n in m.modules})
            out.append(f"train.lora.target_modules: {missing} not in the base model ({m.where}); "
                       f"its weight-bearing modules are {leaves}")
    return out
