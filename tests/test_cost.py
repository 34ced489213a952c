"""The cost table: the arithmetic against hand-computed figures, how the report picks its inputs
(bench vs load test, measured token counts, boxes off the target's hardware), and the settings."""

import copy
import json
from pathlib import Path

import pytest
import yaml

from slmake.cost import SECONDS_PER_MONTH, api_usd_per_request, box_usd_per_month, cost_row, request_seconds
from slmake.report import collect, cost_markdown, cost_rows, end_shares, load_bench, load_rps, token_counts
from slmake.spec import compose, validate

ROOT = Path(__file__).resolve().parents[1]
HW = {"name": "box", "purchase_usd": 3600, "years": 3, "watts": 1000, "usd_per_kwh": 0.1, "utilisation": 0.5,
      "streams": 2, "ops_usd_per_month": 10}
API = {"name": "api", "usd_per_1m_input_tokens": 2.5, "usd_per_1m_output_tokens": 10.0}


def test_request_time_box_month_and_api_price_by_hand():
    assert request_seconds(10, 100, 11) == pytest.approx(0.01 + 10 / 100)
    assert request_seconds(10, 100, 1) == pytest.approx(0.01)      # one token: TTFT only
    assert request_seconds(10, 100, 1, 1.0) == pytest.approx(0.02)  # ... plus its end token's decode step
    assert request_seconds(10, 100, 11, 0.5) == pytest.approx(0.01 + 10.5 / 100)
    with pytest.raises(ValueError, match="positive TTFT"):
        request_seconds(None, 100, 5)
    box = box_usd_per_month(HW)
    # 3600 / 36 months = 100; 1 kW x 730.5 h x $0.1 = 73.05; + 10 ops
    assert box == pytest.approx({"amortisation": 100, "energy": 73.05, "ops": 10, "total": 183.05})
    assert api_usd_per_request(100, 10, API) == pytest.approx((100 * 2.5 + 10 * 10) / 1e6)


def test_cost_row_by_hand():
    row = cost_row(10, 100, 10, HW, API, 1_000_000)
    capacity = 10 * 2 * 2_629_800 * 0.5                       # 26,298,000 requests/month
    assert SECONDS_PER_MONTH == 2_629_800
    assert row["box_rps"] == 20 and row["box_requests_per_month"] == pytest.approx(capacity)
    assert row["onprem_usd_per_1m"] == pytest.approx(183.05 / capacity * 1e6)   # ~$6.96
    assert row["api_usd_per_1m"] == pytest.approx(350)
    assert (row["boxes"], row["onprem_usd_per_month"]) == (1, pytest.approx(183.05))
    assert row["api_usd_per_month"] == pytest.approx(350)
    assert row["break_even_requests_per_month"] == pytest.approx(183.05 / 0.00035)  # 523,000


def test_more_boxes_past_capacity_and_no_break_even_when_the_api_is_cheaper():
    slow = cost_row(0.1, 100, 10, HW, API, 1_000_000)           # 0.2 req/s -> 262,980 per box-month
    assert slow["boxes"] == 4 and slow["onprem_usd_per_month"] == pytest.approx(4 * 183.05)
    cheap_api = {**API, "usd_per_1m_input_tokens": 0.001, "usd_per_1m_output_tokens": 0.001}
    assert cost_row(0.1, 100, 10, HW, cheap_api, 1000)["break_even_requests_per_month"] is None


def _bench(tmp_path, details=True):
    bench = tmp_path / "bench"
    bench.mkdir()
    metrics = {"cpu": {"gguf_q8_0": {"ttft_ms": 5.0, "decode_tok_s": 1000.0, "exact_match": 0.4}}}
    (bench / "cpu.json").write_text(json.dumps(metrics))
    if details:
        (bench / "cpu.details.json").write_text(json.dumps({"cpu": {
            "gguf_q8_0": {"status": "ok", "runtime": "llama.cpp", "hardware_present": True}}}))
    (bench / "cuda.json").write_text(json.dumps({"cuda": {
        "hf_fp16_cpu_check": {"status": "ok", "ttft_ms": 5.0, "decode_tok_s": 400.0, "hardware_present": False},
        "hf_fp16_cuda": {"status": "skipped", "reason": "no CUDA device"}}}))
    return bench


def test_load_bench_merges_details_and_tolerates_either_file(tmp_path):
    bench = _bench(tmp_path)
    assert load_bench(bench, "cpu") == {"gguf_q8_0": {"ttft_ms": 5.0, "decode_tok_s": 1000.0, "exact_match": 0.4,
                                                      "status": "ok", "runtime": "llama.cpp", "hardware_present": True}}
    assert load_bench(bench, "cuda")["hf_fp16_cuda"]["status"] == "skipped"   # old single-file layout
    (bench / "cpu.json").unlink()
    assert load_bench(bench, "cpu")["gguf_q8_0"]["status"] == "ok"            # details alone
    assert load_bench(bench, "intel_npu") is None
    assert collect(bench, ["intel_npu"])[0]["status"] == "missing"


