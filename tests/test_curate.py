"""Curation core: every rule and quarantine reason, the ledger invariant, determinism, leak-free
grouped splits, balancing, atomic outputs and config errors.  (The helpers are in curate_utils.py,
shared with the other curation tests.)"""

from __future__ import annotations

import json
from collections import Counter, defaultdict

import pytest

from curate_utils import (
    CATEGORIES,
    REPO,
    SPLITS,
    all_rows,
    cfg_for,
    check_invariant,
    curate_cfg,
    ledger,
    quarantine,
    read_split,
    resp,
    row,
    run,
    write_lines,
)
from slmake.data import curate
from slmake.data.curate import QUARANTINE_REASONS, RULES, CurationError, run_curation
from slmake.prompt import format_prompt

# ---------------------------------------------------------------------------- quarantine and drop rules

@pytest.mark.parametrize("line,reason", [
    (b"\xff\xfe not utf-8", "not_utf8"),
    (b'{"ticket": "caf\xe9", "response": "{}"}', "not_utf8"),
    ("{not json", "invalid_json"),
    ('{"ticket": "truncated", "resp', "invalid_json"),
    (json.dumps({"ticket": "no response"}), "missing_field"),
    (json.dumps({"response": resp()}), "missing_field"),
    (json.dumps({"ticket": 5, "response": resp()}), "wrong_type"),
    (json.dumps({"ticket": None, "response": resp()}), "wrong_type"),
    (json.dumps(["a", "list"]), "wrong_type"),
    (json.dumps("a string"), "wrong_type"),
    (row("x" * 2_000_000), "line_too_long"),
])
def test_each_malformed_kind_is_quarantined(tmp_path, line, reason):
    report = run(tmp_path, [row("a good ticket"), line, row("another good ticket")], quarantine={"max_share": 0.5})
    assert report["quarantined"][reason] == 1 and report["quarantined_total"] == 1
    assert report["kept"] == 2 and report["dropped_total"] == 0 and report["input"] == 3
    assert set(report["quarantined"]) == set(QUARANTINE_REASONS)
    (q,) = quarantine(tmp_path)
    assert q["source"] == str(tmp_path / "in.jsonl") and q["line"] == 2 and q["reason"] == reason
    assert q["detail"] and len(q["content_hash"]) == 64
    assert (q["excerpt"] or "") == (q["excerpt"] or "")[:200]
    rows = ledger(tmp_path)
    assert [r["fate"] for r in rows] == ["kept", "quarantined", "kept"]
    assert rows[1]["reason"] == reason and rows[1]["line"] == "2"
    check_invariant(tmp_path, report)


def test_quarantine_details_say_what_was_expected(tmp_path):
    run(tmp_path, [row("ok"), json.dumps({"ticket": "x"}), json.dumps({"ticket": 5, "response": "y"}), "{bad"],
        quarantine={"max_share": 0.9})
    q = {r["line"]: r["detail"] for r in quarantine(tmp_path)}
    assert "missing field 'response'" in q[2] and "ticket, response" in q[2]
    assert "ticket" in q[3] and "expected string" in q[3]
    assert "column" in q[4]


@pytest.mark.parametrize("line,rule,over", [
    (row(" \t\x00 "), "empty", {}),
    ("", "empty", {}),
    ("   ", "empty", {}),
    (row("x" * 2001), "too_long", {}),
    (row("y " * 300), "too_many_tokens", {"filters": {"max_tokens": 256}}),
    (row("bad response", "not json"), "response_invalid", {}),
    (row("bad enum", resp(priority="whenever")), "response_invalid", {}),
    (row("extra key", json.dumps({"category": "email", "priority": "low", "action": "resolve", "x": 1})),
     "response_invalid", {}),
    (row("empty response", ""), "empty_response", {}),
    (row("TEST please ignore"), "test_ticket", {"filters": {"drop_rules": [
        {"name": "test_ticket", "regex": "(?i)^test\\b", "field": "instruction"}]}}),
])
def test_each_drop_rule(tmp_path, line, rule, over):
    report = run(tmp_path, [row("a good ticket"), line], **over)
    assert report["dropped"][rule] == 1
    assert report["kept"] == 1 and report["dropped_total"] == 1 and report["input"] == 2
    assert set(RULES) <= set(report["dropped"])
    assert ledger(tmp_path)[1]["reason"] == rule
    check_invariant(tmp_path, report)


