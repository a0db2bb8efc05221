"""JSON Lines output: one line per result, in input order, flushed as it is written, resumable."""

from __future__ import annotations

import json
import os
import re
from typing import BinaryIO

from .durable import OutputLock, Sink, copy_file
from .output import Target, Writer
from .provenance import Provenance, commit_with_sidecar, read_provenance, remove_sidecar, write_sidecar

# Written as \u escapes: lone surrogates (from "\ud800"-style input escapes), which UTF-8 cannot encode, and the
# characters that some line readers (str.splitlines, older JavaScript) take for line breaks. The line stays one
# valid UTF-8 line and reads back to the same value. json.dumps emits them only inside strings.
_ESCAPE = re.compile("[\x85\u2028\u2029\ud800-\udfff]")


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
            self.resumed = read_provenance(target.path)
            copy_file(target.path, partial)
            if self.resumed is not None:  # the copy keeps its record: a resume refused now is refused again
                write_sidecar(partial, self.resumed)
        elif resume and partial.exists():
            self.resumed = read_provenance(partial)
        if not (resume and partial.exists()):
            remove_sidecar(partial)
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

    def begin(self, provenance: Provenance) -> None:
        if self._target is not None and not self._target.special:
            write_sidecar(self._target.partial, provenance)

    def finish(self, provenance: Provenance | None = None) -> None:
        """Make the output final: fsync the .partial and rename it onto the output path, its sidecar beside it."""
        if self._target is None or self._target.special:
            self._sink.close()
            return
        self._check_complete()
        commit_with_sidecar(self._sink, self._target.path, provenance)


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
