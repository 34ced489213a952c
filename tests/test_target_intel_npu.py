"""The intel_npu target on a tiny random Llama (MHA, SentencePiece tokenizer), built once (~75 s).

Checks what a user relies on: both IRs build with tokenizer IRs and the NPU weight recipe; the
NPU entry is skipped with a reason on a host without an NPU; the NPU's static-shape pipeline (run
on CPU) and the CPU proxy give exactly transformers' fp32 greedy tokens from the fp32 IR; int4
parity is computed; bench.py's generic worker runs the entries; a missing toolchain fails softly.
"""

from __future__ import annotations

import json
import sys

import pytest

pytest.importorskip("openvino_genai")
pytest.importorskip("optimum.intel")
from e2e_utils import BENCH, NEW, PROMPTS, build_ctx
from slmake.compile import settings_problems
from slmake.metrics import parity
from slmake.targets import intel_npu
from slmake.targets.base import Skipped

pytestmark = pytest.mark.e2e
SETTINGS = {"weights": ["int4_sym", "fp32"], "group_size": -1, "backup_precision": "int8_asym",
            "max_prompt_len": 128, "min_response_len": 64, "npuw_online_pipeline": "auto"}


@pytest.fixture(scope="module")
def built(tmp_path_factory, tiny_reference):
    model, ids, want = tiny_reference
    assert all(i[0] == 2 for i in ids)  # BOS added by the HF tokenizer
    out = tmp_path_factory.mktemp("intel_npu")
    arts = {a.name: a for a in intel_npu.compile(build_ctx(model, out), SETTINGS)}
    return model, out, arts, ids, want


def _tokens(art, out, ids):
    runner = intel_npu.open_runner(art, out, BENCH)
    try:
        return [runner.generate(i, NEW) for i in ids]
    finally:
        runner.close()


def test_every_artifact_built(built):
    _, out, arts, _, _ = built
    assert list(arts) == [f"ov_{w}_{r}" for w in ("int4_sym", "fp32") for r in ("npu", "npuw_cpu", "cpu_proxy")]
    for a in arts.values():
        assert a.status == "built", a.reason
        assert a.path == f"ov_{a.precision}" and a.format == "openvino-ir"
        assert a.notes["max_prompt_len"] == 128 and a.notes["min_response_len"] == 64
        assert a.notes["npuw_online_pipeline"] == "NONE"     # MHA model: partitioning off
        for f in ("openvino_model.xml", "openvino_model.bin", "openvino_tokenizer.xml", "openvino_detokenizer.xml"):
            assert (out / a.path / f).is_file(), f
    assert {a.notes["device"] for a in arts.values()} == {"npu", "npu_static_on_cpu", "cpu_proxy"}
    int4 = arts["ov_int4_sym_npu"].notes
    assert int4["nncf_weight_compression"]["mode"] == "int4_sym"
    assert int4["nncf_weight_compression"]["group_size"] == "-1"
    assert int4["weight_types"].get("i4", 0) > 0 and "--sym" in int4["export_args"]
    assert "i4" not in arts["ov_fp32_npu"].notes["weight_types"]
    cfg = (out / "ov_int4_sym" / "openvino_config.json").read_text()
    assert str(built[0]) not in cfg                          # no absolute build path in the artifact
    assert not list(out.glob("*.partial")) and (out / "logs" / "ov_int4_sym.log").is_file()


def test_probe_and_npu_entry_skipped(built):
    _, out, arts, _, _ = built
    p = intel_npu.probe()
    if p.present:
        pytest.skip(f"this host has an NPU: {p.reason}")
    assert "no NPU device" in p.reason and "compiler" in p.reason
    with pytest.raises(Skipped) as e:
        intel_npu.open_runner(arts["ov_int4_sym_npu"], out, BENCH)
    assert str(e.value).strip()


def test_fp32_ir_equals_transformers_fp32(built):
    """The NPU static-shape pipeline (f16 KV cache) and the CPU device both reproduce the fp32
    reference exactly from the fp32 IR; TTFT and decode times are split."""
    _, out, arts, ids, want = built
    for name in ("ov_fp32_npuw_cpu", "ov_fp32_cpu_proxy"):
        gens = _tokens(arts[name], out, ids)
        assert [g.tokens for g in gens] == want, name
        assert all(g.ttft_s > 0 and g.decode_s >= 0 for g in gens)


def test_int4_parity_is_computed(built):
    _, out, arts, ids, want = built
    for name in ("ov_int4_sym_npuw_cpu", "ov_int4_sym_cpu_proxy"):
        got = [g.tokens for g in _tokens(arts[name], out, ids)]
        assert all(0 < len(t) <= NEW and all(0 <= x < 320 and x != 3 for x in t) for t in got)
        p = parity(got, want)
        print(f"{name}: parity {p} vs transformers fp32 on a random model")
        assert 0.0 <= p <= 1.0


