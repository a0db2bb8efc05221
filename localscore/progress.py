"""A one-line progress display on stderr for long scoring runs: records/s, tokens/s and ETA."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """Redraws at most a few times a second; draws nothing unless enabled (a terminal and not --quiet)."""

    def __init__(self, total: int | None, *, done: int = 0, enabled: bool = True, stream: TextIO | None = None):
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.total = total
        self.done = done
        self.start_done = done
        self.tokens = 0
        self.start = time.perf_counter()
        self._drawn = 0.0

    def update(self, records: int, tokens: int) -> None:
        self.done += records
        self.tokens += tokens
        now = time.perf_counter()
        if self.enabled and now - self._drawn >= 0.2:
            self._drawn = now
            self._draw(now - self.start)

    def _draw(self, elapsed: float) -> None:
        rate = (self.done - self.start_done) / elapsed if elapsed > 0 else 0.0
        tps = self.tokens / elapsed if elapsed > 0 else 0.0
        count = f"{self.done:,}/{self.total:,}" if self.total else f"{self.done:,}"
        eta = ""
        if self.total and rate > 0:
            eta = f"  ETA {_clock((self.total - self.done) / rate)}"
        self.stream.write(f"\r{count} records  {rate:.1f} rec/s  {tps:,.0f} tok/s{eta}\033[K")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self._drawn:
            self.stream.write("\r\033[K")
            self.stream.flush()


def _clock(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"
