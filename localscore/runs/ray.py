"""Runs on a Ray cluster: scoring (the same run as one process: reader, resumable writer in input order, summary,
strict check, shards: score.run_scoring) and embedding (embed_step.EmbedStep: `embed`, and `select`'s lazy
walk), with the work done by a pool of Ray actors that each hold one loaded model. The driver reads the input and
hands the actors blocks of work, a bounded number at a time, so memory stays bounded whatever the input's size and
form, and writes every result itself, in input order."""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import os
import resource
import socket
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import TypeVar

import numpy as np

from ..deita.templates import TEMPLATES
from ..errors import InputError, LocalscoreError, ModelError
from ..extras import require
from ..forms.provenance import Step, distinct
from ..options import DEFAULT_RAY_THREADS, InputOptions, OutputOptions, RayOptions, RunOptions, ScorerOptions
from ..forms.records import Record, Records
from .score_step import Scored, score_records
from .embed_step import Job
from .progress import Progress
from .score import Summary, run_scoring

B = TypeVar("B")
# Each actor gets at least this many blocks, so that the last one to finish runs little past the others, and
# at most this many records per block, so that no call runs for hours; blocks of an input of unknown length
# (a hub dataset streamed) have the unknown size.
BLOCKS_PER_ACTOR = 4
MAX_BLOCK_ROWS = 256
UNKNOWN_COUNT_BLOCK_ROWS = 32
# Blocks queued per actor: one being worked on, one waiting, so an actor never idles between blocks. The lazy
# walk sends blocks of one, so this is also how far it runs ahead: at most this many conversations per actor are
# embedded and then never examined.
QUEUED_PER_ACTOR = 2
# Items (conversations) of ready blocks (nothing to send: all cached) read ahead while a block is in flight: at 7B
# width, 4096 vectors are 64 MB.
MAX_READY_ITEMS = 4096
# A lost actor is charged the block it was working on. Actors that die on the same block time after time are killed
# by it (a record that needs more memory than a node has, one that crashes llama.cpp): the run stops there, naming
# its records, rather than losing actor after actor. Actors lost while starting (loading the model) say the nodes
# cannot hold it.
LOSSES_PER_BLOCK = 3
LOSSES_STARTING = 3


@dataclass
class ActorStats:
    """What one actor did: records (scored, or embedded) and their tokens, the wall and CPU seconds spent on them
    (CPU time tells a slow node from a busy one), its peak memory, and whether it was lost (and replaced)."""

    records: int = 0
    tokens: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    peak_rss_mb: float = 0.0
    ran: dict | None = None  # what ran its model (llama.Model.setup), for the output's record
    lost: bool = False

    def line(self, name: str) -> str:
        tps = self.tokens / self.seconds if self.seconds > 0 else 0.0
        lost = "; lost, and replaced (what it had not finished was redone)" if self.lost else ""
        return (f"actor {name}: {self.records:,} records, {self.tokens:,} tokens in {self.seconds:.1f} s of work, "
                f"{tps:,.0f} tokens/s, peak RSS {self.peak_rss_mb:,.0f} MB{lost}")


@dataclass
class RaySummary(Summary):
    actors: dict[str, ActorStats] = field(default_factory=dict)  # "host:pid" -> its work

    def line(self) -> str:
        lost = sum(actor.lost for actor in self.actors.values())
        return super().line() + (f"; {lost:,} {'actor' if lost == 1 else 'actors'} lost and replaced" if lost else "")

    def lines(self) -> list[str]:
        return [*(actor.line(name) for name, actor in self.actors.items()), self.line()]


