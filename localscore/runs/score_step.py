"""The scoring step every way of running shares (one process, job-array shards, Ray actors): records in, output
objects out, in order. Pure: no files, no terminal; the caller decides where results go."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Iterable, Iterator

from ..deita.prompts import Prompt, PromptTooLong
from ..forms.records import Record
from ..forms.results import result
from ..llama.scorer import Scorer

# Records whose prompts are built and tokenized ahead of the decode loop, so the loop only decodes.
CHUNK = 64


@dataclass(frozen=True)
class Scored:
    """One record's output object, and what it cost."""

    record: Record
    output: dict
    scores: list[float]  # one per turn; empty for a bad record
    tokens: int  # prompt tokens evaluated
    truncated: bool
    error: str | None

    @property
    def turns(self) -> int:
        return len(self.scores)


def score_records(scorer: Scorer, records: Iterable[Record]) -> Iterator[Scored]:
    """Score `records` in order, yielding each one's result as soon as it is scored (with pack=1, before the next
    record is decoded). A bad record yields its `<scorer>_error` result."""
    it = iter(records)
    while chunk := list(itertools.islice(it, CHUNK)):
        for group in _groups([_prepare(scorer, record) for record in chunk], scorer.pack):
            scores = iter(scorer.score_prompts([p for item in group for p in item.prompts]))
            for item in group:
                yield _scored(scorer, item, [next(scores) for _ in item.prompts])


@dataclass(frozen=True)
class _Prepared:
    record: Record
    prompts: list[Prompt]
    error: str | None


def _prepare(scorer: Scorer, record: Record) -> _Prepared:
    record = record.reading(scorer.template)
    if record.error:
        return _Prepared(record, [], record.error)
    prompts = []
    for i, turn in enumerate(record.turns, start=1):
        try:
            prompts.append(scorer.prompt(turn.instruction, turn.response))
        except PromptTooLong as e:
            where = f"turn {i}: " if len(record.turns) > 1 else ""
            return _Prepared(record, [], f"{where}{e}")
    return _Prepared(record, prompts, None)


def _groups(items: list[_Prepared], pack: int) -> Iterator[list[_Prepared]]:
    """Consecutive records holding at least `pack` prompts between them, scored in one call so that packing
    spans records; with pack=1 every record is its own group."""
    group: list[_Prepared] = []
    prompts = 0
    for item in items:
        group.append(item)
        prompts += len(item.prompts)
        if prompts >= pack:
            yield group
            group, prompts = [], 0
    if group:
        yield group


def _scored(scorer: Scorer, item: _Prepared, scores: list[float]) -> Scored:
    template = scorer.template
    if item.error is not None:
        return Scored(item.record, result(item.record, template, error=item.error), [], 0, False, item.error)
    truncated = any(p.truncated for p in item.prompts)
    return Scored(item.record, result(item.record, template, scores, truncated=truncated), scores,
                  sum(len(p.ids) for p in item.prompts), truncated, None)
