"""Where results go: the writer interface that every output form implements (jsonl_output, parquet_output; the form
is chosen in writers.py), and the rules that keep every output safe: a file only takes its name when complete, a
device or FIFO is written in place and never replaced, the input is never the output, a full disk leaves a
resumable `.partial`, and one run at a time writes an output (durable.OutputLock). The bytes themselves go through
durable.py."""

from __future__ import annotations

import os
import stat
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

from ..deita.templates import Template
from ..errors import InputError, OutputError
from .provenance import Provenance
from .records import Record
from .results import result


@dataclass(frozen=True)
class Target:
    """An output path as the file system sees it."""

    path: Path  # where the finished output lands: a symlink's target, so that the link itself stays a link
    special: bool  # a device, FIFO or socket: written in place, never replaced

    @property
    def partial(self) -> Path:
        return self.path.with_name(self.path.name + ".partial")


def output_target(path: str | os.PathLike) -> Target:
    """Where `path` really is, and whether it is a regular file (or not there yet) or a special one."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        mode = stat.S_IFREG  # a new file
    except OSError as e:
        raise OutputError(f"cannot write {os.fspath(path)}: {e.strerror}") from None
    if stat.S_ISDIR(mode):
        raise OutputError(f"output {os.fspath(path)} is a folder; give a file name")
    if not stat.S_ISREG(mode):
        return Target(Path(path), True)
    return Target(Path(os.path.realpath(path)), False)


def refuse_input_as_output(source: object, output: str | os.PathLike) -> None:
    """Raise OutputError when `output` is the input `source` (through any path or link), or lies inside an input
    folder, where it would be read back as input; before anything is written."""
    if not isinstance(source, (str, os.PathLike)) or not os.path.exists(source):
        return
    out = os.path.realpath(output)
    if os.path.exists(out) and os.path.samefile(source, out):
        raise OutputError(f"output {os.fspath(output)} is the input {os.fspath(source)}; "
                          "give another output file, the input is never overwritten")
    folder = os.path.realpath(source)
    if os.path.isdir(folder) and os.path.commonpath([folder, out]) == folder:
        raise OutputError(f"output {os.fspath(output)} is inside the input folder {os.fspath(source)}, where it "
                          "would be read as input; write it elsewhere")


class Writer(ABC):
    """One result object per input record, in order. A writer per format implements it; `open_writer` picks one.

    The caller writes exactly one result per record that read_records yields, bad records included, in order;
    so `done`, the number of results already there when resuming, is also a number of input records. It must

    1. skip the first `done` records without scoring them,
    2. call `check_resumed(record, template)` with the `done`-th record (the last one skipped), which raises
       InputError when the output was made from another input or by another scorer, and
    3. `write` the remaining results and call `finish()`, which raises InputError when `done` > 0 and
       `check_resumed` was never called: the input has fewer records than the output.

    Leaving the `with` block without `finish()` (an error, Ctrl-C) keeps what was written for `resume=True`.
    """

    name: str  # the file results go to now, for messages
    unit = "result"  # what one result is in this format, for messages
    done: int = 0
    resumed: Provenance | None = None  # what made the output being continued, where it records that
    _last: dict | None = None  # the last resumed result, as read back
    _checked = False

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @abstractmethod
    def close(self) -> None:
        """Release the output, keeping what was written for resuming."""

    @abstractmethod
    def write(self, obj: dict) -> None:
        """Add the next result."""

    @abstractmethod
    def begin(self, provenance: Provenance) -> None:
        """Record what makes this output beside the partial one, before the first result: resuming checks it."""

    @abstractmethod
    def finish(self, provenance: Provenance | None = None) -> None:
        """Make the output complete and give it its name, recording `provenance` with it (None: nothing; what
        recorded the old output's producer goes)."""

    def check_resumed(self, record: Record, template: Template) -> None:
        """Check that the last resumed result is `record`'s, scored by `template`.

        Its object must carry one of `template`'s result fields (a score or an error), and apart from those fields
        equal `result(record, template)` as this format stores it: the same input fields with the same values, or
        for a record that is not a JSON object the same line number and raw text. One comparison, whatever the size
        of the output.
        """
        self._checked = True
        if self._last is None:
            return
        fields = template.result_fields
        if not any(self._last.get(field) is not None for field in fields):
            raise InputError(f"{self.name} was not written by the {template.name} scorer: remove it or drop "
                             "{resume}", options=["resume"])
        if _without(self._last, fields) != _without(self._stored(result(record, template)), fields):
            raise InputError(
                f"{self.name} {self.unit} {self.done} does not match input record {record.number}: it was made "
                "from a different input; remove it or drop {resume}", options=["resume"]
            )

    def _stored(self, obj: dict) -> dict:
        """`obj` as it reads back from this format."""
        return obj

    def _check_complete(self) -> None:
        if self.done and not self._checked:
            raise InputError(
                f"{self.name} has {self.done} results, more than the input has records: it was made "
                "from a different input; remove it or drop {resume}", options=["resume"]
            )


def _without(obj: dict, fields: tuple[str, ...]) -> dict:
    return {key: value for key, value in obj.items() if key not in fields}
