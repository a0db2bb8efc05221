"""Score a dataset on a Ray cluster with Ray Data: records read with `ray.data`, scored by a pool of actors that
each hold one loaded model, results written in input order to one Parquet file by the driver."""

from __future__ import annotations

import logging
import math
import os
import resource
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .batch import score_records
from .errors import InputError, LocalscoreError, ModelError
from .extras import require
from .output import open_writer, refuse_input_as_output
from .progress import Progress, silent
from .records import make_record, result_fields
from .runner import Summary
from .templates import TEMPLATES, Template

if TYPE_CHECKING:
    import pyarrow as pa

# Helper columns, never written: the row id added at reading, and what an actor reports about each record.
ROW = "__localscore_row"
INFO = "__localscore"
FAILURE = "__localscore_failure"
# Ray Data hands each actor whole blocks, one per call: at least this many blocks per actor, so that the last one
# to finish runs little past the others, and at most this many records per block, so that no call runs for hours.
BLOCKS_PER_ACTOR = 4
MAX_BLOCK_ROWS = 256


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


def score_on_ray(input_path: str | os.PathLike, output: str | os.PathLike, *,
                 model_path: str | os.PathLike | None = None, scorer: str = "quality", actors: int = 1,
                 threads: int = 1, ctx: int | None = None, too_long: str = "truncate", pack: int = 1,
                 strict: bool = False, progress: Progress | None = None, verbose: bool = False) -> RaySummary:
    """Score every record of `input_path` (JSON Lines, a JSON array, or Parquet when the name ends in .parquet) on
    the Ray cluster this process is connected to, or the one `RAY_ADDRESS` names, or a new local one; write
    `output` in input order through the same writer as a single-process run (Parquet for a .parquet name, else
    JSON Lines), every input column kept plus the `<scorer>_*` result columns.

    `actors` actors each load `model_path` (a path every node can read; None: each node's default-model cache)
    and reserve `threads` CPUs, which is also llama.cpp's thread count. Bad records get `<scorer>_error`; with
    `strict` the first one in input order raises InputError. `progress` is called as the driver writes each block.
    """
    ray = _import_ray()
    if scorer not in TEMPLATES:
        raise InputError(f"unknown scorer {scorer!r}; choose {' or '.join(TEMPLATES)}")
    if actors < 1 or threads < 1:
        raise InputError(f"actors and threads must be at least 1, got {actors} and {threads}")
    template = TEMPLATES[scorer]
    if not ray.is_initialized():
        ray.init(logging_level=logging.INFO if verbose else logging.WARNING)
    summary = RaySummary()
    start = time.perf_counter()
    dataset = _read(ray, input_path)
    context = dataset.context
    # Blocks leave each stage in input order; the row id lets the driver check that while it writes.
    context.execution_options.preserve_order = True
    context.enable_progress_bars = False  # the caller's `progress` shows the run
    context.print_on_execution_start = verbose
    refuse_input_as_output(input_path, output)
    try:
        # Read (and number) everything before the actors start: they hold the CPUs they ask for, and a read
        # task waiting for one would wait forever. The records are small next to the time they take to score.
        dataset = dataset.with_column(ROW, ray.data.expressions.monotonically_increasing_id()).materialize()
    except ray.exceptions.RayTaskError as e:
        raise _read_error(e, input_path) from None
    report = progress or silent
    with open_writer(output, schema=_parquet_schema(dataset, input_path, output, template)) as out:
        total = dataset.count()
        report(0, total, 0)
        per_block = max(1, min(MAX_BLOCK_ROWS, math.ceil(total / (BLOCKS_PER_ACTOR * actors))))
        dataset = dataset.repartition(target_num_rows_per_block=per_block).materialize()
        blocks = dataset.map_batches(
            _ScoreBatches,
            fn_constructor_kwargs=dict(model_path=model_path, scorer=scorer, threads=threads, ctx=ctx,
                                       too_long=too_long, pack=pack, verbose=verbose),
            compute=ray.data.ActorPoolStrategy(size=actors),
            num_cpus=threads,
            batch_size=None,
            batch_format="pyarrow",
        ).iter_batches(batch_size=None, batch_format="pyarrow")
        last_row = -1
        for block in blocks:
            if FAILURE in block.column_names:
                raise ModelError(block[FAILURE][0].as_py())
            if not block.num_rows:
                continue
            rows = block[ROW].to_pylist()
            if any(b <= a for a, b in zip([last_row, *rows], rows)):
                raise RuntimeError(f"Ray Data returned rows out of input order: {last_row} then {rows}")
            last_row = rows[-1]
            results = block.drop_columns([ROW, INFO])
            if strict:
                _check_strict(results, template, summary.records)
            _count(summary, results, block[INFO].to_pylist(), template)
            for row in results.to_pylist():
                # Ray reads JSON as a table, so a field one record lacks is null in the others' rows: as in the
                # actors, a null is a field the record does not have.
                out.write({key: value for key, value in row.items() if value is not None})
            report(summary.records, total, summary.tokens)
        out.finish()
    summary.seconds = time.perf_counter() - start
    return summary


