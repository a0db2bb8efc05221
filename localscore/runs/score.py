"""Score a whole file: records -> prompts -> token ids -> engine -> scores -> output records, one line per input
record, in order, resumable, with a summary at the end."""

from __future__ import annotations

import itertools
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

from ..deita.templates import Template
from ..errors import InputError, LocalscoreError, OutputError
from ..options import InputOptions, OutputOptions
from ..forms.output import Writer, output_target, refuse_input_as_output
from ..forms.provenance import Provenance, Step, read_provenance
from ..forms.reader import read_records
from ..forms.records import Records
from ..forms.writers import open_writer
from ..llama.scorer import Scorer
from .score_step import Scored, score_records
from .progress import Progress, silent
from .shards import Shard, ShardRecords


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


# The scoring step of a run: the records to score in, their results out, in the same order (one process, or
# Ray actors).
ScoreStep = Callable[[Records], Iterator[Scored]]


def score_file(source: InputOptions, output: OutputOptions, scorer: Scorer, *, strict: bool = False,
               progress: Progress | None = None) -> Summary:
    """Score every record of `source` into `output` (path None: stdout; a `.parquet` name: Parquet; resumed, or
    one shard "I/N" of the input, recorded with the output for `merge`: see shards.py). Bad records get
    `<scorer>_error` in their output and the run goes on; with `strict` the first one raises InputError instead.
    `progress` is called with the records done, the input's records (where cheap to know) and the tokens."""
    return run_scoring(source, output, scorer.template, lambda records: score_records(scorer, records), Summary(),
                       scorer.made, strict=strict, progress=progress)


def run_scoring(source: InputOptions, output: OutputOptions, template: Template, step: ScoreStep, summary: Summary,
                made: Callable[[], Step], *, strict: bool = False, progress: Progress | None = None) -> Summary:
    """A scoring run, whatever does the scoring: read `source`, skip what a resumed `output` holds (refusing one
    made by other work), score the rest with `step`, write each result in input order, count it into `summary`,
    finish the output with its provenance: `made()` (asked at the start and again at the end, when all that ran
    is known) after the steps that made `source`."""
    target, input_path = output.path, source.source
    start = time.perf_counter()
    slice_ = None if output.shard is None else Shard.parse(output.shard)
    if slice_ is not None and (target is None or output_target(target).special):
        raise OutputError("{shard} needs an output file ({output}): each shard writes its own, merged afterwards",
                          options=["shard", "output"])
    if target is not None:
        refuse_input_as_output(input_path, target)
    records = read_records(input_path, split=source.split, config=source.config)  # a bad input fails before output
    upstream = read_provenance(input_path)
    if slice_ is not None:
        records = ShardRecords(records, slice_)
    with open_writer(target, resume=output.resume, schema=_output_schema(records, target, template)) as writer:
        provenance = Provenance((made(),)).after(upstream)
        if writer.done:
            _check_made(writer, provenance)
            _skip_resumed(records, writer, template, target)
            summary.resumed = writer.done
        writer.begin(provenance.joined(writer.resumed))
        report = progress or silent
        report(writer.done, records.count, 0)
        try:
            for scored in step(records):
                if strict and scored.error is not None:
                    raise InputError(f"record {scored.record.number}: {scored.error} "
                                     "({strict} stops at the first bad record)", options=["strict"])
                writer.write(scored.output)
                summary.add(scored)
                report(writer.done + summary.records, records.count, summary.tokens)
        except KeyboardInterrupt:
            summary.seconds = time.perf_counter() - start
            if target is None:
                raise Interrupted(f"interrupted after {summary.records + summary.resumed:,} records", summary) from None
            raise Interrupted(f"interrupted after {summary.records + summary.resumed:,} records; rerun with "
                              f"{{resume}} to continue {target}", summary, options=["resume"]) from None
        shard_info = None if slice_ is None else records.slice_info()
        writer.finish(Provenance((made(),), shard_info).after(upstream).joined(writer.resumed))
    summary.seconds = time.perf_counter() - start
    return summary


def _output_schema(records: Records, output: str | os.PathLike | None, template: Template) -> object:
    """A table input's Arrow schema plus the result columns, for Parquet output; None otherwise."""
    if records.schema is None or output is None or Path(output).suffix.lower() != ".parquet":
        return None
    from ..forms.parquet_output import output_schema

    return output_schema(records.schema, template)


def _check_made(writer: Writer, provenance: Provenance) -> None:
    """Refuse to continue an output that other work made (another model, scorer or setting)."""
    difference = None if writer.resumed is None else writer.resumed.difference(provenance)
    if difference is not None:
        raise InputError(f"{writer.name} was {difference}; remove it or drop {{resume}}", options=["resume"])


def _skip_resumed(records: Records, writer: Writer, template: Template, output: str | os.PathLike | None) -> None:
    count, last = 0, None
    for last in itertools.islice(records, writer.done):
        count += 1
    if last is None or count < writer.done:
        raise InputError(f"{output} has {writer.done:,} results but {records.name} has only {count:,} "
                         "records: it is the output of another input; remove it or drop {resume}",
                         options=["resume"])
    writer.check_resumed(last, template)
