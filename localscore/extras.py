"""Optional dependencies (the `parquet`, `datasets`, `ray` and `plot` extras): imported only when a run needs one,
so that a missing extra is one line naming the pip command that installs it."""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import LocalscoreError


def require(module: str, extra: str, purpose: str, error: type[LocalscoreError] = LocalscoreError) -> ModuleType:
    """`module`, imported; `error` "<purpose> needs the <extra> extra: pip install ..." when it is not installed."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise error(f"{purpose} needs the {extra} extra: pip install 'localscore[{extra}]'") from None
