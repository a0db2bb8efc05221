"""Six score logits -> probabilities -> expected score, as the Deita reference computes it. Pure numpy."""

from __future__ import annotations

import numpy as np

from .templates import LABELS

_VALUES = np.arange(1, len(LABELS) + 1, dtype=np.float64)


def probabilities(logits: np.ndarray) -> np.ndarray:
    """Softmax over the six label logits (float64, shifted by the max so large logits cannot overflow)."""
    x = np.asarray(logits, dtype=np.float64)
    if x.shape != _VALUES.shape or not np.all(np.isfinite(x)):
        raise ValueError(f"expected {len(_VALUES)} finite logits, got {x!r}")
    e = np.exp(x - x.max())
    return e / e.sum()


def expected_score(logits: np.ndarray) -> float:
    """sum_i p_i * i over labels 1..6: a float in [1, 6]."""
    return float(probabilities(logits) @ _VALUES)
