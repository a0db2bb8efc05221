"""The embedding step every way of running shares (one process, Ray actors): conversations' token ids in, their
vectors out, in order. A job that arrives with its vector (from the cache, or the NaN row of a record that cannot
be embedded) passes through. A step may compute ahead of what its consumer has taken; when the consumer stops early
(the lazy selection's walk, once the budget is full), `drain` waits for that work and hands it back, so that it
lands in the cache instead of being lost."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Iterator, Protocol

import numpy as np

from ..forms.provenance import Step, embedding_step

if TYPE_CHECKING:
    from ..llama.embedder import Embedder


@dataclass
class Job:
    """One conversation's embedding on its way through a step."""

    ids: list[int] | None  # what to embed; None: the record cannot be embedded (its vector is a NaN row)
    vector: np.ndarray | None = None  # set once known: from the cache, a NaN row, or computed by the step
    computed: bool = False  # whether the step computed `vector`
    number: int | None = None  # the input record it embeds, where it has one: what an error about it names


class EmbedStep(Protocol):
    # Per Ray actor ("host:pid"), what it computed (ray.ActorStats); empty for one process.
    actors: dict

    def map(self, jobs: Iterable[Job], count: int | None = None) -> Iterator[Job]:
        """`jobs`, in order, each with its vector; `count` is how many will come, where known."""

    def drain(self) -> list[Job]:
        """The jobs computed ahead that `map` did not yield before its consumer stopped."""

    def ran(self) -> tuple[dict, ...]:
        """What ran the embedder (llama.Model.setup), once per distinct setup, for the output's record."""


class LocalStep:
    """Embedding in this process, one conversation per decode (reproducible), nothing ahead."""

    def __init__(self, embedder: Embedder):
        self.embedder = embedder
        self.actors: dict = {}

    def map(self, jobs: Iterable[Job], count: int | None = None) -> Iterator[Job]:
        for job in jobs:
            if job.vector is None:
                job.vector = self.embedder.embed_ids(job.ids)
                job.computed = True
            yield job

    def drain(self) -> list[Job]:
        return []

    def ran(self) -> tuple[dict, ...]:
        return (self.embedder.setup(),)


@dataclass(frozen=True)
class Embedding:
    """What a run embeds with: `vocab` gives the token ids, width and fingerprint (cache keys) of the embedder (the
    loaded embedder, or only its vocabulary when the step runs elsewhere), and `step` computes the vectors."""

    vocab: Embedder
    step: EmbedStep

    def made(self) -> Step:
        """What the embeddings record of their embedder (forms/provenance.py)."""
        vocab = self.vocab
        return embedding_step(vocab.fingerprint, vocab.path.name, weights=vocab.file_type, ran=self.step.ran())