def score_on_ray(source: InputOptions, output: OutputOptions, model_path: str | os.PathLike | None,
                 scoring: ScorerOptions, run: RunOptions, on_ray: RayOptions, *, strict: bool = False,
                 progress: Progress | None = None) -> RaySummary:
    """Score every record of `source` (every input form reader.read_records reads) on the Ray cluster this
    process is connected to, or the one `RAY_ADDRESS` names, or a new local one; the output, resuming, strict
    and shard are those of a single-process run (score.run_scoring), byte for byte.

    `on_ray.actors` actors each load `model_path` (a path every node can read; None: each node's default-model
    cache) as `scoring` and `run` say, and reserve `run.threads` CPUs (default 1), which is also llama.cpp's
    thread count.
    """
    run = replace(run, threads=run.threads or DEFAULT_RAY_THREADS)
    ray = _connect(run.verbose)
    identity = _scoring_identity(ray, model_path, scoring)
    summary = RaySummary()
    pool = _ActorPool(ray, _ScoreActor, on_ray.actors, run.threads, summary.actors,
                      dict(model_path=model_path, scoring=scoring, run=run))

    def step(records: Records) -> Iterator[Scored]:
        for _, results in pool.map(_blocks(records, _block_rows(records.count, on_ray.actors)), list):
            yield from results

    try:
        run_scoring(source, output, TEMPLATES[scoring.scorer], step, summary,
                    lambda: replace(identity, ran=_ran(summary.actors)), strict=strict, progress=progress)
    finally:
        pool.close()
    return summary


def _scoring_identity(ray, model_path: str | os.PathLike | None, scoring: ScorerOptions) -> Step:
    """What the output records of its model (the actors add what ran it), read from the file: here when this
    machine has it, else on a node of the cluster, where the actors will find it (`model_path` is a path every node
    can read; None: a node's default-model cache)."""
    if model_path is not None and os.path.isfile(model_path):
        from ..llama.scorer import file_step

        return file_step(model_path, scoring)
    failure, step = ray.get(ray.remote(num_cpus=0)(_node_scoring_identity).remote(model_path, scoring))
    if failure is not None:
        raise ModelError(failure[0], options=failure[1])
    return step


def _node_scoring_identity(model_path: str | os.PathLike | None, scoring: ScorerOptions) -> tuple:
    from ..llama.scorer import file_step
    from .default_model import default_model

    try:
        return None, file_step(model_path or default_model(scoring.scorer), scoring)
    except LocalscoreError as e:  # as an actor reports it (see _Actor)
        return (f"on {socket.gethostname()}: {e.template}", e.options), None


