"""The object written back for each record: its own fields, then the scorer's score (or error) fields."""

from __future__ import annotations

import math
from collections.abc import Sequence

from ..deita.templates import Template
from .records import Record


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
