"""Errors a user can cause. The CLI turns each into one line; anything else is a bug and keeps its traceback.

Library code never names a CLI flag. A message that tells the user which option to change writes it as a
placeholder of the API parameter's name, `{resume}`, and lists it in `options`: `str(error)` quotes the
parameter name (`'resume'`), the CLI spells it as its own flag (`--resume`)."""

from __future__ import annotations

import math
import re
from typing import Callable, Iterable


class LocalscoreError(Exception):
    """Base class: the message is shown to the user as-is, so it names the file/record and what to do."""

    def __init__(self, message: str, *, options: Iterable[str] = ()):
        super().__init__(message)
        self.template = message
        self.options = tuple(options)

    def render(self, spell: Callable[[str], str]) -> str:
        """The message with each option placeholder spelled by `spell(name)`; other braces stay as they are."""
        if not self.options:
            return self.template
        names = "|".join(re.escape(name) for name in self.options)
        return re.sub(r"\{(" + names + r")\}", lambda m: spell(m.group(1)), self.template)

    def __str__(self) -> str:
        return self.render(lambda name: f"'{name}'")


class InputError(LocalscoreError):
    """Bad input data: a file that cannot be read, a record of unknown shape, a bad option value."""


class ModelError(LocalscoreError):
    """A model file that cannot be used for scoring (missing, corrupt, wrong architecture, no digit tokens)."""


class ConversionError(LocalscoreError):
    """A checkpoint that cannot be converted (unsafe pickle, unsupported architecture or tokenizer, corrupt file)."""


class UsageError(InputError):
    """Options that do not go together (`actors` without `ray`); the CLI reports it as a usage error."""


class OutputError(LocalscoreError):
    """An output that cannot be written: the input itself, a folder, a full disk, a resume into a device, another
    run writing the same output."""


class OutputClosed(LocalscoreError):
    """The reader of the output went away (`localscore score ... | head`): the CLI ends quietly, like a Unix tool."""


def check_range(name: str, value: float, low: float | None = None, high: float | None = None, *,
                why: str = "") -> None:
    """Refuse the option `name` when `value` is below `low` or above `high` (or NaN), naming the values that work
    and, in `why`, what sets them."""
    if not math.isnan(value) and (low is None or value >= low) and (high is None or value <= high):
        return
    span = (f"between {low:g} and {high:g}" if low is not None and high is not None
            else f"at least {low:g}" if low is not None else f"at most {high:g}")
    raise UsageError(f"{{{name}}} must be {span}, got {value}{f' ({why})' if why else ''}", options=[name])
