"""`slmake monitor`: each statistic against a hand-computed value, then the whole check on
synthetic traffic (it flags what was shifted and nothing else), the CLI's exit codes and the stage."""

import json
import math
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml

from slmake.monitor import stats
from slmake.monitor.check import analyse, reason
from slmake.monitor.inputs import instruction_of, parse_since, read_feedback, read_split, read_window

ROOT = Path(__file__).resolve().parents[1]
SPEC = yaml.safe_load((ROOT / "params.yaml").read_text())
TEMPLATE = SPEC["data"]["prompt_template"]


# ---------------------------------------------------------------- statistics, by hand

def test_psi_hand_computed():
    # (0.25-0.5)ln(0.25/0.5) + (0.75-0.5)ln(0.75/0.5) = 0.173287 + 0.101366
    assert stats.psi([50, 50], [25, 75]) == pytest.approx(0.274653, abs=1e-6)
    assert stats.psi([3, 7], [30, 70]) == pytest.approx(0.0)
    # an empty baseline bin is floored at 1e-4: (0.5-1)ln(0.5) + (0.5-1e-4)ln(0.5/1e-4)
    assert stats.psi([1, 0], [1, 1]) == pytest.approx(0.346574 + 0.4999 * math.log(5000), abs=1e-6)
    with pytest.raises(ValueError):
        stats.psi([1, 2], [1, 2, 3])


def test_length_bins_and_psi_hand_computed():
    assert stats.quantile_edges(range(1, 11), 2) == [5.5]
    assert stats.histogram([1, 5.5, 6, 100], [5.5]) == [2, 2]          # an edge value falls in the lower bin
    assert stats.quantile_edges([4] * 10, 4) == [4.0]                  # repeated quantiles collapse
    value, edges, base, live = stats.length_psi(list(range(1, 11)), [20] * 8, 2)
    assert (edges, base, live) == ([5.5], [5, 5], [0, 8])
    assert value == pytest.approx(0.4999 * math.log(0.5 / 1e-4) + 0.5 * math.log(2), abs=1e-6)


def test_unseen_share_hand_computed():
    vocab = set(stats.words("The printer is broken"))
    assert stats.unseen_share(["Printer is ON fire!"], vocab) == (0.5, 4)   # 'on', 'fire' unseen
    assert stats.words("Can't print <EMAIL> x_y") == ["can't", "print", "email", "x", "y"]
    assert stats.unseen_share([], vocab) == (0.0, 0)


def test_label_drift_hand_computed():
    d = stats.label_drift(["a"] * 8 + ["b"] * 2 + [None], ["a"] * 5 + ["b"] * 5)
    # (0.5-0.8)ln(0.5/0.8) + (0.5-0.2)ln(0.5/0.2)
    assert d["psi"] == pytest.approx(0.3 * math.log(1.6) + 0.3 * math.log(2.5), abs=1e-9)
    assert d["labels"]["b"] == pytest.approx({"baseline": 0.2, "live": 0.5, "change": 0.3})
    new = stats.label_drift(["a"] * 4, ["a", "c"])  # a label the train split never had
    assert new["labels"]["c"]["baseline"] == 0 and new["psi"] > 4


def test_percentile_and_rate():
    assert stats.percentile([10, 20, 30, 40], 50) == 25
    assert stats.percentile([10, 20, 30, 40], 95) == pytest.approx(38.5)
    assert stats.percentile([], 50) is None
    assert stats.rate([True, False, None, False]) == (pytest.approx(1 / 3), 3)


def test_instruction_of_undoes_the_template():
    prompt = TEMPLATE.format(instruction="VPN down {again}")
    assert instruction_of(prompt, TEMPLATE) == "VPN down {again}"
    assert instruction_of("not templated", TEMPLATE) == "not templated"


def test_parse_since():
    now = datetime(2026, 11, 29, 12, tzinfo=timezone.utc)
    assert parse_since("24h", now) == now - timedelta(hours=24)
    assert parse_since("2026-11-28T09:00:00Z") == datetime(2026, 11, 28, 9, tzinfo=timezone.utc)
    assert parse_since(None) is None
    with pytest.raises(Exception, match="monitor.window.since: 'yesterday'"):
        parse_since("yesterday")


# ---------------------------------------------------------------- the request log window

