"""How a long run reports progress: it calls a `Progress` callback, and whoever runs it decides what to show (the CLI
draws a line on stderr). Library code never draws anything itself."""

from __future__ import annotations

from typing import Callable, Optional

# progress(done, total, tokens): records done so far (resumed ones included), the records in all when known cheaply
# (else None), and the prompt tokens this run has processed. Called once before the first record, then after each
# record or block; a call whose `done` is below the previous one starts another pass (compare scores two sides).
Progress = Callable[[int, Optional[int], int], None]


def silent(done: int, total: int | None, tokens: int) -> None:
    """The callback of a run nobody watches."""
