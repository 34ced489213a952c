"""Deterministic, stratified, grouped train/val/test assignment.

Units of assignment are *groups* (a near-duplicate cluster, or a single record), so no cluster
straddles two splits.  Groups are stratified by the label of their first record: within each
label, groups are visited in the order of sha256(seed:group key) -- a fixed pseudo-random order
that does not depend on input order -- and each goes to test when that brings test closer to
its quota (round(n * test)), else to val likewise, else to train.  A group more than twice a
quota lands in train, so big clusters never empty a label out of train.

`leakage` then checks the result: no instruction, and no near-duplicate pair, in two splits.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from . import dedup

SPLITS = ("train", "val", "test")  # split codes 0, 1, 2


def _order_key(seed: int, key: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:8], "big")


def assign(keys: Sequence[str], labels: Sequence[str | None], sizes: Sequence[int], val: float, test: float,
           seed: int, stratify: bool = True) -> np.ndarray:
    """One split code per group (index into SPLITS), given each group's key, label and size."""
    n_groups = len(keys)
    strata: dict[str, int] = {}
    for lab in sorted({"" if not stratify or lab is None else lab for lab in labels}):
        strata[lab] = len(strata)
    stratum = np.fromiter((strata["" if not stratify or lab is None else lab] for lab in labels),
                          dtype=np.int64, count=n_groups)
    order_key = np.fromiter((_order_key(seed, k) for k in keys), dtype=np.uint64, count=n_groups)
    sizes = np.asarray(sizes, dtype=np.int64)
    totals = np.bincount(stratum, weights=sizes, minlength=len(strata)).astype(np.int64)
    quota_test = [int(t * test + 0.5) for t in totals.tolist()]
    quota_val = [int(t * val + 0.5) for t in totals.tolist()]
    filled_test, filled_val = [0] * len(strata), [0] * len(strata)
    out = np.zeros(n_groups, dtype=np.int8)
    for g in np.lexsort((order_key, stratum)).tolist():
        st, size = int(stratum[g]), int(sizes[g])
        if filled_test[st] + size / 2 < quota_test[st]:  # takes test closer to its quota
            out[g] = 2
            filled_test[st] += size
        elif filled_val[st] + size / 2 < quota_val[st]:
            out[g] = 1
            filled_val[st] += size
    return out


def leakage(ids: Sequence[str], kept: np.ndarray, split_code: np.ndarray, sigs, band: np.ndarray,
            threshold: float) -> dict[str, Any]:
    """Overlap between splits among kept records: the same instruction (exact), or a MinHash pair
    at or above the near-duplicate threshold (near).  Must be zero after curation."""
    result = {f"{a}_{b}": {"exact": 0, "near": 0} for a, b in (("train", "test"), ("train", "val"), ("val", "test"))}

    def bump(sa: int, sb: int, kind: str) -> None:
        a, b = sorted((SPLITS[sa], SPLITS[sb]), key=SPLITS.index)
        result[f"{a}_{b}"][kind] += 1

    first: dict[str, int] = {}
    for i in kept.tolist():
        code = int(split_code[i])
        other = first.setdefault(ids[i], code)
        if other != code:
            bump(other, code, "exact")
    for a, b in dedup.similar_pairs(sigs, band, kept, threshold).tolist():
        if split_code[a] != split_code[b]:
            bump(int(split_code[a]), int(split_code[b]), "near")
    return {"pairs": result, "ok": all(v["exact"] == 0 and v["near"] == 0 for v in result.values())}


def empty_splits(records: dict[str, int], val: float, test: float, groups: int, n_input: int,
                 dropped: dict[str, int]) -> list[str]:
    """A warning when a configured split (val > 0, test) came out empty, naming the cause: too few
    records or near-duplicate groups kept to fill it (e.g. 200 identical rows keep one)."""
    empty = [f"{name} (data.split.{name} = {share})" for name, share in (("val", val), ("test", test))
             if share > 0 and records[name] == 0]
    if not empty:
        return []
    drops = ", ".join(f"{v} {k}" for k, v in sorted(dropped.items(), key=lambda kv: -kv[1]) if v) or "none"
    return [f"EMPTY split(s): {' and '.join(empty)}: only {sum(records.values())} record(s) in {groups} "
            f"near-duplicate group(s) were kept of {n_input} input (dropped: {drops}); a split gets "
            "round(records x share) and a group is never split, so nothing could go there"
            + (" and evaluation has no held-out data" if records["test"] == 0 else "")
            + ": add data, or check why so much was dropped"]
