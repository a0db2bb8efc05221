"""Score a whole file: records -> prompts -> token ids -> engine -> scores -> output records, one line per input
record, in order, resumable, with a summary at the end."""

from __future__ import annotations

import itertools
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator

from .batch import Scored, score_records
from .errors import InputError, LocalscoreError, OutputError
from .output import Writer, open_writer, output_target, refuse_input_as_output
from .progress import Progress, silent
from .records import Record, read_records
from .scorer import Scorer
from .shards import Shard, ShardRecords, discard_sidecar
from .tables import is_table_source
from .templates import Template


@dataclass
class Summary:
    records: int = 0
    turns: int = 0
    scored: int = 0
    errored: int = 0
    truncated: int = 0
    tokens: int = 0
    resumed: int = 0
    seconds: float = 0.0

    def add(self, scored: Scored) -> None:
        self.records += 1
        self.errored += scored.error is not None
        self.scored += scored.error is None
        self.turns += scored.turns
        self.tokens += scored.tokens
        self.truncated += scored.truncated

    def line(self) -> str:
        tps = self.tokens / self.seconds if self.seconds > 0 else 0.0
        resumed = f", {self.resumed:,} resumed" if self.resumed else ""
        return (f"{self.records:,} records ({self.turns:,} turns, {self.tokens:,} tokens) in {self.seconds:.1f} s, "
                f"{tps:,.0f} tokens/s: {self.scored:,} scored, {self.errored:,} errored, "
                f"{self.truncated:,} truncated{resumed}")

    def lines(self) -> list[str]:
        """The summary as shown at the end of a run."""
        return [self.line()]


class Interrupted(LocalscoreError):
    """Ctrl-C during a run: what was written stays, and resuming continues it."""

    def __init__(self, message: str, summary: Summary, *, options: Iterable[str] = ()):
        super().__init__(message, options=options)
        self.summary = summary


def score_file(source: str | os.PathLike | BinaryIO, output: str | os.PathLike | None, scorer: Scorer, *,
               resume: bool = False, strict: bool = False, progress: Progress | None = None, split: str = "train",
               config: str | None = None, shard: str | None = None) -> Summary:
    """Score every record of `source` into `output` (None: stdout; a `.parquet` name: Parquet). Bad records get
    `<scorer>_error` in their output and the run goes on; with `strict` the first one raises InputError instead.
    `split` and `config` choose the part of a hub dataset or saved DatasetDict (see records.read_records).
    `shard` "I/N" scores the I-th of N round-robin slices and writes `output`'s sidecar (see shards.py).
    `progress` is called with the records done, the input's records (JSON Lines files only) and the tokens."""
    template = scorer.template
    summary = Summary()
    start = time.perf_counter()
    slice_ = None if shard is None else Shard.parse(shard)
    if slice_ is not None and (output is None or output_target(output).special):
        raise OutputError("{shard} needs an output file ({output}): each shard writes its own, merged afterwards",
                          options=["shard", "output"])
    if output is not None:
        refuse_input_as_output(source, output)
    records = read_records(source, template, split=split, config=config)  # a bad input fails before any output
    if slice_ is not None:
        records = ShardRecords(records, slice_)
    with open_writer(output, resume=resume, schema=_output_schema(records, output, template)) as writer:
        if writer.done:
            _skip_resumed(records, writer, template, source, output)
            summary.resumed = writer.done
        report = progress or silent
        total = _count_records(source) if progress else None
        report(writer.done, total, 0)
        try:
            for scored in score_records(scorer, records, strict=strict):
                writer.write(scored.output)
                summary.add(scored)
                report(writer.done + summary.records, total, summary.tokens)
        except KeyboardInterrupt:
            summary.seconds = time.perf_counter() - start
            where = f"; rerun with {{resume}} to continue {output}" if output else ""
            raise Interrupted(f"interrupted after {summary.records + summary.resumed:,} records{where}",
                              summary, options=["resume"]) from None
        writer.finish()
    if slice_ is not None:
        records.write_sidecar(output, template.name)
    elif output is not None:
        discard_sidecar(output)  # a shard's sidecar left from an earlier run would now describe another file
    summary.seconds = time.perf_counter() - start
    return summary


def _output_schema(records: Iterator[Record], output: str | os.PathLike | None, template: Template) -> object:
    """A table input's Arrow schema plus the result columns, for Parquet output; None otherwise."""
    schema = getattr(records, "schema", None)
    if schema is None or output is None or Path(output).suffix.lower() != ".parquet":
        return None
    from .parquet_output import output_schema

    return output_schema(schema, template)


def _skip_resumed(records: Iterator[Record], writer: Writer, template: Template,
                  source: str | os.PathLike | BinaryIO, output: str | os.PathLike | None) -> None:
    count, last = 0, None
    for last in itertools.islice(records, writer.done):
        count += 1
    if last is None or count < writer.done:
        raise InputError(f"{output} has {writer.done:,} results but {_name(source)} has only {count:,} "
                         "records: it is the output of another input; remove it or drop {resume}", options=["resume"])
    writer.check_resumed(last, template)


def _count_records(source: str | os.PathLike | BinaryIO) -> int | None:
    """Non-blank lines of a JSONL file, for the ETA; None for streams, tables and JSON arrays (not worth a parse)."""
    if not isinstance(source, (str, os.PathLike)) or not Path(source).is_file() or is_table_source(source):
        return None
    count = 0
    with open(source, "rb") as f:
        for line in f:
            stripped = line.strip()
            if count == 0 and stripped.startswith(b"["):
                return None
            count += bool(stripped)
    return count


def _name(source: str | os.PathLike | BinaryIO) -> str:
    return str(source) if isinstance(source, (str, os.PathLike)) else "the input"
