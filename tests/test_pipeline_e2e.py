"""The real pipeline, end to end, on a micro spec in a temporary git repo.

One `dvc repro` builds everything (curate -> base -> train -> evaluate -> compile@cpu -> bench@cpu
-> report); the tests then check what a user relies on: artifacts that load in their runtimes,
a fine-tuned model that beats its base, caching that reruns only what changed, experiments that
show up in `dvc exp show`, and byte-identical rebuilds.
"""

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[1]

# Merged into conf/config.yaml (its keys override the groups since _self_ comes last): small enough for ~2 minutes on 2 cores.
MICRO = {
    "model": {"scratch": {"vocab_size": 512, "hidden_size": 128, "intermediate_size": 256, "num_layers": 2,
                          "num_heads": 2, "num_kv_heads": 2,
                          "pretrain": {"steps": 60, "batch_size": 8, "block_size": 64, "threads": 2}}},
    "data": {"source": "data/micro.jsonl"},
    "train": {"max_steps": 150, "batch_size": 8, "lr": 0.003, "threads": 2, "lora": {"r": 8, "alpha": 16}},
    "eval": {"limit": 24},
    "targets": {"cpu": {"gguf": {"quants": ["f16", "q8_0", "q4_k_m"]}, "onnx_genai": {"precisions": ["int4"]}}},
    "bench": {"threads": 2, "warmup": 0, "repeats": 1, "speed_prompts": 2, "limit": 12},
}


def sh(cmd, cwd, check=True):
    res = subprocess.run(cmd, cwd=cwd, shell=True, capture_output=True, text=True)
    if check and res.returncode != 0:
        raise AssertionError(f"`{cmd}` failed ({res.returncode}):\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
    return res


def ran_stages(output: str) -> set[str]:
    return {line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage '")}


def _merge(into: dict, extra: dict) -> None:
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            _merge(into[k], v)
        else:
            into[k] = v


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    repo = tmp_path_factory.mktemp("slmake_e2e")
    for item in ("conf", "stages", "src", "dvc.yaml", ".gitignore", ".dvc/config"):
        src, dst = ROOT / item, repo / item
        dst.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if src.is_dir() else shutil.copy)(src, dst)
    (repo / "data").mkdir()
    lines = (ROOT / "data/it_tickets/tickets.jsonl").read_text().splitlines()[:700]
    (repo / "data/micro.jsonl").write_text("\n".join(lines) + "\n")
    config = yaml.safe_load((repo / "conf/config.yaml").read_text())
    _merge(config, MICRO)  # keys of config.yaml win over the groups (_self_ is last in defaults)
    (repo / "conf/config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    sh("slmake check --write params.yaml", repo)
    sh("git init -q && git add -A && git -c user.email=t@t -c user.name=t commit -qm init", repo)
    out = sh("dvc repro", repo)
    sh("git add -A && git -c user.email=t@t -c user.name=t commit -qm built", repo)
    repo_out = repo / "first_repro.log"
    repo_out.write_text(out.stdout)
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
        assert ran_stages(out) == {"bench@cpu", "report"}, out
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
