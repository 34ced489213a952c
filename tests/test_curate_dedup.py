"""Near-duplicate machinery against datasketch itself, conflict policies, grouped splits, and the
real BANKING77 train set."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml

from curate_utils import REPO, SPLITS, cfg_for, check_invariant, curate_cfg, read_split, write_lines
from slmake.data import dedup, split

BANKING77 = (REPO / "../shared/datasets/banking77").resolve()


def texts(n: int = 300, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    words = ["".join(rng.choice("abcdefghij") for _ in range(rng.randint(2, 7))) for _ in range(400)]
    out = []
    for i in range(n):
        t = " ".join(rng.choice(words) for _ in range(rng.randint(3, 25)))
        out.append(t)
        if i % 5 == 0:  # a near-duplicate
            w = t.split()
            w[rng.randrange(len(w))] = rng.choice(words)
            out.append(" ".join(w))
    return out + ["", "a", "É!", "日本語のテキスト"]


def test_batched_signatures_equal_datasketch_minhash():
    from datasketch import MinHash

    m = dedup.MinHasher(64, 5)
    ts = texts()
    batch = np.concatenate([m.signatures(ts[i:i + 37]) for i in range(0, len(ts), 37)])
    for t, sig in zip(ts, batch):
        ref = MinHash(num_perm=64, hashfunc=lambda x: x, permutations=m.permutations, scheme="affine32")
        ref.update_batch(m.shingle_hashes(t))
        assert np.array_equal(ref.hashvalues, sig)


def test_candidate_pairs_equal_minhashlsh_query():
    from datasketch import MinHash, MinHashLSH

    m = dedup.MinHasher(128, 5)
    ts = texts()
    sigs = m.signatures(ts)
    bands, rows = dedup.lsh_params(0.7, 128)
    lsh = MinHashLSH(threshold=0.7, num_perm=128)
    mh = [MinHash(num_perm=128, hashvalues=s, permutations=m.permutations, scheme="affine32") for s in sigs]
    for i, x in enumerate(mh):
        lsh.insert(i, x)
    expected = {(min(i, j), max(i, j)) for i, x in enumerate(mh) for j in lsh.query(x) if i != j}
    keys = np.concatenate([dedup.band_keys(sigs[i:i + 50], bands, rows) for i in range(0, len(sigs), 50)])
    got = {tuple(p) for p in dedup.candidate_pairs(keys, np.arange(len(ts))).tolist()}
    assert got == expected and len(got) > 20
    similar = dedup.similar_pairs(sigs, keys, np.arange(len(ts)), 0.7)
    for a, b in similar.tolist():
        assert mh[a].jaccard(mh[b]) >= 0.7


def test_clusters_are_connected_components():
    roots = dedup.clusters(6, np.array([[0, 3], [3, 5], [1, 2]]))
    assert roots.tolist() == [0, 1, 1, 0, 4, 0]


@pytest.mark.parametrize("policy,responses,fates", [
    ("majority", [1, 1, 2], [None, "duplicate", "conflicting_duplicate"]),
    ("majority", [2, 1, 1], ["conflicting_duplicate", None, "duplicate"]),
    ("majority", [1, 2], ["conflicting_duplicate"] * 2),
    ("keep_first", [2, 1, 1, 2], [None, "conflicting_duplicate", "conflicting_duplicate", "duplicate"]),
    ("drop_all", [1, 2, 1], ["conflicting_duplicate"] * 3),
    ("drop_all", [1, 1], [None, "duplicate"]),
])
def test_conflict_resolution(policy, responses, fates):
    members = list(range(10, 10 + len(responses)))
    assert [dedup.resolve_conflicts(members, responses, policy)[m] for m in members] == fates


def test_split_assign_groups_and_quota():
    keys = [f"g{i}" for i in range(100)] + ["big"]
    labels = ["a" if i % 2 else "b" for i in range(100)] + ["a"]
    sizes = [2] * 100 + [100]  # the last group is bigger than any quota
    codes = split.assign(keys, labels, sizes, val=0.1, test=0.1, seed=0)
    assert codes[-1] == 0  # train
    written = Counter()
    for code, size in zip(codes.tolist(), sizes):
        written[split.SPLITS[code]] += size
    assert written["test"] == written["val"] == 30  # quotas: 10% of 200 (label a) + 10% of 100 (label b)
    rev = split.assign(keys[::-1], labels[::-1], sizes[::-1], val=0.1, test=0.1, seed=0)
    assert codes.tolist() == rev.tolist()[::-1]  # input order is irrelevant
    assert codes.tolist() != split.assign(keys, labels, sizes, val=0.1, test=0.1, seed=1).tolist()


@pytest.mark.skipif(not (BANKING77 / "train.csv").exists(), reason="BANKING77 not available")
def test_banking77_real_dataset(tmp_path):
    cfg = yaml.safe_load((REPO / "conf/data/banking77.yaml").read_text())
    cfg["source"] = str(BANKING77 / "train.csv")
    categories = json.loads((BANKING77 / "categories.json").read_text())
    assert cfg["response_schema"]["enum"] == categories
    report = curate_cfg(tmp_path, cfg)
    assert report["input"] == 10003 and report["quarantined_total"] == 0
    assert report["dropped_total"] < 20
    assert len(report["labels_before"]) == 77
    for s in SPLITS:
        assert len(report["labels"][s]) == 77, s  # every label in every split, so in train
    assert report["leakage"]["ok"]
    assert all(v == {"exact": 0, "near": 0} for v in report["leakage"]["pairs"].values())
    test_rows = read_split(tmp_path, "test")
    assert abs(len(test_rows) - 1000) <= 20
    assert all(r["response"] == r["label"] and r["response"] in categories for r in test_rows)
    assert test_rows[0]["prompt"].startswith("### Banking query\n") and test_rows[0]["prompt"].endswith("### Intent\n")
    check_invariant(tmp_path, report)
    card = (tmp_path / "reports" / "card.md").read_text()
    assert "CC BY 4.0" in card and "Casanueva" in card


def test_stage_script_paths():
    """stages/curate.py writes the paths the lead declares in dvc.yaml."""
    text = (REPO / "stages/curate.py").read_text()
    for p in ("build/data", "reports/curation.json", "reports/curation_ledger.csv",
              "reports/curation_quarantine.jsonl", "reports/data_card.md"):
        assert f'"{p}"' in text
    assert Path(REPO / "conf/data/banking77.yaml").exists()


# ----------------------------------------------------------------------------- look-alike copies

LOOKALIKE = str.maketrans("aeopcxyiAEOPCXHTKMB", "аеорсхуіАЕОРСХНТКМВ")  # Latin -> Cyrillic homoglyphs


def full_width(text: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


def test_fold_and_dedup_key_see_through_homoglyphs_and_full_width():
    from slmake.data.normalize import dedup_key, fold

    text = "Printer on floor 2 keeps jamming, please fix ASAP!"
    assert text.translate(LOOKALIKE) != text and full_width(text) != text
    assert dedup_key(text.translate(LOOKALIKE)) == dedup_key(text) == dedup_key(full_width(text))
    assert fold("ｆｉ ﬁ 𝐟𝐢 ᖴ") .startswith("fi fi fi")  # full-width, ligature, mathematical bold
    assert dedup_key("Ошибка сети") == dedup_key("Ошибка сети")  # real Cyrillic text stays comparable
    m = dedup.MinHasher(128, 5)
    assert np.array_equal(m.signature(text), m.signature(text.translate(LOOKALIKE)))
    assert np.array_equal(m.signature(text), m.signature(full_width(text)))


def test_lookalike_copies_are_grouped_and_never_straddle_splits(tmp_path):
    rows = [json.loads(l) for l in (REPO / "data/it_tickets/tickets.jsonl").read_text().splitlines()]
    seen, base = set(), []
    for r in rows:  # distinct tickets, so every pair below is its own cluster
        key = r["ticket"].split(".")[0]
        if key not in seen and len(base) < 150:
            seen.add(key)
            base.append(r)
    lines = [json.dumps(r) for r in base]
    copies = {}
    for i, r in enumerate(base[:30]):
        twin = r["ticket"].translate(LOOKALIKE) if i % 2 else full_width(r["ticket"])
        copies[r["ticket"]] = twin
        lines.append(json.dumps({**r, "ticket": twin}, ensure_ascii=False))
    src = write_lines(tmp_path / "in.jsonl", lines)
    report = curate_cfg(tmp_path, cfg_for(src, split={"val": 0.2, "test": 0.2}))
    check_invariant(tmp_path, report)
    split_of = {}
    for s in SPLITS:
        for r in read_split(tmp_path, s):
            split_of[r["prompt"]] = s
    template = "### Ticket\n{}\n### Triage\n"
    from slmake.data.normalize import normalize

    straddling = [o for o, t in copies.items()
                  if split_of[template.format(normalize(o))] != split_of[template.format(normalize(t))]]
    assert straddling == []
    assert report["dedup"]["near_clusters"] >= 30
