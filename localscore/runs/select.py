"""Select from a scored file: Deita's evol-score ranking and diversity filter over the records, with embeddings
read from a file or computed lazily (only for the records the walk reaches) through the embedding cache."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from ..deita.selection import EVOL_FIELD, SIMILARITY_FIELD, Selection, diversity_filter, evol_score, rank
from ..deita.templates import COMPLEXITY, QUALITY
from ..errors import InputError
from ..forms.embeddings_file import read_embeddings
from ..forms.output import refuse_input_as_output
from ..forms.provenance import Provenance, Step, read_provenance, scored_by
from ..forms.reader import read_records
from ..forms.records import Record
from ..forms.writers import open_writer
from ..options import InputOptions, RayOptions, RunOptions, SelectOptions
from .embed import turns_of
from .embed_step import Embedding
from .progress import Progress, silent

if TYPE_CHECKING:
    from .ray import ActorStats


@dataclass
class SelectSummary:
    records: int = 0
    unscored: int = 0  # records the scorers marked with an error: they have no evol score
    unusable: dict[str, int] = field(default_factory=dict)  # records skipped for their embedding, by reason
    examined: int = 0
    rejected: int = 0
    selected: int = 0
    computed: int = 0  # embeddings computed (lazy selection); the rest came from the cache or a file
    reused: int = 0
    ahead: int = 0  # of those computed, embedded ahead of the walk (on Ray) but never examined; cached
    seconds: float = 0.0
    actors: dict[str, ActorStats] = field(default_factory=dict)  # on Ray: "host:pid" -> its work
    input_made: Provenance | None = None  # what made the input, as it records it

    def line(self) -> str:
        skipped = [f"{self.unscored:,} without scores"] if self.unscored else []
        skipped += [f"{count:,} with {reason}s" for reason, count in self.unusable.items()]
        skipped_part = f" ({', '.join(skipped)} skipped)" if skipped else ""
        ahead = f" ({self.ahead:,} of them ahead of the walk, never examined)" if self.ahead else ""
        return (f"{self.selected:,} selected from {self.records:,} records{skipped_part} in {self.seconds:.1f} s: "
                f"{self.examined:,} examined, {self.rejected:,} rejected as near-duplicates; "
                f"{self.computed:,} embedded{ahead}, {self.reused:,} from the cache")

    def lines(self) -> list[str]:
        """The summary as shown at the end of a run."""
        return [f"input scored by {scored_by(self.input_made, (QUALITY.name, COMPLEXITY.name))}",
                *(actor.line(name) for name, actor in self.actors.items()), self.line()]


def select_file(source: InputOptions, output: str | os.PathLike | None, choice: SelectOptions, run: RunOptions,
                on_ray: RayOptions | None = None, *, cache_path: str | os.PathLike | None = None,
                progress: Progress | None = None) -> SelectSummary:
    """Write the selected records of `source` to `output` (None: stdout), best first, each with its evol score
    and its cosine similarity to the most similar record kept before it. Embeddings come from `choice.embeddings`
    (one row per input record, from `localscore embed`) or are computed with the embedder GGUF `choice.model`
    (loaded as `run` says) only for the records the walk examines: here, or with `on_ray` by Ray actors that embed
    the next candidates in score order ahead of the walk (the picks are the same). `progress` is called with the
    embeddings computed or reused, None and the tokens. `source` is any input reader.read_records reads."""
    if output is not None:
        refuse_input_as_output(source.source, output)
    start = time.perf_counter()
    records = list(read_records(source.source, split=source.split, config=source.config))
    selection, scores, summary, steps = _select(records, choice, run, on_ray, cache_path, progress)
    summary.input_made = read_provenance(source.source)
    made = Provenance((*steps, Step("select", None, {"budget": choice.budget, "threshold": choice.threshold}))).after(
        summary.input_made)
    with open_writer(output) as writer:
        writer.begin(made)
        for index, similarity in zip(selection.indices, selection.similarities):
            data = records[index].data
            writer.write({**data, EVOL_FIELD: float(scores[index]), SIMILARITY_FIELD: similarity})
        writer.finish(made)
    summary.seconds = time.perf_counter() - start
    return summary


def select_records(records: list[Record], choice: SelectOptions, run: RunOptions, on_ray: RayOptions | None = None,
                   *, cache_path: str | os.PathLike | None = None,
                   progress: Progress | None = None) -> tuple[Selection, np.ndarray, SelectSummary]:
    """select_file's selection of records held in memory (each with both scorers' fields): the selection, every
    record's evol score (NaN for an unscored one) and the summary."""
    selection, scores, summary, _ = _select(records, choice, run, on_ray, cache_path, progress)
    return selection, scores, summary


