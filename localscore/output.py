"""Where results go: one writer interface with a writer per format (JSON Lines here, Parquet in parquet_output),
and the rules that keep every output safe: a file only takes its name when complete, a device or FIFO is written
in place and never replaced, the input is never the output, a full disk leaves a resumable `.partial`, and one run
at a time writes an output (durable.OutputLock). The bytes themselves go through durable.py."""

from __future__ import annotations

import json
import os
import re
import stat
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from .durable import OutputLock, Sink, copy_file
from .errors import InputError, OutputError
from .records import Record, result, result_fields
from .templates import Template

# Written as \u escapes: lone surrogates (from "\ud800"-style input escapes), which UTF-8 cannot encode, and the
# characters that some line readers (str.splitlines, older JavaScript) take for line breaks. The line stays one
# valid UTF-8 line and reads back to the same value. json.dumps emits them only inside strings.
_ESCAPE = re.compile("[\x85\u2028\u2029\ud800-\udfff]")


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
    def finish(self) -> None:
        """Make the output complete and give it its name."""

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
        fields = result_fields(template)
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


def open_writer(path: str | os.PathLike | None, *, resume: bool = False, schema: object = None) -> Writer:
    """The writer for `path` (None: stdout): Parquet for a `.parquet` name, else JSON Lines.

    A regular (or new) file is written as `<path>.partial` and renamed onto `path` by `finish()`; a device, FIFO or
    socket (`/dev/null`, `/dev/stdout` on a terminal) is written in place and cannot be resumed. `schema`: the Arrow
    schema of Parquet output (parquet_output.output_schema of a table input's), None to infer it from the results.
    """
    if path is None:
        if resume:
            raise OutputError("{resume} needs an output file ({output})", options=["resume", "output"])
        return JsonlWriter(None, resume=False)
    target = output_target(path)
    if target.special and resume:
        raise OutputError(f"{{resume}} cannot continue {os.fspath(path)}: it is not a regular file, so it is written "
                          "in place and keeps nothing to continue; drop {resume}", options=["resume"])
    if Path(path).suffix.lower() == ".parquet":
        if target.special:
            raise OutputError(f"cannot write Parquet to {os.fspath(path)}: it is not a regular file, and Parquet is "
                              "written whole at the end; give a file name, or a name without .parquet for JSON Lines")
        from .parquet_output import ParquetWriter

        return ParquetWriter(target, resume=resume, schema=schema)
    return JsonlWriter(target, resume=resume)


class JsonlWriter(Writer):
    """One JSON line per result, written and flushed at once, so that a kill loses at most the line in flight.
    A `.partial` is resumed by keeping its complete lines; a finished output is resumed by continuing a copy."""

    unit = "line"

    def __init__(self, target: Target | None, *, resume: bool = False):
        self._target = target
        self._lock = None
        if target is None:
            self._sink = Sink.stdout()
        elif target.special:
            self._sink = Sink.open(target.path, os.O_WRONLY | os.O_TRUNC, resumable=False)
        else:
            self._lock = OutputLock(target.path).acquire()
            try:
                self._sink = self._open_partial(target, resume)
            except BaseException:
                self._lock.release()
                raise
        self.name = self._sink.name

    def _open_partial(self, target: Target, resume: bool) -> Sink:
        partial = target.partial
        if resume and not partial.exists() and target.path.exists():
            # The run had finished: continue a copy, so that a longer input can still be completed.
            copy_file(target.path, partial)
        if not (resume and partial.exists()):
            return Sink.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, resumable=True)
        with open(partial, "rb") as f:
            self.done, self._last, end = _complete_lines(f)
        sink = Sink.open(partial, os.O_WRONLY | os.O_APPEND, resumable=True)
        sink.truncate(end)
        return sink

    def close(self) -> None:
        self._sink.close()  # everything is written already; a .partial stays for resuming
        if self._lock is not None:
            self._lock.release()

    def write(self, obj: dict) -> None:
        self._sink.write(dumps(obj) + b"\n")

    def finish(self) -> None:
        """Make the output final: fsync the .partial and rename it onto the output path."""
        if self._target is None or self._target.special:
            self._sink.close()
            return
        self._check_complete()
        self._sink.commit(self._target.path)


def dumps(obj: dict) -> bytes:
    """One result as a JSON line's bytes (no newline)."""
    return _ESCAPE.sub(lambda m: f"\\u{ord(m.group()):04x}", json.dumps(obj, ensure_ascii=False)).encode("utf-8")


def _complete_lines(file: BinaryIO) -> tuple[int, dict | None, int]:
    """(count, last object, end offset) of the leading lines that are whole JSON objects.

    A killed run can leave half a line, and a power loss NUL bytes or stale blocks at the end of the file:
    everything from the first line that is not a complete JSON object on its own line is cut and redone.
    """
    count, last, end = 0, None, 0
    for line in file:
        if not line.endswith(b"\n"):
            break
        try:
            obj = json.loads(line.decode("utf-8"))
        except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
            break
        if not isinstance(obj, dict):
            break
        count, last, end = count + 1, obj, end + len(line)
    return count, last, end


def _without(obj: dict, fields: tuple[str, ...]) -> dict:
    return {key: value for key, value in obj.items() if key not in fields}
