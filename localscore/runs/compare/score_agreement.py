"""How closely two score lists agree: rank and linear correlations, differences, and how much a top-k selection
changes. Pure numpy."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# Selection budgets: the share of records a user keeps, best first.
BUDGETS = (0.05, 0.10, 0.25)


@dataclass(frozen=True)
class Agreement:
    n: int
    spearman: float  # nan when either side is constant
    kendall: float  # tau-b
    pearson: float
    mean_abs_delta: float
    max_abs_delta: float
    top_overlap: dict[float, float]  # budget -> |top-k(A) ∩ top-k(B)| / k

    def to_dict(self) -> dict:
        return {
            "n": self.n,
            "spearman": _json_float(self.spearman),
            "kendall": _json_float(self.kendall),
            "pearson": _json_float(self.pearson),
            "mean_abs_delta": self.mean_abs_delta,
            "max_abs_delta": self.max_abs_delta,
            "top_overlap": {f"{budget:.0%}": value for budget, value in self.top_overlap.items()},
        }


def agreement(a: np.ndarray, b: np.ndarray, budgets: tuple[float, ...] = BUDGETS) -> Agreement:
    """Agreement of the paired scores a[i], b[i] (at least one pair)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or not len(a):
        raise ValueError(f"expected two equally long, non-empty 1-D score arrays, got {a.shape} and {b.shape}")
    delta = np.abs(b - a)
    return Agreement(
        n=len(a),
        spearman=pearson(ranks(a), ranks(b)),
        kendall=kendall_tau_b(a, b),
        pearson=pearson(a, b),
        mean_abs_delta=float(delta.mean()),
        max_abs_delta=float(delta.max()),
        top_overlap={budget: top_overlap(a, b, budget) for budget in budgets},
    )


def ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks, ties given the average of the ranks they span (as Spearman's rho needs)."""
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, kind="stable")
    sorted_x = x[order]
    # Start and end (exclusive) of each run of equal values in sorted order.
    starts = np.flatnonzero(np.r_[True, sorted_x[1:] != sorted_x[:-1]])
    ends = np.r_[starts[1:], len(x)]
    out = np.empty(len(x))
    out[order] = np.repeat((starts + ends + 1) / 2, ends - starts)
    return out


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    da, db = a - a.mean(), b - b.mean()
    denominator = math.sqrt(float(da @ da) * float(db @ db))
    if denominator == 0:
        return math.nan
    return float(np.clip((da @ db) / denominator, -1.0, 1.0))


def kendall_tau_b(a: np.ndarray, b: np.ndarray) -> float:
    """Kendall's tau-b in O(n log n): (concordant - discordant) / sqrt((n0 - ties_a) * (n0 - ties_b))."""
    n = len(a)
    n0 = n * (n - 1) // 2
    ties_a, ties_b = _tied_pairs(a), _tied_pairs(b)
    ties_both = _tied_pairs(a + 1j * b)  # pairs equal on both sides
    # Sorted by a, then b: a discordant pair is an inversion of b, and pairs tied in a are never inversions.
    order = np.lexsort((b, a))
    discordant = _inversions(ranks(b[order]))
    concordant_minus_discordant = n0 - ties_a - ties_b + ties_both - 2 * discordant
    denominator = math.sqrt((n0 - ties_a) * (n0 - ties_b))
    if denominator == 0:
        return math.nan
    return float(np.clip(concordant_minus_discordant / denominator, -1.0, 1.0))


def top_overlap(a: np.ndarray, b: np.ndarray, budget: float) -> float:
    """The share of the top k = max(1, round(budget * n)) by `a` that is also in the top k by `b`; equal scores
    are ordered by position, so the selection is deterministic."""
    k = max(1, round(budget * len(a)))
    top_a = np.argsort(-np.asarray(a), kind="stable")[:k]
    top_b = np.argsort(-np.asarray(b), kind="stable")[:k]
    return len(np.intersect1d(top_a, top_b)) / k


def _tied_pairs(x: np.ndarray) -> int:
    _, counts = np.unique(x, return_counts=True)
    return int((counts * (counts - 1) // 2).sum())


def _inversions(x: np.ndarray) -> int:
    """Pairs i < j with x[i] > x[j], by a Fenwick tree over the values' ranks."""
    values = np.unique(x)
    positions = np.searchsorted(values, x) + 1  # 1-based for the tree
    tree = [0] * (len(values) + 1)
    inversions = 0
    for seen, position in enumerate(positions.tolist()):
        at_most = 0  # earlier elements <= this one
        i = position
        while i > 0:
            at_most += tree[i]
            i -= i & -i
        inversions += seen - at_most
        i = position
        while i <= len(values):
            tree[i] += 1
            i += i & -i
    return inversions


def _json_float(value: float) -> float | None:
    return None if math.isnan(value) else value