def _select(records: list[Record], choice: SelectOptions, run: RunOptions, on_ray: RayOptions | None,
            cache_path: str | os.PathLike | None,
            progress: Progress | None) -> tuple[Selection, np.ndarray, SelectSummary, tuple[Step, ...]]:
    """The selection, every record's evol score, the summary and the steps that made the embeddings."""
    summary = SelectSummary()
    start = time.perf_counter()
    summary.records = len(records)
    scores = np.array([record_evol_score(record) for record in records], dtype=np.float64)
    order = rank(scores)[:int(np.isfinite(scores).sum())]  # NaN (unscored) sort last and are left out
    summary.unscored = len(records) - len(order)

    budget, threshold = choice.budget, choice.threshold
    if choice.embeddings is not None:
        selection = diversity_filter(order, read_embeddings(choice.embeddings, len(records)), budget, threshold)
        embedded = read_provenance(choice.embeddings)
        steps = () if embedded is None else embedded.steps
    else:
        from .embed import open_embedding

        # On Ray, blocks of one conversation: the actors run QUEUED_PER_ACTOR conversations each ahead of the walk.
        with open_embedding(choice.model, run, on_ray, block=1) as embedding:
            selection = _lazy_selection(records, order, embedding, budget, threshold, cache_path, progress, summary)
            steps = (embedding.made(),)
    summary.examined, summary.rejected = selection.examined, selection.rejected
    summary.selected = len(selection.indices)
    for _, reason in selection.skipped:
        summary.unusable[reason] = summary.unusable.get(reason, 0) + 1
    summary.seconds = time.perf_counter() - start
    return selection, scores, summary, steps


def record_evol_score(record: Record) -> float:
    """The record's evol score; NaN for a record the scorers reported an error for."""
    if record.data is None:
        raise InputError(f"record {record.number}: {record.error}")
    if any(template.error_field in record.data for template in (QUALITY, COMPLEXITY)):
        return np.nan
    return evol_score(record.data, record.number)


def _lazy_selection(records: list[Record], order: np.ndarray, embedding: Embedding, budget: int, threshold: float,
                    cache_path: str | os.PathLike | None, progress: Progress | None, summary: SelectSummary):
    """Deita's walk, embedding each candidate when the walk reaches it (or, on Ray, a little before): the
    candidates' vectors come from one stream in score order, which the walk consumes in order."""
    from .embedding_cache import CachedEmbeddings, EmbeddingCache

    report = progress or silent
    report(0, None, 0)
    with EmbeddingCache(embedding.vocab.fingerprint, cache_path) as cache:
        cached = CachedEmbeddings(embedding, cache)
        # One job per candidate, in score order (a NaN row where there are no turns).
        stream = cached.jobs((records[index].number, turns_of(records[index])) for index in order)
        position = 0

        def vectors(indices: np.ndarray) -> np.ndarray:
            nonlocal position
            assert np.array_equal(indices, order[position:position + len(indices)]), "the walk left score order"
            position += len(indices)
            rows = []
            for _ in indices:
                rows.append(next(stream).vector)
                report(cached.computed + cached.reused, None, cached.tokens)
            return np.stack(rows)

        try:
            selection = diversity_filter(order, vectors, budget, threshold)
            stream.close()
            cached.finish()
            return selection
        except KeyboardInterrupt:
            from .score import Interrupted

            raise Interrupted("interrupted; the embeddings computed so far are cached, so running the same "
                              "command again continues from there", summary) from None
        finally:
            summary.computed, summary.reused, summary.ahead = cached.computed, cached.reused, cached.ahead
            summary.actors = embedding.step.actors
