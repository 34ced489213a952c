"""selection: the Pareto front and the pick read validation figures only (issue 19)."""

import itertools

import pytest

from slmake.selection import ROW_KEYS, pareto, pick, rows_from_bench

TEST_KEYS = {"exact_match", "delta_ci95", "valid", "parity", "field_accuracy", "n", "exact_match_free"}


def row(artifact, acc, size, tps, *, low=0.0, refused=False, experiment="exp", **extra):
    return {"experiment": experiment, "artifact": artifact, "val_exact_match": acc, "size_mb": size,
            "decode_tok_s": tps, "delta": low, "delta_low": low, "refused": refused, **extra}


ROWS = [row("f16", 0.80, 6.3, 3500), row("q8", 0.80, 3.4, 3000), row("q4", 0.78, 2.0, 3600),
        row("int4", 0.70, 3.6, 3000), row("q2", 0.60, 2.5, 3400)]


def test_pareto_marks_the_non_dominated_rows():
    front = {r["artifact"] for r in pareto(ROWS) if r["pareto"]}
    # f16: fastest at 0.80 accuracy; q8: smallest at 0.80; q4: smallest and fastest; int4 is beaten by q8
    # on every axis (0.70 < 0.80, 3.6 > 3.4 MB, same tok/s), q2 by q4
    assert front == {"f16", "q8", "q4"}
    assert [r["artifact"] for r in pareto(ROWS)] == [r["artifact"] for r in ROWS]   # order kept, copies
    assert "pareto" not in ROWS[0]
    assert not pareto([row("x", None, 1.0, 10)])[0]["pareto"]   # no val accuracy: never on the front


def test_pick_ranks_by_val_accuracy_then_size_then_speed():
    p = pick(ROWS)
    assert p.row["artifact"] == "q8"             # ties 0.80 with f16, smaller
    assert "0.800" in p.why and p.excluded == []
    assert pick([row("a", 0.8, 3.0, 10), row("b", 0.8, 3.0, 20)]).row["artifact"] == "b"   # then faster


def test_pick_applies_each_constraint_and_says_why():
    p = pick(ROWS, {"max_size_mb": 3.0})
    assert p.row["artifact"] == "q4"
    assert any(e.startswith("exp:q8: size 3.4 MB > max_size_mb 3.0") for e in p.excluded), p.excluded
    assert pick(ROWS, {"min_decode_tok_s": 3550}).row["artifact"] == "q4"
    low = [row("q8", 0.80, 3.4, 3000, low=-0.05), row("q4", 0.78, 2.0, 3600, low=-0.01)]
    p = pick(low, {"max_drop": 0.02})
    assert p.row["artifact"] == "q4" and "lower bound -0.050" in p.excluded[0]
    assert pick(low, {"max_drop": None, "max_size_mb": None}).row["artifact"] == "q8"   # None = no limit


def test_pick_never_takes_a_refused_row_and_returns_none_with_reasons():
    p = pick([row("q8", 0.9, 3.4, 3000, refused=True), row("q4", 0.5, 2.0, 3600)])
    assert p.row["artifact"] == "q4" and "quality gate" in p.excluded[0]
    p = pick(ROWS, {"max_size_mb": 1.0})
    assert p.row is None and len(p.excluded) == len(ROWS) and "no artifact meets" in p.why
    with pytest.raises(ValueError, match="max_size"):
        pick(ROWS, {"max_sise_mb": 3})


class KeyGuard(dict):
    """A row that fails the test on any read of a test-split figure."""

    def __getitem__(self, k):
        assert k not in TEST_KEYS, f"selection read the test-split key {k!r}"
        return super().__getitem__(k)

    def get(self, k, default=None):
        assert k not in TEST_KEYS, f"selection read the test-split key {k!r}"
        return super().get(k, default)


def test_no_decision_reads_the_test_split():
    """The pick and the front are the same whatever the rows' test accuracy says, and nothing reads it."""
    base = [dict(r, exact_match=0.5, delta_ci95=0.01, valid=1.0) for r in ROWS]
    want_pick = pick(base, {"max_size_mb": 4}).row["artifact"]
    want_front = [r["pareto"] for r in pareto(base)]
    for accs in itertools.product((0.0, 1.0), repeat=3):   # the test accuracy of three rows flips around
        rows = [KeyGuard(r, exact_match=accs[i] if i < 3 else r["exact_match"]) for i, r in enumerate(base)]
        assert pick(rows, {"max_size_mb": 4}).row["artifact"] == want_pick
        assert [r["pareto"] for r in pareto(rows)] == want_front
    guarded = [KeyGuard(r) for r in base]
    assert pick(guarded).row is guarded[1]                # the caller's own row comes back


def test_rows_from_bench_take_the_validation_figures():
    figures = {"q8": {"exact_match": 0.99, "delta": 0.5, "delta_ci95": 0.0, "val_exact_match": 0.7,
                      "val_delta": -0.01, "val_delta_ci95": 0.02, "size_mb": 3.4, "decode_tok_s": 3000.0},
               "q4": {"exact_match": 0.1, "size_mb": 2.0}}
    rows = rows_from_bench(figures, "ws", refused={"q4"})
    assert set(rows[0]) == set(ROW_KEYS)
    assert rows[1] == {"experiment": "ws", "artifact": "q8", "val_exact_match": 0.7, "size_mb": 3.4,
                       "decode_tok_s": 3000.0, "delta": -0.01, "delta_low": -0.03, "refused": False}
    assert rows[0]["refused"] and rows[0]["delta_low"] is None and rows[0]["val_exact_match"] is None