def test_duplicates_and_conflicts_default_majority(tmp_path):
    report = run(tmp_path, [
        row("Printer jammed"), row("Printer  jammed "),            # same after whitespace collapse
        row("Printer jammed", resp("printing")),                   # same text, a minority label
        row("Cafe\u0301 wifi down"), row("Caf\u00e9 wifi down"),  # same after NFC
    ])
    assert report["dropped"]["duplicate"] == 2
    assert report["dropped"]["conflicting_duplicate"] == 1
    assert report["kept"] == 2
    assert report["dedup"]["conflict_groups"] == 1 and report["dedup"]["conflict_records"] == 3
    kept = {r["prompt"]: r for r in all_rows(tmp_path)}
    assert json.loads(kept[format_prompt(cfg_for("x")["prompt_template"], "Printer jammed")]["response"])["category"] == "network"
    check_invariant(tmp_path, report)


@pytest.mark.parametrize("policy,kept_category,dropped", [
    ("keep_first", "printing", {"conflicting_duplicate": 2, "duplicate": 0}),
    ("majority", "network", {"conflicting_duplicate": 1, "duplicate": 1}),
    ("drop_all", None, {"conflicting_duplicate": 3, "duplicate": 0}),
])
def test_conflict_policies(tmp_path, policy, kept_category, dropped):
    lines = [row("VPN drops", resp("printing")), row("VPN drops"), row("VPN drops"), row("other ticket")]
    report = run(tmp_path, lines, dedup={"conflicts": policy})
    for rule, n in dropped.items():
        assert report["dropped"][rule] == n
    vpn = [r for r in all_rows(tmp_path) if "VPN" in r["prompt"]]
    assert [r["label"] for r in vpn] == ([kept_category] if kept_category else [])
    check_invariant(tmp_path, report)


def test_majority_tie_drops_all(tmp_path):
    report = run(tmp_path, [row("Tie", resp("email")), row("Tie", resp("network")), row("x")],
                 dedup={"conflicts": "majority"})
    assert report["dropped"]["conflicting_duplicate"] == 2 and report["kept"] == 1


def test_output_records_and_canonical_response(tmp_path):
    shuffled = json.dumps({"action": "escalate", "priority": "high", "category": "security"})
    run(tmp_path, [row("Clicked\ta phishing\x07 link  ", shuffled)])
    (rec,) = all_rows(tmp_path)
    assert list(rec) == ["id", "prompt", "response", "label"]
    assert rec["prompt"] == format_prompt("### Ticket\n{instruction}\n### Triage\n", "Clicked a phishing link")
    assert rec["response"] == '{"category": "security", "priority": "high", "action": "escalate"}'
    assert rec["label"] == "security" and len(rec["id"]) == 16


def test_normalisation(tmp_path):
    run(tmp_path, [row("  Zero\u200bwidth\u00a0and\r\nCRLF\u3000  spaces\t\ttabs \n")])
    (rec,) = all_rows(tmp_path)
    assert "Zerowidth and\nCRLF spaces tabs\n" in rec["prompt"]


# ---------------------------------------------------------------------------- invariant, determinism, splits

def mixed_lines(n: int = 300) -> list:
    lines = [row(f"ticket number {i} about the {CATEGORIES[i % 8]} thing", resp(CATEGORIES[i % 8])) for i in range(n)]
    lines += lines[:30]                                    # exact duplicates
    lines += [b"\xff bad", "{oops", json.dumps({"ticket": 1, "response": resp()}), ""]
    lines += [row(f"write me at user{i}@example.com or call +44 20 7946 09{i:02d}") for i in range(5)]
    return lines


def test_ledger_invariant_on_mixed_input(tmp_path):
    report = run(tmp_path, mixed_lines())
    check_invariant(tmp_path, report)
    assert report["input"] == 339 and report["quarantined_total"] == 3
    assert report["dropped"]["empty"] == 1
    assert report["dropped"]["duplicate"] == 30 + 4  # + the PII rows, identical once scrubbed
    assert report["pii"]["counts"]["email"] == 5 and report["pii"]["counts"]["phone"] == 5
    assert report["invariant_ok"] is True
    import hashlib

    raw = (tmp_path / "in.jsonl").read_bytes().split(b"\n")[:-1]
    rows = ledger(tmp_path)
    assert [int(r["line"]) for r in rows] == list(range(1, len(raw) + 1))
    assert [r["content_hash"] for r in rows] == [hashlib.sha256(line).hexdigest() for line in raw]


