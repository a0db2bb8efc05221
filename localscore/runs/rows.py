"""Score records held in memory: a list of objects (read as a JSON array file is read), or a batch of columns (a dict
of equal-length lists, as `datasets.Dataset.map(..., batched=True)` and `DataFrame.to_dict("list")` hold rows). The
results are the output objects a file run writes, through the same scoring step (score_step.py).

A loaded scorer is kept for the next call in the same process (a `map` calls once per batch): one load per process
and set of options. A forked worker process loads its own rather than use its parent's, whose llama.cpp state
does not survive a fork."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Union

from ..errors import InputError
from ..forms.json_input import array_records
from ..llama.scorer import Scorer
from ..options import RunOptions, ScorerOptions
from .score_step import score_records

Rows = Union[Sequence[dict], Mapping[str, Sequence]]

_LOADED: dict[tuple, Scorer] = {}


def loaded_scorer(path: str | os.PathLike, options: ScorerOptions, run: RunOptions) -> Scorer:
    """The scorer GGUF `path` loaded as `options` and `run` say, once per process."""
    key = (os.getpid(), os.fspath(path), options, run)
    if key not in _LOADED:
        _LOADED[key] = Scorer.from_path(path, options, run)
    return _LOADED[key]


def score_rows(rows: Rows, scorer: Scorer) -> list[dict] | dict[str, list]:
    """Each row's output object, in order; a batch of columns comes back as columns: its own, then the scorer's
    result fields, None where a row has no such field (every batch gets the same columns)."""
    if isinstance(rows, Mapping):
        columns = {name: list(values) for name, values in rows.items()}
        lengths = {len(values) for values in columns.values()}
        if len(lengths) > 1:
            raise InputError(f"a batch of columns must have columns of one length, got lengths {sorted(lengths)}")
        count = lengths.pop() if lengths else 0
        results = _score(scorer, [{name: values[i] for name, values in columns.items()} for i in range(count)])
        fields = [name for name in scorer.template.result_fields if name not in columns]
        return {name: [result.get(name) for result in results] for name in [*columns, *fields]}
    return _score(scorer, rows)


def _score(scorer: Scorer, rows: Sequence[dict]) -> list[dict]:
    return [scored.output for scored in score_records(scorer, array_records(rows))]
