"""Shards for job arrays (SLURM, Kubernetes): `shard="I/N"` scores (or embeds) every N-th record from the I-th
(0-based), round robin, so long and short records spread evenly and nothing needs counting up front. Each shard's
output records, beside what made it (forms/provenance.py), its slice: the shard, the number of records in the
whole input and a digest of the whole input. `merge_shards` checks them (every shard once, one input, one scorer
or embedder: the same identity) and the row counts, and interleaves the outputs back into exactly the single run's
output, provenance included: records for scores, `.npy` rows for embeddings."""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..errors import InputError, OutputError
from ..forms.embeddings_file import DTYPE, EmbeddingsWriter, read_embeddings
from ..forms.output import output_target
from ..forms.provenance import Provenance, read_provenance, sidecar
from ..forms.records import Record, Records
from ..forms.writers import open_writer

_SPEC = re.compile(r"(\d+)/(\d+)")
# Rows of merged embeddings built in memory at a time (~16 MB at 7B width).
_MERGE_ROWS = 1024


@dataclass(frozen=True)
class Shard:
    index: int  # 0-based
    count: int

    @classmethod
    def parse(cls, spec: str) -> Shard:
        """`I/N` with 0 <= I < N."""
        match = _SPEC.fullmatch(spec.strip())
        if not match or not int(match[1]) < int(match[2]):
            raise InputError(f"shard {spec!r} must be I/N with 0 <= I < N, e.g. 0/4 for the first of four")
        return cls(int(match[1]), int(match[2]))

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


class ShardRecords(Records):
    """The records of one shard, taken from all of `records`, which it counts and digests on the way."""

    def __init__(self, records: Records, shard: Shard):
        def count() -> int | None:
            whole = records.count
            return None if whole is None else len(range(shard.index, whole, shard.count))

        super().__init__(records.name, self._take(records), schema=records.schema, count=count)
        self.total = 0  # records of the whole input read so far
        self._shard = shard
        self._digest = hashlib.sha256()

    def _take(self, records: Records) -> Iterator[Record]:
        for record in records:
            self.total += 1
            self._digest.update(json.dumps([record.number, record.data, record.raw], sort_keys=True,
                                           default=str).encode() + b"\n")
            if (self.total - 1) % self._shard.count == self._shard.index:
                yield record

    def slice_info(self) -> dict:
        """What an output of this shard records of its slice (see module doc); once every record was read."""
        return {"shard": self._shard.index, "shards": self._shard.count, "records": self.total,
                "input": self._digest.hexdigest()}


def merge_shards(outputs: list[str | os.PathLike], output: str | os.PathLike) -> int:
    """Interleave the outputs of shards 0..N-1 (any order, each recording its slice) into `output`, which is then
    exactly the single run's output. Raises InputError, before writing anything, for a missing or repeated shard,
    shards of another input, scorer, embedder or model, an output that is no shard, or one whose result count is
    not its slice's. Returns the number of records."""
    shards = {}
    first: tuple[Path, Provenance] | None = None
    made: Provenance | None = None
    for path in map(Path, outputs):
        info = _read_shard(path)
        if first is None:
            first, made = (path, info), replace(info, shard=None)
        elif _run(info) != _run(first[1]):
            raise InputError(f"{path} is a shard of another input, split, scorer or embedder than {first[0]}; merge "
                             "the shards of one run")
        elif (difference := info.difference(first[1], but=os.fspath(first[0]))) is not None:
            raise InputError(f"{path} was {difference}; merge the shards of one run")
        made = made.joined(info)
        if info.shard["shard"] in shards:
            raise InputError(f"shard {info.shard['shard']}/{info.shard['shards']} is given twice: "
                             f"{shards[info.shard['shard']]} and {path}")
        shards[info.shard["shard"]] = path
    if first is None:
        raise InputError("no shard outputs to merge")
    total, count = first[1].shard["records"], first[1].shard["shards"]
    missing = [f"{i}/{count}" for i in range(count) if i not in shards]
    if missing:
        raise InputError(f"shard {', '.join(missing)} missing: give every shard's output to merge")
    if any(output_target(output).path == output_target(path).path for path in shards.values()):
        raise OutputError(f"output {os.fspath(output)} is one of the shard outputs; give another file")
    paths = [shards[i] for i in range(count)]
    embeddings = made.last.kind == "embed"
    for index, path in enumerate(paths):
        expected = len(range(index, total, count))
        got = len(read_embeddings(path)) if embeddings else _count_rows(path)
        if got != expected:
            raise InputError(f"{path} has {got:,} results but shard {index}/{count} of {total:,} records has "
                             f"{expected:,}: it is incomplete or was changed; rerun that shard")
    if embeddings:
        _merge_embeddings(paths, output, total, made)
        return total
    readers = [_rows(path) for path in paths]
    with open_writer(output, schema=_common_schema(paths)) as writer:
        for number in range(total):
            writer.write(next(readers[number % count]))
        writer.finish(made)
    return total


def _merge_embeddings(paths: list[Path], output: str | os.PathLike, total: int, made: Provenance) -> None:
    """Row n of the merged `.npy` is row n // N of shard n % N; written a bounded block of rows at a time."""
    shards = [read_embeddings(path) for path in paths]
    count, dim = len(shards), shards[0].shape[1]
    if any(shard.shape[1] != dim for shard in shards):
        raise InputError("the embedding shards have different widths: merge the shards of one run")
    step = count * max(1, _MERGE_ROWS // count)  # a multiple of N: every block starts at shard 0
    with EmbeddingsWriter(output, dim) as writer:
        for start in range(0, total, step):
            block = np.empty((min(step, total - start), dim), dtype=DTYPE)
            for index, shard in enumerate(shards):
                rows = block[index::count]
                rows[:] = shard[start // count:start // count + len(rows)]
            writer.write(block)
        writer.finish(made)


def _read_shard(path: Path) -> Provenance:
    info = read_provenance(path)
    if info is None or info.shard is None:
        what = f"has no {sidecar(path).name}" if info is None else "records no shard"
        if info is None and path.suffix.lower() == ".parquet":
            what = "records no provenance"
        raise InputError(f"{path} {what}: it is not the finished output of a run with {{shard}}", options=["shard"])
    return info


def _run(info: Provenance) -> tuple:
    """What every shard of one run shares, besides what made it."""
    return (info.shard["shards"], info.shard["records"], info.shard["input"], info.last.kind,
            info.last.settings.get("scorer"))


def _rows(path: Path) -> Iterator[dict]:
    if path.suffix.lower() == ".parquet":
        from ..forms.parquet_output import arrow

        _, pq = arrow()
        with pq.ParquetFile(path) as parquet:
            for batch in parquet.iter_batches():
                yield from batch.to_pylist()
        return
    with open(path, "rb") as f:
        for line in f:
            yield json.loads(line)


def _count_rows(path: Path) -> int:
    if path.suffix.lower() == ".parquet":
        from ..forms.parquet_output import arrow

        return arrow()[1].ParquetFile(path).metadata.num_rows
    with open(path, "rb") as f:
        return sum(1 for _ in f)


def _common_schema(paths: list[Path]) -> object:
    """The shards' Parquet schema when they share one (a table input's: kept exactly); None to infer."""
    if not all(path.suffix.lower() == ".parquet" for path in paths):
        return None
    from ..forms.parquet_output import arrow

    _, pq = arrow()
    schemas = [pq.read_schema(path) for path in paths]
    # Without their metadata: what made the merged output is written anew.
    return schemas[0].remove_metadata() if all(schema.equals(schemas[0]) for schema in schemas) else None

