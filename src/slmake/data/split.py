"""Deterministic, stratified, grouped train/val/test assignment.

Units of assignment are *groups* (a near-duplicate cluster, or a single record), so no cluster
straddles two splits.  Groups are stratified by the label of their first record: within each
label, groups are visited in the order of sha256(seed:group key) -- a fixed pseudo-random order
that does not depend on input order -- and each goes to test when that brings test closer to
its quota (round(n * test)), else to val likewise, else to train.  A group more than twice a
quota lands in train, so big clusters never empty a label out of train.
"""

from __future__ import annotations

import hashlib
from typing import Sequence

import numpy as np

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
