"""Instruction/response records (Alpaca, ShareGPT, chat messages): what one record is, reading them from JSON Lines
or a JSON array, and the object written back for each one. `reader.read_records` picks the reader for an input."""

from __future__ import annotations

import functools
import json
import math
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import BinaryIO

from ..deita.templates import TEMPLATES, Template
from ..errors import InputError

# A response of ~250k tokens is >100x the scorer's 2048-token context, so cutting its middle would score almost
# nothing of it: such a record is reported instead of scored.
MAX_FIELD_CHARS = 1_000_000

_BOM = b"\xef\xbb\xbf"
_JSON_WHITESPACE = b" \t\r\n"
# Lone surrogates come from "\ud800"-style escapes; they are not Unicode text and cannot be encoded as UTF-8.
_SURROGATE = re.compile("[\ud800-\udfff]")
_MISSING = object()
_NO_SHAPE = "no known record shape: expected 'instruction'/'output', 'conversations' or 'messages'"

_HUMAN, _GPT, _SYSTEM = "human", "gpt", "system"
_SHAPE_KEYS = ("instruction", "conversations", "messages")
_NEEDS_ANSWER = " and ".join(f"the {t.name} scorer" for t in TEMPLATES.values() if t.uses_response) + " needs one"


@dataclass(frozen=True)
class Turn:
    instruction: str
    # None for a final unanswered human turn, and always in the reading of a prompt without responses (complexity).
    response: str | None


@dataclass(frozen=True)
class Record:
    number: int  # 1-based: the line number in JSON Lines, the element's index + 1 in a JSON array
    data: dict | None  # the parsed object; None when the line/element is not a JSON object
    raw: str | None  # the text as read, only when data is None
    kind: str | None  # "alpaca" | "sharegpt" | "messages"; None when no shape was recognised
    turns: tuple[Turn, ...]  # empty when error is set
    error: str | None  # why the record cannot be scored
    responses: bool = True  # whether responses were read: False only in `reading` of a prompt without them

    def reading(self, template: Template) -> Record:
        """This record as `template`'s prompt reads it. Readers read every response; a prompt that uses none
        (complexity) reads the instructions only, so a missing, bad or absent final answer does not stop it."""
        if template.uses_response or not self.responses or self.data is None:
            return self
        return make_record(self.number, self.data, responses=False)


class Records(Iterator[Record]):
    """The records of one input, in order, and what is known about that input before reading it: its Arrow
    `schema` (a table input's; None for JSON) and its `count` of records (None where only a full read can tell)."""

    def __init__(self, name: str, records: Iterator[Record], *, schema: object = None,
                 count: int | Callable[[], int | None] | None = None):
        self.name = name
        self.schema = schema
        self._records = records
        self._count = count

    def __next__(self) -> Record:
        return next(self._records)

    @functools.cached_property
    def count(self) -> int | None:
        """The number of records; for a JSON Lines file a pass over its lines, made only when asked for."""
        return self._count() if callable(self._count) else self._count


@dataclass(frozen=True)
class _Conversation:
    kind: str
    key: str
    role_key: str
    text_key: str
    roles: dict[str, str]  # the role names this format uses -> _HUMAN / _GPT / _SYSTEM
    human: str  # how the format spells each side, for error messages
    gpt: str


_SHAREGPT = _Conversation(
    kind="sharegpt",
    key="conversations",
    role_key="from",
    text_key="value",
    roles={
        "human": _HUMAN, "user": _HUMAN,
        "gpt": _GPT, "assistant": _GPT, "chatgpt": _GPT, "bing": _GPT, "bard": _GPT,
        "system": _SYSTEM,
    },
    human="human",
    gpt="gpt",
)
_MESSAGES = _Conversation(
    kind="messages",
    key="messages",
    role_key="role",
    text_key="content",
    roles={"user": _HUMAN, "assistant": _GPT, "system": _SYSTEM},
    human="user",
    gpt="assistant",
)


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
                f"{name} holds one JSON {_json_type(value)}, not records: "
                "give JSON Lines (one record per line) or a JSON array of records"
            )
    except BaseException:
        _close(stream, owned)
        raise
    count = functools.partial(_count_lines, source) if owned else None
    return Records(name, _jsonl_records(stream, owned, number, line), count=count)


