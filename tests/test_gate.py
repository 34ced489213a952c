"""The quality gate (slmake.gate): what deploy packages, from bench's Δ-vs-fp32 interval (issue 19 item 4)."""

from slmake.gate import gate, refused, verdict
from slmake.metrics import paired_delta
from slmake.report import gate_markdown


def figures(hits, ref, **extra):
    """Bench's figures for an artifact whose validation answers hit ``hits`` where the reference hit ``ref``."""
    d = paired_delta(hits, ref)
    return {"status": "ok", "val_delta": d["delta"], "val_delta_ci95": d["delta_ci95"], **extra}


REF = [True] * 120 + [False] * 80   # the fp32 reference: 0.600 on 200 validation prompts


def test_a_broken_artifact_is_refused_and_an_identical_one_passes():
    broken = [False] * 200                                  # answers nothing right: Δ -0.600
    same = list(REF)
    one_off = [False] + REF[1:]                             # one prompt lost: Δ -0.005 ± 0.010
    v = gate({"broken": figures(broken, REF), "same": figures(same, REF), "one_off": figures(one_off, REF)}, 0.02)
    assert v["same"]["verdict"] == "pass" and v["same"]["delta_low"] == 0.0
    assert v["one_off"]["verdict"] == "pass" and -0.02 <= v["one_off"]["delta_low"] < 0
    assert v["broken"]["verdict"] == "refused" and v["broken"]["delta"] == -0.6 and v["broken"]["split"] == "val"
    assert "-0.600 ±0.068: lower bound -0.668 < -0.020" in v["broken"]["reason"]
    assert set(refused(v)) == {"broken"}


def test_the_lower_bound_decides_not_the_point_estimate():
    # 6 prompts lost, 6 gained: Δ 0, but ±3.4 points on 200 prompts: a 2-point drop is not ruled out
    churn = list(REF)
    for i in range(6):
        churn[i], churn[-1 - i] = False, True
    v = verdict(figures(churn, REF), 0.02)
    assert v["delta"] == 0.0 and v["delta_low"] < -0.02 and v["verdict"] == "refused"
    assert verdict(figures(churn, REF), 0.05)["verdict"] == "pass"   # a looser bench.max_drop ships it
    assert verdict(figures([False] * 200, REF), None)["verdict"] == "pass"   # null: no gate


def test_the_gate_reads_the_validation_interval_when_there_is_one():
    # a test-split collapse with a clean validation interval passes: the test split decides nothing
    f = {**figures(REF, REF), "delta": -0.5, "delta_ci95": 0.01, "exact_match": 0.1}
    assert verdict(f, 0.02)["verdict"] == "pass"
    # a build with no validation split is gated on the test split's interval, and says so
    v = verdict({"status": "ok", "delta": -0.1, "delta_ci95": 0.02}, 0.02)
    assert v["verdict"] == "refused" and v["split"] == "test" and v["delta_low"] == -0.12


def test_unbenchmarked_artifacts_ship_unmeasured_and_failed_ones_are_refused():
    skipped = verdict({"status": "skipped", "reason": "no NPU on this host"}, 0.02)
    assert skipped["verdict"] == "unmeasured" and "no NPU" in skipped["reason"]
    failed = verdict({"status": "failed", "reason": "bench process was killed by SIGSEGV"}, 0.02)
    assert failed["verdict"] == "refused" and "SIGSEGV" in failed["reason"]


def test_report_lists_the_refused_with_their_delta_and_interval():
    rows = [{"target": "cpu", "artifact": "gguf_q2_k", **figures([False] * 200, REF)},
            {"target": "cpu", "artifact": "gguf_q8_0", **figures(REF, REF)},
            {"target": "intel_npu", "artifact": "ov_int4", "status": "skipped", "reason": "no NPU"}]
    md = gate_markdown(rows, 0.02)
    assert "## Quality gate" in md and "| cpu/gguf_q2_k | val | -0.600 |" in md
    assert "gguf_q8_0" not in md and "ov_int4" not in md
    assert "Every benchmarked artifact passed (1)" in gate_markdown(rows[1:], 0.02)
