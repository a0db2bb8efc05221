"""Where results go: one writer interface with a writer per format (JSON Lines here, Parquet in parquet_output),
and the rules that keep every output safe: a file only takes its name when complete, a device or FIFO is written
in place and never replaced, the input is never the output, and a full disk leaves a resumable `.partial`."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import stat
import sys
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from .errors import InputError, LocalscoreError, OutputClosed, OutputError
from .records import Record, result, result_fields
from .templates import Template

# Written as \u escapes: lone surrogates (from "\ud800"-style input escapes), which UTF-8 cannot encode, and the
# characters that some line readers (str.splitlines, older JavaScript) take for line breaks. The line stays one
# valid UTF-8 line and reads back to the same value. json.dumps emits them only inside strings.
_ESCAPE = re.compile("[\x85\u2028\u2029\ud800-\udfff]")
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


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


class Sink:
    """An open output file descriptor (or stdout) as a minimal binary file. Every byte goes through `write`, so a
    reader that went away and a full disk each become one error, wherever they happen."""

    def __init__(self, name: str, fd: int | None, *, resumable: bool):
        self.name = name
        self._fd = fd  # None: sys.stdout, whatever it is at write time (tests swap it)
        self._resumable = resumable
        self._position = 0
        self.closed = False

    @classmethod
    def open(cls, path: Path, flags: int, *, resumable: bool) -> Sink:
        try:
            fd = os.open(path, flags | getattr(os, "O_BINARY", 0), 0o666)
        except OSError as e:
            raise OutputError(f"cannot write {e.filename or path}: {e.strerror}") from None
        return cls(str(path), fd, resumable=resumable)

    def write(self, data: bytes) -> int:
        try:
            if self._fd is None:
                sys.stdout.buffer.write(data)
                sys.stdout.buffer.flush()
            else:
                view = memoryview(data)
                while view:
                    view = view[os.write(self._fd, view):]
        except OSError as e:
            raise self._error(e) from None
        self._position += len(data)
        return len(data)

    def tell(self) -> int:
        return self._position

    def flush(self) -> None:
        """Everything is written through at once; this is for file-like callers (pyarrow)."""

    def sync(self) -> None:
        """Make what was written durable (fsync), for a regular file."""
        try:
            os.fsync(self._fd)
        except OSError as e:
            raise self._error(e) from None

    def close(self) -> None:
        if not self.closed and self._fd is not None:
            os.close(self._fd)
        self.closed = True

    def _error(self, e: OSError) -> LocalscoreError:
        if e.errno == errno.EPIPE:
            return OutputClosed(f"the reader of {self.name} went away")
        if e.errno in DISK_FULL:
            then = "; free some space, then rerun with {resume} to continue" if self._resumable else ""
            return OutputError(f"disk full writing {self.name}{then}", options=["resume"])
        return OutputError(f"cannot write {self.name}: {e.strerror}")


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
        """Release the output, keeping what was written for --resume."""

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
            raise InputError(f"{self.name} was not written by the {template.name} scorer: remove it or drop {{resume}}",
                             options=["resume"])
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
        if target is None:
            self._sink = Sink("stdout", None, resumable=False)
        elif target.special:
            self._sink = Sink.open(target.path, os.O_WRONLY | os.O_TRUNC, resumable=False)
        else:
            partial = target.partial
            if resume and not partial.exists() and target.path.exists():
                # The run had finished: continue a copy, so that a longer input can still be completed.
                _copy(target.path, partial)
            if resume and partial.exists():
                with open(partial, "r+b") as f:
                    self.done, self._last, end = _complete_lines(f)
                    f.truncate(end)
                self._sink = Sink.open(partial, os.O_WRONLY | os.O_APPEND, resumable=True)
            else:
                self._sink = Sink.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, resumable=True)
        self.name = self._sink.name

    def close(self) -> None:
        self._sink.close()  # everything is written already; a .partial stays for --resume

    def write(self, obj: dict) -> None:
        self._sink.write(dumps(obj) + b"\n")

    def finish(self) -> None:
        """Make the output final: fsync the .partial and rename it onto the output path."""
        if self._target is None or self._target.special:
            self._sink.close()
            return
        self._check_complete()
        self._sink.sync()
        self._sink.close()
        publish(self._target.partial, self._target.path)


def dumps(obj: dict) -> bytes:
    """One result as a JSON line's bytes (no newline)."""
    return _ESCAPE.sub(lambda m: f"\\u{ord(m.group()):04x}", json.dumps(obj, ensure_ascii=False)).encode("utf-8")


def publish(partial: Path, path: Path) -> None:
    """Rename the complete `partial` onto `path` durably."""
    os.replace(partial, path)
    fsync_folder(path.parent)


def _copy(source: Path, destination: Path) -> None:
    try:
        shutil.copyfile(source, destination)
    except OSError as e:
        if e.errno in DISK_FULL:
            raise OutputError(f"disk full copying {source} to {destination}; free some space and rerun") from None
        raise OutputError(f"cannot write {destination}: {e.strerror}") from None


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


def fsync_folder(folder: Path) -> None:
    # The rename is only durable once the folder entry is on disk; Windows cannot open a folder to fsync it.
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