def _req(text, label, ts=None, **kw):
    r = {"ts": ts or "2026-11-29T10:00:00.000Z", "artifact": "cpu/gguf_q8_0", "endpoint": "/v1/completions",
         "input": text, "output": json.dumps({"category": label}), "prompt_tokens": 20, "completion_tokens": 11,
         "latency_ms": 25.0, "ttft_ms": 6.0, "schema_valid": True, "parsed": {"category": label}, "label": label,
         "status": 200, "error": None}
    r.update(kw)
    return r


def _write_log(path, records, extra_lines=()):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + "".join(extra_lines))


def test_read_window_walks_rotated_files_oldest_first(tmp_path):
    log = tmp_path / "requests.jsonl"
    _write_log(log.with_name("requests.jsonl.2"), [_req("a", "x", ts="2026-11-29T08:00:00Z")])
    _write_log(log.with_name("requests.jsonl.1"), [_req("b", "x", ts="2026-11-29T09:00:00Z")])
    _write_log(log, [_req("c", "x", ts="2026-11-29T10:00:00Z")], extra_lines=['{"ts": "2026-11-29T10:0'])
    window, info = read_window(log)
    assert [r["input"] for r in window] == ["a", "b", "c"]
    assert info == {"files": 3, "lines": 4, "malformed": 1}
    assert [r["input"] for r in read_window(log, last=2)[0]] == ["b", "c"]
    assert [r["input"] for r in read_window(log, since="2026-11-29T08:30:00Z")[0]] == ["b", "c"]
    assert read_window(tmp_path / "none.jsonl") == ([], {"files": 0, "lines": 0, "malformed": 0})


# ---------------------------------------------------------------- the whole check on synthetic traffic

CFG = yaml.safe_load((ROOT / "conf/monitor/default.yaml").read_text())
WORDS = "printer jammed vpn down password reset laptop screen broken email quota outlook crash".split()


def _text(i, n_words):
    return " ".join(WORDS[(i * 5 + j * 3) % len(WORDS)] for j in range(n_words))


