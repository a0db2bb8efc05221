"""Instruction/response records (Alpaca, ShareGPT, chat messages): what one record is, and how a parsed object
becomes one (its shape detected, its turns read). `reader.read_records` picks the reader for an input."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from ..deita.templates import Template
from .conversations import GPT, MESSAGES, SHAREGPT, SYSTEM, conversation_turns
from .turns import MISSING, Turn, text_problem

_NO_SHAPE = "no known record shape: expected 'instruction'/'output', 'conversations' or 'messages'"
_SHAPE_KEYS = ("instruction", "conversations", "messages")


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
        shape = SHAREGPT if shapes[0] == "conversations" else MESSAGES
        kind, (turns, error) = shape.kind, conversation_turns(data[shape.key], shape, responses)
    return Record(number, data, None, kind, turns if error is None else (), error, responses)


def without_leading_answer(record: Record) -> Record:
    """The record read again without its first non-system turn when that turn is an answer, as Deita's embedder
    reads a conversation (it drops a first turn that is not the human's); any other record comes back as it is."""
    if record.kind not in (SHAREGPT.kind, MESSAGES.kind):
        return record
    shape = SHAREGPT if record.kind == SHAREGPT.kind else MESSAGES
    items = record.data[shape.key]
    if not isinstance(items, list):
        return record
    for position, item in enumerate(items):
        side = shape.roles.get(item.get(shape.role_key)) if isinstance(item, dict) else None
        if side != SYSTEM:
            if side != GPT:
                return record
            rest = items[:position] + items[position + 1:]
            return make_record(record.number, {**record.data, shape.key: rest}, responses=record.responses)
    return record


def _alpaca_turns(data: dict, responses: bool) -> tuple[tuple[Turn, ...], str | None]:
    instruction = data.get("instruction", MISSING)
    error = text_problem(instruction, "'instruction'")
    if error:
        return (), error
    extra = data.get("input")
    if extra is not None:  # absent or null: no input
        error = text_problem(extra, "'input'", may_be_empty=True)
        if error:
            return (), error
        instruction = alpaca_instruction(instruction, extra)
    response = None
    if responses:
        response = data.get("output", MISSING)
        error = text_problem(response, "'output'")
        if error:
            return (), error
    return (Turn(instruction, response),), None


def alpaca_instruction(instruction: str, extra: str) -> str:
    """The question an Alpaca record asks: its instruction, then its input on the next line when there is one."""
    return instruction + "\n" + extra if extra.strip() else instruction
