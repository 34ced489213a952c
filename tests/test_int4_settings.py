"""int4 settings: what each target passes to its quantizer, and what the spec rejects."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from slmake import spec as spec_mod
from slmake.report import markdown
from slmake.targets import intel_npu
from slmake.targets.tools import ort_genai_int4_options

ROOT = Path(__file__).resolve().parents[1]


def test_ort_genai_options_map_every_setting():
    opts = ort_genai_int4_options({"block_size": 64, "symmetric": False, "accuracy_level": 1,
                                   "algorithm": "k_quant", "lm_head": "int8", "embeddings": "int4",
                                   "sensitive_layers": "int8"})
    assert opts == ["block_size=64", "accuracy_level=1", "algo_config=k_quant", "is_symmetric=false",
                    "matmul_mixed_precision=last_matmul:int8,mixed_layers:int8"]
    assert ort_genai_int4_options({"lm_head": "float", "embeddings": "float", "accuracy_level": None}) == [
        "nodes_to_exclude=/lm_head/MatMul,/model/embed_tokens/Gather"]
    assert ort_genai_int4_options({}) == []   # the builder's own defaults


def test_default_int4_settings_reach_the_builder_only_for_int4(tmp_path):
    """auto: scale_min where the base's weights sit on a 4-bit GGUF grid (and the keys allow it),
    the builder's k_quant with the same keys otherwise."""
    import numpy as np
    from safetensors.numpy import save_file

    from slmake.targets import cpu

    conf = yaml.safe_load((ROOT / "conf/targets/cpu.yaml").read_text())["cpu"]
    int4 = conf["onnx_genai"]["int4"]
    assert int4["algorithm"] == "auto"
    k_quant = ort_genai_int4_options({**int4, "algorithm": "k_quant"})
    assert cpu._builder_args(conf, "int4") == {"options": k_quant} and "algo_config=k_quant" in k_quant
    assert cpu._builder_args(conf, "fp32") == {"options": []}

    rng = np.random.default_rng(0)
    levels = rng.integers(0, 16, (64, 4, 32))
    levels[..., 0], levels[..., 1] = 0, 15
    on_grid = (rng.uniform(-0.1, 0, (64, 4, 1)) + rng.uniform(0.001, 0.01, (64, 4, 1)) * levels).reshape(64, 128)
    for name, w in (("grid", on_grid), ("float", rng.normal(0, 0.02, (64, 128)))):
        (tmp_path / name).mkdir()
        save_file({"model.layers.0.mlp.up_proj.weight": w.astype(np.float32)}, str(tmp_path / name / "model.safetensors"))
    assert cpu._builder_args(conf, "int4", tmp_path / "grid") == {"scale_min": {**int4, "algorithm": "scale_min"}}
    assert cpu._builder_args(conf, "int4", tmp_path / "float") == {"options": k_quant}
    symmetric = {**conf, "onnx_genai": {**conf["onnx_genai"], "int4": {**int4, "symmetric": True}}}
    assert "options" in cpu._builder_args(symmetric, "int4", tmp_path / "grid")   # scale_min cannot be symmetric


def test_scale_min_refuses_settings_it_cannot_honour():
    from slmake.targets import cpu

    conf = yaml.safe_load((ROOT / "conf/targets/cpu.yaml").read_text())["cpu"]
    ok = {**conf, "onnx_genai": {**conf["onnx_genai"], "int4": {"algorithm": "scale_min", "sensitive_layers": "int8"}}}
    assert cpu.validate_settings(ok) == []
    bad = {**conf, "onnx_genai": {**conf["onnx_genai"], "int4": {"algorithm": "scale_min", "symmetric": True,
                                                                  "lm_head": "float", "embeddings": "int4"}}}
    (problem,) = cpu.validate_settings(bad)
    assert "targets.cpu.onnx_genai.int4" in problem and "symmetric: True" in problem and "lm_head: float" in problem


