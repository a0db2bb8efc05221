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
    try:
        from convert import convert
    except ImportError:
        raise ModelError(f"no model given (-m) and {path} is not cached; pass -m MODEL.gguf, or install the "
                         "converter (pip install 'localscore[convert]') to make it on first use") from None
    if log:
        log(f"first use: converting {repo} to {DEFAULT_QUANT} into {path} (once)")
    try:
        convert(repo, path, DEFAULT_QUANT, log=log)
    except LocalscoreError as e:
        raise ModelError(f"no model given (-m) and the default {scorer} scorer is not in {path}: {e}; "
                         f"then pass it with -m or put it at that path") from None
    return path