def test_static_shape_rejects_long_prompt(built):
    _, out, arts, _, _ = built
    runner = intel_npu.open_runner(arts["ov_fp32_npuw_cpu"], out, BENCH)
    try:
        with pytest.raises(ValueError, match="max_prompt_len"):
            runner.generate([2] + [5] * 200, 4)
    finally:
        runner.close()


def test_bench_worker_runs_entries(built, tmp_path):
    """bench.py's child-process body, in-process: notes survive to_dict/from_dict and drive the runner."""
    from slmake.bench import _worker

    model, out, arts, ids, want = built
    (tmp_path / "tokenizer").mkdir()
    for f in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model"):
        (tmp_path / "tokenizer" / f).write_bytes((model / f).read_bytes())
    rows = [{"prompt_ids": i, "tokens": t, "expected": "x"} for i, t in zip(ids, want)]
    (tmp_path / "reference.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    job = {"target": "intel_npu", "compile_dir": str(out), "reference_dir": str(tmp_path), "bench": BENCH,
           "max_new_tokens": NEW, "response_schema": {"type": "string"}}
    res = _worker({**job, "artifact": arts["ov_fp32_npuw_cpu"].to_dict()})
    assert res["status"] == "ok" and res["parity"] == 1.0 and res["decode_tok_s"] > 0, res
    if not intel_npu.probe().present:
        res = _worker({**job, "artifact": arts["ov_fp32_npu"].to_dict()})
        assert res["status"] == "skipped" and res["reason"]


def test_missing_toolchain_fails_softly(built, tmp_path, monkeypatch):
    model = built[0]
    monkeypatch.setitem(sys.modules, "openvino_tokenizers", None)   # find_spec -> None, as if absent
    arts = intel_npu.compile(build_ctx(model, tmp_path), SETTINGS)
    assert len(arts) == 6 and all(a.status == "failed" and "openvino_tokenizers" in a.reason for a in arts)
    with pytest.raises(Skipped):
        intel_npu.open_runner(arts[0], tmp_path, BENCH)


def test_bad_inputs_raise(built, tmp_path):
    with pytest.raises(ValueError, match=r"config.json"):
        intel_npu.compile(build_ctx(tmp_path, tmp_path / "out"), SETTINGS)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="safetensors"):
        intel_npu.compile(build_ctx(tmp_path, tmp_path / "out"), SETTINGS)
    problems = settings_problems("intel_npu", {**SETTINGS, "weights": ["int3"]})
    assert len(problems) == 1 and problems[0].startswith("targets.intel_npu.weights.0: 'int3' is not one of"), problems


def test_every_data_aware_algorithm_needs_calibration_data_and_reaches_nncf():
    """AWQ, scale estimation, GPTQ and the low-rank correction are refused, by key, without
    int4.dataset; with it, each becomes optimum-cli's flag (what NNCF is asked to do)."""
    algos = {"awq": "--awq", "scale_estimation": "--scale-estimation", "gptq": "--gptq",
             "lora_correction": "--lora-correction"}
    for key, flag in algos.items():
        problems = settings_problems("intel_npu", {**SETTINGS, "int4": {key: True}})
        assert any(p.startswith(f"targets.intel_npu.int4.{key}:") and "int4.dataset" in p for p in problems), problems
        settings = {**SETTINGS, "int4": {key: True, "dataset": "train", "num_samples": 8}}
        assert not settings_problems("intel_npu", settings)
        args = intel_npu._export_args("int4_sym", settings)
        assert flag in args and [a for a in args if a in algos.values()] == [flag], args
        assert args[args.index("--dataset") + 1] == "train" and args[args.index("--num-samples") + 1] == "8"


