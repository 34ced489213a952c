"""Deduplication: exact duplicates, conflicting responses, and near-duplicate clusters.

Exact: records whose normalised instruction is the same are one *input*.  Same response ->
`duplicate` (the first is kept).  Different responses -> a conflict, resolved by policy:

* drop_all:   every record of the input is dropped (`conflicting_duplicate`)
* keep_first: the first is kept; copies of its response are `duplicate`, the rest conflicting
* majority:   the most common response wins (its first record is kept); a tie drops all

Near: MinHash signatures (datasketch's `MinHash`, affine32 scheme, over character shingles of
the lower-cased words of the instruction), banded with the (bands, rows) datasketch's
`MinHashLSH` picks for the threshold.  Candidate pairs share all rows of at least one band --
exactly the pairs `MinHashLSH.query` returns -- and are kept when the estimated Jaccard
similarity (share of equal signature slots) reaches the threshold.  Connected pairs form
clusters.  Band keys (one uint64 per band) are computed per batch while streaming and bucketed
with numpy sorts; signatures are spilled to a temporary file and only candidates' rows are read
back (with pread).  (MinHashLSH's dict storage costs ~3 KB and ~150 us per record: 100k records would take
~350 MB and ~15 s instead of ~8 MB and ~1 s.)
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import numpy as np

from .normalize import dedup_key

# Odd 64-bit multipliers for the rolling shingle hash and the band keys (fixed: determinism).
_P = np.uint64(0x9E3779B97F4A7C15)
_BAND_MULT = np.array([0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0x27D4EB2F165667C5, 0x85EBCA77C2B2AE63],
                      dtype=np.uint64)
ALL_PAIRS_MAX = 48  # buckets up to this size are compared all-pairs; bigger ones against a few anchors


def _identity(x):
    return x


def _fmix32(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 32-bit finaliser, as datasketch applies it before its affine permutations."""
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> np.uint32(16))