class _ScoreBatches:
    """The Ray Data callable class: one actor, one loaded model, batches of rows in and result rows out."""

    def __init__(self, model_path: str | os.PathLike | None, scorer: str, threads: int, ctx: int | None,
                 too_long: str, pack: int, verbose: bool):
        from .models import default_model
        from .scorer import Scorer

        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self.template = TEMPLATES[scorer]
        self.failure: str | None = None
        try:
            model = model_path or default_model(scorer)
            self.scorer = Scorer.from_path(model, scorer, ctx=ctx, threads=threads, too_long=too_long, pack=pack,
                                           verbose=verbose)
        except LocalscoreError as e:
            # Ray Data wraps what a UDF raises and drops the original exception, so the reason travels as data
            # and the driver raises it as the one-line error it is.
            self.failure = f"on {socket.gethostname()}: {e}"

    def __call__(self, batch: pa.Table) -> pa.Table:
        import pyarrow as pa

        if self.failure is not None:
            return pa.table({FAILURE: [self.failure]})
        rows = batch[ROW].to_pylist()
        # A table has a value (maybe null) in every column; a null is read as an absent field, so that a row of a
        # mixed Alpaca/ShareGPT table has one shape. The record number only ever shows in `strict` messages, which
        # the driver words in input order.
        records = [make_record(row + 1, {k: v for k, v in data.items() if v is not None}, self.template)
                   for row, data in zip(rows, batch.drop_columns([ROW]).to_pylist())]
        outputs = []
        clock, cpu = time.perf_counter(), time.process_time()
        for row, scored in zip(rows, score_records(self.scorer, records)):
            now, now_cpu = time.perf_counter(), time.process_time()
            outputs.append(scored.output | {ROW: row, INFO: {"actor": self.name, "tokens": scored.tokens,
                                                             "seconds": now - clock, "cpu_seconds": now_cpu - cpu,
                                                             "rss_mb": _peak_rss_mb()}})
            clock, cpu = now, now_cpu
        return pa.Table.from_pylist(outputs, schema=_output_schema(batch.schema, self.template))


def _parquet_schema(dataset, input_path: str | os.PathLike, output: str | os.PathLike, template: Template):
    """A Parquet input's own column types for Parquet output, as a single-process run keeps them; None (types
    inferred from the results, as a single-process run does for JSON input) otherwise."""
    if Path(input_path).suffix.lower() != ".parquet" or Path(output).suffix.lower() != ".parquet":
        return None
    from .parquet_output import output_schema

    schema = dataset.schema().base_schema
    return output_schema(schema.remove(schema.get_field_index(ROW)), template)


def _import_ray():
    ray = require("ray", "ray", "scoring on Ray")
    require("ray.data.expressions", "ray", "scoring on Ray")  # Ray Data, which `import ray` does not load
    return ray


def _read(ray, input_path: str | os.PathLike):
    """The input as a Ray dataset (not read yet)."""
    path = os.fspath(input_path)
    if "://" not in path and not os.path.exists(path):
        raise InputError(f"cannot read {path}: no such file or folder")
    if path.endswith(".parquet"):
        return ray.data.read_parquet(path)
    return ray.data.read_json(path)  # JSON Lines, or a JSON array (Ray falls back to json.load)


def _output_schema(schema: pa.Schema, template: Template) -> pa.Schema:
    """The input's columns (a result column already there is replaced), the result columns, the helper columns."""
    import pyarrow as pa

    score, scores, truncated, error = result_fields(template)
    kept = [f for f in schema if f.name not in (score, scores, truncated, error, ROW)]
    info = pa.struct([("actor", pa.string()), ("tokens", pa.int64()), ("seconds", pa.float64()),
                      ("cpu_seconds", pa.float64()), ("rss_mb", pa.float64())])
    return pa.schema([*kept, pa.field(score, pa.float64()), pa.field(scores, pa.list_(pa.float64())),
                      pa.field(truncated, pa.bool_()), pa.field(error, pa.string()), pa.field(ROW, pa.int64()),
                      pa.field(INFO, info)])


def _peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


def _check_strict(results: pa.Table, template: Template, before: int) -> None:
    errors = results[result_fields(template)[3]]
    if errors.null_count < len(errors):
        index = next(i for i, error in enumerate(errors.to_pylist()) if error is not None)
        raise InputError(f"record {before + index + 1}: {errors[index].as_py()} "
                         "({strict} stops at the first bad record)", options=["strict"])


def _count(summary: RaySummary, results: pa.Table, infos: list[dict], template: Template) -> None:
    import pyarrow.compute as pc

    score, scores, truncated, error = result_fields(template)
    errored = results.num_rows - results[error].null_count
    summary.records += results.num_rows
    summary.errored += errored
    summary.scored += results.num_rows - errored
    summary.turns += (results.num_rows - results[score].null_count) + (pc.sum(pc.list_value_length(results[scores]))
                                                                       .as_py() or 0)
    summary.truncated += pc.sum(results[truncated]).as_py() or 0
    for info in infos:
        stats = summary.actors.setdefault(info["actor"], ActorStats())
        stats.records += 1
        stats.tokens += info["tokens"]
        stats.seconds += info["seconds"]
        stats.cpu_seconds += info["cpu_seconds"]
        stats.peak_rss_mb = max(stats.peak_rss_mb, info["rss_mb"])
        summary.tokens += info["tokens"]


def _read_error(error: Exception, input_path: str | os.PathLike) -> Exception:
    """A read task's failure (a line that is not JSON, a field whose type changes between records) as the user's
    one-line error; anything else stays the bug it is."""
    import json

    import pyarrow as pa

    cause = getattr(error, "cause", None)
    if not isinstance(cause, (pa.ArrowException, json.JSONDecodeError)):
        return error
    reason = str(cause).strip().splitlines()[0]
    return InputError(f"{os.fspath(input_path)}: Ray Data cannot read it as a table ({reason}); every record must be "
                      "a JSON object whose fields keep one type. Without {ray}, localscore reports such records "
                      "one by one", options=["ray"])
