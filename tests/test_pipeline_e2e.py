"""The real pipeline, end to end, on a micro spec in a temporary git repo.

One `dvc repro` builds everything (curate -> base -> train -> evaluate -> compile@cpu -> bench@cpu
-> report); the tests then check what a user relies on: artifacts that load in their runtimes,
a fine-tuned model that beats its base, caching that reruns only what changed, experiments that
show up in `dvc exp show`, and byte-identical rebuilds.
"""

import json

import pytest
import yaml

from e2e_utils import ROOT, make_project, ran_stages, sh

pytestmark = pytest.mark.e2e

# Merged into conf/config.yaml (its keys override the groups since _self_ comes last): small enough for ~2 minutes on 2 cores.
MICRO = {
    "model": {"scratch": {"vocab_size": 512, "hidden_size": 128, "intermediate_size": 256, "num_layers": 2,
                          "num_heads": 2, "num_kv_heads": 2,
                          "pretrain": {"steps": 300, "batch_size": 8, "block_size": 64, "lr": 0.003, "threads": 2}}},
    "data": {"source": "data/micro.jsonl"},
    "train": {"max_steps": 150, "batch_size": 8, "lr": 0.005, "threads": 2, "lora": {"r": 8, "alpha": 16}},
    "eval": {"limit": 24},
    "targets": {"cpu": {"gguf": {"quants": ["f16", "q8_0", "q4_k_m"]}, "onnx_genai": {"precisions": ["int4"]}}},
    "bench": {"threads": 2, "warmup": 0, "repeats": 1, "speed_prompts": 2, "limit": 12},
}


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    repo = tmp_path_factory.mktemp("slmake_e2e")
    (repo / "data").mkdir()
    lines = (ROOT / "data/it_tickets/tickets.jsonl").read_text().splitlines()[:700]
    (repo / "data/micro.jsonl").write_text("\n".join(lines) + "\n")
    make_project(repo, MICRO)
    out = sh("dvc repro", repo)
    sh("git add -A && git -c user.email=t@t -c user.name=t commit -qm built", repo)
    (repo / "first_repro.log").write_text(out.stdout)
    return repo


def test_first_build_runs_every_stage(repo):
    stages = ran_stages((repo / "first_repro.log").read_text())
    assert {"curate", "base", "train", "evaluate", "compile@cpu", "bench@cpu", "report"} <= stages


def test_finetuned_beats_base(repo):
    ev = json.loads((repo / "reports/evaluate.json").read_text())
    base, ft = ev["base"], ev["finetuned"]
    assert ft["valid"] > base["valid"]
    assert sum(ft["field_accuracy"].values()) > sum(base["field_accuracy"].values())
    assert ft["exact_match"] >= base["exact_match"]


def test_artifacts_load_and_match_reference(repo):
    bench = json.loads((repo / "reports/bench/cpu.json").read_text())["cpu"]
    assert set(bench) == {"gguf_f16", "gguf_q8_0", "gguf_q4_k_m", "onnx_int4"}
    for name, r in bench.items():
        assert r["status"] == "ok", (name, r)
        assert r["size_mb"] > 0 and r["decode_tok_s"] > 0 and r["peak_rss_mb"] > 0
        assert 0 <= r["parity"] <= 1
    # f16 of a tiny model: greedy output should follow the fp32 reference almost everywhere
    assert bench["gguf_f16"]["parity"] >= 0.9


def test_gguf_loads_in_llama_cpp_and_transformers(repo):
    import llama_cpp
    from transformers import AutoModelForCausalLM

    folder = repo / "build/compile/cpu/gguf_f16"
    llm = llama_cpp.Llama(str(folder / "model.gguf"), n_ctx=128, verbose=False)
    assert llm.n_vocab() == 512
    model = AutoModelForCausalLM.from_pretrained(str(folder), gguf_file="model.gguf")
    assert model.config.hidden_size == 128
    manifest = json.loads((folder / "manifest.gguf_f16.json").read_text())
    assert len(manifest["artifact"]["sha256"]) == 64 and manifest["toolchain"]["llama-cpp-python"]


def test_noop_repro_runs_nothing(repo):
    out = sh("dvc repro", repo).stdout
    assert ran_stages(out) == set(), out


