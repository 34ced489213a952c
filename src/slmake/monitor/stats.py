"""The drift statistics, each a small pure function (unit-tested against hand-computed values).

PSI (population stability index) compares two distributions over the same bins:
``sum((a - e) * ln(a / e))`` over bins, with ``e`` the baseline share and ``a`` the live share.
The usual reading: < 0.1 stable, 0.1-0.2 moderate shift, > 0.2 significant shift. An empty bin
would make the logarithm infinite, so shares are floored at ``EPS`` (the common convention).

PSI alone does not know the window's size: two samples of one distribution over k bins give about
``(k - 1) * (1/n + 1/m)`` by chance (10 length bins, 50 live vs 1,600 train: 0.19 on average), so a
fixed 0.2 reads noise as drift in small windows. ``homogeneity`` (Pearson's chi-square test of two
samples over the same bins) and ``share_test`` (Fisher's exact test of one bin's share) say whether
a difference exceeds what the two sample sizes explain; monitor flags a drift only when both the
size (PSI, share change) and the test's p-value cross their thresholds.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np

EPS = 1e-4
_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)?")


def shares(counts: Sequence[float]) -> list[float]:
    total = float(sum(counts))
    return [c / total if total else 0.0 for c in counts]


def psi(expected_counts: Sequence[float], actual_counts: Sequence[float], eps: float = EPS) -> float:
    """PSI between two histograms over the same bins (counts or shares)."""
    if len(expected_counts) != len(actual_counts):
        raise ValueError(f"psi: {len(expected_counts)} baseline bins vs {len(actual_counts)} live bins")
    e = [max(s, eps) for s in shares(expected_counts)]
    a = [max(s, eps) for s in shares(actual_counts)]
    return float(sum((ai - ei) * math.log(ai / ei) for ei, ai in zip(e, a)))


def quantile_edges(baseline: Sequence[float], bins: int) -> list[float]:
    """Inner bin edges at the baseline's quantiles (deduplicated): bins of about equal baseline
    mass, so PSI weighs every part of the baseline distribution alike."""
    if not len(baseline):
        raise ValueError("quantile_edges: empty baseline")
    qs = np.quantile(np.asarray(baseline, dtype=float), [i / bins for i in range(1, bins)])
    return sorted(set(float(q) for q in qs))


def histogram(values: Iterable[float], edges: Sequence[float]) -> list[int]:
    """Counts in (-inf, e0], (e0, e1], ..., (e_last, inf): len(edges) + 1 bins."""
    idx = np.searchsorted(np.asarray(edges, dtype=float), np.asarray(list(values), dtype=float), side="left")
    return np.bincount(idx, minlength=len(edges) + 1).astype(int).tolist()


def length_psi(baseline: Sequence[float], live: Sequence[float], bins: int) -> tuple[float, list[float], list[int], list[int]]:
    """PSI of a length distribution on the baseline's quantile bins: (psi, edges, base counts, live counts)."""
    edges = quantile_edges(baseline, bins)
    b, l = histogram(baseline, edges), histogram(live, edges)
    return psi(b, l), edges, b, l


def words(text: str) -> list[str]:
    """Lower-cased word tokens (letters/digits, inner apostrophes): tokenizer-free, so the
    vocabulary check means the same whatever model is served."""
    return _WORD.findall(text.lower())


def unseen_share(texts: Iterable[str], vocabulary: set[str]) -> tuple[float, int]:
    """(share of word tokens not in ``vocabulary``, number of word tokens)."""
    total = unseen = 0
    for t in texts:
        for w in words(t):
            total += 1
            unseen += w not in vocabulary
    return (unseen / total if total else 0.0), total


def label_drift(baseline: Iterable[str | None], live: Iterable[str | None], eps: float = EPS) -> dict:
    """Label distributions compared: PSI over the union of labels, and per label the baseline
    share, live share and change (live - baseline). None labels are left out."""
    b = Counter(x for x in baseline if x is not None)
    l = Counter(x for x in live if x is not None)
    labels = sorted(set(b) | set(l))
    bs, ls = shares([b[x] for x in labels]), shares([l[x] for x in labels])
    per = {x: {"baseline": bs[i], "live": ls[i], "change": ls[i] - bs[i]} for i, x in enumerate(labels)}
    value = psi([b[x] for x in labels], [l[x] for x in labels], eps) if labels and sum(l.values()) else 0.0
    return {"psi": value, "labels": per, "counts": {x: (b[x], l[x]) for x in labels}}


MIN_EXPECTED = 5.0   # the usual floor for the chi-square approximation: expected count per cell


def pool_rare(base: Sequence[float], live: Sequence[float],
              min_expected: float = MIN_EXPECTED) -> tuple[list[float], list[float]]:
    """Merge the bins whose expected count (under "one distribution") is below ``min_expected`` in
    either sample into one bin, smallest first, until every bin has enough (or one bin is left)."""
    n, m = float(sum(base)), float(sum(live))
    bins = sorted(([float(b), float(x)] for b, x in zip(base, live) if b or x), key=lambda c: c[0] + c[1])

    def expected(c):
        return min(n, m) * (c[0] + c[1]) / (n + m)
    while len(bins) > 1 and expected(bins[0]) < min_expected:
        first = bins.pop(0)
        bins[0] = [bins[0][0] + first[0], bins[0][1] + first[1]]
        bins.sort(key=lambda c: c[0] + c[1])
    return [c[0] for c in bins], [c[1] for c in bins]


def homogeneity(base: Sequence[float], live: Sequence[float], min_expected: float = MIN_EXPECTED) -> dict:
    """Pearson's chi-square test that two samples' counts over the same bins come from one
    distribution (rare bins pooled, see pool_rare): {"stat", "dof", "p"}. p = 1 when fewer than
    two bins are left or a sample is empty (nothing to tell apart)."""
    from scipy.stats import chi2

    b, x = pool_rare(base, live, min_expected)
    n, m = sum(b), sum(x)
    if len(b) < 2 or not n or not m:
        return {"stat": 0.0, "dof": 0, "p": 1.0}
    stat = 0.0
    for bi, xi in zip(b, x):
        t = bi + xi
        for obs, size in ((bi, n), (xi, m)):
            exp = size * t / (n + m)
            stat += (obs - exp) ** 2 / exp
    dof = len(b) - 1
    return {"stat": float(stat), "dof": dof, "p": float(chi2.sf(stat, dof))}


def share_test(k_base: int, n_base: int, k_live: int, n_live: int) -> float:
    """Two-sided p-value of Fisher's exact test that one category has the same share in both
    samples (k of n in each): exact for any count, so a rare label needs no approximation."""
    from scipy.stats import fisher_exact

    if not n_base or not n_live:
        return 1.0
    return float(fisher_exact([[k_base, n_base - k_base], [k_live, n_live - k_live]])[1])


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0-100, linear interpolation as numpy's default), None when empty."""
    vals = [v for v in values if v is not None]
    return float(np.percentile(vals, q)) if vals else None


def rate(flags: Iterable[bool | None]) -> tuple[float | None, int]:
    """(share of True among the non-None flags, how many were not None)."""
    known = [f for f in flags if f is not None]
    return (sum(bool(f) for f in known) / len(known) if known else None), len(known)
