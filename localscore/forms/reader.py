"""One entry for every input form: `read_records` sniffs the source once, in a table of forms, and hands it to
that form's reader. Every command (score, embed, select, compare, Ray) reads through here."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ..errors import InputError
from ..options import DEFAULT_SPLIT
from .json_input import read_json
from .records import Records
from .tables import HUB_PREFIX, PARQUET_MAGIC, SAVED_MARKERS, hub_records, parquet_records, saved_records

Source = str | os.PathLike | BinaryIO
# Any input that starts so names the hub (as a path it would be a folder "hf:" with an empty name after it).
HUB_SCHEME = "hf://"
HUB_FORMS = f"{HUB_PREFIX}ORG/NAME or {HUB_PREFIX}ORG/NAME@REVISION"


@dataclass(frozen=True)
class _Form:
    name: str
    matches: Callable[[Source], bool]
    read: Callable[[Source, str, str | None], Records]


def _is_path(source: Source) -> bool:
    return isinstance(source, (str, os.PathLike))


def _is_hub(source: Source) -> bool:
    return _is_path(source) and os.fspath(source).startswith(HUB_SCHEME)


def hub_dataset(uri: str) -> tuple[str, str | None]:
    """The repo id and the revision (None: the default branch) of the hub dataset `uri` names; InputError, with
    the forms a hub input takes, for a URI that names none."""
    repo_id, at, revision = uri.removeprefix(HUB_PREFIX).partition("@")
    if uri.startswith(HUB_PREFIX) and repo_id.count("/") == 1 and (revision or not at) and _valid_repo_id(repo_id):
        return repo_id, revision or None
    raise InputError(f"{uri} names no hub dataset; give {HUB_FORMS}")


def _valid_repo_id(repo_id: str) -> bool:
    """Whether the hub takes `repo_id` (huggingface_hub's own rules: characters, length, no "--" or "..")."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        return False
    return True


def _is_saved(source: Source) -> bool:
    return _is_path(source) and any(os.path.isfile(os.path.join(source, marker)) for marker in SAVED_MARKERS)


def _is_folder(source: Source) -> bool:
    return _is_path(source) and os.path.isdir(source)


def _is_parquet(source: Source) -> bool:
    """A file that starts like Parquet, whatever its name."""
    if not _is_path(source):
        return False
    try:
        with open(source, "rb") as f:
            return f.read(len(PARQUET_MAGIC)) == PARQUET_MAGIC
    except OSError:
        return False  # the JSON reader reports it


def _parquet_folder(source: Source, split: str, config: str | None) -> Records:
    files = sorted(Path(source).glob("*.parquet"))
    if not files:
        raise InputError(f"{os.fspath(source)} is a folder without .parquet files or a datasets save_to_disk "
                         "folder; give a data file, a folder of Parquet files or a saved dataset")
    return parquet_records(files)


# First match wins: a stream is always JSON; a folder is a saved dataset when it has its markers.
_FORMS = (
    _Form("JSON stream", lambda source: not _is_path(source), lambda source, split, config: read_json(source)),
    _Form("hub dataset", _is_hub,
          lambda source, split, config: hub_records(os.fspath(source), *hub_dataset(os.fspath(source)), split, config)),
    _Form("saved dataset", _is_saved, lambda source, split, config: saved_records(Path(source), split)),
    _Form("Parquet folder", _is_folder, _parquet_folder),
    _Form("Parquet file", _is_parquet, lambda source, split, config: parquet_records([Path(source)])),
    _Form("JSON file", _is_path, lambda source, split, config: read_json(source)),
)


def read_records(source: Source, *, split: str = DEFAULT_SPLIT, config: str | None = None) -> Records:
    """The records of `source`, row i / line i as record i (1-based), with the input's schema and count.

    `source` is a binary stream such as sys.stdin.buffer (JSON), a hub dataset `hf://datasets/ORG/NAME` (`split`
    and `config` choose its part), a datasets save_to_disk folder (`split` of a saved DatasetDict), a folder of
    Parquet files (in name order, one schema), a Parquet file (found by its content, whatever its name), or a JSON
    Lines / JSON array file. The input is opened and checked before this returns: a missing file or a broken
    table raises InputError here; a bad record never raises, it comes back with `error` set.
    """
    form = next(form for form in _FORMS if form.matches(source))
    return form.read(source, split, config)


def user_source(input: str | os.PathLike) -> Source:
    """What the readers take for an input as a user names it: stdin's bytes for "-", a hub dataset URI as it is,
    else a path that must exist (each checked before anything slow, such as loading a model, starts)."""
    if input == "-":
        return sys.stdin.buffer
    if _is_hub(input):
        hub_dataset(os.fspath(input))
        return input
    return existing(input)


def existing(path: str | os.PathLike) -> str | os.PathLike:
    """`path`, which must exist: a typo is one line before any work starts."""
    if not os.path.exists(path):
        raise InputError(f"cannot read {os.fspath(path)}: no such file or folder")
    return path


def source_name(source: Source) -> str:
    """The input as messages name it."""
    return os.fspath(source) if _is_path(source) else "the input"
