"""llama.cpp's log, per engine. llama.cpp has one process-wide log callback; each engine owns a LlamaLog and
enters its scope around its own llama.cpp calls, so what llama.cpp says lands with the engine that caused it:
two engines in one process keep their own verbosity and quote only their own errors."""

from __future__ import annotations

import collections
import contextlib
import ctypes
import re
import sys
from typing import Iterator

import llama_cpp

# The scopes entered and not yet left; the innermost receives the lines. Lines logged outside any scope
# (llama.cpp's own start-up chatter) are dropped.
_scopes: list["LlamaLog"] = []


@llama_cpp.llama_log_callback
def _receive(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
    if _scopes:
        _scopes[-1].add(text.decode("utf-8", errors="replace"))


llama_cpp.llama_log_set(_receive, ctypes.c_void_p(0))


class LlamaLog:
    """The tail of what llama.cpp logged inside this log's scope; echoed to stderr when verbose."""

    def __init__(self, verbose: bool = False):
        self.verbose = verbose
        self._lines: collections.deque[str] = collections.deque(maxlen=50)

    def add(self, line: str) -> None:
        self._lines.append(line)
        if self.verbose:
            print(line, end="", file=sys.stderr, flush=True)

    @contextlib.contextmanager
    def scope(self, *, fresh: bool = False) -> Iterator["LlamaLog"]:
        """Route llama.cpp's log here while inside; `fresh` first forgets older lines, so that said() explains
        the calls made inside this scope only."""
        if fresh:
            self._lines.clear()
        _scopes.append(self)
        try:
            yield self
        finally:
            _scopes.remove(self)

    def said_allocation_failed(self) -> bool:
        """Whether llama.cpp said a buffer could not be allocated (a model or context too big for a device)."""
        return any(re.search(r"(unable|failed) to allocate", line) for line in self._lines)

    def said_out_of_memory(self) -> bool:
        """Whether llama.cpp said the operating system refused it memory (mapping the file, say)."""
        return any("Cannot allocate memory" in line for line in self._lines)

    def said(self) -> str:
        """" (llama.cpp: <first error it logged>)", or "" when it logged none."""
        errors = [ln.strip() for ln in self._lines if "error" in ln.lower() or "failed" in ln.lower()]
        # The first complaint is the cause; later ones ("failed to load model") only repeat that it failed.
        return f" (llama.cpp: {errors[0].split('error loading model: ')[-1]})" if errors else ""