def test_deterministic_byte_identical(tmp_path):
    src = write_lines(tmp_path / "in.jsonl", mixed_lines())
    a, b = tmp_path / "a", tmp_path / "b"
    ra, rb = curate_cfg(a, cfg_for(src)), curate_cfg(b, cfg_for(src))
    ra.pop("outputs"), rb.pop("outputs")
    assert ra == rb
    for s in SPLITS:
        assert (a / "out" / f"{s}.jsonl").read_bytes() == (b / "out" / f"{s}.jsonl").read_bytes()
    for name in ("ledger.csv", "quarantine.jsonl", "card.md"):
        assert (a / "reports" / name).read_bytes() == (b / "reports" / name).read_bytes()
    ids = [r["id"] for r in all_rows(a)]
    assert len(ids) == len(set(ids))  # each instruction in exactly one split
    assert all(ra["splits"][s] > 0 for s in SPLITS)


def test_split_seed_changes_assignment_not_content(tmp_path):
    src = write_lines(tmp_path / "in.jsonl", mixed_lines())
    ra = curate_cfg(tmp_path / "a", cfg_for(src))
    rb = curate_cfg(tmp_path / "b", cfg_for(src, split={"val": 0.1, "test": 0.1, "seed": 7}))
    assert ra["kept"] == rb["kept"] and ra["leakage"]["ok"] and rb["leakage"]["ok"]
    assert read_split(tmp_path / "a", "test") != read_split(tmp_path / "b", "test")


def test_stratified_split(tmp_path):
    lines = [row(f"unique ticket {i} " + "abcdefghij"[i % 10] * (i % 7 + 1), resp(CATEGORIES[i % 4])) for i in range(400)]
    report = run(tmp_path, lines)
    for s, frac in (("test", 0.1), ("val", 0.1)):
        for cat in CATEGORIES[:4]:
            assert abs(report["labels"][s].get(cat, 0) - 100 * frac) <= 1, (s, cat, report["labels"])
    check_invariant(tmp_path, report)


def near_dup_lines(n_clusters: int = 40, variants: int = 4, labels: int = 1) -> list:
    """n_clusters unrelated tickets (random words), each with variants-1 near-duplicates."""
    import random

    rng = random.Random(1)
    vocab = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 9))) for _ in range(3000)]
    lines = []
    for c in range(n_clusters):
        base = f"cluster{c} " + " ".join(rng.choice(vocab) for _ in range(25))
        for v in range(variants):
            lines.append(row(base + f" again {v}" if v else base, resp(CATEGORIES[c % labels])))
    return lines


def test_near_duplicates_never_straddle_splits(tmp_path):
    report = run(tmp_path, near_dup_lines())
    assert report["dedup"]["near_clusters"] == 40 and report["dedup"]["near_clustered_records"] == 160
    assert report["kept"] == 160  # grouped, not dropped
    by_cluster = defaultdict(set)
    for s in SPLITS:
        for r in read_split(tmp_path, s):
            by_cluster[r["prompt"].split("cluster")[1].split()[0]].add(s)
    assert len(by_cluster) == 40 and all(len(v) == 1 for v in by_cluster.values())
    assert {s for v in by_cluster.values() for s in v} == set(SPLITS)
    assert report["leakage"]["ok"] and all(v == {"exact": 0, "near": 0} for v in report["leakage"]["pairs"].values())
    check_invariant(tmp_path, report)


def test_near_duplicates_drop_action(tmp_path):
    report = run(tmp_path, near_dup_lines(10), dedup={"near": {"action": "drop"}})
    assert report["dropped"]["near_duplicate"] == 30 and report["kept"] == 10
    assert all("again" not in r["prompt"] for r in all_rows(tmp_path))  # the first of each cluster is kept
    check_invariant(tmp_path, report)


def test_leakage_check_fails_the_stage(tmp_path, monkeypatch):
    """If clustering were broken (every record its own group), the leakage check must catch it."""
    monkeypatch.setattr(curate.dedup, "clusters", lambda n, pairs: curate.np.arange(n))
    with pytest.raises(CurationError, match="leakage check failed"):
        run(tmp_path, near_dup_lines())
    assert not (tmp_path / "out" / "train.jsonl").exists()


