"""localscore: the Deita data-quality scorers, quantized, scored locally through llama.cpp."""

from .errors import ConversionError, InputError, LocalscoreError, ModelError
from .scorer import Scorer

__version__ = "0.1.0"

__all__ = ["Scorer", "LocalscoreError", "InputError", "ModelError", "ConversionError", "__version__"]