def result(
    record: Record,
    template: Template,
    scores: Sequence[float] | None = None,
    *,
    error: str | None = None,
    truncated: bool = False,
) -> dict:
    """The output object for one record (as `template` reads it, see Record.reading): its fields in their order,
    then the score (or error) fields.

    Alpaca records get `{name}_score` (one float); conversations get `{name}_scores` (one float per turn).
    `error` (or the record's own error) gives `{name}_error` instead; a record that is not a JSON object becomes
    {"line": number, "raw": text, "{name}_error": reason}. With neither scores nor error, the object carries no
    score field: that is the form Writer.check_resumed compares.
    """
    score_field, scores_field, truncated_field, error_field = template.result_fields
    reason = error if error is not None else record.error
    if record.data is None:
        return {"line": record.number, "raw": record.raw, error_field: reason}
    out = {key: value for key, value in record.data.items() if key not in (score_field, scores_field,
                                                                             truncated_field, error_field)}
    if reason is not None:
        out[error_field] = reason
    elif scores is not None:
        values = [float(score) for score in scores]
        if len(values) != len(record.turns) or not all(map(math.isfinite, values)):
            raise ValueError(f"record {record.number}: {len(record.turns)} turn(s) but scores {values}")
        if record.kind == "alpaca":
            out[score_field] = values[0]
        else:
            out[scores_field] = values
    if truncated:
        out[truncated_field] = True
    return out


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
            yield _unparsed(index + 1, raw, f"expected a JSON object, got {_json_type(element)}")


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
        return unparsed(f"expected a JSON object, got {_json_type(value)}")
    return make_record(number, value)


def _unparsed(number: int, raw: str, reason: str) -> Record:
    return Record(number=number, data=None, raw=raw, kind=None, turns=(), error=reason)


def make_record(number: int, data: dict, *, responses: bool = True) -> Record:
    """The Record of one parsed JSON object (or table row): its shape detected, its turns read, or its error.
    `responses=False` reads the instructions only (see Record.reading)."""
    # A null shape field is absent when another one is set: a table row has every column, null where unused.
    shapes = ([key for key in _SHAPE_KEYS if data.get(key) is not None]
              or [key for key in _SHAPE_KEYS if key in data])
    if not shapes and "output" in data:
        shapes = ["instruction"]  # an Alpaca record that lost its instruction: say so rather than "unknown shape"
    if len(shapes) > 1:
        listed = " and ".join(f"'{key}'" for key in shapes)
        return Record(number, data, None, None, (), f"has both {listed}; a record must have one shape", responses)
    if not shapes:
        return Record(number, data, None, None, (), _NO_SHAPE, responses)
    if shapes[0] == "instruction":
        kind, (turns, error) = "alpaca", _alpaca_turns(data, responses)
    else:
        shape = _SHAREGPT if shapes[0] == "conversations" else _MESSAGES
        kind, (turns, error) = shape.kind, _conversation_turns(data[shape.key], shape, responses)
    return Record(number, data, None, kind, turns if error is None else (), error, responses)


def without_leading_answer(record: Record) -> Record:
    """The record read again without its first non-system turn when that turn is an answer, as Deita's embedder
    reads a conversation (it drops a first turn that is not the human's); any other record comes back as it is."""
    if record.kind not in (_SHAREGPT.kind, _MESSAGES.kind):
        return record
    shape = _SHAREGPT if record.kind == _SHAREGPT.kind else _MESSAGES
    items = record.data[shape.key]
    if not isinstance(items, list):
        return record
    for position, item in enumerate(items):
        side = shape.roles.get(item.get(shape.role_key)) if isinstance(item, dict) else None
        if side != _SYSTEM:
            if side != _GPT:
                return record
            rest = items[:position] + items[position + 1:]
            return make_record(record.number, {**record.data, shape.key: rest}, responses=record.responses)
    return record