class _ActorPool:
    """Ray actors of one kind (`actor_class`, each holding one loaded model) doing blocks of work: each block's
    results come back in block order, with at most QUEUED_PER_ACTOR blocks per actor in flight. A block with
    nothing to send is ready at once, in its place.

    An actor that is lost (its process killed, its node gone) is replaced by a new one, which takes blocks once its
    model is loaded; the blocks it had not finished go to the others, so the results are those of a run without
    the loss. Bounded: a block that LOSSES_PER_BLOCK actors died working on, or LOSSES_STARTING actors lost while
    starting, ends the run."""

    def __init__(self, ray, actor_class: type, size: int, threads: int, stats: dict[str, ActorStats], options: dict):
        self._ray = ray
        self._actor_class = actor_class
        self._size = size
        self._threads = threads
        self._stats = stats
        self._options = options
        self._members: list[_Member] = []
        self._pending: deque[_Block] = deque()  # in block order
        self._ready_items = 0
        self._remote = None  # the actor class as Ray runs it
        self._lost_starting = 0
        # Ray's kinds of loss: the actor's process or node died (RayActorError), or a finished block's result
        # went with its node (ObjectLostError).
        self._lost = (ray.exceptions.RayActorError, ray.exceptions.ObjectLostError)

    def map(self, blocks: Iterator[B], payload: Callable[[B], list]) -> Iterator[tuple[B, list]]:
        """(block, results of `payload(block)` from an actor) for each block, in order."""
        if not self._members:
            # The actors start only now, once the input is open and the output checked: a bad one costs no load.
            self._remote = self._ray.remote(num_cpus=self._threads)(self._actor_class)
            # The first actors take blocks at once: they wait in Ray's queue while the model loads.
            self._members = [self._start(joined=True) for _ in range(self._size)]
        self._fill(blocks, payload)
        while self._pending:
            block = self._pending[0]
            results = self._results(block)
            self._pending.popleft()
            if not block.work:
                self._ready_items -= len(block.items)
            self._fill(blocks, payload)
            yield block.items, results

    def drain(self) -> list[tuple[B, list]]:
        """Wait for the blocks in flight that `map` did not yield, and return them with their results."""
        drained = []
        while self._pending:
            block = self._pending[0]
            drained.append((block.items, self._results(block)))
            self._pending.popleft()
        self._ready_items = 0
        return drained

    def _fill(self, blocks: Iterator[B], payload: Callable[[B], list]) -> None:
        # Blocks that are ready at once (nothing to send) are read ahead too, up to a bound, so a long stretch of
        # them never keeps the actors waiting.
        while (sum(member.queued for member in self._members) < QUEUED_PER_ACTOR * self._size
               and self._ready_items < MAX_READY_ITEMS):
            items = next(blocks, None)
            if items is None:
                return
            block = _Block(items, payload(items))
            self._pending.append(block)
            if block.work:
                self._submit(block)
            else:
                self._ready_items += len(items)

    def _start(self, joined: bool) -> _Member:
        handle = self._remote.remote(**self._options)
        return _Member(handle, handle.name.remote(), joined)

    def _submit(self, block: _Block) -> None:
        member = self._choose()
        block.member, block.ref = member, member.handle.work.remote(block.work)
        member.queued += 1

    def _choose(self) -> _Member:
        """The actor with the fewest blocks queued, among those taking blocks."""
        while True:
            for member in [m for m in self._members if not m.joined]:
                ready, _ = self._ray.wait([member.named], timeout=0)
                if ready:
                    self._join(member)
            joined = [member for member in self._members if member.joined]
            if joined:
                return min(joined, key=lambda member: member.queued)
            # Every actor was lost: the blocks wait until a replacement has loaded its model.
            self._ray.wait([member.named for member in self._members], num_returns=1)

    def _join(self, member: _Member) -> None:
        try:
            self._ray.get(member.named)
        except self._lost as e:
            _raise_if_bug(e)
            self._replace(member, None)
            return
        member.joined = True

    def _results(self, block: _Block) -> list:
        if not block.work:
            return []
        while True:
            try:
                failure, results = self._ray.get(block.ref)
                break
            except self._lost as e:
                _raise_if_bug(e)
                # The block at the head is the oldest one its actor had: the one it was working on.
                self._replace(block.member, block)
        block.member.queued -= 1
        if failure is not None:
            raise ModelError(failure[0], options=failure[1])
        values = []
        for value, info in results:
            stats = self._stats.setdefault(info["actor"], ActorStats())
            stats.records += 1
            stats.tokens += info["tokens"]
            stats.seconds += info["seconds"]
            stats.cpu_seconds += info["cpu_seconds"]
            stats.peak_rss_mb = max(stats.peak_rss_mb, info["rss_mb"])
            stats.ran = info["ran"]
            values.append(value)
        return values

    def _replace(self, member: _Member, working: _Block | None) -> None:
        """`member` was lost while working on `working` (None: while it was starting): a new actor starts in its
        place, and the blocks it had go to the others."""
        self._ray.kill(member.handle)  # an actor Ray only lost touch with stops too
        try:
            name = self._ray.get(member.named)
        except self._lost as e:
            # It was lost before it was up (loading its model, mostly): the loss says nothing about its blocks.
            name, working = f"{getattr(e, 'actor_id', None)} (lost while starting)", None
            self._lost_starting += 1
            if self._lost_starting >= LOSSES_STARTING:
                raise ModelError(f"{self._lost_starting} Ray actors died while starting, loading the model (out of "
                                 "memory on their nodes?); give each actor a node with room for the model, or fewer "
                                 "actors per node") from None
        self._stats.setdefault(name, ActorStats()).lost = True
        if working is not None:
            working.losses += 1
            if working.losses >= LOSSES_PER_BLOCK:
                raise InputError(f"{working.losses} Ray actors in turn died working on {_records(working.items)} "
                                 "(out of memory on their nodes, or a crash in llama.cpp); run those records "
                                 "without Ray to find the one at fault, or leave them out")
        self._members[self._members.index(member)] = self._start(joined=False)
        for block in self._pending:
            if block.member is member:
                self._submit(block)

    def close(self) -> None:
        for member in self._members:
            self._ray.kill(member.handle)
        self._members = []
        self._pending.clear()
        self._ready_items = 0