# ---------------------------------------------------------------------------- balance and negatives

def test_label_caps(tmp_path):
    lines = [row(f"network issue {i} " + "xyz"[i % 3] * i, resp("network")) for i in range(60)]
    lines += [row(f"printer issue {i} " + "pq"[i % 2] * i, resp("printing")) for i in range(10)]
    report = run(tmp_path, lines, balance={"max_per_label": 20})
    assert report["dropped"]["label_cap"] == 40
    assert sum(report["labels"][s].get("network", 0) for s in SPLITS) == 20
    check_invariant(tmp_path, report)


def test_oversampling_is_train_only(tmp_path):
    lines = [row(f"common {i} " + "abc"[i % 3] * i, resp("network")) for i in range(100)]
    lines += [row(f"rare {i} " + "de"[i % 2] * i, resp("printing")) for i in range(20)]
    lines += [row(f"hard {i} " + "fg"[i % 2] * i, resp("security", "high", "escalate")) for i in range(20)]
    report = run(tmp_path, lines, balance={"min_per_label": 40, "hard": {"field": "action", "values": ["escalate"], "factor": 3}})
    train = read_split(tmp_path, "train")
    counts = Counter(r["label"] for r in train)
    assert counts["printing"] == 40  # topped up to min_per_label
    assert counts["security"] == 3 * 40  # topped up, then x3 as hard
    assert report["oversampled_rows"] == len(train) - report["records_per_split"]["train"] > 0
    for s in ("val", "test"):
        ids = [r["id"] for r in read_split(tmp_path, s)]
        assert len(ids) == len(set(ids)) and ids  # never duplicated into val/test
    train_ids = {r["id"] for r in train}
    assert not train_ids & {r["id"] for s in ("val", "test") for r in read_split(tmp_path, s)}
    check_invariant(tmp_path, report)


def negative_lines() -> list:
    lines = [row(f"please fix thing {i} " + "ab"[i % 2] * i) for i in range(90)]
    return lines + [row(f"book me a flight {i} " + "cd"[i % 2] * i, resp("other", "low", "refuse")) for i in range(10)]


def test_negative_share_fails_when_configured(tmp_path):
    with pytest.raises(CurationError, match=r"negative examples \(action in \['refuse', 'escalate'\]\) are .*below"):
        run(tmp_path, negative_lines(),
            negatives={"field": "action", "values": ["refuse", "escalate"], "min_share": 0.5, "on_violation": "fail"})
    assert not (tmp_path / "out" / "train.jsonl").exists()


def test_negative_share_warns_when_configured(tmp_path):
    report = run(tmp_path, negative_lines(),
                 negatives={"field": "action", "values": ["refuse"], "min_share": 0.5, "on_violation": "warn"})
    assert report["negatives"]["ok"] is False and 0.05 < report["negatives"]["share_train"] < 0.15
    assert report["warnings"] and "below data.negatives.min_share" in report["warnings"][0]
    ok = run(tmp_path, negative_lines(), negatives={"field": "action", "values": ["refuse"], "min_share": 0.05})
    assert ok["negatives"]["ok"] is True and not ok["warnings"]


# ---------------------------------------------------------------------------- failures and config

def test_quarantine_ceiling_fails_with_clear_message(tmp_path):
    lines = [row(f"fine {i}") for i in range(90)] + ["{broken"] * 10
    with pytest.raises(CurationError) as e:
        run(tmp_path, lines, quarantine={"max_share": 0.05})
    msg = str(e.value)
    assert "10 of 100 records (10.0%) are malformed" in msg and "data.quarantine.max_share" in msg
    assert "in.jsonl:91: invalid_json" in msg
    assert not (tmp_path / "out" / "train.jsonl").exists()
    assert len(quarantine(tmp_path)) == 10  # published so the user can see what was wrong
    report = run(tmp_path, lines, quarantine={"max_share": 0.1})
    assert report["quarantined_total"] == 10


