"""Embed a whole file: one row per input record, in input order, into a `.npy` file; computed vectors go to the
embedding cache too, so rerunning an interrupted run only computes what is missing."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np

from ..forms.embeddings_file import EmbeddingsWriter
from ..forms.output import refuse_input_as_output
from ..forms.reader import read_records
from ..forms.records import Record, without_leading_answer
from ..llama.embedder import Embedder
from .embedding_cache import CachedEmbedder, EmbeddingCache
from .progress import Progress, silent


@dataclass
class EmbedSummary:
    records: int = 0
    computed: int = 0
    reused: int = 0
    errored: int = 0
    tokens: int = 0
    seconds: float = 0.0

    def line(self) -> str:
        rate = self.computed / self.seconds if self.seconds > 0 else 0.0
        return (f"{self.records:,} records in {self.seconds:.1f} s: {self.computed:,} embedded ({rate:,.1f}/s, "
                f"{self.tokens:,} tokens), {self.reused:,} from the cache, {self.errored:,} errored (NaN rows)")


def turns_of(record: Record) -> list[tuple[str, str]] | None:
    """The (instruction, response) turns Deita's embedder renders, or None when the record cannot be embedded.
    Like Deita's embedder (selection/embedder/utils.py), a conversation that opens with an answer is read without it."""
    record = without_leading_answer(record)
    if record.error:
        return None
    return [(turn.instruction, turn.response) for turn in record.turns]


def embed_file(source: str | os.PathLike | BinaryIO, output: str | os.PathLike, embedder: Embedder, *,
               cache_path: str | os.PathLike | None = None, progress: Progress | None = None, split: str = "train",
               config: str | None = None) -> EmbedSummary:
    """Write the embedding of every record of `source` (any input reader.read_records reads; `split` and `config`
    choose the part of a hub dataset or saved DatasetDict) to `output` (float32 `.npy`, row i = record i).

    A record that cannot be embedded (not a conversation, a final question without answer, ...) gets a row of
    NaN and is counted as errored; it never moves the rows after it. `progress` is called with the records done,
    the input's records (where cheap to know) and the tokens.
    """
    refuse_input_as_output(source, output)
    summary = EmbedSummary()
    start = time.perf_counter()
    records = read_records(source, split=split, config=config)
    nan_row = np.full(embedder.n_embd, np.nan, dtype=np.float32)
    report = progress or silent
    report(0, records.count, 0)
    with EmbeddingCache(embedder.fingerprint, cache_path) as cache, EmbeddingsWriter(output, embedder.n_embd) as out:
        cached = CachedEmbedder(embedder, cache)
        try:
            for record in records:
                summary.records += 1
                turns = turns_of(record)
                if turns is None:
                    summary.errored += 1
                    out.write(nan_row)
                else:
                    out.write(cached.vector(turns))
                report(summary.records, records.count, cached.tokens)
        except KeyboardInterrupt:
            from .score import Interrupted

            summary.seconds = time.perf_counter() - start
            raise Interrupted(f"interrupted after {summary.records:,} records; run the same command again to "
                              "continue (computed embeddings are cached)", summary) from None
        finally:
            # Also on Ctrl-C: the summary the interrupt carries is this object.
            summary.computed, summary.reused, summary.tokens = cached.computed, cached.reused, cached.tokens
        out.finish()
    summary.seconds = time.perf_counter() - start
    return summary
