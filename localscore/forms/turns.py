"""One turn of a record (an instruction and its answer) and the checks every text of a record passes before it
may go into a prompt."""

from __future__ import annotations

import re
from dataclasses import dataclass

# A response of ~250k tokens is >100x the scorer's 2048-token context, so cutting its middle would score almost
# nothing of it: such a record is reported instead of scored.
MAX_FIELD_CHARS = 1_000_000

# Lone surrogates come from "\ud800"-style escapes; they are not Unicode text and cannot be encoded as UTF-8.
_SURROGATE = re.compile("[\ud800-\udfff]")
MISSING = object()


@dataclass(frozen=True)
class Turn:
    instruction: str
    # None for a final unanswered human turn, and always in the reading of a prompt without responses (complexity).
    response: str | None


def text_problem(value: object, name: str, *, may_be_empty: bool = False) -> str | None:
    """Why `value` cannot go into a prompt, or None."""
    if value is MISSING:
        return f"{name} is missing"
    if not isinstance(value, str):
        return f"{name} must be a string, got {json_type(value)}"
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


def json_type(value: object) -> str:
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
