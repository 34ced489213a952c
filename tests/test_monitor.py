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
from slmake.monitor.alerts import analyse, reason
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
    with pytest.raises(Exception, match=r"monitor.window.since: 'yesterday'"):
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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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
    biased = _slmake(repo, "monitor.label_baseline=train")
    assert biased.returncode == 1 and "label 'network' share 80.0 % → 100.0 %" in biased.stderr
    own = _slmake(repo)   # monitor.label_baseline: bench is the default
    assert own.returncode == 0, own.stderr
    assert "the artifact's answers on the test split (n=40)" in (repo / "reports/monitor/report.md").read_text()


# ---------------------------------------------------------------- sample-size-aware tests, by hand

def test_homogeneity_hand_computed():
    # 2x2: expected 25/15 in both rows; (5²/25 + 5²/15) x 2 = 5.3333, 1 dof: p = erfc(sqrt(5.3333 / 2))
    t = stats.homogeneity([30, 10], [20, 20])
    assert (t["stat"], t["dof"]) == (pytest.approx(16 / 3), 1)
    assert t["p"] == pytest.approx(math.erfc(math.sqrt(8 / 3)), rel=1e-9)
    assert stats.homogeneity([5, 5], [0, 0])["p"] == 1.0            # an empty sample tells nothing apart


def test_rare_bins_are_pooled_until_each_expects_five():
    # bins of 1 and 3 in all expect 0.34 and 1.0 in the smaller sample: pooled together (still 1.3),
    # then with the next smallest bin
    assert stats.pool_rare([100, 100, 1, 1], [50, 50, 0, 2]) == ([100.0, 102.0], [50.0, 52.0])
    assert stats.pool_rare([3, 1], [2, 0]) == ([4.0], [2.0])        # one bin left: nothing to test
    assert stats.homogeneity([3, 1], [2, 0])["p"] == 1.0


def test_share_test_is_fishers_exact():
    # [[3, 0], [0, 3]]: the two most extreme tables of C(6, 3) = 20, each 1/20: p = 0.1
    assert stats.share_test(3, 3, 0, 3) == pytest.approx(0.1)
    assert stats.share_test(1, 2, 1, 2) == pytest.approx(1.0)


# ---------------------------------------------------------------- held-out traffic: no false alarms

def _tickets() -> dict:
    """The default data split 80/10/10 (seeded), each row (input, true label)."""
    import random

    rows = [json.loads(x) for x in (ROOT / "data/it_tickets/tickets.jsonl").read_text().splitlines()]
    rows = [(r["ticket"], json.loads(r["response"])["category"]) for r in rows]
    random.Random(0).shuffle(rows)
    n = len(rows) // 10
    return {"test": rows[:n], "val": rows[n:2 * n], "train": rows[2 * n:]}


def _model(text: str, truth: str) -> str:
    """A biased model, deterministic per input: it over-answers 'access' (as the issue's artifact
    did: 20 % → 30 % 'access') and calls some printing tickets hardware."""
    import zlib

    h = zlib.crc32(text.encode()) % 100
    if truth in ("software", "network", "other") and h < 40:
        return "access"
    return "hardware" if truth == "printing" and h < 30 else truth


def _served(rows, **kw) -> list[dict]:
    return [_req(t, _model(t, truth), **kw) for t, truth in rows]


SPLITS = _tickets()
TRAIN = {"inputs": [t for t, _ in SPLITS["train"]], "labels": [lab for _, lab in SPLITS["train"]]}
VAL = {"inputs": [t for t, _ in SPLITS["val"]], "labels": [lab for _, lab in SPLITS["val"]]}
REFERENCE = [_model(t, truth) for t, truth in SPLITS["test"]]   # bench: the artifact's answers on test


def _check(window, baseline=REFERENCE, **th):
    cfg = {**CFG, "thresholds": {**CFG["thresholds"], **th}}
    return analyse(cfg, window, TRAIN, VAL, BENCH, None, SPEC["data"]["response_schema"], "category", baseline)


def _windows(rows, n_windows, seed):
    import random

    rng = random.Random(seed)
    return [rng.sample(rows, rng.randint(50, min(200, len(rows)))) for _ in range(n_windows)]


@pytest.mark.slow
def test_held_out_traffic_raises_no_alarm():
    """25 random windows (50-200 requests) of the test split, answered by the biased model, and
    25 of the val split (held-out tickets bench never saw): no alarm against the model's own
    answers on the test split. Against the true train labels (the old reference) the model's bias
    reads as drift in most of the same windows."""
    windows = _windows(SPLITS["test"], 25, seed=1) + _windows(SPLITS["val"], 25, seed=2)
    results = [_check(_served(w)) for w in windows]
    alarms = [(len(w), r["alerts"]) for w, r in zip(windows, results) if r["alerts"]]
    assert alarms == []
    assert all(r["metrics"]["requests"] >= 50 and r["metrics"]["retrain"] == 0 for r in results)
    old = [_check(_served(w), baseline=None, drift_p_value=1.0) for w in windows]   # train labels, PSI alone
    assert sum(bool(r["alerts"]) for r in old) >= 40
    assert "label 'access' share" in reason(old[0]["alerts"])


