"""Semantic checks: what the JSON Schema cannot say about a spec, checked before any work starts.

The schema says `num_heads` is an integer; only a check can say it must divide `hidden_size`.
Everything here is cheap (no model is loaded, no data is read past a folder listing) so it runs in
`slmake check`, in the `check` stage that every DVC stage depends on (a bad spec fails there,
before DVC removes any stage's outputs), and again in each stage for the slices it reads.
Each problem is one line: the key path, the value, what was expected.

This module sits above everything it checks (spec, data, distill, targets, model files) and
nothing in slmake imports it but the entry points. `spec_problems` is the one place that says
"the JSON Schema, then these checks"; `load_spec` (compose or read, then spec_problems) is how
`slmake check`, the check stage (`check_params`) and every stage (`stage_params`) get a spec.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path

from . import targets
from .chat_template import problems as chat_problems
from .data.config import resolve
from .data.errors import CurationError
from .data.ingest import find_sources
from .distill.teachers import endpoint_problem
from .model_files import HashCache, ModelFacts, ModelFileError, facts, shape_problems
from .process_setup import offline
from .runtimes.confidence import label_target
from .spec import SpecError, compose, load_params, validate


class InvalidSpec(SpecError):
    """A spec that composed or read but has problems; ``problems`` holds one line each."""

    def __init__(self, problems: list[str], where: str | Path | None = None, spec: dict | None = None):
        self.problems, self.spec = problems, spec
        head = f"{where}: invalid spec:" if where else "invalid spec:"
        super().__init__(head + "\n" + "\n".join(f"  - {p}" for p in problems))


def spec_problems(spec: dict, only: Iterable[str] | None = None, cache: HashCache | None = None) -> list[str]:
    """Every problem of ``spec`` (or of its slices ``only``): the JSON Schema first, then -- only
    once it passes, as the checks rely on its types -- the semantic checks below."""
    return validate(spec, only=only) or check(spec, only=only, cache=cache)


def load_spec(path: str | Path = "params.yaml", *, conf: str | Path | None = None,
              overrides: list[str] | None = None, only: Iterable[str] | None = None,
              cache: HashCache | None = None) -> dict:
    """Compose, validate, check: the one way in. The spec is params.yaml at ``path`` (read strictly:
    file, line and key of a YAML problem; duplicate keys refused) or, given ``conf``, that folder
    composed with Hydra ``overrides`` (as `dvc exp run -S` does). Then spec_problems, for the whole
    spec or the slices ``only``. Raises SpecError when the spec cannot be composed or read,
    InvalidSpec (with the problem lines) when the schema or a check finds problems."""
    spec = compose(conf, overrides) if conf is not None else load_params(path)
    problems = spec_problems(spec, only=only, cache=cache)
    if problems:
        raise InvalidSpec(problems, where=conf if conf is not None else path, spec=spec)
    return spec


def check_params(path: str | Path = "params.yaml", cache: HashCache | None = None) -> tuple[dict | None, list[str]]:
    """What the check stage runs: load_spec on params.yaml. Returns (spec or None, problems)."""
    try:
        return load_spec(path, cache=cache), []
    except InvalidSpec as e:
        return e.spec, e.problems
    except SpecError as e:
        return None, [str(e)]


def stage_params(*keys: str, path: str | Path = "params.yaml") -> dict:
    """A stage's start: load_spec on params.yaml for the slices ``keys`` (schema and checks; on a
    problem print it and exit 2), then take this whole process offline -- every library's network
    switch off (process_setup.offline) unless model.allow_network -- and return {key: slice}."""
    try:
        spec = load_spec(path, only=keys, cache=HashCache(Path(path).parent / "build/.hash_cache.json"))
    except SpecError as e:
        print(f"slmake: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    offline(bool(spec.get("model", {}).get("allow_network", False)))
    return {k: spec[k] for k in keys}


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
    constrained = (spec.get("eval") or {}).get("constrained")
    if "eval" in keys and constrained and not (spec.get("data") or {}).get("response_schema"):
        problems.append("eval.constrained: true decodes under data.response_schema's grammar, but the spec has "
                        "no data.response_schema (set one, or eval.constrained: null)")
    if "serve" in keys and (spec.get("serve") or {}).get("min_confidence") is not None:
        problems += confidence_problems(spec.get("data") or {})
    return sorted(dict.fromkeys(problems))


def confidence_problems(data: dict) -> list[str]:
    """serve.min_confidence routes on the probability of an enum label: the response schema must have one."""
    if label_target(data.get("response_schema"), data.get("label_field"))[0]:
        return []
    return ["serve.min_confidence: routing on confidence needs an enum label: data.label_field naming a property "
            "of data.response_schema that has an enum (or an enum schema for a text answer); this spec has "
            f"label_field {data.get('label_field')!r} (set serve.min_confidence: null)"]


def target_problems(targets_spec: dict) -> list[str]:
    """Each enabled target's own semantic checks (e.g. nothing to build, the Qualcomm SoC/HTP
    table): what compile would refuse, caught before DVC removes anything."""
    problems = []
    for name, settings in targets_spec.items():
        if name in targets.REGISTRY:
            problems += targets.load(name).validate_settings(settings)
    return problems


def distill_problems(d: dict) -> list[str]:
    """distill, when enabled: its files exist, the teacher is runnable, a URL off this machine only
    with distill.teacher.allow_network (the network gate: docs/guide/distillation.md)."""
    if not d["enabled"]:
        return []
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


def data_problems(data: dict, check_source: bool = True) -> list[str]:
    """The data slice: its own semantic checks (templates format, regexes compile, the response
    schema is a schema, splits leave room for train, ...) and that the source has data files."""
    problems = []
    try:
        cfg = resolve(data)
    except CurationError as e:
        return _lines(str(e))
    if check_source:
        try:
            find_sources(cfg["source"], cfg["format"])
        except CurationError as e:
            problems += _lines(str(e))
    return problems


def _lines(message: str) -> list[str]:
    """A CurationError message as problem lines ("invalid data config:\n  - a\n  - b" -> [a, b])."""
    items = [line.strip()[2:] for line in message.splitlines() if line.strip().startswith("- ")]
    return items or [message]


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
