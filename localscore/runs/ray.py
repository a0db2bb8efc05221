"""Score on a Ray cluster: the same run as one process (reader, resumable writer in input order, summary, strict
check, shards: score.run_scoring), with the scoring step done by a pool of Ray actors that each hold one loaded
model. The driver reads the input through the reader and hands the actors blocks of records, a bounded number at
a time, so memory stays bounded whatever the input's size and form."""

from __future__ import annotations

import itertools
import logging
import math
import os
import resource
import socket
import sys
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field

from ..deita.templates import TEMPLATES
from ..errors import InputError, LocalscoreError, ModelError
from ..extras import require
from ..forms.records import Record, Records
from .batch import Scored, score_records
from .progress import Progress
from .score import Summary, run_scoring

# Each actor gets at least this many blocks, so that the last one to finish runs little past the others, and
# at most this many records per block, so that no call runs for hours; blocks of an input of unknown length
# (a hub dataset streamed) have the unknown size.
BLOCKS_PER_ACTOR = 4
MAX_BLOCK_ROWS = 256
UNKNOWN_COUNT_BLOCK_ROWS = 32
# Blocks queued per actor: one being scored, one waiting, so an actor never idles between blocks.
QUEUED_PER_ACTOR = 2


@dataclass
class ActorStats:
    """What one actor did: records and prompt tokens scored, the wall and CPU seconds spent scoring them (CPU time
    tells a slow node from a busy one), its peak memory."""

    records: int = 0
    tokens: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    peak_rss_mb: float = 0.0

    def line(self, name: str) -> str:
        tps = self.tokens / self.seconds if self.seconds > 0 else 0.0
        return (f"actor {name}: {self.records:,} records, {self.tokens:,} tokens in {self.seconds:.1f} s of scoring, "
                f"{tps:,.0f} tokens/s, peak RSS {self.peak_rss_mb:,.0f} MB")


@dataclass
class RaySummary(Summary):
    actors: dict[str, ActorStats] = field(default_factory=dict)  # "host:pid" -> its work

    def lines(self) -> list[str]:
        return [*(actor.line(name) for name, actor in self.actors.items()), self.line()]


def score_on_ray(input_path: str | os.PathLike, output: str | os.PathLike | None, *,
                 model_path: str | os.PathLike | None = None, scorer: str = "quality", actors: int = 1,
                 threads: int = 1, ctx: int | None = None, too_long: str = "truncate", pack: int = 1,
                 strict: bool = False, progress: Progress | None = None, verbose: bool = False, resume: bool = False,
                 split: str = "train", config: str | None = None, shard: str | None = None) -> RaySummary:
    """Score every record of `input_path` (every input form reader.read_records reads) on the Ray cluster this
    process is connected to, or the one `RAY_ADDRESS` names, or a new local one; the output, resuming, strict
    and shard are those of a single-process run (score.run_scoring), byte for byte.

    `actors` actors each load `model_path` (a path every node can read; None: each node's default-model cache)
    and reserve `threads` CPUs, which is also llama.cpp's thread count.
    """
    ray = _import_ray()
    if scorer not in TEMPLATES:
        raise InputError(f"unknown scorer {scorer!r}; choose {' or '.join(TEMPLATES)}")
    if actors < 1 or threads < 1:
        raise InputError(f"actors and threads must be at least 1, got {actors} and {threads}")
    if not ray.is_initialized():
        ray.init(logging_level=logging.INFO if verbose else logging.WARNING)
    summary = RaySummary()
    pool = _ActorPool(ray, actors, threads, summary,
                      dict(model_path=model_path, scorer=scorer, threads=threads, ctx=ctx, too_long=too_long,
                           pack=pack, verbose=verbose))
    try:
        run_scoring(input_path, output, TEMPLATES[scorer], pool.score, summary, resume=resume, strict=strict,
                    progress=progress, split=split, config=config, shard=shard)
    finally:
        pool.close()
    return summary