class MinHasher:
    """MinHash signatures of instructions with one shared set of datasketch permutations.

    `signature` is datasketch's own `MinHash.update_batch`; `signatures` computes the same values
    for a batch of texts at once with numpy (~20x faster; equality is tested), since one MinHash
    object per record costs ~150 us of Python overhead."""

    def __init__(self, num_perm: int, shingle: int, seed: int = 1):
        from datasketch import MinHash

        self._MinHash = MinHash
        self.num_perm, self.shingle = num_perm, shingle
        self.permutations = MinHash(num_perm=num_perm, seed=seed).permutations  # affine32: uint32 (a, b)

    def _key(self, text: str) -> str:
        key = dedup_key(text) or text.strip().lower()
        return key.ljust(self.shingle)  # a short text is one (padded) shingle

    def shingle_hashes(self, text: str) -> list[int]:
        """32-bit hashes of the character k-grams of `dedup_key(text)` (a polynomial hash)."""
        return self._hashes([self._key(text)])[0].tolist()

    def _hashes(self, keys: list[str]) -> list[np.ndarray]:
        k = self.shingle
        cps = np.frombuffer("".join(keys).encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
        n = len(cps) - k + 1
        with np.errstate(over="ignore"):
            h = np.zeros(n, dtype=np.uint64)
            for j in range(k):
                h = h * _P + cps[j:j + n]
            h ^= h >> np.uint64(29)
        h32 = (h & np.uint64(0xFFFFFFFF)).astype(np.uint32)
        out, pos = [], 0
        for key in keys:
            out.append(h32[pos:pos + len(key) - k + 1])
            pos += len(key)
        return out

    def signature(self, text: str) -> np.ndarray:
        m = self._MinHash(num_perm=self.num_perm, hashfunc=_identity, permutations=self.permutations,
                          scheme="affine32")
        m.update_batch(self.shingle_hashes(text))
        return m.hashvalues

    def signatures(self, texts: list[str]) -> np.ndarray:
        """Signatures of many texts (rows equal `signature(text)`); fastest for ~128 texts a call."""
        if not texts:
            return np.zeros((0, self.num_perm), dtype=np.uint32)
        parts = self._hashes([self._key(t) for t in texts])
        lengths = np.array([len(p) for p in parts])
        starts = np.r_[0, np.cumsum(lengths)[:-1]]
        hv = _fmix32(np.concatenate(parts))
        a, b = (np.asarray(x, dtype=np.uint32) for x in self.permutations)
        out = np.empty((self.num_perm, len(texts)), dtype=np.uint32)
        with np.errstate(over="ignore"):
            for c in range(0, self.num_perm, 32):  # (32 perms x shingles) blocks stay in cache
                block = a[c:c + 32, None] * hv[None, :] + b[c:c + 32, None]
                out[c:c + 32] = np.minimum.reduceat(block, starts, axis=1)
        return out.T


class SignatureFile:
    """Append-only signature rows spilled to disk; `reader()` reads rows back on demand.

    Rows are read with pread, not a memory map: a map's page faults pull neighbouring pages in
    too, so a few thousand scattered rows would make the whole file count as resident memory."""

    def __init__(self, path: Path, num_perm: int):
        self.path, self.num_perm, self.n = Path(path), num_perm, 0
        self._f = open(self.path, "wb")

    def append(self, sigs: np.ndarray) -> None:
        """Append rows (a 2-D uint32 array)."""
        self._f.write(np.ascontiguousarray(sigs, dtype=np.uint32).tobytes())
        self.n += len(sigs)

    def reader(self) -> SignatureReader:
        self._f.close()
        return SignatureReader(self.path, self.n, self.num_perm)

    def close(self) -> None:
        self._f.close()


class SignatureReader:
    """`reader[index_array]` -> those signature rows; `shape` like the (n, num_perm) matrix."""

    def __init__(self, path: Path, n: int, num_perm: int):
        self.path, self.shape = Path(path), (n, num_perm)
        self._row = num_perm * 4

    def __getitem__(self, idx: np.ndarray) -> np.ndarray:
        idx = np.asarray(idx, dtype=np.int64)
        uniq, inverse = np.unique(idx, return_inverse=True)
        out = np.empty((len(uniq), self.shape[1]), dtype=np.uint32)
        fd = os.open(self.path, os.O_RDONLY)
        try:
            for k, i in enumerate(uniq.tolist()):
                out[k] = np.frombuffer(os.pread(fd, self._row, i * self._row), dtype=np.uint32)
        finally:
            os.close(fd)
        return out[inverse.reshape(-1)]


def lsh_params(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows per band) as datasketch's MinHashLSH chooses them for this threshold."""
    from datasketch import MinHashLSH

    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    return lsh.b, lsh.r


def band_keys(sigs: np.ndarray, bands: int, r: int) -> np.ndarray:
    """(rows x bands) uint64 keys: equal keys <=> equal band of r signature values (up to 64-bit
    hash collisions, which similar_pairs' verification removes).  Computed per batch in pass 1,
    so the signatures themselves never need to be in memory at once."""
    sigs = np.asarray(sigs, dtype=np.uint64)
    out = np.empty((len(sigs), bands), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for b in range(bands):
            key = np.zeros(len(sigs), dtype=np.uint64)
            for c in range(b * r, (b + 1) * r):
                key = (key ^ sigs[:, c]) * _BAND_MULT[c % 4]
                key ^= key >> np.uint64(31)
            out[:, b] = key
    return out


def candidate_pairs(keys: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Pairs (i, j), i < j, of `rows` sharing a band bucket (deduplicated, sorted): the pairs
    MinHashLSH.query would return for the same bands."""
    out: list[np.ndarray] = []
    rows = np.asarray(rows, dtype=np.int64)
    if len(rows) < 2:
        return np.zeros((0, 2), dtype=np.int64)
    for b in range(keys.shape[1]):
        key = keys[rows, b]
        order = np.argsort(key, kind="stable")
        skey = key[order]
        starts = np.flatnonzero(np.r_[True, skey[1:] != skey[:-1]])
        sizes = np.diff(np.r_[starts, len(skey)])
        for s, size in zip(starts[sizes > 1].tolist(), sizes[sizes > 1].tolist()):
            members = np.sort(rows[order[s:s + size]])
            if size <= ALL_PAIRS_MAX:
                i, j = np.triu_indices(size, 1)
            else:  # a few anchors against everyone, plus neighbours: connected, not quadratic
                anchors = min(8, size)
                i = np.r_[np.repeat(np.arange(anchors), size), np.arange(size - 1)]
                j = np.r_[np.tile(np.arange(size), anchors), np.arange(1, size)]
                keep = i < j
                i, j = i[keep], j[keep]
            out.append(np.stack([members[i], members[j]], axis=1))
    if not out:
        return np.zeros((0, 2), dtype=np.int64)
    return np.unique(np.concatenate(out).astype(np.int64), axis=0)


def similar_pairs(sigs: np.ndarray, keys: np.ndarray, rows: np.ndarray, threshold: float) -> np.ndarray:
    """Candidate pairs among `rows` whose estimated Jaccard similarity is >= threshold (only the
    signature rows of candidates are read)."""
    pairs = candidate_pairs(keys, rows)
    if len(pairs) == 0:
        return pairs
    need = int(np.ceil(threshold * sigs.shape[1] - 1e-9))
    keep = np.zeros(len(pairs), dtype=bool)
    for s in range(0, len(pairs), 65536):
        p = pairs[s:s + 65536]
        keep[s:s + 65536] = np.count_nonzero(sigs[p[:, 0]] == sigs[p[:, 1]], axis=1) >= need
    return pairs[keep]


def clusters(n: int, pairs: np.ndarray) -> np.ndarray:
    """Union-find over `pairs`: cluster id = the smallest member index."""
    parent = list(range(n))

    def find(x: int) -> int:
        root = x
        while parent[root] != root:
            root = parent[root]
        while parent[x] != root:
            parent[x], x = root, parent[x]
        return root

    for a, b in pairs.tolist():
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return np.array([find(i) for i in range(n)], dtype=np.int64)


def resolve_conflicts(members: list[int], responses: list[int], policy: str) -> dict[int, str | None]:
    """Fate of each member of one input group: None (kept), 'duplicate' or 'conflicting_duplicate'.

    `members` are record indices in input order; `responses` their response ids."""
    if len(set(responses)) == 1:
        return {m: (None if k == 0 else "duplicate") for k, m in enumerate(members)}
    if policy == "drop_all":
        return {m: "conflicting_duplicate" for m in members}
    if policy == "keep_first":
        winner = responses[0]
    else:  # majority
        counts = Counter(responses).most_common()
        if len(counts) > 1 and counts[0][1] == counts[1][1]:
            return {m: "conflicting_duplicate" for m in members}
        winner = counts[0][0]
    fates: dict[int, str | None] = {}
    for m, resp in zip(members, responses):
        if resp != winner:
            fates[m] = "conflicting_duplicate"
        elif winner not in [responses[k] for k in range(len(members)) if members[k] in fates]:
            fates[m] = None
        else:
            fates[m] = "duplicate"
    return fates