def test_failure_keeps_previous_outputs(tmp_path, monkeypatch):
    lines = [row(f"ticket {i}") for i in range(50)]
    run(tmp_path, lines)
    def snapshot():
        return {p.relative_to(tmp_path): p.read_bytes() for p in tmp_path.rglob("*")
                if p.is_file() and p.name != "in.jsonl"}

    before = snapshot()
    with pytest.raises(CurationError, match=r"data.split.val"):
        run(tmp_path, lines, split={"val": 2, "test": 0.1})
    calls = iter(range(10**6))

    def boom(template, instruction):  # fail mid-stream, after some rows were spooled
        if next(calls) == 20:
            raise OSError("disk full")
        return format_prompt(template, instruction)

    monkeypatch.setattr(curate, "format_prompt", boom)
    with pytest.raises(CurationError, match="disk full"):
        run(tmp_path, [row(f"other {i}") for i in range(50)])
    assert snapshot() == before  # same files, no temp files or folders left behind
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_nothing_kept_is_an_error(tmp_path):
    with pytest.raises(CurationError, match="no records left"):
        run(tmp_path, [row("a", "not json"), row("b", "nope")])


@pytest.mark.parametrize("over,match", [
    ({"source": "/nonexistent/x.jsonl"}, "not found"),
    ({"columns": {"instruction": "ticket"}}, r"data.columns: missing required key\(s\) \['response'\]"),
    ({"prompt_template": "no slot"}, "prompt_template"),
    ({"prompt_template": "{instruction} {other}"}, "prompt_template"),
    ({"response_schema": {"type": "nope"}}, "response_schema"),
    ({"label_field": "colour"}, "label_field"),
    ({"split": {"val": 0.5, "test": 0.5}}, "data.split"),
    ({"split": {"val": 2, "test": 0.1}}, r"data.split.val: 2 is out of range"),
    ({"max_chars": 0}, "max_chars"),
    ({"format": "xml"}, r"data.format: 'xml' is not one of"),
    ({"colour": "blue"}, r"data: unknown key\(s\) \['colour'\]"),
    ({"dedup": {"near": {"threshold": 1.5}}}, "data.dedup.near.threshold"),
    ({"dedup": {"conflicts": "vote"}}, "data.dedup.conflicts"),
    ({"filters": {"drop_rules": [{"name": "x", "regex": "("}]}}, "drop_rules.0.regex"),
    ({"filters": {"drop_rules": [{"name": "duplicate", "regex": "x"}]}}, "built-in rule"),
    ({"filters": {"tokenizer": "/nonexistent/tok"}}, "data.filters.tokenizer"),
    ({"pii": {"types": ["ssn"]}}, "data.pii.types.0"),
    ({"negatives": {"min_share": 0.2}}, "data.negatives"),
    ({"shape": "classification"}, r"data.columns: missing required key\(s\) \['text', 'label'\]"),
])
def test_config_errors(tmp_path, over, match):
    src = write_lines(tmp_path / "in.jsonl", [row("hello")])
    with pytest.raises(CurationError, match=match):
        run_curation(cfg_for(src, **over), tmp_path / "out", tmp_path / "r.json")
    assert not (tmp_path / "out" / "train.jsonl").exists()


def test_defaults_are_the_composed_base():
    """One source of defaults: the library fills a partial config from the same _base.yaml that Hydra
    composes before every data option, so conf/data/it_tickets.yaml read raw, the minimal config plus
    its non-default keys, and the composed `data` slice all resolve to that slice."""
    import yaml

    from slmake.data.config import resolve
    from slmake.spec import compose

    composed = compose(REPO / "conf")["data"]
    raw = yaml.safe_load((REPO / "conf/data/it_tickets.yaml").read_text())
    assert "shape" not in raw and "pii" not in raw  # defaults are not spelled out per option
    assert resolve(raw) == resolve(composed) == composed
    minimal = resolve({k: raw[k] for k in cfg_for("x")})
    assert minimal["filters"]["max_tokens"] is None and minimal["negatives"]["field"] is None
    assert {k: v for k, v in minimal.items() if k not in ("filters", "negatives", "card")} == \
        {k: v for k, v in composed.items() if k not in ("filters", "negatives", "card")}
    with pytest.raises(CurationError, match=r"data: missing required key\(s\) \['max_chars'\]"):
        resolve({k: raw[k] for k in cfg_for("x") if k != "max_chars"})


