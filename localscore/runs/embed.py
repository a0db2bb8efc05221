"""Embed a whole file: one row per input record, in input order, into a `.npy` file, computed in this process or by
Ray actors (embed_step); computed vectors go to the embedding cache too, so rerunning an interrupted run only
computes what is missing. A shard ("I/N") embeds one round-robin slice for `merge`, as scoring does."""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterator

from ..forms.embeddings_file import EmbeddingsWriter
from ..forms.output import refuse_input_as_output
from ..forms.provenance import Provenance
from ..forms.reader import read_records
from ..forms.records import Record, without_leading_answer
from ..options import InputOptions, OutputOptions, RayOptions, RunOptions
from .embedding_cache import CachedEmbeddings, EmbeddingCache
from .embed_step import Embedding, LocalStep
from .progress import Progress, silent
from .shards import Shard, ShardRecords

if TYPE_CHECKING:
    from .ray import ActorStats


@dataclass
class EmbedSummary:
    records: int = 0
    computed: int = 0
    reused: int = 0
    errored: int = 0
    tokens: int = 0
    seconds: float = 0.0
    actors: dict[str, ActorStats] = field(default_factory=dict)  # on Ray: "host:pid" -> its work

    def line(self) -> str:
        rate = self.computed / self.seconds if self.seconds > 0 else 0.0
        return (f"{self.records:,} records in {self.seconds:.1f} s: {self.computed:,} embedded ({rate:,.1f}/s, "
                f"{self.tokens:,} tokens), {self.reused:,} from the cache, {self.errored:,} errored (NaN rows)")

    def lines(self) -> list[str]:
        """The summary as shown at the end of a run."""
        return [*(actor.line(name) for name, actor in self.actors.items()), self.line()]


def turns_of(record: Record) -> list[tuple[str, str]] | None:
    """The (instruction, response) turns Deita's embedder renders, or None when the record cannot be embedded.
    Like Deita's embedder (selection/embedder/utils.py), a conversation that opens with an answer is read without it."""
    record = without_leading_answer(record)
    if record.error:
        return None
    return [(turn.instruction, turn.response) for turn in record.turns]


def embed_file(source: InputOptions, output: OutputOptions, embedding: Embedding, *,
               cache_path: str | os.PathLike | None = None, progress: Progress | None = None) -> EmbedSummary:
    """Write the embedding of every record of `source` (any input reader.read_records reads) to `output.path`
    (float32 `.npy`, row i = record i).

    A record that cannot be embedded (not a conversation, a final question without answer, ...) gets a row of
    NaN and is counted as errored; it never moves the rows after it. `output.shard` "I/N" embeds the I-th of N
    round-robin slices, recording its slice with the output (see shards.py). What made the output is kept beside it
    (forms/provenance.py). `progress` is called with the records done, the input's records (where cheap to know)
    and the tokens.
    """
    slice_ = None if output.shard is None else Shard.parse(output.shard)
    refuse_input_as_output(source.source, output.path)
    summary = EmbedSummary()
    start = time.perf_counter()
    records = read_records(source.source, split=source.split, config=source.config)
    if slice_ is not None:
        records = ShardRecords(records, slice_)
    vocab = embedding.vocab
    report = progress or silent
    report(0, records.count, 0)
    with EmbeddingCache(vocab.fingerprint, cache_path) as cache, EmbeddingsWriter(output.path, vocab.n_embd) as out:
        out.begin(Provenance((embedding.made(),)))
        cached = CachedEmbeddings(embedding, cache)
        try:
            for job in cached.jobs(((record.number, turns_of(record)) for record in records), records.count):
                summary.records += 1
                summary.errored += job.ids is None
                out.write(job.vector)
                report(summary.records, records.count, cached.tokens)
        except KeyboardInterrupt:
            from .score import Interrupted

            summary.seconds = time.perf_counter() - start
            raise Interrupted(f"interrupted after {summary.records:,} records; run the same command again to "
                              "continue (computed embeddings are cached)", summary) from None
        finally:
            # Also on Ctrl-C: the summary the interrupt carries is this object.
            summary.computed, summary.reused, summary.tokens = cached.computed, cached.reused, cached.tokens
            summary.actors = embedding.step.actors
        out.finish(Provenance((embedding.made(),), None if slice_ is None else records.slice_info()))
    summary.seconds = time.perf_counter() - start
    return summary


@contextlib.contextmanager
def open_embedding(model: str | os.PathLike, run: RunOptions, on_ray: RayOptions | None = None, *,
                   block: int | None = None) -> Iterator[Embedding]:
    """The embedder GGUF `model`, loaded here as `run` says, or with `on_ray` loaded by Ray actors (of `run.threads`
    threads each, default 1) while this process keeps only its vocabulary. `block`: conversations per actor call,
    which also sets how far the actors run ahead (None: sized to the input; the lazy walk wants 1)."""
    from ..llama.embedder import Embedder

    if on_ray is None:
        with Embedder.from_path(model, run) as embedder:
            yield Embedding(embedder, LocalStep(embedder))
        return
    from .ray import ray_embed_step

    with Embedder.vocabulary(model, verbose=run.verbose) as vocab, \
            ray_embed_step(model, run, on_ray, block=block) as step:
        yield Embedding(vocab, step)
