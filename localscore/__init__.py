"""localscore: the Deita data-quality scorers, quantized, scored locally through llama.cpp.

The API is the CLI: `score`, `embed`, `select`, `compare` and `merge` each do what the command of that name does,
with its options as keyword arguments (see commands.py). `Scorer` and `Embedder` are the loaded models underneath."""

from __future__ import annotations

from typing import TYPE_CHECKING

# The comparison module before the function of the same name: importing it later would rebind `compare` to it.
from . import compare as _comparison  # noqa: F401
from .commands import compare, embed, merge, score, select
from .errors import ConversionError, InputError, LocalscoreError, ModelError, OutputError

if TYPE_CHECKING:
    from .embedding import Embedder
    from .scorer import Scorer

__version__ = "0.1.0"

__all__ = ["score", "embed", "select", "compare", "merge", "Scorer", "Embedder", "LocalscoreError", "InputError",
           "OutputError", "ModelError", "ConversionError", "__version__"]


def __getattr__(name: str):
    # Loading llama.cpp takes a while; `localscore --version`, the records module and the converter don't need it.
    if name == "Scorer":
        from .scorer import Scorer

        return Scorer
    if name == "Embedder":
        from .embedding import Embedder

        return Embedder
    raise AttributeError(f"module 'localscore' has no attribute {name!r}")
