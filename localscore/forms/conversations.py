"""Conversations (ShareGPT `conversations`, chat `messages`): their role spellings, and how their turns are
read, each human turn paired with the answer after it."""

from __future__ import annotations

from dataclasses import dataclass

from ..deita.templates import TEMPLATES
from .turns import MISSING, Turn, json_type, text_problem

HUMAN, GPT, SYSTEM = "human", "gpt", "system"
_NEEDS_ANSWER = " and ".join(f"the {t.name} scorer" for t in TEMPLATES.values() if t.uses_response) + " needs one"


@dataclass(frozen=True)
class Conversation:
    kind: str
    key: str
    role_key: str
    text_key: str
    roles: dict[str, str]  # the role names this format uses -> HUMAN / GPT / SYSTEM
    human: str  # how the format spells each side, for error messages
    gpt: str


SHAREGPT = Conversation(
    kind="sharegpt",
    key="conversations",
    role_key="from",
    text_key="value",
    roles={
        "human": HUMAN, "user": HUMAN,
        "gpt": GPT, "assistant": GPT, "chatgpt": GPT, "bing": GPT, "bard": GPT,
        "system": SYSTEM,
    },
    human="human",
    gpt="gpt",
)
MESSAGES = Conversation(
    kind="messages",
    key="messages",
    role_key="role",
    text_key="content",
    roles={"user": HUMAN, "assistant": GPT, "system": SYSTEM},
    human="user",
    gpt="assistant",
)


def conversation_turns(items: object, shape: Conversation, responses: bool) -> tuple[tuple[Turn, ...], str | None]:
    """Pair each human turn with the answer after it; turn numbers in messages count every element, from 1."""
    if not isinstance(items, list):
        return (), f"'{shape.key}' must be an array, got {json_type(items)}"
    if not items:
        return (), f"'{shape.key}' is empty"
    turns: list[Turn] = []
    pending: tuple[int, str] | None = None  # (turn number, instruction) waiting for its answer
    for position, item in enumerate(items, 1):
        if not isinstance(item, dict):
            return (), f"turn {position} must be an object, got {json_type(item)}"
        role = item.get(shape.role_key, MISSING)
        if role is MISSING:
            return (), f"turn {position} has no '{shape.role_key}'"
        if not isinstance(role, str):
            return (), f"turn {position} '{shape.role_key}' must be a string, got {json_type(role)}"
        side = shape.roles.get(role)
        if side is None:
            known = ", ".join(shape.roles)
            return (), f"turn {position} is from {_quote(role)}; expected one of {known}"
        if side == SYSTEM:
            continue
        expected = HUMAN if pending is None else GPT
        if side != expected:
            spelled = shape.human if expected == HUMAN else shape.gpt
            return (), f"turn {position} is from {_quote(role)} but '{spelled}' was expected"
        text = item.get(shape.text_key, MISSING)
        if side == HUMAN:
            error = text_problem(text, f"turn {position} '{shape.text_key}'")
            if error:
                return (), error
            pending = (position, text)
            continue
        response = None
        if responses:
            error = text_problem(text, f"turn {position} '{shape.text_key}'")
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


def _quote(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:40] + "...")
