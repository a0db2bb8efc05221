"""Compare two embedders on the same records: is a quantized embedder (or another conversion) good enough for my
selection?

Each side is an embedder GGUF, run here on the records, or a `.npy` file written by `localscore embed` from the
data file (one row per record, in order). When the data file is scored by both Deita scorers, Deita's selection
runs with each side's embeddings and the change in the selected records is reported.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ...errors import InputError
from ...forms.durable import write_file
from ...forms.embeddings_file import read_embeddings
from ...forms.reader import read_records
from ...forms.records import Record
from ...options import CompareOptions, RunOptions
from .scorers import Excluded, is_gguf, is_npy, sample_positions
from ..embed import turns_of
from .embedding_agreement import (NEAR, PairShift, SelectionChange, VectorAgreement, pair_shift, selection_change,
                                  vector_agreement)
from ..progress import Progress, silent
from ..select import record_evol_score

# A budget left unset selects this share of the compared records.
DEFAULT_BUDGET_SHARE = 0.2
SHOWN_EXCLUSIONS = 5


@dataclass(frozen=True)
class EmbedderComparison:
    a: str
    b: str
    data: str
    sample: int | None
    seed: int
    records: int  # in the data file
    sampled: int
    excluded: tuple[Excluded, ...]
    vectors: VectorAgreement
    pairs: PairShift
    selection: SelectionChange | None  # None when the data file has no scores
    unscored: str | None  # why there is no selection

    @property
    def compared(self) -> int:
        return self.vectors.n

    def to_dict(self) -> dict:
        return {
            "a": self.a, "b": self.b, "data": self.data, "sample": self.sample, "seed": self.seed,
            "records": self.records, "sampled": self.sampled, "compared": self.compared,
            "excluded": [{"record": e.record, "reason": e.reason} for e in self.excluded],
            "embedding_cosine": self.vectors.to_dict(),
            "pairs": self.pairs.to_dict(),
            "selection": self.selection.to_dict() if self.selection else None,
            "no_selection": self.unscored,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False)

    def table(self) -> list[str]:
        v, p, s = self.vectors, self.pairs, self.selection
        which = f"{self.sampled:,} of {self.records:,}" if self.sampled < self.records else f"all {self.records:,}"
        pairs = f"{p.pairs:,} pairs (sampled, seed {self.seed})" if p.sampled else f"all {p.pairs:,} pairs"
        lines = [
            f"A: {self.a}",
            f"B: {self.b}",
            f"{which} records of {self.data} (seed {self.seed}): {self.compared:,} compared, "
            f"{len(self.excluded):,} excluded",
            "",
            "cosine of each record's A and B embeddings:",
            f"  mean {v.mean:.6f}  min {v.min:.6f}  "
            + "  ".join(f"p{q} {value:.6f}" for q, value in v.percentiles.items()),
            f"pairwise cosine around the threshold {p.threshold:g}, {pairs}:",
            f"  above it: {p.above_a:,} under A, {p.above_b:,} under B; {p.only_a:,} only under A, "
            f"{p.only_b:,} only under B",
            f"  within ±{NEAR:g} of it under A: {p.near:,} pairs, mean |Δ| {_fixed(p.near_mean_abs_delta)}, "
            f"max |Δ| {_fixed(p.near_max_abs_delta)}; all pairs mean |Δ| {p.mean_abs_delta:.6f}",
        ]
        if s is not None:
            lines.append(f"selection (budget {s.budget:,}, threshold {s.threshold:g}): "
                         f"A selects {len(s.selected_a):,}, B {len(s.selected_b):,}; {s.common:,} in both, "
                         f"{s.changed:,} of A's changed")
        else:
            lines.append(f"selection: not compared ({self.unscored})")
        lines.append("Δ = B - A")
        for e in self.excluded[:SHOWN_EXCLUSIONS]:
            lines.append(f"excluded: record {e.record}: {e.reason}")
        if len(self.excluded) > SHOWN_EXCLUSIONS:
            lines.append(f"excluded: {len(self.excluded) - SHOWN_EXCLUSIONS:,} more (see the JSON output)")
        return lines


def compare_embedders(a: str | os.PathLike, b: str | os.PathLike, data: str | os.PathLike, options: CompareOptions,
                      run: RunOptions, *, cache_path: str | os.PathLike | None = None,
                      log: Callable[[str], None] | None = None, progress: Progress | None = None) -> EmbedderComparison:
    """Compare embedder A with embedder B on the records of `data` (all, or `options.sample` drawn with
    `options.seed`). A and B are each an embedder GGUF (run here as `run` says; its vectors go to the embedding
    cache) or a `.npy` file from `localscore embed` of `data`. When `data` carries quality and complexity scores,
    Deita's selection of `options.budget` records (default: a fifth of the compared ones) at `options.threshold`
    runs with each side's embeddings. The figures go to `options.json_path` as JSON when given."""
    sample, seed, budget, threshold, json_path = options.sample, options.seed, options.budget, options.threshold, \
        options.json_path
    if json_path is not None and Path(json_path).resolve() in {Path(p).resolve() for p in (a, b, data)}:
        raise InputError(f"{json_path} is one of the inputs; write the JSON to a new file")
    kinds = {label: _kind(path, label) for label, path in (("A", a), ("B", b))}
    records = list(read_records(data))
    positions = sample_positions(len(records), sample, seed)
    say = log or (lambda line: None)
    sides = {}
    for label, path in (("A", a), ("B", b)):
        if kinds[label] == "gguf":
            say(f"embedding {len(positions):,} records of {os.fspath(data)} with {label} ({os.fspath(path)})")
            sides[label] = _model_vectors(path, [records[i] for i in positions], run, cache_path, progress)
        else:
            sides[label] = np.asarray(read_embeddings(path, len(records))[positions], dtype=np.float32)
    vectors_a, vectors_b = sides["A"], sides["B"]
    if vectors_a.shape[1] != vectors_b.shape[1]:
        raise InputError(f"A's embeddings have {vectors_a.shape[1]} dimensions and B's {vectors_b.shape[1]}: "
                         "compare two versions (types, conversions) of one embedder")

    excluded, keep = [], []
    for k, position in enumerate(positions):
        record = records[position]
        reason = (f"data: {record.error}" if record.error
                  else "A: no embedding (NaN row)" if not np.isfinite(vectors_a[k]).all()
                  else "B: no embedding (NaN row)" if not np.isfinite(vectors_b[k]).all() else None)
        if reason is None:
            keep.append(k)
        else:
            excluded.append(Excluded(record.number, reason))
    if not keep:
        first = f" (record {excluded[0].record}: {excluded[0].reason})" if excluded else ""
        raise InputError(f"no record of {data} could be compared{first}")
    vectors_a, vectors_b = vectors_a[keep], vectors_b[keep]
    compared = [records[positions[k]] for k in keep]
    evol, unscored = _evol_scores(compared, data)
    if unscored is not None and budget is not None:
        raise InputError(f"{{budget}} needs a data file scored by both scorers, and {unscored}", options=("budget",))
    selection = None
    if evol is not None:
        chosen = budget if budget is not None else max(1, round(DEFAULT_BUDGET_SHARE * len(compared)))
        selection = selection_change(evol, vectors_a, vectors_b, chosen, threshold)
    result = EmbedderComparison(
        a=os.fspath(a), b=os.fspath(b), data=os.fspath(data), sample=sample, seed=seed, records=len(records),
        sampled=len(positions), excluded=tuple(excluded), vectors=vector_agreement(vectors_a, vectors_b),
        pairs=pair_shift(vectors_a, vectors_b, threshold, seed), selection=selection, unscored=unscored,
    )
    if json_path is not None:
        write_file(json_path, (result.to_json() + "\n").encode("utf-8"))
    return result


