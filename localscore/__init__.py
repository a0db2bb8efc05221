"""localscore: the Deita data-quality scorers, quantized, scored locally through llama.cpp."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import ConversionError, InputError, LocalscoreError, ModelError

if TYPE_CHECKING:
    from .embedding import Embedder
    from .scorer import Scorer

__version__ = "0.1.0"

__all__ = ["Scorer", "Embedder", "LocalscoreError", "InputError", "ModelError", "ConversionError", "__version__"]


def __getattr__(name: str):
    # Loading llama.cpp takes a while; `localscore --version`, the records module and the converter don't need it.
    if name == "Scorer":
        from .scorer import Scorer

        return Scorer
    if name == "Embedder":
        from .embedding import Embedder

        return Embedder
    raise AttributeError(f"module 'localscore' has no attribute {name!r}")