def test_psi_alone_reads_small_window_noise_as_drift():
    """Why the p-value: two samples of one distribution over 10 length bins differ by PSI ~0.19 at
    50 requests; some held-out windows cross 0.2 by chance, and none is more than noise."""
    windows = _windows(SPLITS["val"], 40, seed=3)
    small = [_check(_served(w[:50])) for w in windows]
    over = [r for r in small if r["metrics"]["input_length_psi"] > 0.2 or r["metrics"]["label_psi"] > 0.2]
    assert over, "expected some windows of 50 to cross PSI 0.2 by chance"
    assert all(not r["alerts"] and any("within the sampling noise of 50 requests" in n for n in r["notes"])
               for r in over)


BANKING = ["How do I dispute a card payment of £{n} at {shop}?", "What is the overdraft fee on my current account?",
           "Can I increase my contactless limit to £{n}?", "Why was my mortgage repayment of £{n} taken twice?",
           "Where is my refund from {shop}?", "How long does an international transfer to {country} take?",
           "My savings interest was not credited this month", "Exchange rate for euros to {country} pesos?",
           "Is there a fee for topping up with Apple Pay?", "cancel standing order to {shop}",
           "Cheque deposit of £{n} still pending", "What's the APR on your personal loans?"]


def _banking(n, seed):
    import random

    rng = random.Random(seed)
    return [rng.choice(BANKING).format(n=rng.randint(5, 900), shop=rng.choice(["Tesco", "Argos", "Boots", "Lidl"]),
                                       country=rng.choice(["Mexico", "Chile", "Colombia"])) for _ in range(n)]


@pytest.mark.parametrize("size", [50, 100, 200])
def test_out_of_domain_traffic_is_flagged(size):
    """Banking questions sent to the IT-ticket model (it answers them with its usual labels):
    flagged on input length and unseen words, at every window size from min_requests up."""
    for seed in range(5):
        window = [_req(t, _model(t, "other")) for t in _banking(size, seed)]
        res = _check(window)
        line = reason(res["alerts"])
        assert line.startswith("retrain recommended: ") and "unseen words" in line and "input length" in line, line
        assert res["metrics"]["input_length_p_value"] < 1e-3


@pytest.mark.parametrize("size", [100, 200])
def test_label_shift_is_flagged(size):
    """Held-out-like tickets where printing (6.5 % of the data) is 40 % of the traffic: the model's
    answers shift with it, and the label check flags it against the model's own reference."""
    import random

    printing = [r for r in SPLITS["train"] if r[1] == "printing"]
    others = [r for r in SPLITS["train"] if r[1] != "printing"]
    for seed in range(5):
        rng = random.Random(seed)
        window = rng.sample(printing, size * 2 // 5) + rng.sample(others, size - size * 2 // 5)
        rng.shuffle(window)
        res = _check(_served(window))
        labels = [t for k, t in res["alerts"] if t.startswith("label 'printing' share")]
        assert labels and "(p " in labels[0], res["alerts"]
        assert res["metrics"]["label_p_value"] < 1e-3 and res["metrics"]["retrain"] == 1


def test_latency_is_judged_on_service_time_and_queueing_is_reported():
    """Eight clients at once: each request waits ~7 service times for the runner. That is load, not a
    sick server (no alert, a note with the queue and the concurrency); a slow runner is flagged."""
    train = _train()
    t0 = datetime(2026, 11, 29, 10, tzinfo=timezone.utc)

    def at(i, service, queue):   # request i answered at t0 + i x service (one runner, always busy)
        ts = (t0 + timedelta(milliseconds=(i + 1) * service)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        return dict(ts=ts, latency_ms=queue + service, queue_ms=queue, service_ms=service, ttft_ms=6.0)
    loaded = [_req(t, lab, **at(i, 20.0, 140.0)) for i, (t, lab) in enumerate(zip(train["inputs"][:100], train["labels"]))]
    res = analyse(CFG, loaded, train, train, BENCH, None, SPEC["data"]["response_schema"], "category")
    m = res["metrics"]
    assert res["alerts"] == [], res["alerts"]
    assert (m["latency_p95_ms"], m["service_p95_ms"], m["queue_p95_ms"]) == (160.0, 20.0, 140.0)
    assert m["latency_p95_ratio"] == pytest.approx(20 / 15, abs=1e-3)      # service time vs the bench's 15 ms
    # Little's law: 100 x 160 ms in the server over 2,140 ms (first arrival 140 ms before t0, last answer at 2 s)
    assert m["concurrency_mean"] == pytest.approx(100 * 160 / 2140, abs=0.01)
    assert any(n.startswith("requests waited for the runner (queue p95 140.0 ms vs service p95 20.0 ms, 7.5 in "
                            "flight") for n in res["notes"]), res["notes"]
    sick = [_req(t, lab, **at(i, 400.0, 0.0)) for i, (t, lab) in enumerate(zip(train["inputs"][:100], train["labels"]))]
    line = reason(analyse(CFG, sick, train, train, BENCH, None, SPEC["data"]["response_schema"], "category")["alerts"])
    assert line == "check serving: service time p95 400.0 ms = 26.7× the bench's 15.0 ms > 10.0×"