def test_schema_rejects_bad_int4_settings_by_key():
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    bad = copy.deepcopy(params)
    bad["targets"]["cpu"]["onnx_genai"]["int4"] = {"block_size": 48, "lm_head": "fp8"}
    npu = yaml.safe_load((ROOT / "conf/targets/intel_npu.yaml").read_text())["intel_npu"]
    bad["targets"]["intel_npu"] = {**npu, "int4": {"ratio": 1.5}}
    problems = "\n".join(spec_mod.validate(bad))
    assert "targets.cpu.onnx_genai.int4.block_size" in problems and "48" in problems
    assert "targets.cpu.onnx_genai.int4.lm_head" in problems
    assert "targets.intel_npu.int4.ratio" in problems
    assert not spec_mod.validate(params)


def test_intel_npu_data_aware_options_need_a_dataset():
    s = {"group_size": -1, "backup_precision": "int8_asym", "int4": {"awq": True, "scale_estimation": True}}
    assert len(intel_npu.validate_settings(s)) == 2 and "int4.dataset" in intel_npu.validate_settings(s)[0]
    s["int4"].update(dataset="auto", ratio=0.9)
    assert intel_npu.validate_settings(s) == []
    args = intel_npu._export_args("int4_sym", s)
    assert args[args.index("--ratio") + 1] == "0.9" and "--awq" in args and "--scale-estimation" in args
    assert args[args.index("--dataset") + 1] == "auto"
    # the NPU recipe without the block: unchanged arguments
    assert intel_npu._export_args("int4_sym", {"group_size": -1, "backup_precision": "int8_asym"}) == [
        "--weight-format", "int4", "--sym", "--ratio", "1.0", "--group-size", "-1", "--backup-precision", "int8_asym"]


def test_intel_npu_train_calibration_is_the_train_split_as_trained(tmp_path):
    """int4.dataset: train hands NNCF the first num_samples train rows, prompt + response (the text
    the cpu target's importance matrix calibrates on), and the manifest notes say so; auto leaves the
    exporter its own; a build without a train split fails that IR naming the key."""
    import json

    from slmake.targets.base import BuildContext
    from slmake.targets.cpu import imatrix

    rows = [{"prompt": "### Ticket\nVPN down\n### Triage\n", "response": '{"category": "network"}'},
            {"text": "no prompt: skipped"}, {"prompt": "### Ticket\nno answer\n### Triage\n"},
            {"prompt": "### Ticket\nprinter\n### Triage\n", "response": '{"category": "hardware"}'}]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + "\n")
    (tmp_path / "val.jsonl").write_text(json.dumps({"prompt": "VAL", "response": "VAL"}) + "\n")
    ctx = BuildContext(merged=tmp_path, out=tmp_path / "out", data=tmp_path, logs=tmp_path / "logs")
    s = {"group_size": 64, "backup_precision": "int8_asym",
         "int4": {"ratio": 0.8, "awq": True, "scale_estimation": True, "dataset": "train", "num_samples": 2}}
    assert intel_npu.validate_settings(s) == []
    path, notes, err = intel_npu.calibration(ctx, "int4_sym", s)
    texts = json.loads(path.read_text())
    assert err == "" and texts == [rows[0]["prompt"] + rows[0]["response"], rows[2]["prompt"]]
    assert imatrix.calibration_text(tmp_path / "train.jsonl", 2) == ("\n\n".join(texts) + "\n", 2)  # one reader
    assert notes["dataset"] == "train" and notes["samples"] == 2 and len(notes["sha256"]) == 64
    assert path.parent == ctx.logs                            # outside the cached output
    args = intel_npu._export_args("int4_sym", s)
    assert args[args.index("--dataset") + 1:args.index("--dataset") + 4] == ["train", "--num-samples", "2"]
    assert intel_npu.calibration(ctx, "fp32", s) == (None, {}, "")
    s["int4"]["dataset"] = "auto"
    assert intel_npu.calibration(ctx, "int4_sym", s) == (None, {"dataset": "auto", "source": "texts the model "
                                                                "generates itself (NNCF)", "num_samples": 2}, "")
    s["int4"]["dataset"] = "train"
    _, _, err = intel_npu.calibration(BuildContext(tmp_path, tmp_path, tmp_path / "nothing", tmp_path), "int4_sym", s)
    assert "train.jsonl does not exist" in err and "targets.intel_npu.int4.dataset" in err
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["targets"]["intel_npu"] = {**yaml.safe_load((ROOT / "conf/targets/intel_npu.yaml").read_text())[
        "intel_npu"], "int4": {"dataset": "val"}}
    assert spec_mod.validate(params) == ["targets.intel_npu.int4.dataset: 'val' is not one of [None, 'auto', 'train']"]