def _kind(path: str | os.PathLike, label: str) -> str:
    if is_gguf(path):
        return "gguf"
    if is_npy(path):
        return "npy"
    raise InputError(f"{label} ({os.fspath(path)}) is neither an embedder GGUF nor a .npy file from "
                     "`localscore embed`; to compare scorers or scored files, compare them as scorers")


def _model_vectors(path: str | os.PathLike, chosen: Sequence[Record], run: RunOptions,
                   cache_path: str | os.PathLike | None, progress: Progress | None) -> np.ndarray:
    from ...llama.embedder import Embedder  # loads llama.cpp, which comparing two .npy files does not need
    from ..embedding_cache import CachedEmbeddings, EmbeddingCache
    from ..embed_step import Embedding, LocalStep

    report = progress or silent
    with Embedder.from_path(path, run) as embedder, \
            EmbeddingCache(embedder.fingerprint, cache_path) as cache:
        cached = CachedEmbeddings(Embedding(embedder, LocalStep(embedder)), cache)
        nan_row = np.full(embedder.n_embd, np.nan, dtype=np.float32)
        rows = []
        report(0, len(chosen), 0)
        for record in chosen:
            rows.append(nan_row if record.error else cached.vector(turns_of(record)))
            report(len(rows), len(chosen), cached.tokens)
    return np.stack(rows) if rows else np.zeros((0, len(nan_row)), dtype=np.float32)


def _evol_scores(records: Sequence[Record], data: str | os.PathLike) -> tuple[np.ndarray | None, str | None]:
    """Each record's evol score (NaN where a scorer reported an error), or why the data has none."""
    fields = [f"{name}_score{s}" for name in ("quality", "complexity") for s in ("", "s")]
    if not any(field in record.data for record in records for field in fields):
        return None, f"{os.fspath(data)} has no quality and complexity scores"
    return np.array([record_evol_score(record) for record in records], dtype=np.float64), None


def _fixed(value: float) -> str:
    return "n/a" if value != value else f"{value:.6f}"
