"""The model config ONNX Runtime GenAI's builder (0.18) is handed, per family, where it misreads
what transformers 5 writes. Run as ``python -m slmake.targets.ort_genai_config <builder args>``:
the builder runs unchanged, with ``AutoConfig.from_pretrained`` returning configs that ``adapt``
has corrected (in memory: the model folder is never touched). What was changed, or why the family
cannot be built, goes to the JSON file named by ``$SLMAKE_ORT_GENAI_REPORT``; the build records it
in the artifact's notes or makes it the artifact's reason.

Why per family (transformers 5.5 configs):

- phi3: the builder picks its LongRoPE graph whenever ``max_position_embeddings !=
  original_max_position_embeddings`` and then reads LongRoPE factors that a default-RoPE config
  does not have (``KeyError: 'multi_cache'``). With default RoPE, transformers uses
  ``original_max_position_embeddings`` for nothing numeric, so it is set to
  ``max_position_embeddings`` (the builder's plain Phi-3 graph). A LongRoPE config keeps its graph;
  ``rope_parameters["type"]``, which the builder reads and transformers 5 may not write, is filled in.
- gemma3 (text): transformers 5 moved ``rope_local_base_freq`` and ``rope_theta`` into
  ``rope_parameters["sliding_attention" | "full_attention"]``; the builder reads the old
  attributes. They are set back from the per-layer-type entries. The builder applies one RoPE
  scaling to both its caches, so a config with scaled (non-default) RoPE on either layer type is
  refused, with what the user can do.
"""

from __future__ import annotations

import json
import os
import sys

REPORT_ENV = "SLMAKE_ORT_GENAI_REPORT"
UNSUPPORTED_HINT = ("build the GGUF artifacts only (`-S targets.cpu.onnx_genai.precisions=[]`), or another "
                    "target (intel_npu exports through optimum-intel)")


class Unsupported(ValueError):
    """The builder cannot build this config correctly; the message says why and what to do."""


def adapt(config) -> tuple[list[str], list[str]]:
    """Correct ``config`` (a transformers config object) in place for the builder; returns one line
    per change and the builder ``--extra_options`` the config needs. Raises Unsupported where no
    corrected config would build the same model."""
    model_type = getattr(config, "model_type", "")
    rope = getattr(config, "rope_parameters", None)
    rope = rope if isinstance(rope, dict) else {}
    changes = []
    if model_type == "phi3":
        most, original = config.max_position_embeddings, getattr(config, "original_max_position_embeddings", None)
        if rope.get("rope_type", "default") == "longrope":
            if "type" not in rope:
                rope["type"] = "longrope"
                changes.append("phi3: rope_parameters.type = 'longrope' (the builder's LongRoPE graph reads it)")
        elif original is not None and original != most:
            config.original_max_position_embeddings = most
            changes.append(f"phi3: original_max_position_embeddings {original} -> {most} (default RoPE: the "
                           "builder would pick its LongRoPE graph, which needs LongRoPE factors)")
    if model_type == "gemma3_text" and isinstance(rope.get("sliding_attention"), dict):
        local, full = rope["sliding_attention"], rope.get("full_attention") or {}
        scaled = {k: v.get("rope_type") for k, v in (("sliding_attention", local), ("full_attention", full))
                  if v.get("rope_type", "default") != "default"}
        if scaled:
            raise Unsupported(f"gemma3: RoPE scaling {scaled} per layer type; ONNX Runtime GenAI's builder applies "
                              f"one scaling to both the local and the global layers, so its model would differ "
                              f"from transformers'; {UNSUPPORTED_HINT}")
        config.rope_local_base_freq = local["rope_theta"]
        config.rope_theta = full.get("rope_theta", getattr(config, "rope_theta", None))
        rope.setdefault("rope_type", "default")
        changes.append(f"gemma3: rope_local_base_freq = {local['rope_theta']}, rope_theta = {config.rope_theta} "
                       "(from rope_parameters.sliding_attention/full_attention, where transformers 5 keeps them)")
    options = []
    window = getattr(config, "sliding_window", None) or 0
    if window > 0:
        options.append("windowed_kv_cache=false")
        changes.append(f"{model_type}: windowed_kv_cache=false (sliding window {window}: the bounded window "
                       "cache refuses a generation shorter than the window)")
        if getattr(config, "layer_types", None) is None:
            config.layer_types = ["sliding_attention"] * config.num_hidden_layers
            changes.append(f"{model_type}: layer_types = sliding_attention x {config.num_hidden_layers} (transformers "
                           "applies the window to every layer; without layer_types the builder applies it to none)")
    return changes, options


def _patch() -> None:
    """Every config the builder loads (its own, and the one inside its model loading) is adapted."""
    from transformers import AutoConfig

    load = AutoConfig.from_pretrained

    def from_pretrained(*args, **kwargs):
        out = load(*args, **kwargs)   # a config, or (config, unused kwargs)
        adapt(out[0] if isinstance(out, tuple) else out)
        return out

    AutoConfig.from_pretrained = from_pretrained


def main() -> None:
    import runpy

    from transformers import AutoConfig

    args, report = sys.argv[1:], os.environ.get(REPORT_ENV)
    try:
        config = AutoConfig.from_pretrained(args[args.index("-i") + 1])
    except Exception:  # the builder loads it again and says why it cannot
        config = None
    try:
        changes, options = adapt(config) if config is not None else ([], [])
    except Unsupported as e:
        _write(report, {"error": str(e)})
        print(f"slmake: {e}", file=sys.stderr)
        sys.exit(3)
    if changes:
        _write(report, {"changes": changes})
        print("slmake: config handed to the builder: " + "; ".join(changes), flush=True)
    if options:   # more values of the builder's one --extra_options (given twice, argparse keeps the last)
        at = args.index("--extra_options") + 1 if "--extra_options" in args else len(args)
        args[at:at] = ([] if "--extra_options" in args else ["--extra_options"]) + options
    _patch()
    sys.argv = ["onnxruntime_genai.models.builder", *args]
    runpy.run_module("onnxruntime_genai.models.builder", run_name="__main__", alter_sys=True)


def _write(report: str | None, data: dict) -> None:
    if report:
        with open(report, "w") as f:
            json.dump(data, f)


if __name__ == "__main__":
    main()