@dataclass(eq=False)
class _Member:
    """One actor of a pool: its handle, the reply to its first call, and the blocks queued on it."""

    handle: object
    named: object  # -> "host:pid", once the actor is up: its model loaded
    joined: bool  # whether it takes blocks
    queued: int = 0


@dataclass(eq=False)
class _Block:
    """A block of work on its way through a pool."""

    items: list  # as `map` was given it
    work: list  # what an actor computes (payload(items)); empty: ready at once
    member: _Member | None = None  # the actor working on it
    ref: object = None  # its results, to come
    losses: int = 0  # actors lost while working on it


def _raise_if_bug(error: Exception) -> None:
    """An actor whose class failed to import or whose constructor raised is a bug, not a loss: it keeps its
    traceback."""
    if getattr(error, "actor_init_failed", False):
        raise error


def _records(items: list) -> str:
    """The input records of a block (records or jobs, each with its record number), as runs: "records 3, 7-9"."""
    numbers = [item.number for item in items]
    runs = []
    for number in numbers:
        if runs and number == runs[-1][1] + 1:
            runs[-1][1] = number
        else:
            runs.append([number, number])
    spans = ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)
    return f"record {spans}" if len(numbers) == 1 else f"records {spans}"


class _Actor:
    """One Ray actor: one loaded model; a list of work items in, their results out, in order, each with what it
    cost. A model the actor cannot load is reported with the first call, as the one-line error it is."""

    def __init__(self, **options):
        self._name = f"{socket.gethostname()}:{os.getpid()}"
        self.failure: tuple[str, tuple[str, ...]] | None = None
        try:
            self._load(**options)
        except LocalscoreError as e:
            # Ray wraps what an actor raises in its own error; the reason travels as data, and the driver raises
            # it as the one-line error it is.
            self.failure = (f"on {socket.gethostname()}: {e.template}", e.options)

    def name(self) -> str:
        return self._name

    def _load(self, **options) -> None:
        raise NotImplementedError

    def _results(self, items: list) -> Iterator[tuple[object, int]]:
        """Each item's result and the tokens it took."""
        raise NotImplementedError

    def work(self, items: list) -> tuple[tuple[str, tuple[str, ...]] | None, list[tuple[object, dict]]]:
        if self.failure is not None:
            return self.failure, []
        results = []
        clock, cpu = time.perf_counter(), time.process_time()
        for value, tokens in self._results(items):
            now, now_cpu = time.perf_counter(), time.process_time()
            results.append((value, {"actor": self._name, "tokens": tokens, "seconds": now - clock,
                                    "cpu_seconds": now_cpu - cpu, "rss_mb": _peak_rss_mb(), "ran": self.ran}))
            clock, cpu = now, now_cpu
        return None, results


class _ScoreActor(_Actor):
    """Blocks of records in, their Scored results out."""

    def _load(self, model_path: str | os.PathLike | None, scoring: ScorerOptions, run: RunOptions) -> None:
        from ..llama.scorer import Scorer
        from .default_model import default_model

        self.scorer = Scorer.from_path(model_path or default_model(scoring.scorer), scoring, run)
        self.ran = self.scorer.engine.setup()

    def _results(self, records: list[Record]) -> Iterator[tuple[Scored, int]]:
        for scored in score_records(self.scorer, records):
            yield scored, scored.tokens