def test_intel_npu_defaults_are_the_measured_int4_setting():
    """conf/targets/intel_npu.yaml must export what benchmarks/int4_accuracy.py measured at -1.5 pts
    on BANKING77 with SmolLM2 (ratio 0.8 on self-generated text lost 3.5; channel-wise, the NPU
    guide's recipe, lost 33.5 on the tickets) and pass the target's own check."""
    s = yaml.safe_load((ROOT / "conf/targets/intel_npu.yaml").read_text())["intel_npu"]
    assert intel_npu.validate_settings(s) == []
    assert intel_npu._export_args("int4_sym", s) == [
        "--weight-format", "int4", "--sym", "--ratio", "0.4", "--group-size", "64", "--backup-precision",
        "int8_asym", "--awq", "--scale-estimation", "--dataset", "train", "--num-samples", "128"]


def test_report_shows_each_artifacts_delta_vs_fp32():
    evaluation = {"base": {"exact_match": 0.1, "valid": 0.5, "n": 200},
                  "finetuned": {"exact_match": 0.68, "valid": 1.0, "n": 200}}
    rows = [{"target": "cpu", "artifact": "onnx_int4", "exact_match": 0.59, "n": 200},
            {"target": "cpu", "artifact": "gguf_q8_0", "exact_match": 0.685, "n": 200},
            {"target": "cuda", "artifact": "onnx_int4_cuda", "status": "skipped", "reason": "no GPU"}]
    md = markdown(rows, evaluation, {}, "m", "d")
    header = next(line for line in md.splitlines() if line.startswith("| target"))
    col = header.split(" | ").index("Δ vs fp32")
    cells = {line.split(" | ")[1]: line.split(" | ")[col] for line in md.splitlines() if line.startswith("| cpu") or
             line.startswith("| cuda")}
    assert cells == {"onnx_int4": "-0.090", "gguf_q8_0": "+0.005", "onnx_int4_cuda": "–"}


def test_report_shows_benchs_paired_delta_with_its_interval():
    evaluation = {"base": {"exact_match": 0.1, "valid": 0.5, "n": 200},
                  "finetuned": {"exact_match": 0.68, "valid": 1.0, "n": 200}}
    rows = [{"target": "cpu", "artifact": "onnx_int4", "exact_match": 0.64, "delta": -0.04, "delta_ci95": 0.0586,
             "n": 200}]
    md = markdown(rows, evaluation, {}, "m", "d")
    header = next(line for line in md.splitlines() if line.startswith("| target"))
    row = next(line for line in md.splitlines() if line.startswith("| cpu"))
    assert row.split(" | ")[header.split(" | ").index("Δ vs fp32")] == "-0.040 ±0.059"
    assert "95 % interval" in md


def test_paired_delta_counts_only_discordant_prompts():
    from slmake.metrics import exact_hits, paired_delta

    same = [True] * 120 + [False] * 80
    assert paired_delta(same, same) == {"delta": 0.0, "delta_ci95": 0.0}   # f16 at parity 1.0
    # 200 prompts: the reference alone gets 22 right, the artifact alone 14 (net -8 = -4 points)
    ref = [True] * 22 + [False] * 14 + [True] * 100 + [False] * 64
    art = [False] * 22 + [True] * 14 + [True] * 100 + [False] * 64
    d = paired_delta(art, ref)
    assert d["delta"] == -0.04
    assert abs(d["delta_ci95"] - 1.96 * ((36 - 64 / 200) ** 0.5) / 200) < 1e-4 and 0.05 < d["delta_ci95"] < 0.06
    assert paired_delta([True] * 10, [False] * 10) == {"delta": 1.0, "delta_ci95": 0.0}   # all discordant one way
    assert exact_hits(['{"a": 1, "b": 2}', '{"a": 2}', " plain "], ['{"b": 2, "a": 1}', '{"a": 1}', "plain"]) \
        == [True, False, True]
    with pytest.raises(ValueError):
        paired_delta([True], [True, False])
