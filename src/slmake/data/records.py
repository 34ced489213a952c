"""The typed records the passes of curate.py hand each other.

read -> `Read` (counts, the `Candidates`' facts, the spool and signature files, the ledger spool)
     -> decide -> `Decided` (fate, split and copies per candidate; dedup, negative, leakage figures)
     -> write -> `Written` (rows and labels per split, ledger rows per fate) -> report.
Within the read pass, `Examiner.examine` turns each raw record into one `Quarantined`, `Dropped`
or `Candidate`.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .dedup import SignatureFile
from .ledger import LedgerSpool
from .pii import Scrubber


@dataclass(frozen=True)
class Outputs:
    out_dir: Path      # train/val/test.jsonl
    report: Path
    ledger: Path
    quarantine: Path
    card: Path


@dataclass(slots=True)
class Quarantined:
    """A malformed record: its reason, what was wrong, and the start of its text."""
    reason: str
    detail: str | None
    excerpt: str | None


@dataclass(slots=True)
class Dropped:
    """A well-formed record dropped under `rule`; `label` when it was read that far (else None)."""
    rule: str
    rid: str = ""
    label: str | None = None


@dataclass(slots=True)
class Candidate:
    """A record still in the running after the read pass."""
    rid: str
    instruction: str   # normalised and scrubbed: what MinHash signs
    line: str          # its output line (prompt, response, label) as JSON
    response: str      # canonical response
    label: str | None
    negative: bool
    hard: bool


class Candidates:
    """Read-pass facts about candidates (small, fixed-size per record), indexed by candidate number."""

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.resp: list[int] = []     # response id (interned hash of the canonical response)
        self.label: list[int] = []    # label id, -1 = none
        self.neg = bytearray()
        self.hard = bytearray()
        self.first: dict[str, int] = {}           # record id -> first candidate with it
        self.groups: dict[str, list[int]] = {}    # record id -> all candidates with it (when > 1)
        self._resp_ids: dict[bytes, int] = {}
        self.labels: list[str] = []
        self._label_ids: dict[str, int] = {}

    def add(self, c: Candidate) -> int:
        i = len(self.ids)
        self.ids.append(c.rid)
        key = hashlib.blake2b(c.response.encode(), digest_size=12).digest()
        self.resp.append(self._resp_ids.setdefault(key, len(self._resp_ids)))
        if c.label is None:
            self.label.append(-1)
        else:
            lid = self._label_ids.get(c.label)
            if lid is None:
                lid = self._label_ids[c.label] = len(self.labels)
                self.labels.append(c.label)
            self.label.append(lid)
        self.neg.append(c.negative)
        self.hard.append(c.hard)
        if c.rid in self.first:
            self.groups.setdefault(c.rid, [self.first[c.rid]]).append(i)
        else:
            self.first[c.rid] = i
        return i

    def label_of(self, i: int) -> str | None:
        lid = self.label[i]
        return None if lid < 0 else self.labels[lid]


@dataclass
class Read:
    """What the read pass saw: counts, candidates, and where their lines and signatures are."""
    n_input: int
    per_source: Counter
    dropped: Counter
    quarantined: Counter
    first_problems: list[str]
    labels_before: Counter
    candidates: Candidates
    spool: Path                    # one output line per candidate
    signatures: SignatureFile
    band_keys: np.ndarray          # LSH band keys, one row per candidate
    ledger: LedgerSpool
    scrubber: Scrubber             # its counts are the report's PII counts
    token_method: str              # how lengths were counted
    name_slots: set                # name-like field paths seen (data-card warning when unscrubbed)

    @property
    def quarantined_total(self) -> int:
        return sum(self.quarantined.values())


@dataclass
class Decided:
    """One fate per candidate: None = kept, with its split code (-1: not kept) and copies in train."""
    fate: list[str | None]
    split_code: np.ndarray
    copies: np.ndarray
    kept: np.ndarray               # candidate numbers of kept records
    groups: int                    # units of the split: near-duplicate clusters and single records
    dedup: dict[str, Any]
    negatives: dict[str, Any]
    leakage: dict[str, Any]


@dataclass
class Written:
    rows: Counter                  # rows per split, copies included
    records: Counter               # records per split
    labels: dict[str, Counter]     # rows per label per split
    ledger_totals: dict[str, int]  # ledger rows per fate