class _EmbedActor(_Actor):
    """Token id lists in, their embeddings out."""

    def _load(self, model_path: str | os.PathLike, run: RunOptions) -> None:
        from ..llama.embedder import Embedder

        self.embedder = Embedder.from_path(model_path, run)
        self.ran = self.embedder.setup()

    def _results(self, ids_lists: list[list[int]]) -> Iterator[tuple[np.ndarray, int]]:
        for ids in ids_lists:
            yield self.embedder.embed_ids(ids), len(ids)


class RayEmbedStep:
    """The embedding step (embed_step.EmbedStep) on Ray actors: blocks of jobs go to the actors, the vectors
    come back in job order, and only jobs without a vector are sent."""

    def __init__(self, pool: _ActorPool, actors: dict[str, ActorStats], block: int | None, size: int):
        self._pool = pool
        self.actors = actors
        self._block = block
        self._size = size

    def map(self, jobs: Iterable[Job], count: int | None = None) -> Iterator[Job]:
        rows = self._block or _block_rows(count, self._size)
        for block, vectors in self._pool.map(_blocks(iter(jobs), rows), _to_compute):
            yield from _filled(block, vectors)

    def drain(self) -> list[Job]:
        return [job for block, vectors in self._pool.drain() for job in _filled(block, vectors)]

    def ran(self) -> tuple[dict, ...]:
        return _ran(self.actors)


def _ran(actors: dict[str, ActorStats]) -> tuple[dict, ...]:
    """What ran the model on the actors that did work: one entry per distinct setup (unlike nodes: several)."""
    return distinct(stats.ran for stats in actors.values() if stats.ran is not None)


def _to_compute(block: list[Job]) -> list[list[int]]:
    return [job.ids for job in block if job.vector is None]


def _filled(block: list[Job], vectors: list[np.ndarray]) -> list[Job]:
    computed = iter(vectors)
    for job in block:
        if job.vector is None:
            job.vector, job.computed = next(computed), True
    return block


@contextlib.contextmanager
def ray_embed_step(model_path: str | os.PathLike, run: RunOptions, on_ray: RayOptions, *,
                   block: int | None) -> Iterator[RayEmbedStep]:
    """Embedding by `on_ray.actors` Ray actors that each load `model_path` (a path every node can read) as `run`
    says, with `run.threads` threads (default 1), on the cluster this process is connected to, or the one
    `RAY_ADDRESS` names, or a new local one."""
    run = replace(run, threads=run.threads or DEFAULT_RAY_THREADS)
    ray = _connect(run.verbose)
    stats: dict[str, ActorStats] = {}
    pool = _ActorPool(ray, _EmbedActor, on_ray.actors, run.threads, stats,
                      dict(model_path=os.fspath(model_path), run=run))
    try:
        yield RayEmbedStep(pool, stats, block, on_ray.actors)
    finally:
        pool.close()


def _block_rows(count: int | None, actors: int) -> int:
    if count is None:
        return UNKNOWN_COUNT_BLOCK_ROWS
    return max(1, min(MAX_BLOCK_ROWS, math.ceil(count / (BLOCKS_PER_ACTOR * actors))))


def _blocks(records: Records, rows: int) -> Iterator[list[Record]]:
    while block := list(itertools.islice(records, rows)):
        yield block


def _connect(verbose: bool):
    """Ray, connected to a cluster (see score_on_ray)."""
    ray = require("ray", "ray", "running on Ray")
    if not ray.is_initialized():
        ray.init(logging_level=logging.INFO if verbose else logging.ERROR, log_to_driver=verbose)
        if not verbose:
            # Ray prints the raylet's notices (a worker that died, with its paragraph of likely causes) from a
            # thread of its own, to stdout, whatever log_to_driver says: the output, when that is stdout. This
            # switch, which Ray's own debugger turns, is the one place that quiets them.
            from ray._private import worker

            worker._worker_logs_enabled = False
    return ray


def _peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux
