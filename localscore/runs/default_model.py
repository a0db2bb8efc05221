"""Where models come from when no model is given: the official Deita scorers, converted once into a local cache."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from filelock import FileLock, Timeout

from ..errors import LocalscoreError, ModelError

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
    if path.is_file():  # a conversion renames its finished file into place, so a file there is whole
        return path
    try:
        from ..convert import convert
    except ImportError:
        raise ModelError(f"no model given ({{model}}) and {path} is not cached; give a scorer GGUF as {{model}}, or "
                         "install the converter (pip install 'localscore[convert]') to make it on first use",
                         options=["model"]) from None
    path.parent.mkdir(parents=True, exist_ok=True)
    # Processes that start at once (Ray actors on one node, a job array) convert one at a time: two conversions
    # would write the same .partial file. filelock comes with huggingface-hub, which uses it for its own cache; it
    # locks on Windows as on POSIX, and the OS releases the lock of a process that dies.
    lock = FileLock(path.with_name(path.name + ".lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        if log:
            log(f"waiting for another process converting {repo} into {path}")
        lock.acquire()
    try:
        if path.is_file():  # the process we waited for made it
            return path
        if log:
            log(f"first use: converting {repo} to {DEFAULT_QUANT} into {path} (once)")
        try:
            convert(repo, path, DEFAULT_QUANT, log=log)
        except LocalscoreError as e:
            raise ModelError(f"no model given ({{model}}) and the default {scorer} scorer is not in {path}: "
                             f"{e}; then give it as {{model}} or put it at that path", options=["model"]
                             ) from None
    finally:
        lock.release()
    return path
