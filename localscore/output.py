"""Write result lines so that an interrupted run never corrupts the output and can be resumed."""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from pathlib import Path
from typing import BinaryIO

from .errors import InputError
from .records import Record, result, result_fields
from .templates import Template

# Written as \u escapes: lone surrogates (from "\ud800"-style input escapes), which UTF-8 cannot encode, and the
# characters that some line readers (str.splitlines, older JavaScript) take for line breaks. The line stays one
# valid UTF-8 line and reads back to the same value. json.dumps emits them only inside strings.
_ESCAPE = re.compile("[\x85\u2028\u2029\ud800-\udfff]")
# What a shell reports for a process killed by SIGPIPE: `localscore ... | head` ends like any other Unix tool.
_BROKEN_PIPE_STATUS = 141


class ResultWriter:
    """One JSON line per record, to a file or stdout; a file only takes its name when the run finishes.

    With a path, lines go to `<path>.partial` (flushed after each record) and `finish()` fsyncs it and renames it
    onto `<path>`: an existing `<path>` is untouched until then, and leaving the `with` block without `finish()`
    (an error, Ctrl-C) keeps the `.partial` for `resume=True`.

    The caller writes exactly one result per record that read_records yields, bad records included, in order;
    so `done`, the number of results already written when resuming, is also a number of input records. It must

    1. skip the first `done` records without scoring them,
    2. call `check_resumed(record, template)` with the `done`-th record (the last one skipped), which raises
       InputError when the output was made from another input or by another scorer, and
    3. write the remaining records and call `finish()`, which raises InputError when `done` > 0 and
       `check_resumed` was never called: the input has fewer records than the output.

    To stdout, `done` is 0 and `finish()` has nothing to do; a reader that goes away (`| head`) ends the process
    quietly with status 141.
    """

    def __init__(self, path: str | os.PathLike | None, *, resume: bool = False):
        self.done = 0
        self._last: dict | None = None  # the last resumed line, for check_resumed
        self._checked = False
        if path is None:
            if resume:
                raise InputError("--resume needs an output file (-o)")
            self._path = self._partial = None
            self._file: BinaryIO = sys.stdout.buffer
            return
        self._path = Path(path)
        self._partial = self._path.with_name(self._path.name + ".partial")
        if self._path.is_dir():
            raise InputError(f"output {self._path} is a folder; give a file name")
        try:
            if resume and not self._partial.exists() and self._path.exists():
                # The run had finished: continue a copy, so that a longer input can still be completed.
                shutil.copyfile(self._path, self._partial)
            if resume and self._partial.exists():
                self._file = open(self._partial, "r+b")
                self.done, self._last, end = _complete_lines(self._file)
                self._file.truncate(end)
                self._file.seek(end)
            else:
                self._file = open(self._partial, "wb")
        except OSError as e:
            raise InputError(f"cannot write {e.filename or self._partial}: {e.strerror}") from None

    def __enter__(self) -> ResultWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._partial is not None and not self._file.closed:
            self._file.close()  # everything is flushed already; the .partial stays for --resume

    def check_resumed(self, record: Record, template: Template) -> None:
        """Check that the last resumed line is `record`'s result, scored by `template`.

        `record` is the `done`-th record read from the input. Its line must carry one of `template`'s result fields
        (a score or an error), and apart from those fields equal `result(record, template)`: the same input fields
        with the same values, or for a record that is not a JSON object the same line number and raw text.
        Cheap: one comparison, whatever the size of the output.
        """
        self._checked = True
        if self._last is None:
            return
        fields = result_fields(template)
        if not any(field in self._last for field in fields):
            raise InputError(
                f"{self._file.name} was not written by the {template.name} scorer: "
                "remove it or drop --resume"
            )
        if _without(self._last, fields) != _without(result(record, template), fields):
            raise InputError(
                f"{self._file.name} line {self.done} does not match input record {record.number}: it was made "
                "from a different input; remove it or drop --resume"
            )

    def write(self, obj: dict) -> None:
        """Append one result as a JSON line and flush it, so that a killed run loses at most the line in flight."""
        line = _ESCAPE.sub(lambda m: f"\\u{ord(m.group()):04x}", json.dumps(obj, ensure_ascii=False)).encode("utf-8")
        if self._partial is None:
            try:
                self._file.write(line + b"\n")
                self._file.flush()
            except BrokenPipeError:
                _quit_on_closed_stdout()
        else:
            self._file.write(line + b"\n")
            self._file.flush()

    def finish(self) -> None:
        """Make the output final: fsync the .partial and rename it onto the output path."""
        if self._partial is None:
            return
        if self.done and not self._checked:
            raise InputError(
                f"{self._file.name} has {self.done} results, more than the input has records: it was made "
                "from a different input; remove it or drop --resume"
            )
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self._partial, self._path)
        _fsync_folder(self._path.parent)


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


def _quit_on_closed_stdout() -> None:
    # The reader is gone (`| head`): point stdout at /dev/null so that Python's final flush cannot fail with a
    # second traceback, and stop quietly instead of scoring the rest for nobody.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    raise SystemExit(_BROKEN_PIPE_STATUS)


def _fsync_folder(folder: Path) -> None:
    # The rename is only durable once the folder entry is on disk; Windows cannot open a folder to fsync it.
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