class _ActorPool:
    """The scoring step on Ray: blocks of records to the actors, their results back in input order."""

    def __init__(self, ray, size: int, threads: int, summary: RaySummary, options: dict):
        self._ray = ray
        self._size = size
        self._threads = threads
        self._summary = summary
        self._options = options
        self._actors: list = []

    def score(self, records: Records) -> Iterator[Scored]:
        # The actors start only now, once the input is open and the output checked: a bad one costs no model load.
        actor = self._ray.remote(num_cpus=self._threads)(_ScoreActor)
        self._actors = [actor.remote(**self._options) for _ in range(self._size)]
        blocks = _blocks(records, _block_rows(records.count, self._size))
        pending: deque = deque()  # (result ref, actor index), in input order
        queued = [0] * self._size

        def submit(block: list[Record]) -> None:
            index = min(range(self._size), key=queued.__getitem__)
            pending.append((self._actors[index].score.remote(block), index))
            queued[index] += 1

        for block in itertools.islice(blocks, QUEUED_PER_ACTOR * self._size):
            submit(block)
        while pending:
            ref, index = pending.popleft()
            failure, results = self._ray.get(ref)
            queued[index] -= 1
            if failure is not None:
                raise ModelError(failure[0], options=failure[1])
            block = next(blocks, None)
            if block is not None:
                submit(block)
            for scored, info in results:
                self._count(info)
                yield scored

    def _count(self, info: dict) -> None:
        stats = self._summary.actors.setdefault(info["actor"], ActorStats())
        stats.records += 1
        stats.tokens += info["tokens"]
        stats.seconds += info["seconds"]
        stats.cpu_seconds += info["cpu_seconds"]
        stats.peak_rss_mb = max(stats.peak_rss_mb, info["rss_mb"])

    def close(self) -> None:
        for actor in self._actors:
            self._ray.kill(actor)
        self._actors = []


class _ScoreActor:
    """One Ray actor: one loaded model; blocks of records in, their Scored results out, in order."""

    def __init__(self, model_path: str | os.PathLike | None, scorer: str, threads: int, ctx: int | None,
                 too_long: str, pack: int, verbose: bool):
        from ..llama.scorer import Scorer
        from .default_model import default_model

        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self.failure: tuple[str, tuple[str, ...]] | None = None
        try:
            model = model_path or default_model(scorer)
            self.scorer = Scorer.from_path(model, scorer, ctx=ctx, threads=threads, too_long=too_long, pack=pack,
                                           verbose=verbose)
        except LocalscoreError as e:
            # Ray wraps what an actor raises in its own error; the reason travels as data, and the driver raises
            # it as the one-line error it is.
            self.failure = (f"on {socket.gethostname()}: {e.template}", e.options)

    def score(self, records: list[Record]) -> tuple[tuple[str, tuple[str, ...]] | None, list[tuple[Scored, dict]]]:
        if self.failure is not None:
            return self.failure, []
        results = []
        clock, cpu = time.perf_counter(), time.process_time()
        for scored in score_records(self.scorer, records):
            now, now_cpu = time.perf_counter(), time.process_time()
            results.append((scored, {"actor": self.name, "tokens": scored.tokens, "seconds": now - clock,
                                     "cpu_seconds": now_cpu - cpu, "rss_mb": _peak_rss_mb()}))
            clock, cpu = now, now_cpu
        return None, results


def _block_rows(count: int | None, actors: int) -> int:
    if count is None:
        return UNKNOWN_COUNT_BLOCK_ROWS
    return max(1, min(MAX_BLOCK_ROWS, math.ceil(count / (BLOCKS_PER_ACTOR * actors))))


def _blocks(records: Records, rows: int) -> Iterator[list[Record]]:
    while block := list(itertools.islice(records, rows)):
        yield block


def _import_ray():
    return require("ray", "ray", "scoring on Ray")


def _peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux
