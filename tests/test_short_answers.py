"""Short answers (one label token, then end-of-generation: classification, routing) still get a decode
rate, a request latency and a cost line (issue 24).

The model is a tiny Llama whose weights are set so that greedy decoding answers every prompt with one
label token: the decoder layers write nothing into the residual stream (o_proj and down_proj are
zero), so the last position's logits are the LM head applied to the last token's embedding, and the
head maps "▁mat" -> "red", "▁blue" -> "dog", and both labels -> </s> (the labels are pieces without
SentencePiece's leading-space mark, so the response schema's grammar accepts them as they are). Its answers have no decode
interval to time, which left bench's tok/s empty before; bench now times decode at a fixed length
with end-of-generation suppressed, in each runtime's own way (llama.cpp, transformers and the static
ONNX graphs: our greedy loop skips the end ids, as llama.cpp's --ignore-eos does; ONNX Runtime GenAI:
min_length; OpenVINO GenAI: ignore_eos + min_new_tokens).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from slmake.runtimes.base import Greedy

ROOT = Path(__file__).resolve().parents[1]
LABELS = {"mat": "red", "blue": "dog"}        # the prompt's last word -> its one-token answer
PROMPTS = ["the cat near my house mat", "money transfer to my account blue", "a dog sat on the mat blue",
           "card bank mat", "the tree ran near a mat", "blue"]
EOS = 3


def test_pick_suppresses_end_tokens_only_when_asked():
    import torch

    logits = np.array([0.0, 5.0, 3.0, 4.0], dtype=np.float32)
    assert Greedy({1}).pick(logits) == 1
    run = Greedy({1, 3}, ignore_eos=True)
    assert run.pick(logits) == 2 and logits[1] == 5.0          # the runtime's own buffer is left alone
    assert run.step(1) is False and run.tokens == [1]          # and an end id never ends the run
    t = torch.tensor([0.0, 5.0, 3.0, 4.0])
    assert Greedy({1}, ignore_eos=True).pick(t) == 3 and t[1] == 5.0
    assert Greedy({1}).step(1) is True


def _label_llama(root: Path) -> Path:
    import torch
    from transformers import LlamaForCausalLM

    from e2e_utils import tiny_llama
    from slmake.base_model import load_tokenizer

    model_dir = tiny_llama(root)
    tok = load_tokenizer(model_dir)
    ids = {**{w: tok.convert_tokens_to_ids("▁" + w) for w in LABELS},
           **{w: tok.convert_tokens_to_ids(w) for w in LABELS.values()}}
    assert tok.unk_token_id not in ids.values(), ids
    model = LlamaForCausalLM.from_pretrained(str(model_dir))
    torch.manual_seed(1)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        emb, head = model.model.embed_tokens.weight, model.lm_head.weight
        emb.normal_(0, 1)
        head.normal_(0, 0.02)
        for src, dst in LABELS.items():
            head[ids[dst]] += 5 * emb[ids[src]]
            head[EOS] += 5 * emb[ids[dst]]
    model.save_pretrained(str(model_dir))
    return model_dir


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    """The label model, its fp32 greedy reference (one token per answer) and the test rows."""
    from slmake.base_model import load_tokenizer
    from slmake.runtimes.hf import HFRunner

    model = _label_llama(tmp_path_factory.mktemp("model"))
    tok = load_tokenizer(model)
    rows = []
    ref = HFRunner(model, threads=1)
    for i, text in enumerate(PROMPTS):
        ids = tok(text)["input_ids"]
        want = LABELS[text.split()[-1]]
        g = ref.generate(ids, 8)
        assert tok.decode(g.tokens) == want and len(g.tokens) == 1 and g.finish_reason == "stop"
        rows.append({"id": str(i), "prompt_ids": ids, "tokens": g.tokens, "expected": want})
    ref.close()
    return model, rows


@pytest.mark.slow
def test_hf_runner_times_a_fixed_length_past_the_label(task):
    from slmake.runtimes.hf import HFRunner

    model, rows = task
    runner = HFRunner(model, threads=1)
    try:
        _check_runner(runner, rows)
    finally:
        runner.close()


def _check_runner(runner, rows):
    for r in rows[:3]:
        natural = runner.generate(r["prompt_ids"], 8)
        assert natural.tokens == r["tokens"] and natural.finish_reason == "stop"
        fixed = runner.generate(r["prompt_ids"], 12, ignore_eos=True)
        assert len(fixed.tokens) == 12 and fixed.finish_reason == "length", fixed
        assert fixed.tokens[0] == r["tokens"][0] and not set(fixed.tokens) & runner.eos
        assert fixed.decode_s > 0


@pytest.mark.slow
def test_static_onnx_runner_suppresses_end_tokens_and_stops_at_its_context(task, tmp_path):
    """qualcomm_npu's static graph loop (the same on the CPU EP, the HTP simulator and a device)."""
    pytest.importorskip("onnxscript")
    from slmake.runtimes.qnn import StaticRunner
    from slmake.targets.qualcomm_npu import _place
    from slmake.targets.qualcomm_npu import export as qx

    model, rows = task
    meta = qx.export_static(model, tmp_path / "exported.onnx", 32)
    qx.fix_graph(tmp_path / "exported.onnx", tmp_path / "fixed.onnx", -100.0)
    _place(tmp_path / "fixed.onnx", tmp_path / "static", meta)
    runner = StaticRunner(tmp_path / "static", "cpu", threads=1)
    try:
        _check_runner(runner, rows)
        prompt = rows[0]["prompt_ids"]
        g = runner.generate(prompt, 64, ignore_eos=True)    # the static context ends the run early
        assert len(g.tokens) == 32 - len(prompt) + 1 and g.finish_reason == "length"
    finally:
        runner.close()


@pytest.mark.slow
def test_openvino_runners_suppress_end_tokens(task, tmp_path):
    """OpenVINO GenAI: ignore_eos + min_new_tokens (its sampler's EOS penalty), stateful CPU pipeline
    and, where the NPU plugin is installed, the NPU's static pipeline run on CPU."""
    pytest.importorskip("openvino_genai")
    pytest.importorskip("optimum.intel")
    from e2e_utils import build_ctx
    from slmake.targets import intel_npu
    from slmake.targets.base import Skipped

    settings = {"weights": ["fp32"], "group_size": -1, "backup_precision": "int8_asym", "max_prompt_len": 64,
                "min_response_len": 32, "npuw_online_pipeline": "auto"}
    ran = []
    for art in intel_npu.compile(build_ctx(task[0], tmp_path), settings):
        assert art.status == "built", art.reason
        try:
            runner = intel_npu.open_runner(art, tmp_path, {"threads": 1})
        except Skipped:
            continue
        try:
            _check_runner(runner, task[1])
            ran.append(art.name)
        finally:
            runner.close()
    assert "ov_fp32_cpu_proxy" in ran


@pytest.fixture(scope="module")
def compiled(task, tmp_path_factory):
    pytest.importorskip("llama_cpp")
    pytest.importorskip("onnxruntime_genai")
    if not (Path(sys.prefix) / "share/slmake/llama.cpp/convert_hf_to_gguf.py").is_file():
        pytest.skip("llama.cpp converter not installed (requirements/llama_cpp.sh)")
    from slmake.compile import compile_target

    model, _ = task
    int4 = yaml.safe_load((ROOT / "conf/targets/cpu.yaml").read_text())["cpu"]["onnx_genai"]["int4"]
    settings = {"gguf": {"quants": ["f16", "q8_0"]}, "onnx_genai": {"precisions": ["int4"], "int4": int4}}
    root = tmp_path_factory.mktemp("project")
    entries = compile_target("cpu", settings, model, root / "data", root / "build/compile", root / "logs")
    assert [e["status"] for e in entries] == ["built"] * 3, entries
    return root, {e["name"]: e for e in entries}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["gguf_f16", "gguf_q8_0", "onnx_int4"])
def test_each_runtime_suppresses_end_tokens_for_the_decode_timing(task, compiled, name):
    from slmake.targets import cpu
    from slmake.targets.base import Artifact

    root, entries = compiled
    art = Artifact.from_dict({k: v for k, v in entries[name].items() if k not in ("sha256", "size_bytes")})
    runner = cpu.open_runner(art, root / "build/compile/cpu", {"threads": 1})
    try:
        _check_runner(runner, task[1])
    finally:
        runner.close()


@pytest.mark.slow
def test_bench_report_and_cost_table_carry_numbers_for_one_token_answers(task, compiled):
    """The bench and report stages as `dvc repro` runs them, on a classification task whose every
    answer is one label token: tok/s, TTFT, request latency p50/p95 and a cost line for each artifact."""
    from slmake.spec import compose

    model, rows = task
    root, entries = compiled
    ev = root / "build/evaluate"
    (ev / "tokenizer").mkdir(parents=True)
    shutil.copy(model / "tokenizer.json", ev / "tokenizer/tokenizer.json")
    (ev / "reference.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "reports").mkdir()
    scores = {"exact_match": 1.0, "valid": 1.0, "n": len(rows)}
    (root / "reports/evaluate.json").write_text(json.dumps({"base": scores, "finetuned": scores}))
    (root / "reports/curation.json").write_text(json.dumps({"input": 6, "kept": 6, "splits": {"test": 6}}))
    spec = compose(ROOT / "conf")
    spec["targets"] = {"cpu": spec["targets"]["cpu"]}
    spec["data"].update(response_format="text", response_schema={"type": "string", "enum": ["dog", "red"]},
                        label_field=None)
    spec["eval"]["max_new_tokens"] = 8
    spec["bench"].update(threads=None, warmup=1, repeats=2, speed_prompts=3, decode_tokens=16)
    (root / "params.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    for stage in (["bench.py", "cpu"], ["report.py"]):
        res = subprocess.run([sys.executable, str(ROOT / "stages" / stage[0]), *stage[1:]], cwd=root,
                             capture_output=True, text=True, timeout=600)
        assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]

    outputs = [json.loads(x) for x in (root / "build/bench/cpu/outputs.jsonl").read_text().splitlines()]
    assert len(outputs) == 3 * len(rows)
    assert all(len(o["tokens"]) == 1 and o["finish_reason"] == "stop" for o in outputs)   # one-token answers
    metrics = json.loads((root / "reports/bench/cpu.json").read_text())["cpu"]
    details = json.loads((root / "reports/bench/cpu.details.json").read_text())["cpu"]
    assert set(metrics) == set(entries)
    for name, m in metrics.items():
        for key in ("decode_tok_s", "ttft_ms", "request_ms_p50", "request_ms_p95"):
            assert isinstance(m.get(key), float) and m[key] > 0, (name, key, m)
        assert m["request_ms_p95"] >= m["request_ms_p50"] >= m["ttft_ms"] * 0.5
        assert m["exact_match"] == 1.0
        assert details[name]["decode"] == "constrained"      # the answers decode under the enum's grammar
        assert details[name]["decode_method"] == ("16 generated tokens per prompt (of 16 asked), "
                                                  "end-of-generation suppressed, median of 3 prompts")
    report = (root / "reports/report.md").read_text()
    table = [line for line in report.splitlines() if line.startswith("| cpu |")]
    header = next(line for line in report.splitlines() if line.startswith("| target |")).split(" | ")
    assert len(table) == 3
    for line in table:
        cells = line.split(" | ")
        for col in ("tok/s", "request ms p50", "p95", "TTFT ms"):
            assert float(cells[header.index(col)].replace(",", "")) > 0, (col, line)
    cost = [line for line in report.splitlines() if line.startswith("| cpu/")]
    assert len(cost) == 3
    for line in cost:
        assert "need a positive" not in line and "(bench)" in line, line
        assert float(line.split(" | ")[3].split()[0].replace(",", "")) > 0    # req/s per box
