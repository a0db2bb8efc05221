"""How closely two embedders agree on the same records: the cosine of each record's two vectors, how pairwise
similarities move around the selection threshold, and how many of Deita's selected records change. Pure numpy."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...deita.selection import diversity_filter, rank

# Percentiles of the per-record cosine that the summary reports: the low tail is where selections change.
PERCENTILES = (1, 5, 50)
# Pairs whose A cosine lies within this distance of the threshold count as "near" it.
NEAR = 0.05
# Above this many pairs, a seeded sample of this many pairs stands for all of them.
MAX_PAIRS = 1_000_000


@dataclass(frozen=True)
class VectorAgreement:
    n: int
    mean: float  # cosine of record i's A vector with its B vector, over the records
    min: float
    percentiles: dict[int, float]

    def to_dict(self) -> dict:
        return {"n": self.n, "mean": self.mean, "min": self.min,
                "percentiles": {f"p{p}": v for p, v in self.percentiles.items()}}


@dataclass(frozen=True)
class PairShift:
    pairs: int  # pairs compared (all of them, or a sample of MAX_PAIRS)
    sampled: bool
    threshold: float
    above_a: int  # pairs with cosine above the threshold under A (A's near-duplicates)
    above_b: int
    only_a: int  # above the threshold under A but not under B
    only_b: int
    near: int  # pairs whose A cosine is within NEAR of the threshold
    near_mean_abs_delta: float  # mean |cos_B - cos_A| of those (nan when none)
    near_max_abs_delta: float
    mean_abs_delta: float  # over every compared pair

    def to_dict(self) -> dict:
        return {"pairs": self.pairs, "sampled": self.sampled, "threshold": self.threshold,
                "above_a": self.above_a, "above_b": self.above_b, "only_a": self.only_a, "only_b": self.only_b,
                "near_band": NEAR, "near": self.near, "near_mean_abs_delta": _json_float(self.near_mean_abs_delta),
                "near_max_abs_delta": _json_float(self.near_max_abs_delta), "mean_abs_delta": self.mean_abs_delta}


@dataclass(frozen=True)
class SelectionChange:
    budget: int
    threshold: float
    selected_a: list[int]  # positions in the compared records, in selection order
    selected_b: list[int]

    @property
    def common(self) -> int:
        return len(set(self.selected_a) & set(self.selected_b))

    @property
    def changed(self) -> int:
        """A's picks that B does not pick (B picks as many others when both fill the budget)."""
        return len(self.selected_a) - self.common

    def to_dict(self) -> dict:
        return {"budget": self.budget, "threshold": self.threshold, "selected_a": len(self.selected_a),
                "selected_b": len(self.selected_b), "common": self.common, "changed": self.changed}


def normalized(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float64)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def vector_agreement(a: np.ndarray, b: np.ndarray) -> VectorAgreement:
    """The cosine of a[i] with b[i] for each row i (two equally shaped, non-empty arrays)."""
    cosines = (normalized(a) * normalized(b)).sum(axis=1)
    return VectorAgreement(n=len(cosines), mean=float(cosines.mean()), min=float(cosines.min()),
                           percentiles={p: float(np.percentile(cosines, p)) for p in PERCENTILES})


def pair_indices(n: int, seed: int, max_pairs: int = MAX_PAIRS) -> tuple[np.ndarray, np.ndarray, bool]:
    """(i, j, sampled): every pair i < j of n records, or `max_pairs` distinct pairs drawn with numpy's
    default_rng(seed) when there are more."""
    total = n * (n - 1) // 2
    if total <= max_pairs:
        i, j = np.triu_indices(n, k=1)
        return i, j, False
    # Pair number k of the upper triangle, row by row: row i starts at i*n - i*(i+1)/2 and holds n-1-i pairs.
    k = np.sort(np.random.default_rng(seed).choice(total, size=max_pairs, replace=False))
    starts = np.arange(n) * n - np.arange(n) * (np.arange(n) + 1) // 2
    i = np.searchsorted(starts, k, side="right") - 1
    j = k - starts[i] + i + 1
    return i, j, True


def pair_shift(a: np.ndarray, b: np.ndarray, threshold: float, seed: int = 0,
               max_pairs: int = MAX_PAIRS) -> PairShift:
    """How the cosine of each pair of records moves from embedder A to embedder B, around `threshold`."""
    a, b = normalized(a), normalized(b)
    i, j, sampled = pair_indices(len(a), seed, max_pairs)
    cos_a = _row_dots(a, i, j)
    cos_b = _row_dots(b, i, j)
    delta = np.abs(cos_b - cos_a)
    above_a, above_b = cos_a > threshold, cos_b > threshold
    near = np.abs(cos_a - threshold) <= NEAR
    return PairShift(
        pairs=len(i), sampled=sampled, threshold=threshold,
        above_a=int(above_a.sum()), above_b=int(above_b.sum()),
        only_a=int((above_a & ~above_b).sum()), only_b=int((above_b & ~above_a).sum()),
        near=int(near.sum()),
        near_mean_abs_delta=float(delta[near].mean()) if near.any() else float("nan"),
        near_max_abs_delta=float(delta[near].max()) if near.any() else float("nan"),
        mean_abs_delta=float(delta.mean()) if len(delta) else 0.0,
    )


def selection_change(evol: np.ndarray, a: np.ndarray, b: np.ndarray, budget: int,
                     threshold: float) -> SelectionChange:
    """Deita's selection (evol-score order, diversity filter) of `budget` records with A's and with B's
    embeddings; records whose evol score is NaN (unscored) take no part."""
    order = rank(evol)[:int(np.isfinite(evol).sum())]  # NaN sorts last
    picks = [diversity_filter(order, vectors, budget, threshold).indices for vectors in (a, b)]
    return SelectionChange(budget=budget, threshold=threshold, selected_a=picks[0], selected_b=picks[1])


def _row_dots(x: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """x[i[k]] . x[j[k]] for every k, a block of pairs at a time: the gathered rows of a million pairs of
    4096-wide vectors would take 64 GB."""
    out = np.empty(len(i))
    block = max(1, (16 << 20) // max(1, x.shape[1]))  # 128 MB of float64 per gathered side
    for start in range(0, len(i), block):
        stop = start + block
        out[start:stop] = np.einsum("kd,kd->k", x[i[start:stop]], x[j[start:stop]])
    return out


def _json_float(value: float) -> float | None:
    return None if value != value else value
