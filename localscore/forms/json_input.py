"""Records from JSON: a JSON Lines file (streamed line by line) or a JSON array (loaded whole), from a path or a
binary stream."""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Iterator, Sequence
from typing import BinaryIO

from ..errors import InputError
from .records import Record, Records, make_record
from .turns import json_type

_BOM = b"\xef\xbb\xbf"
_JSON_WHITESPACE = b" \t\r\n"


def read_json(source: str | os.PathLike | BinaryIO) -> Records:
    """The records of a JSON input: a path, or a binary stream such as sys.stdin.buffer.

    A file whose first non-blank line starts with "[" is one JSON array (loaded whole); anything else is JSON Lines,
    streamed line by line, blank lines skipped, whatever the file's extension. The file is opened and its format
    checked before this returns, so a missing file, a broken JSON array or a pretty-printed JSON object raises
    InputError here. A bad record never raises: it comes back with `error` set, and reading goes on.
    """
    name, stream, owned = _open(source)
    try:
        blank = b""  # the blank lines before the first record, kept so that error positions count them
        for number, line in enumerate(stream, 1):
            if number == 1 and line.startswith(_BOM):
                line = line[len(_BOM):]
            if line.strip(_JSON_WHITESPACE):
                break
            blank += line
        else:
            _close(stream, owned)
            return Records(name, iter(()), count=0)
        start = line.strip(_JSON_WHITESPACE)
        if start.startswith(b"["):
            value = _load_document(name, blank + line + stream.read())
            _close(stream, owned)
            return Records(name, array_records(value), count=len(value))
        if start == b"{":
            # A lone "{" opens a pretty-printed JSON object, never a record on one line: reading it as JSON Lines
            # would report every line of it as a broken record.
            value = _load_document(name, blank + line + stream.read())
            raise InputError(
                f"{name} holds one JSON {json_type(value)}, not records: "
                "give JSON Lines (one record per line) or a JSON array of records"
            )
    except BaseException:
        _close(stream, owned)
        raise
    count = functools.partial(_count_lines, source) if owned else None
    return Records(name, _jsonl_records(stream, owned, number, line), count=count)


def _open(source: str | os.PathLike | BinaryIO) -> tuple[str, BinaryIO, bool]:
    """(name for messages, binary stream, whether we opened it and so must close it)."""
    if isinstance(source, (str, os.PathLike)):
        try:
            return os.fspath(source), open(source, "rb"), True
        except OSError as e:
            raise InputError(f"cannot read {os.fspath(source)}: {e.strerror}") from None
    return str(getattr(source, "name", "<input>")), source, False


def _close(stream: BinaryIO, owned: bool) -> None:
    if owned:
        stream.close()


def _count_lines(path: str | os.PathLike) -> int:
    """The non-blank lines of a JSON Lines file."""
    with open(path, "rb") as f:
        return sum(1 for line in f if line.strip(_JSON_WHITESPACE))


def _load_document(name: str, data: bytes) -> object:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise InputError(f"{name} line {line}: not valid UTF-8; save the file as UTF-8") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"{name}: not valid JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    except RecursionError:
        raise InputError(f"{name}: not valid JSON: nested too deeply") from None
    except ValueError as e:  # e.g. an integer too long to convert
        raise InputError(f"{name}: not valid JSON: {e}") from None


def array_records(value: Sequence) -> Iterator[Record]:
    """The records of a JSON array's elements (already parsed): element i is record i + 1."""
    for index, element in enumerate(value):
        if isinstance(element, dict):
            yield make_record(index + 1, element)
        else:
            raw = json.dumps(element, ensure_ascii=False)
            yield _unparsed(index + 1, raw, f"expected a JSON object, got {json_type(element)}")


def _jsonl_records(stream: BinaryIO, owned: bool, number: int, first: bytes) -> Iterator[Record]:
    try:
        yield _line_record(number, first)
        for number, line in enumerate(stream, number + 1):
            if line.strip(_JSON_WHITESPACE):
                yield _line_record(number, line)
    finally:
        _close(stream, owned)


def _line_record(number: int, line: bytes) -> Record:
    def unparsed(reason: str) -> Record:
        return _unparsed(number, line.rstrip(b"\r\n").decode("utf-8", "replace"), reason)

    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as e:
        return unparsed(f"not valid UTF-8 at byte {e.start + 1}")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        return unparsed(f"not valid JSON: {e.msg} at column {e.colno}")
    except RecursionError:
        return unparsed("not valid JSON: nested too deeply")
    except ValueError as e:  # e.g. an integer too long to convert
        return unparsed(f"not valid JSON: {e}")
    if not isinstance(value, dict):
        return unparsed(f"expected a JSON object, got {json_type(value)}")
    return make_record(number, value)


def _unparsed(number: int, raw: str, reason: str) -> Record:
    return Record(number=number, data=None, raw=raw, kind=None, turns=(), error=reason)
