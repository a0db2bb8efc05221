"""Actors for tests on Ray, in a module of their own: Ray's workers import an actor's class by its module's name, and
pytest imports test files under names of its own."""

from __future__ import annotations

import os
import signal

from localscore.forms.records import Record
from localscore.runs.ray import _ScoreActor


class PoisonedActor(_ScoreActor):
    """A scoring actor whose process dies (SIGKILL) on any block that holds the record with id "poison"."""

    def _results(self, records: list[Record]):
        if any(record.data and record.data.get("id") == "poison" for record in records):
            os.kill(os.getpid(), signal.SIGKILL)
        yield from super()._results(records)


class StillbornActor(_ScoreActor):
    """A scoring actor whose process dies (SIGKILL) while it starts, as one whose node runs out of memory loading
    the model does."""

    def __init__(self, **options):
        os.kill(os.getpid(), signal.SIGKILL)
