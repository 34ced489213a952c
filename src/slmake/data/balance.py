"""Balancing: per-label caps, oversampling in train, and which records a selector picks.

* `caps`: a label with more than `max_per_label` records keeps the ones first in the order of
  sha256(seed:id) (deterministic, independent of input order); the rest are dropped (`label_cap`).
* `copies`: how many times each *train* record is written.  A label with fewer than
  `min_per_label` train records is topped up to it (every record k or k+1 times, the extra
  copies going to the first records in the sha256 order); records selected by `hard`
  (field/values) are then multiplied by `hard.factor`.  Val and test never get copies.
* `selects`: the field/values selectors of `balance.hard` and `negatives`.
* `negatives`: the share of negative examples in train, for the report and its min_share check.

Records without a label are neither capped nor topped up.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np


def _rank(seed: int, rid: str) -> bytes:
    return hashlib.sha256(f"{seed}:{rid}".encode()).digest()


def selects(selector: dict, response: Any, label: str | None, record: dict) -> bool:
    """Does the field/values selector pick this record?  `field` is looked up as 'label', then
    as a key of a JSON object response, then as a source column."""
    field, values = selector.get("field"), selector.get("values") or []
    if field is None or not values:
        return False
    if field == "label":
        value = label
    elif isinstance(response, dict) and field in response:
        value = response[field]
    else:
        value = record.get(field)
    return value in values


def _by_label(members: np.ndarray, label_ids: np.ndarray) -> dict[int, np.ndarray]:
    labs = label_ids[members]
    order = np.argsort(labs, kind="stable")
    uniq, starts = np.unique(labs[order], return_index=True)
    ends = np.r_[starts[1:], len(order)]
    return {int(u): members[order[s:e]] for u, s, e in zip(uniq, starts, ends) if u >= 0}  # -1: no label


def caps(members: np.ndarray, label_ids: np.ndarray, ids: Sequence[str], max_per_label: int | None,
         seed: int) -> list[int]:
    """Members to drop so that no label has more than max_per_label of them (sorted)."""
    if max_per_label is None or len(members) == 0:
        return []
    drop: list[int] = []
    for group in _by_label(np.asarray(members), label_ids).values():
        if len(group) > max_per_label:
            ranked = sorted(group.tolist(), key=lambda i: _rank(seed, ids[i]))
            drop.extend(ranked[max_per_label:])
    return sorted(drop)


def copies(train: np.ndarray, label_ids: np.ndarray, hard: np.ndarray, ids: Sequence[str],
           min_per_label: int | None, hard_factor: int, seed: int, n: int) -> np.ndarray:
    """Times each of n candidates is written (train members >= 1; everyone else 1)."""
    out = np.ones(n, dtype=np.int64)
    if min_per_label is not None and len(train):
        for group in _by_label(np.asarray(train), label_ids).values():
            if len(group) < min_per_label:
                base, extra = divmod(min_per_label, len(group))
                ranked = sorted(group.tolist(), key=lambda i: _rank(seed, ids[i]))
                out[ranked] = base
                out[ranked[:extra]] += 1
    if hard_factor > 1 and len(train):
        t = np.asarray(train)
        picked = t[hard[t].astype(bool)]
        out[picked] *= hard_factor
    return out


def negatives(selector: dict, neg: np.ndarray, kept: np.ndarray, train: np.ndarray,
              copies: np.ndarray) -> dict[str, Any]:
    """The `negatives` report: their share of train rows (with copies) and of kept records, and
    whether the train share reaches `min_share`.  `neg`: one flag per candidate."""
    train_rows = int(copies[train].sum())
    share_train = int(copies[train][neg[train]].sum()) / train_rows if train_rows else 0.0
    share_kept = float(neg[kept].mean()) if len(kept) else 0.0
    return {"field": selector["field"], "values": selector["values"], "min_share": selector["min_share"],
            "on_violation": selector["on_violation"], "share_train": round(share_train, 4),
            "share_kept": round(share_kept, 4),
            "ok": selector["field"] is None or share_train >= selector["min_share"]}