def _train(n=400):
    labels = (["network"] * 4 + ["printing"]) * (n // 5)  # printing is the rare label: 20 %
    return {"inputs": [_text(i, 4 + i % 5) for i in range(n)], "labels": labels}


BENCH = {"status": "ok", "ttft_ms": 5.0, "decode_tok_s": 1000.0, "exact_match": 0.8}


def test_stable_traffic_flags_nothing():
    train = _train()
    window = [_req(t, l) for t, l in zip(train["inputs"][:200], train["labels"][:200])]
    res = analyse(CFG, window, train, train, BENCH, None, SPEC["data"]["response_schema"], "category")
    assert res["alerts"] == [], res["alerts"]
    m = res["metrics"]
    assert m["requests"] == 200 and m["retrain"] == 0 and m["input_length_psi"] < 0.05 and m["label_psi"] < 0.01
    assert m["latency_bench_ms"] == pytest.approx(5 + 10 / 1000 * 1000)   # TTFT + 10 more tokens at 1000 tok/s
    assert m["latency_p95_ratio"] == pytest.approx(25 / 15, abs=1e-3)
    assert all(isinstance(v, (int, float)) for v in m.values())


def test_shifted_traffic_flags_exactly_the_shift():
    train = _train()
    # the rare label becomes the common one, and inputs get three times longer; latency, validity,
    # vocabulary stay as they were
    window = [_req(_text(i, 15 + i % 5), "printing" if i % 5 else "network") for i in range(200)]
    res = analyse(CFG, window, train, train, BENCH, None, SPEC["data"]["response_schema"], "category")
    kinds = {text.split()[0] for _, text in res["alerts"]}
    assert kinds == {"input", "label"}, res["alerts"]
    line = reason(res["alerts"])
    assert line.startswith("retrain recommended: ")
    assert "label 'printing' share 20.0 % → 80.0 %, PSI" in line and "+60.0 points > ±10" in line
    assert "check serving" not in line
    assert res["metrics"]["retrain"] == 1 and res["metrics"]["input_length_psi"] > 0.2


def test_serving_problems_are_flagged_as_such():
    train = _train()
    window = [_req(t, l, latency_ms=400.0, ttft_ms=300.0, schema_valid=i % 4 != 0)
              for i, (t, l) in enumerate(zip(train["inputs"][:100], train["labels"][:100]))]
    res = analyse(CFG, window, train, train, BENCH, None, SPEC["data"]["response_schema"], "category")
    line = reason(res["alerts"])
    assert line.startswith("check serving: invalid outputs 25.0% of 100 > 5.0%")
    assert "latency p95 400.0 ms = 26.7× the bench's 15.0 ms > 10.0×" in line
    assert "time to first token p95 300.0 ms = 60.0× the bench's 5.0 ms" in line
    assert res["metrics"]["retrain"] == 0


def test_too_few_requests_are_reported_not_judged():
    train = _train()
    window = [_req(_text(i, 30), "printing") for i in range(10)]
    res = analyse(CFG, window, train, train, BENCH, None, SPEC["data"]["response_schema"], "category")
    assert res["alerts"] == [] and res["metrics"]["label_psi"] > 1
    assert "10 requests < monitor.min_requests = 50" in res["notes"][0]


def test_feedback_accuracy_matches_scrubbed_log_inputs(tmp_path):
    fb = tmp_path / "feedback.jsonl"
    rows = []
    window = []
    for i in range(30):
        ticket = f"printer {i} jammed, reach me at user{i}@example.com"
        truth = {"category": "printing", "priority": "low", "action": "resolve"}
        served = truth if i < 12 else {**truth, "category": "hardware"}
        rows.append({"ticket": ticket, "response": json.dumps(truth)})
        window.append(_req(f"printer {i} jammed, reach me at <EMAIL>", served["category"],
                           output=json.dumps(served), parsed=served))
    fb.write_text("".join(json.dumps(r) + "\n" for r in rows))
    feedback = read_feedback(fb, SPEC["data"])
    res = analyse(CFG, window, _train(), None, BENCH, feedback, SPEC["data"]["response_schema"], "category")
    m = res["metrics"]
    assert (m["feedback_n"], m["feedback_matched"], m["feedback_accuracy"]) == (30, 30, 0.4)
    assert m["feedback_label_accuracy"] == 0.4 and m["bench_accuracy"] == 0.8
    assert "accuracy on 30 feedback answers 40.0% < the bench's 80.0% − 10 points" in reason(res["alerts"])


def test_bad_feedback_names_file_and_line(tmp_path):
    fb = tmp_path / "feedback.jsonl"
    fb.write_text(json.dumps({"ticket": "ok", "response": '{"category": "printing", "priority": "low", '
                                                         '"action": "resolve"}'}) + "\n" + '{"ticket": "no answer"}\n')
    with pytest.raises(Exception, match=r"feedback.jsonl:2: missing field 'response'"):
        read_feedback(fb, SPEC["data"])
    fb.write_text(json.dumps({"ticket": "x", "response": '{"category": "cooking"}'}) + "\n")
    with pytest.raises(Exception, match=r"feedback.jsonl:1: the response is not valid for data.response_schema"):
        read_feedback(fb, SPEC["data"])
    fb.write_text("\n" + '{"ticket": "cut off by a kill\n')
    with pytest.raises(Exception, match=r"feedback.jsonl:2: not JSON .*expected a feedback record"):
        read_feedback(fb, SPEC["data"])


def test_bad_train_split_names_file_and_line(tmp_path):
    split = tmp_path / "train.jsonl"
    split.write_text(json.dumps({"prompt": "p", "response": "{}"}) + "\n" + "{oops\n")
    with pytest.raises(Exception, match=r"train.jsonl:2: not JSON .*'prompt' and 'response'"):
        read_split(split, "{instruction}", "category")
    split.write_text(json.dumps({"response": "{}"}) + "\n")
    with pytest.raises(Exception, match=r"train.jsonl:1: expected a curated record"):
        read_split(split, "{instruction}", "category")


# ---------------------------------------------------------------- CLI and DVC stage in a scratch project

def _project(tmp_path) -> Path:
    spec = dict(SPEC)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    train = _train()
    data = tmp_path / "build/data"
    data.mkdir(parents=True)
    for split in ("train", "val"):
        with open(data / f"{split}.jsonl", "w") as f:
            for t, l in zip(train["inputs"], train["labels"]):
                f.write(json.dumps({"id": "x", "prompt": TEMPLATE.format(instruction=t),
                                    "response": json.dumps({"category": l}), "label": l}) + "\n")
    bench = tmp_path / "reports/bench"
    bench.mkdir(parents=True)
    (bench / "cpu.json").write_text(json.dumps({"cpu": {"gguf_q8_0": {k: v for k, v in BENCH.items() if k != "status"}}}))
    (bench / "cpu.details.json").write_text(json.dumps({"cpu": {"gguf_q8_0": {"status": "ok"}}}))
    return tmp_path


def _slmake(cwd, *args):
    return subprocess.run([sys.executable, "-m", "slmake.cli", "monitor", *args], cwd=cwd, capture_output=True,
                          text=True)


def test_cli_exit_codes_reason_and_outputs(tmp_path):
    repo = _project(tmp_path)
    none = _slmake(repo)
    assert none.returncode == 0 and "no traffic" in none.stderr
    assert json.loads((repo / "reports/monitor/metrics.json").read_text()) == {
        "alerts": 0, "requests": 0, "retrain": 0, "traffic": 0}
    train = _train()
    # 100 requests all answered 'printing' (same inputs as train), then 100 like the train split
    _write_log(repo / "logs/requests.jsonl", [_req(t, "printing") for t in train["inputs"][100:200]]
               + [_req(t, l) for t, l in zip(train["inputs"][:100], train["labels"][:100])])
    stable = _slmake(repo, "--last", "100", "--json")
    assert stable.returncode == 0, stable.stderr
    assert json.loads(stable.stdout)["requests"] == 100
    shifted = _slmake(repo, "--last", "150")   # 50 'printing' + 100 stable: 70 of 150 are 'printing'
    assert shifted.returncode == 1
    last = shifted.stderr.strip().splitlines()[-1]
    assert last.startswith("retrain recommended: label 'printing' share 20.0 % → 46.7 %, PSI 0."), shifted.stderr
    assert "input length" not in last
    report = (repo / "reports/monitor/report.md").read_text()
    assert "retrain recommended" in report and "| printing | 20.0% | 46.7% | +26.7 |" in report
    metrics = json.loads((repo / "reports/monitor/metrics.json").read_text())
    assert all(isinstance(v, (int, float)) for v in metrics.values()) and metrics["retrain"] == 1
    csv = (repo / "reports/monitor/plots/label_share.csv").read_text().splitlines()
    assert csv[0] == "label,train,live" and "printing,0.2,0.4667" in csv
    loose = _slmake(repo, "--last", "150", "monitor.thresholds.label_psi=5", "monitor.thresholds.label_share_change=0.9")
    assert loose.returncode == 0, loose.stderr
    bad = _slmake(repo, "monitor.thresholds.label_psi=-1")
    assert bad.returncode == 2 and "monitor.thresholds.label_psi: -1 is out of range" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_stage_without_a_log_writes_no_traffic_and_succeeds(tmp_path):
    repo = _project(tmp_path)
    res = subprocess.run([sys.executable, str(ROOT / "stages/monitor.py")], cwd=repo, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "no traffic" in res.stdout
    assert json.loads((repo / "reports/monitor/metrics.json").read_text())["traffic"] == 0
    assert (repo / "reports/monitor/plots/input_length.csv").read_text() == "bin,range,train,live\n"


def test_bench_label_baseline_does_not_count_the_models_own_bias(tmp_path):
    """A model that never answers 'printing' differs from the train labels on any traffic; against
    its own answers on the test split (bench outputs) the same traffic is stable."""
    repo = _project(tmp_path)
    outputs = repo / "build/bench/cpu"
    outputs.mkdir(parents=True)
    outputs.joinpath("outputs.jsonl").write_text("".join(
        json.dumps({"artifact": "gguf_q8_0", "id": str(i), "tokens": [1], "text": json.dumps({"category": "network"})})
        + "\n" for i in range(40)))
    train = _train()
    _write_log(repo / "logs/requests.jsonl", [_req(t, "network") for t in train["inputs"][:100]])
    biased = _slmake(repo)
    assert biased.returncode == 1 and "label 'network' share 80.0 % → 100.0 %" in biased.stderr
    own = _slmake(repo, "monitor.label_baseline=bench")
    assert own.returncode == 0, own.stderr
    assert "the artifact's answers on the test split (n=40)" in (repo / "reports/monitor/report.md").read_text()
