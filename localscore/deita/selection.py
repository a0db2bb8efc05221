"""Deita's selection, pure numpy: rank records by evol score, then walk them best first and keep each one whose
embedding is not a near-duplicate of one already kept, until the budget is full.

Deita (`selection/filter/combined_filter.py`, `filter/base.py`, IterativeFilter with batch size 1):
evol score = sum over turns of complexity_i * quality_i; sort descending; keep the first record; keep each next
one only if its cosine similarity to every record kept so far is <= threshold; stop at the budget. Deita's sort
is pandas' unstable quicksort; here ties keep input order (a stable sort), so the result is reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence, Union

import numpy as np

from ..errors import InputError
from ..options import DEFAULT_THRESHOLD
from .templates import COMPLEXITY, QUALITY

EVOL_FIELD = "evol_score"
SIMILARITY_FIELD = "nearest_similarity"
# Candidates compared in one matrix product (blocking changes nothing in the result).
BLOCK = 256

# An (N, d) array of embeddings (or a memory map), or a function that returns the rows for given record indices
# (lazy embedding: only records the walk reaches are ever asked for).
Embeddings = Union[np.ndarray, Callable[[np.ndarray], np.ndarray]]


class MissingScores(InputError):
    """A record without the quality and complexity scores that the evol score is made of."""


@dataclass(frozen=True)
class Selection:
    indices: list[int]  # positions in the input, in selection order (best evol score first)
    similarities: list[float | None]  # cosine to the most similar record kept before it (None for the first)
    examined: int  # records the walk compared with the kept ones
    rejected: int  # of those, dropped as near-duplicates
    # Records the walk reached but skipped because their embedding is unusable: (position, reason), in walk order.
    # `embed` writes a NaN row for a record it cannot embed; a NaN row would pass every similarity test.
    skipped: list[tuple[int, str]] = field(default_factory=list)


def evol_score(record: dict, number: int | None = None) -> float:
    """Σ complexity_i × quality_i over the record's turns (one product for an Alpaca record)."""
    where = f"record {number}" if number is not None else "a record"
    factors = []
    for template in (COMPLEXITY, QUALITY):
        value = record.get(template.scores_field, record.get(template.score_field))
        if value is None:
            raise MissingScores(f"{where} has no {template.score_field}(s); score the data with both scorers first")
        factors.append(np.atleast_1d(np.asarray(value, dtype=np.float64)))
    complexity, quality = factors
    if complexity.shape != quality.shape:
        raise InputError(f"{where} has {complexity.size} complexity but {quality.size} quality scores; "
                         "score both from the same input")
    return float((complexity * quality).sum())


def evol_scores(records: Iterable[dict]) -> np.ndarray:
    """The evol score of each record (float64), in order."""
    return np.array([evol_score(record, number) for number, record in enumerate(records, 1)], dtype=np.float64)


def rank(scores: Sequence[float]) -> np.ndarray:
    """Record indices by evol score, highest first; equal scores keep input order."""
    return np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")


def select(records: Sequence[dict], embeddings: Embeddings, budget: int,
           threshold: float = DEFAULT_THRESHOLD) -> Selection:
    """Deita's selection of at most `budget` records: see diversity_filter, in evol-score order."""
    return diversity_filter(rank(evol_scores(records)), embeddings, budget, threshold)


def diversity_filter(order: Sequence[int], embeddings: Embeddings, budget: int,
                     threshold: float = DEFAULT_THRESHOLD) -> Selection:
    """Walk `order`; keep the first record and each next one whose cosine similarity to every kept record is
    <= threshold; stop when `budget` are kept (or the records run out). A record whose embedding has a NaN, an
    infinity or only zeros has no direction to compare: it is skipped, with its reason, and never kept.

    Kept vectors live in one preallocated, normalized float32 matrix; each block of candidates costs one matrix
    product against it plus one within the block, and a candidate is checked against the block's earlier
    acceptances too, so the result is exactly the one-at-a-time walk's.
    """
    if budget < 1:
        raise InputError(f"budget must be at least 1, got {budget}")
    order = np.asarray(order, dtype=np.int64)
    lazy = callable(embeddings)
    fetch = embeddings if lazy else (lambda rows: embeddings[rows])
    kept: np.ndarray | None = None
    n_kept = 0
    indices: list[int] = []
    similarities: list[float | None] = []
    skipped: list[tuple[int, str]] = []
    walked = examined = rejected = 0
    while n_kept < budget and walked < len(order):
        # Lazily computed embeddings: a block never reaches past where the budget could fill, so no embedding
        # is computed that the one-at-a-time walk would not compute.
        block = order[walked:walked + (min(BLOCK, budget - n_kept) if lazy else BLOCK)]
        vectors = np.array(fetch(block), dtype=np.float32)
        problems = unusable(vectors)
        vectors[[p is not None for p in problems]] = 0.0
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        vectors = vectors / np.where(norms > 0, norms, 1.0)
        if kept is None:
            kept = np.empty((min(budget, len(order)), vectors.shape[1]), dtype=np.float32)
        best_kept = (vectors @ kept[:n_kept].T).max(axis=1) if n_kept else np.full(len(block), -np.inf, np.float32)
        within = vectors @ vectors.T
        accepted: list[int] = []
        for j, index in enumerate(block):
            walked += 1
            if problems[j] is not None:
                skipped.append((int(index), problems[j]))
                continue
            examined += 1
            best = np.max(within[j, accepted], initial=best_kept[j]) if accepted else best_kept[j]
            if n_kept + len(accepted) and best > threshold:
                rejected += 1
                continue
            accepted.append(j)
            indices.append(int(index))
            similarities.append(float(best) if n_kept + len(accepted) > 1 else None)
            if n_kept + len(accepted) == budget:
                break
        kept[n_kept:n_kept + len(accepted)] = vectors[accepted]
        n_kept += len(accepted)
    return Selection(indices, similarities, examined, rejected, skipped)


def unusable(vectors: np.ndarray) -> list[str | None]:
    """Per row of `vectors`, why it cannot be compared by cosine similarity ("NaN embedding", "infinite
    embedding", "all-zero embedding"), or None."""
    reasons: list[str | None] = []
    for nan, infinite, zero in zip(np.isnan(vectors).any(axis=1), np.isinf(vectors).any(axis=1),
                                   ~vectors.any(axis=1)):
        reasons.append("NaN embedding" if nan else "infinite embedding" if infinite else
                       "all-zero embedding" if zero else None)
    return reasons