def test_token_counts_and_load_report(tmp_path):
    ev = tmp_path / "evaluate"
    ev.mkdir()
    (ev / "reference.jsonl").write_text("".join(json.dumps({"prompt_ids": [1] * n, "tokens": [2] * m}) + "\n"
                                                for n, m in ((10, 4), (20, 6))))
    outs = tmp_path / "bench_out" / "cpu"
    outs.mkdir(parents=True)
    (outs / "outputs.jsonl").write_text("".join(json.dumps({"artifact": "gguf_q8_0", "tokens": [3] * m}) + "\n"
                                                for m in (5, 8)))
    assert token_counts(ev, tmp_path / "bench_out") == (15, 5, {"cpu/gguf_q8_0": 6.5})
    assert token_counts(tmp_path / "none", tmp_path / "none") == (None, None, {})
    load = tmp_path / "load.json"
    load.write_text(json.dumps({"results": [{"artifact": "cpu/gguf_q8_0", "concurrency": 1, "requests_per_s": 30},
                                            {"artifact": "cpu/gguf_q8_0", "concurrency": 4, "requests_per_s": 45.5}]}))
    assert load_rps(load) == {"cpu/gguf_q8_0": 45.5}
    assert load_rps(tmp_path / "missing.json") == {} and load_rps(None) == {}


def test_cost_rows_pick_inputs_and_say_why_not(tmp_path):
    rows = collect(_bench(tmp_path), ["cpu", "cuda"])
    cost = {"monthly_requests": 1_000_000, "load_report": None, "api": API, "hardware": {"cpu": HW, "cuda": HW}}
    lines = {c["artifact"]: c for c in cost_rows(rows, cost, 100, 9, {"cpu/gguf_q8_0": 11}, {})}
    assert set(lines) == {"cpu/gguf_q8_0", "cuda/hf_fp16_cpu_check"}          # skipped artifacts have no line
    cpu = lines["cpu/gguf_q8_0"]
    assert cpu["source"] == "bench" and cpu["completion_tokens"] == 11   # the artifact's own outputs
    assert cpu["box_rps"] == pytest.approx(2 / (0.005 + 10 / 1000))      # 2 streams / 15 ms
    assert "off the target's hardware" in lines["cuda/hf_fp16_cpu_check"]["why"]
    loaded = cost_rows(rows, cost, 100, 9, {}, {"cpu/gguf_q8_0": 30.0})[0]
    assert loaded["source"] == "load test" and loaded["box_rps"] == 60 and loaded["completion_tokens"] == 9
    no_hw = cost_rows(rows, {**cost, "hardware": {}}, 100, 9, {}, {})[0]
    assert no_hw["why"] == "no hardware in cost.hardware.cpu"
    md = cost_markdown(cost_rows(rows, cost, 100, 9, {"cpu/gguf_q8_0": 11}, {}), cost)
    line = next(x for x in md.splitlines() if x.startswith("| cpu/gguf_q8_0"))
    # 133.3 req/s x 2,629,800 s x 0.5 = 175,320,000/month; $183.05 / 175.32 = $1.04 per 1M;
    # API (100 x 2.5 + 11 x 10) = $360 per 1M; break-even 183.05 / 0.00036 = 508,472
    assert "| 100 / 11.0 | 133.3 (bench) | 175,320,000 | $183 | $1.04 | $360 | $183 (1 box) | $360 | 508,472 |" in line


def test_one_label_answers_get_a_cost_line(tmp_path):
    """A classification task: answers are one token then end-of-generation. The cost line counts the
    end token's decode step; a bench file without a decode rate falls back on its request latency."""
    outs = tmp_path / "bench_out" / "cpu"
    outs.mkdir(parents=True)
    rows_out = [{"artifact": "gguf_q8_0", "tokens": [7], "finish_reason": "stop"}] * 3 + [
        {"artifact": "gguf_q8_0", "tokens": [7, 8], "finish_reason": "length"}]
    (outs / "outputs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows_out))
    assert end_shares(tmp_path / "bench_out") == {"cpu/gguf_q8_0": 0.75}
    assert end_shares(tmp_path / "none") == {}
    cost = {"monthly_requests": 1_000_000, "load_report": None, "api": API, "hardware": {"cpu": HW}}
    row = {"target": "cpu", "artifact": "gguf_q8_0", "status": "ok", "hardware_present": True,
           "ttft_ms": 40.0, "decode_tok_s": 200.0, "request_ms_p50": 45.0}
    line = cost_rows([row], cost, 30, 1, {"cpu/gguf_q8_0": 1.25}, {}, {"cpu/gguf_q8_0": 0.75})[0]
    # 40 ms + (1.25 - 1 + 0.75) tokens / 200 tok/s = 45 ms -> 2 streams / 0.045 s
    assert line["source"] == "bench" and line["box_rps"] == pytest.approx(2 / 0.045)
    old = {**row, "decode_tok_s": None}      # a bench file from before the fixed-length decode timing
    line = cost_rows([old], cost, 30, 1, {}, {})[0]
    assert line["source"] == "bench latency" and line["box_rps"] == pytest.approx(2 / 0.045)
    none = {**old, "request_ms_p50": None}
    assert cost_rows([none], cost, 30, 1, {}, {})[0]["why"].startswith("need a positive TTFT and decode rate")


def test_default_cost_settings_validate_and_name_bad_values():
    spec = compose(ROOT / "conf")
    assert spec["cost"]["monthly_requests"] == 1_000_000 and {"cpu", "cuda"} <= set(spec["cost"]["hardware"])
    assert validate(spec) == []
    bad = copy.deepcopy(spec)
    bad["cost"]["hardware"]["cpu"]["utilisation"] = 1.5
    bad["cost"]["api"]["usd_per_1m_input_tokens"] = "cheap"
    problems = validate(bad)
    assert "cost.hardware.cpu.utilisation: 1.5 is out of range, expected a value <= 1" in problems
    assert "cost.api.usd_per_1m_input_tokens: 'cheap' has type str, expected number" in problems
    assert yaml.safe_load((ROOT / "params.yaml").read_text())["cost"] == spec["cost"]
