"""Select from a scored file: Deita's evol-score ranking and diversity filter over the records, with embeddings
read from a file or computed lazily (only for the records the walk reaches) through the embedding cache."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from .embed_run import turns_of
from .embeddings_file import read_embeddings
from .errors import InputError
from .output import open_writer, refuse_input_as_output
from .progress import Progress
from .records import Record, read_records
from .selection import EVOL_FIELD, SIMILARITY_FIELD, MissingScores, diversity_filter, evol_score, rank
from .templates import QUALITY

SCORE_COMMAND = ("localscore score INPUT -m QUALITY.gguf | localscore score - --scorer complexity "
                 "-m COMPLEXITY.gguf -o scored.jsonl")


@dataclass
class SelectSummary:
    records: int = 0
    unscored: int = 0  # records the scorers marked with an error: they have no evol score
    examined: int = 0
    rejected: int = 0
    selected: int = 0
    computed: int = 0  # embeddings computed (lazy selection); the rest came from the cache or a file
    reused: int = 0
    seconds: float = 0.0

    def line(self) -> str:
        unscored = f" ({self.unscored:,} without scores skipped)" if self.unscored else ""
        return (f"{self.selected:,} selected from {self.records:,} records{unscored} in {self.seconds:.1f} s: "
                f"{self.examined:,} examined, {self.rejected:,} rejected as near-duplicates; "
                f"{self.computed:,} embedded, {self.reused:,} from the cache")


def select_file(source: str | os.PathLike | BinaryIO, output: str | os.PathLike | None, *, budget: int,
                threshold: float = 0.9, model_path: str | os.PathLike | None = None,
                embeddings_path: str | os.PathLike | None = None, threads: int | None = None,
                n_gpu_layers: int | None = None, verbose: bool = False, cache_path: str | os.PathLike | None = None,
                progress: bool = False) -> SelectSummary:
    """Write the selected records of `source` to `output` (None: stdout), best first, each with its evol score
    and its cosine similarity to the most similar record kept before it. Embeddings come from `embeddings_path`
    (one row per input record, from `localscore embed`) or are computed with the embedder at `model_path`
    only for the records the walk examines."""
    if (model_path is None) == (embeddings_path is None):
        raise InputError("give the embedder (-m EMBEDDER.gguf) or precomputed embeddings (--embeddings FILE), "
                         "one of the two")
    if not 0.0 <= threshold <= 1.0:
        raise InputError(f"threshold must be between 0 and 1, got {threshold}")
    if output is not None:
        refuse_input_as_output(source, output)
    summary = SelectSummary()
    start = time.perf_counter()
    records = list(read_records(source, QUALITY))
    summary.records = len(records)
    scores = np.array([record_evol_score(record) for record in records], dtype=np.float64)
    order = rank(scores)[:int(np.isfinite(scores).sum())]  # NaN (unscored) sort last and are left out
    summary.unscored = len(records) - len(order)

    if embeddings_path is not None:
        selection = diversity_filter(order, read_embeddings(embeddings_path, len(records)), budget, threshold)
    else:
        selection = _lazy_selection(records, order, model_path, budget, threshold, threads, n_gpu_layers,
                                    verbose, cache_path, progress, summary)
    summary.examined, summary.rejected, summary.selected = selection.examined, selection.rejected, len(selection.indices)
    with open_writer(output) as writer:
        for index, similarity in zip(selection.indices, selection.similarities):
            data = records[index].data
            writer.write({**data, EVOL_FIELD: float(scores[index]), SIMILARITY_FIELD: similarity})
        writer.finish()
    summary.seconds = time.perf_counter() - start
    return summary


def record_evol_score(record: Record) -> float:
    """The record's evol score; NaN for a record the scorers reported an error for."""
    if record.data is None:
        raise InputError(f"record {record.number}: {record.error}")
    if any(f"{name}_error" in record.data for name in ("quality", "complexity")):
        return np.nan
    try:
        return evol_score(record.data, record.number)
    except MissingScores as e:
        raise MissingScores(f"{e}: {SCORE_COMMAND}") from None


def _lazy_selection(records: list[Record], order: np.ndarray, model_path: str | os.PathLike, budget: int,
                    threshold: float, threads: int | None, n_gpu_layers: int | None, verbose: bool,
                    cache_path: str | os.PathLike | None, progress: bool, summary: SelectSummary):
    from .embedding import Embedder
    from .embedding_cache import CachedEmbedder, EmbeddingCache

    bar = Progress(None, enabled=progress)
    with Embedder.from_path(Path(model_path), threads=threads, n_gpu_layers=n_gpu_layers, verbose=verbose) as embedder, \
            EmbeddingCache(embedder.fingerprint, cache_path) as cache:
        cached = CachedEmbedder(embedder, cache)

        def vectors(indices: np.ndarray) -> np.ndarray:
            rows = []
            for index in indices:
                record = records[index]
                if record.error:
                    raise InputError(f"record {record.number} cannot be embedded: {record.error}")
                tokens = cached.tokens
                rows.append(cached.vector(turns_of(record)))
                bar.update(1, cached.tokens - tokens)
            return np.stack(rows)

        try:
            return diversity_filter(order, vectors, budget, threshold)
        except KeyboardInterrupt:
            from .runner import Interrupted

            raise Interrupted("interrupted; the embeddings computed so far are cached, so running the same "
                              "command again continues from there", summary) from None
        finally:
            bar.close()
            summary.computed, summary.reused = cached.computed, cached.reused
