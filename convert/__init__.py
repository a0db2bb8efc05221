"""Convert a Hugging Face Llama checkpoint (the Deita scorers) into a GGUF file, quantized by llama.cpp.

    from localscore.convert import convert
    convert("hkust-nlp/deita-quality-scorer", "deita-quality-q4_k_m.gguf", "q4_k_m", log=print)

is what `localscore convert hkust-nlp/deita-quality-scorer -o deita-quality-q4_k_m.gguf` runs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from localscore.errors import ConversionError
from localscore.options import DEFAULT_QUANT, QUANT_TYPES

# Provided by the `convert` extra; the rest of a conversion's imports are localscore's own dependencies.
EXTRA_MODULES = ("gguf", "sentencepiece")


def convert(source: str | os.PathLike, output: str | os.PathLike, quant: str = DEFAULT_QUANT, *,
            log: Callable[[str], None] | None = None) -> Path:
    """Convert the checkpoint `source` (a local folder or a Hub repo id like "org/name") into the GGUF file
    `output`, its weights in `quant` (one of QUANT_TYPES); `log` receives short progress lines. Returns the
    output path. Raises ConversionError for anything about the inputs that stops the conversion."""
    if quant not in QUANT_TYPES:
        raise ConversionError(f"unknown quantization {quant!r}; choose one of {', '.join(QUANT_TYPES)}")
    # Imported here: importing this package, as the CLI does, costs nothing.
    try:
        from . import pipeline
    except ImportError as error:
        if error.name not in EXTRA_MODULES:
            raise
        raise ConversionError(f"converting needs {error.name}: pip install 'localscore[convert]'") from None
    return pipeline.run(os.fspath(source), Path(output), quant, log or (lambda line: None))
