"""The embedding step every way of running shares (one process, Ray actors): conversations' token ids in, their
vectors out, in order. A job that arrives with its vector (from the cache, or the NaN row of a record that cannot
be embedded) passes through. A step may compute ahead of what its consumer has taken; when the consumer stops early
(the lazy selection's walk, once the budget is full), `drain` waits for that work and hands it back, so that it
lands in the cache instead of being lost."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Iterator, Protocol

import numpy as np

if TYPE_CHECKING:
    from ..llama.embedder import Embedder
    from .ray import ActorStats


@dataclass
class Job:
    """One conversation's embedding on its way through a step."""

    ids: list[int] | None  # what to embed; None: the record cannot be embedded (its vector is a NaN row)
    vector: np.ndarray | None = None  # set once known: from the cache, a NaN row, or computed by the step
    computed: bool = False  # whether the step computed `vector`


class EmbedStep(Protocol):
    # Per Ray actor ("host:pid"), what it computed; empty for one process.
    actors: dict[str, ActorStats]

    def map(self, jobs: Iterable[Job], count: int | None = None) -> Iterator[Job]:
        """`jobs`, in order, each with its vector; `count` is how many will come, where known."""

    def drain(self) -> list[Job]:
        """The jobs computed ahead that `map` did not yield before its consumer stopped."""


class LocalStep:
    """Embedding in this process, one conversation per decode (reproducible), nothing ahead."""

    def __init__(self, embedder: Embedder):
        self.embedder = embedder
        self.actors: dict[str, ActorStats] = {}

    def map(self, jobs: Iterable[Job], count: int | None = None) -> Iterator[Job]:
        for job in jobs:
            if job.vector is None:
                job.vector = self.embedder.embed_ids(job.ids)
                job.computed = True
            yield job

    def drain(self) -> list[Job]:
        return []


@dataclass(frozen=True)
class Embedding:
    """What a run embeds with: `vocab` gives the token ids, width and fingerprint (cache keys) of the embedder (the
    loaded embedder, or only its vocabulary when the step runs elsewhere), and `step` computes the vectors."""

    vocab: Embedder
    step: EmbedStep


@contextlib.contextmanager
def open_embedding(model: str | os.PathLike, *, threads: int | None = None, n_gpu_layers: int | None = None,
                   kernels: str = "auto", verbose: bool = False, ray: bool = False, actors: int = 1,
                   block: int | None = None) -> Iterator[Embedding]:
    """The embedder GGUF `model`, loaded here, or with `ray` loaded by `actors` Ray actors of `threads` threads
    each (default 1) while this process keeps only its vocabulary. `block`: conversations per actor call, which
    also sets how far the actors run ahead (None: sized to the input; the lazy walk wants 1)."""
    from ..llama.embedder import Embedder

    if not ray:
        with Embedder.from_path(model, threads=threads, n_gpu_layers=n_gpu_layers, kernels=kernels,
                                verbose=verbose) as embedder:
            yield Embedding(embedder, LocalStep(embedder))
        return
    from .ray import ray_embed_step

    with Embedder.vocabulary(model, verbose=verbose) as vocab, \
            ray_embed_step(model, actors=actors, threads=threads or 1, verbose=verbose, block=block) as step:
        yield Embedding(vocab, step)