def test_bench_only_change_reruns_only_bench_and_report(repo):
    params = yaml.safe_load((repo / "params.yaml").read_text())
    original = (repo / "params.yaml").read_text()
    params["bench"]["repeats"] = 2
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        out = sh("dvc repro", repo).stdout
        assert ran_stages(out) == {"bench@cpu", "report", "monitor"}, out
    finally:
        (repo / "params.yaml").write_text(original)
        sh("dvc repro", repo)


def test_rebuild_gives_identical_artifacts(repo):
    before = json.loads((repo / "build/compile/cpu/artifacts.json").read_text())
    merged_before = (repo / "build/train/merged/model.safetensors").read_bytes()
    sh("dvc repro -f -s train && dvc repro -f -s compile@cpu", repo)
    after = json.loads((repo / "build/compile/cpu/artifacts.json").read_text())
    assert (repo / "build/train/merged/model.safetensors").read_bytes() == merged_before
    hashes = lambda listing: {a["name"]: a["sha256"] for a in listing["artifacts"] if a["format"] == "gguf"}
    assert hashes(after) == hashes(before) and len(hashes(before)) == 3


def test_exp_run_shows_in_exp_show(repo):
    sh("dvc exp run -S bench.speed_prompts=1 -n speed1", repo)
    rows = json.loads(sh("dvc exp show --json", repo).stdout)
    found = []
    for row in rows:
        for exp in row.get("experiments") or []:
            for rev in exp.get("revs", []):
                data = rev.get("data", {})
                if rev.get("name") == "speed1" or data.get("name") == "speed1":
                    found.append(data)
    assert found, json.dumps(rows)[:2000]
    data = found[0]
    assert data["params"]["params.yaml"]["data"]["bench"]["speed_prompts"] == 1
    metrics = data["metrics"]["reports/bench/cpu.json"]["data"]["cpu"]
    assert metrics["gguf_q4_k_m"]["status"] == "ok"


def test_training_logs_reach_dvclive(repo):
    metrics = json.loads((repo / "reports/train/metrics.json").read_text())
    assert metrics["steps"] == 150 and metrics["train_loss"] > 0
    curves = list((repo / "reports/train/plots/metrics").rglob("*.tsv"))
    assert any(p.name == "loss.tsv" for p in curves), curves


def test_built_gguf_imports_as_a_base_model(repo, tmp_path):
    """model.source=hf with gguf_file: the import path users take for a GGUF base model."""
    from transformers import AutoModelForCausalLM

    from slmake.base_model import import_hf

    cfg = {"source": "hf", "allow_network": False, "trust_remote_code": False,
           "hf": {"path": str(repo / "build/compile/cpu/gguf_f16"), "revision": None, "gguf_file": "model.gguf"}}
    info = import_hf(cfg, tmp_path)
    model = AutoModelForCausalLM.from_pretrained(str(tmp_path))
    assert info["params"] == sum(p.numel() for p in model.parameters())
    assert not getattr(model.config, "quantization_config", None)


def test_adding_and_changing_a_target_reruns_only_that_target(repo):
    original = (repo / "params.yaml").read_text()
    params = yaml.safe_load(original)
    params["targets"]["cuda"] = {"hf_fp16": True, "onnx_genai": {"precisions": ["int4"]}}
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        out = sh("dvc repro", repo).stdout
        assert ran_stages(out) == {"compile@cuda", "bench@cuda", "report", "monitor"}, out
        bench = json.loads((repo / "reports/bench/cuda.json").read_text())["cuda"]
        gpu = [r for name, r in bench.items() if name.endswith("_cuda")]
        assert gpu and all(r["status"] == "skipped" and r["reason"] for r in gpu)
        assert bench["hf_fp16_cpu_check"]["parity"] >= 0.9  # fp16 weights, upcast: near-identical greedy output
        params["targets"]["cuda"]["hf_fp16"] = False
        (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        out = sh("dvc repro", repo).stdout
        assert ran_stages(out) == {"compile@cuda", "bench@cuda", "report", "monitor"}, out
        assert "cuda" in (repo / "reports/report.md").read_text()
    finally:
        (repo / "params.yaml").write_text(original)