def _alpaca_turns(data: dict, responses: bool) -> tuple[tuple[Turn, ...], str | None]:
    instruction = data.get("instruction", _MISSING)
    error = _text_problem(instruction, "'instruction'")
    if error:
        return (), error
    extra = data.get("input")
    if extra is not None:  # absent or null: no input
        error = _text_problem(extra, "'input'", may_be_empty=True)
        if error:
            return (), error
        instruction = alpaca_instruction(instruction, extra)
    response = None
    if responses:
        response = data.get("output", _MISSING)
        error = _text_problem(response, "'output'")
        if error:
            return (), error
    return (Turn(instruction, response),), None


def alpaca_instruction(instruction: str, extra: str) -> str:
    """The question an Alpaca record asks: its instruction, then its input on the next line when there is one."""
    return instruction + "\n" + extra if extra.strip() else instruction


def _conversation_turns(items: object, shape: _Conversation, responses: bool) -> tuple[tuple[Turn, ...], str | None]:
    """Pair each human turn with the answer after it; turn numbers in messages count every element, from 1."""
    if not isinstance(items, list):
        return (), f"'{shape.key}' must be an array, got {_json_type(items)}"
    if not items:
        return (), f"'{shape.key}' is empty"
    turns: list[Turn] = []
    pending: tuple[int, str] | None = None  # (turn number, instruction) waiting for its answer
    for position, item in enumerate(items, 1):
        if not isinstance(item, dict):
            return (), f"turn {position} must be an object, got {_json_type(item)}"
        role = item.get(shape.role_key, _MISSING)
        if role is _MISSING:
            return (), f"turn {position} has no '{shape.role_key}'"
        if not isinstance(role, str):
            return (), f"turn {position} '{shape.role_key}' must be a string, got {_json_type(role)}"
        side = shape.roles.get(role)
        if side is None:
            known = ", ".join(shape.roles)
            return (), f"turn {position} is from {_quote(role)}; expected one of {known}"
        if side == _SYSTEM:
            continue
        expected = _HUMAN if pending is None else _GPT
        if side != expected:
            spelled = shape.human if expected == _HUMAN else shape.gpt
            return (), f"turn {position} is from {_quote(role)} but '{spelled}' was expected"
        text = item.get(shape.text_key, _MISSING)
        if side == _HUMAN:
            error = _text_problem(text, f"turn {position} '{shape.text_key}'")
            if error:
                return (), error
            pending = (position, text)
            continue
        response = None
        if responses:
            error = _text_problem(text, f"turn {position} '{shape.text_key}'")
            if error:
                return (), error
            response = text
        turns.append(Turn(pending[1], response))
        pending = None
    if pending is not None:
        if responses:
            return (), f"turn {pending[0]} is from '{shape.human}' and has no answer; {_NEEDS_ANSWER}"
        turns.append(Turn(pending[1], None))
    if not turns:
        return (), f"'{shape.key}' has only system turns"
    return tuple(turns), None


def _text_problem(value: object, name: str, *, may_be_empty: bool = False) -> str | None:
    """Why `value` cannot go into a prompt, or None."""
    if value is _MISSING:
        return f"{name} is missing"
    if not isinstance(value, str):
        return f"{name} must be a string, got {_json_type(value)}"
    if len(value) > MAX_FIELD_CHARS:
        return f"{name} has {len(value):,} characters; the limit is {MAX_FIELD_CHARS:,} per field"
    if "\0" in value:
        # The tokenizer takes C strings: everything after a NUL would silently vanish from the prompt.
        return f"{name} contains a NUL byte"
    surrogate = _SURROGATE.search(value)
    if surrogate:
        return f"{name} is not valid UTF-8: it has a lone surrogate \\u{ord(surrogate.group()):04x}"
    if not may_be_empty and not value.strip():
        return f"{name} is empty"
    return None


def _quote(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:40] + "...")


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"