def test_default_dataset(tmp_path):
    import yaml

    cfg = yaml.safe_load((REPO / "conf/data/it_tickets.yaml").read_text())
    cfg["source"] = str(REPO / cfg["source"])
    report = curate_cfg(tmp_path, cfg)
    assert report["input"] == 2000 and report["quarantined_total"] == 0
    assert report["dropped_total"] == report["dropped"]["duplicate"] == 20
    assert all(report["splits"][s] > 0 for s in SPLITS)
    assert set(report["labels"]["train"]) == set(CATEGORIES)
    assert report["leakage"]["ok"] and report["negatives"]["ok"]
    assert json.loads((tmp_path / "reports" / "curation.json").read_text()) == report
    card = (tmp_path / "reports" / "card.md").read_text()
    assert "1980 kept + 20 dropped + 0 quarantined = 2000 input" in card and "Leakage check" in card
    check_invariant(tmp_path, report)


def test_hostile_input_never_crashes(tmp_path):
    lines = [row("fine ticket"),
             '{"ticket": "lone \\ud800 surrogate", "response": ' + json.dumps(resp()) + '}',
             '{"ticket": "surrogate in response", "response": "{\\"category\\": \\"x\\ud800\\"}"}',
             "[" * 100_000 + "]" * 100_000,
             '{"ticket": "\\u0000\\u0007 controls \\u202e reversed", "response": ' + json.dumps(resp()) + '}']
    report = run(tmp_path, lines, quarantine={"max_share": 0.5})
    assert report["quarantined"]["invalid_json"] == 1 and report["dropped"]["response_invalid"] == 1
    prompts = [r["prompt"] for r in all_rows(tmp_path)]
    assert any("lone  surrogate" not in p and "lone surrogate" in p for p in prompts)
    assert any("controls reversed" in p for p in prompts)
    check_invariant(tmp_path, report)


def test_tokenizer_length_filter(tmp_path):
    """With a tokenizer folder, lengths are that tokenizer's (here: one token per word)."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({"[UNK]": 0, "a": 1}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    (tmp_path / "tok").mkdir()
    tok.save(str(tmp_path / "tok" / "tokenizer.json"))  # what save_pretrained writes for fast tokenizers
    template = "{instruction}"
    short, long = row("w " * 20), row("w " * 40)  # + the response (1 token) + nothing from the template
    (tmp_path / "e").mkdir(), (tmp_path / "r").mkdir()
    est = run(tmp_path / "e", [short, long, row("a")], prompt_template=template, filters={"max_tokens": 30})
    assert est["tokens"]["method"].startswith("estimate")
    assert est["dropped"]["too_many_tokens"] == 2  # the estimate counts 4/3 tokens per word, + the JSON response
    real = run(tmp_path / "r", [short, long, row("a")], prompt_template=template,
               filters={"max_tokens": 30, "tokenizer": str(tmp_path / "tok")})
    assert real["tokens"]["method"] == f"tokenizer {tmp_path / 'tok'}"
    assert real["dropped"]["too_many_tokens"] == 1 and real["kept"] == 2
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "tokenizer.json").write_text("{}")
    with pytest.raises(CurationError, match=r"data.filters.tokenizer: cannot load a tokenizer from"):
        run(tmp_path / "r", [short], filters={"tokenizer": str(tmp_path / "bad")})


@pytest.mark.slow
def test_deterministic_across_processes(tmp_path):
    """Byte-identical outputs from separate interpreters with different hash seeds (no set-order leaks)."""
    import os
    import subprocess
    import sys

    src = write_lines(tmp_path / "in.jsonl", mixed_lines() + near_dup_lines(10, 3, labels=3))
    (tmp_path / "cfg.json").write_text(json.dumps(cfg_for(src)))
    code = ("import json, sys; from pathlib import Path; from slmake.data.curate import run_curation; "
            "d = Path(sys.argv[1]); run_curation(json.loads(Path(sys.argv[2]).read_text()), d / 'out', "
            "d / 'reports' / 'curation.json', ledger_path=d / 'reports' / 'ledger.csv')")
    for name, seed in (("a", "1"), ("b", "2")):
        subprocess.run([sys.executable, "-c", code, str(tmp_path / name), str(tmp_path / "cfg.json")], check=True,
                       env={**os.environ, "PYTHONHASHSEED": seed})
    for rel in ("out/train.jsonl", "out/val.jsonl", "out/test.jsonl", "reports/ledger.csv", "reports/data_card.md"):
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
    ra, rb = (json.loads((tmp_path / n / "reports" / "curation.json").read_text()) for n in "ab")
    ra.pop("outputs"), rb.pop("outputs")
    assert ra == rb
