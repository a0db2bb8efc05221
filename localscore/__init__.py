"""localscore: the Deita data-quality scorers, quantized, scored locally through llama.cpp.

The API is the CLI: `score`, `embed`, `select`, `compare`, `merge` and `info` each do what the command of that name
does, with its options as keyword arguments (see api.py); `score_rows` scores records held in memory as `score` does
a file's. `Scorer` and `Embedder` are the loaded models underneath."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .api import compare, embed, info, merge, score, score_rows, select
from .errors import ConversionError, InputError, LocalscoreError, ModelError, OutputError
from .version import __version__

if TYPE_CHECKING:
    from .llama.embedder import Embedder
    from .llama.scorer import Scorer

__all__ = ["score", "score_rows", "embed", "select", "compare", "merge", "info", "Scorer", "Embedder",
           "LocalscoreError", "InputError", "OutputError", "ModelError", "ConversionError", "__version__"]


def __getattr__(name: str):
    # Loading llama.cpp takes a while; `localscore --version`, the records module and the converter don't need it.
    if name == "Scorer":
        from .llama.scorer import Scorer

        return Scorer
    if name == "Embedder":
        from .llama.embedder import Embedder

        return Embedder
    raise AttributeError(f"module 'localscore' has no attribute {name!r}")
