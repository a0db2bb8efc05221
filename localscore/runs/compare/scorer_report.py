"""What a comparison of two scorers found: the figures per turn and per record, the excluded records, and how they
are shown (the summary table, JSON). scorers.py computes it; plot.py draws it."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np

from .score_agreement import Agreement

# How many exclusion reasons the summary table lists; the JSON has them all.
SHOWN_EXCLUSIONS = 5


@dataclass(frozen=True)
class Excluded:
    record: int  # the record's number in the data file (line, or element index + 1)
    reason: str


@dataclass(frozen=True)
class Comparison:
    a: str
    b: str
    data: str
    scorer: str
    sample: int | None
    seed: int
    records: int  # in the data file
    sampled: int
    excluded: tuple[Excluded, ...]
    per_turn: Agreement  # every turn score of the compared records, flattened
    per_record: Agreement  # each record's turn scores summed, which is how Deita's selection ranks records
    a_scores: np.ndarray  # per turn, for the plot
    b_scores: np.ndarray
    a_scored_by: str | None = None  # for a scored file: what scored it, as it records it (provenance.scored_by)
    b_scored_by: str | None = None

    @property
    def compared(self) -> int:
        return self.per_record.n

    def to_dict(self) -> dict:
        return {
            "a": self.a,
            "b": self.b,
            "data": self.data,
            "scorer": self.scorer,
            "sample": self.sample,
            "seed": self.seed,
            "records": self.records,
            "sampled": self.sampled,
            "compared": self.compared,
            "excluded": [{"record": e.record, "reason": e.reason} for e in self.excluded],
            "per_turn": self.per_turn.to_dict(),
            "per_record": self.per_record.to_dict(),
            "a_scored_by": self.a_scored_by,
            "b_scored_by": self.b_scored_by,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False)

    def table(self) -> list[str]:
        """The human summary: what was compared, then one row per level."""
        budgets = list(self.per_turn.top_overlap)
        which = f"{self.sampled:,} of {self.records:,}" if self.sampled < self.records else f"all {self.records:,}"
        lines = [
            f"A: {self.a}{_scored(self.a_scored_by)}",
            f"B: {self.b}{_scored(self.b_scored_by)}",
            f"{which} records of {self.data} ({self.scorer} scorer, seed {self.seed}): "
            f"{self.compared:,} compared, {len(self.excluded):,} excluded",
            "",
            f"{'':<11}{'n':>6}  Spearman ρ  Kendall τ  Pearson r  mean |Δ|  max |Δ|"
            + "".join(f"{f'top {b:.0%}':>9}" for b in budgets),
        ]
        for name, level in (("per turn", self.per_turn), ("per record", self.per_record)):
            lines.append(
                f"{name:<11}{level.n:>6,}  {_fixed(level.spearman):>10}  {_fixed(level.kendall):>9}  "
                f"{_fixed(level.pearson):>9}  {level.mean_abs_delta:>8.4f}  {level.max_abs_delta:>7.4f}"
                + "".join(f"{level.top_overlap[b]:>9.3f}" for b in budgets)
            )
        lines.append("Δ = B - A; per record = the sum of its turn scores (Deita's ranking); "
                     "top k% = share of A's top k% also in B's")
        for e in self.excluded[:SHOWN_EXCLUSIONS]:
            lines.append(f"excluded: record {e.record}: {e.reason}")
        if len(self.excluded) > SHOWN_EXCLUSIONS:
            lines.append(f"excluded: {len(self.excluded) - SHOWN_EXCLUSIONS:,} more (see the JSON output)")
        return lines


def _fixed(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.4f}"


def _scored(by: str | None) -> str:
    return "" if by is None else f", scored by {by}"
