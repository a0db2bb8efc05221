"""Where models come from when -m is not given: the official Deita scorers, converted once into a local cache."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from .errors import LocalscoreError, ModelError

DEFAULT_REPOS = {
    "quality": "hkust-nlp/deita-quality-scorer",
    "complexity": "hkust-nlp/deita-complexity-scorer",
}
DEFAULT_QUANT = "q4_k_m"


def cache_dir() -> Path:
    if os.environ.get("LOCALSCORE_CACHE"):
        return Path(os.environ["LOCALSCORE_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "localscore"


def default_model(scorer: str, log: Callable[[str], None] | None = None) -> Path:
    """The cached GGUF of the official scorer, converting it from the Hugging Face hub on first use."""
    repo = DEFAULT_REPOS[scorer]
    path = cache_dir() / f"{repo.split('/')[-1]}.{DEFAULT_QUANT}.gguf"
    if path.is_file():
        return path
    hint = (f"pass -m MODEL.gguf, or convert on a connected machine with `localscore convert {repo} "
            f"-o {path.name}` and copy the file to {path}")
    try:
        from convert import convert
    except ImportError:
        raise ModelError(f"no model given and {path} is not cached; the converter is not installed "
                         f"(pip install 'localscore[convert]'), or {hint}") from None
    if log:
        log(f"first use: converting {repo} to {DEFAULT_QUANT} into {path} (once)")
    try:
        convert(repo, path, DEFAULT_QUANT, log=log)
    except LocalscoreError as e:
        raise ModelError(f"no model given and the default {scorer} scorer could not be prepared: {e}; "
                         f"{hint}") from None
    return path