def test_shipped_data_aware_recipe_builds_and_runs(built, tmp_path):
    """conf/targets/intel_npu.yaml's int4 recipe as shipped (group 64, NNCF ratio 0.4, AWQ + scale
    estimation calibrated on the train split's rows as trained, never val/test): the export runs
    offline, mixes int4 with int8, records what NNCF did and on what, keeps the texts out of the
    artifact, and the IR generates through the NPU pipeline on CPU. The same recipe calibrated on
    samples the model generates itself (int4.dataset: auto) builds too."""
    from pathlib import Path

    import yaml

    model, _, _, ids, _ = built
    conf = Path(__file__).resolve().parents[1] / "conf/targets/intel_npu.yaml"
    shipped = yaml.safe_load(conf.read_text())["intel_npu"]
    assert shipped["int4"]["awq"] and shipped["int4"]["scale_estimation"] and shipped["int4"]["dataset"] == "train"
    settings = {**shipped, "weights": ["int4_sym"], "max_prompt_len": 128}
    assert not settings_problems("intel_npu", settings)
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.jsonl").write_text("".join(json.dumps({"prompt": f"### Ticket\n{p}\n### Triage\n",
                                                          "response": "TRAINROW"}) + "\n" for p in PROMPTS))
    (data / "val.jsonl").write_text(json.dumps({"prompt": "VALROW", "response": "VALROW"}) + "\n")
    out = tmp_path / "train"
    arts = {a.name: a for a in intel_npu.compile(build_ctx(model, out, data), settings)}
    art = arts["ov_int4_sym_npuw_cpu"]
    assert art.status == "built", art.reason
    args, info = art.notes["export_args"], art.notes["nncf_weight_compression"]
    assert {"--awq", "--scale-estimation"} <= set(args) and args[args.index("--dataset") + 1] == "train"
    assert info["group_size"] == str(shipped["group_size"]) and float(info["ratio"]) == shipped["int4"]["ratio"]
    types = art.notes["weight_types"]   # backup int8_asym (u8): embedding, head, and ratio 0.4's int8 share
    assert types.get("i4", 0) > 0 and types.get("u8", 0) > 2, types
    got = [g.tokens for g in _tokens(art, out, ids)]
    assert all(0 < len(t) <= NEW and all(0 <= x < 320 for x in t) for t in got)
    calib = art.notes["calibration"]   # fewer train rows than num_samples: all of them
    assert calib["dataset"] == "train" and calib["samples"] == len(PROMPTS) and len(calib["sha256"]) == 64, calib
    texts = json.loads((out / "logs" / "ov_int4_sym-calibration.json").read_text())
    assert texts == [f"### Ticket\n{p}\n### Triage\nTRAINROW" for p in PROMPTS]
    ir = out / "ov_int4_sym"
    assert not any(b"TRAINROW" in f.read_bytes() or b"VALROW" in f.read_bytes() for f in ir.rglob("*") if f.is_file())
    assert json.loads((ir / "openvino_config.json").read_text())["quantization_config"]["dataset"] is None

    # int4.dataset: auto: NNCF calibrates on samples the model generates itself (no data needed)
    auto = {**settings, "int4": {**shipped["int4"], "dataset": "auto", "num_samples": 4}}
    assert not settings_problems("intel_npu", auto)
    art = next(a for a in intel_npu.compile(build_ctx(model, tmp_path / "auto"), auto)
               if a.name == "ov_int4_sym_npuw_cpu")
    assert art.status == "built", art.reason
    assert art.notes["calibration"] == {"dataset": "auto", "source": "texts the model generates itself (NNCF)",
                                        "num_samples": 4}
    assert art.notes["weight_types"].get("i4", 0) > 0


def test_exporter_calibrates_in_f32_on_every_cpu(monkeypatch, tmp_path):
    """export.py runs optimum-cli's own command with optimum's Core set to f32 before anything
    compiles: the self-generated calibration samples are then the same on AMX/AVX512-BF16 CPUs
    (where OpenVINO picks bf16 by default, and where a one-thread bf16 compile of the fp32 IR died
    with SIGFPE) as on every other CPU. Texts given as JSON replace --dataset; "-" keeps it."""
    import importlib.util
    from pathlib import Path

    from optimum.commands.export.openvino import OVExportCommand
    from optimum.intel.openvino import modeling_base

    seen = []
    monkeypatch.setattr(OVExportCommand, "run", lambda self: seen.append(
        (self.args.dataset, str(modeling_base.core.get_property("CPU", "INFERENCE_PRECISION_HINT")))))
    spec = importlib.util.spec_from_file_location("ov_export", Path(intel_npu.__file__).with_name("export.py"))
    export = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(export)
    modeling_base.core.set_property("CPU", {"INFERENCE_PRECISION_HINT": "bf16"})
    texts = tmp_path / "texts.json"
    texts.write_text(json.dumps(["a ticket", "another"]))
    try:
        export.main(["-", "--model", "m", "--weight-format", "int4", "--dataset", "auto", "out"])
        export.main([str(texts), "--model", "m", "--weight-format", "int4", "--dataset", "x", "out"])
        texts.write_text("[]")
        with pytest.raises(SystemExit, match="not a non-empty JSON list"):
            export.main([str(texts), "--model", "m", "--dataset", "x", "out"])
    finally:
        modeling_base.core.set_property("CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    assert seen == [("auto", "<Type: 'float32'>"), (["a ticket", "another"], "<Type: 'float32'>")]
