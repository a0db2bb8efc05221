"""Embeddings on disk: one `.npy` file (float32, one row per input record), written row by row.

The header is written with a fixed size, so it can be rewritten in place with the final row count when the run
completes; until then the file is `<path>.partial`. numpy reads the result with `np.load(path, mmap_mode="r")`.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

import numpy as np

from .errors import InputError, OutputError
from .output import DISK_FULL

DTYPE = np.dtype("<f4")
# Room for any shape's header (the dict is ~70 characters); a multiple of 64 keeps the rows aligned.
_HEADER_BYTES = 128


class EmbeddingsWriter:
    """Append rows of `dim` floats to `<path>.partial`; `finish()` writes the count and renames it onto `path`.

    An existing `path` is untouched until then; leaving the `with` block without `finish()` keeps the partial."""

    def __init__(self, path: str | os.PathLike, dim: int):
        self.path = Path(path)
        self.dim = dim
        self.rows = 0
        self._partial = self.path.with_name(self.path.name + ".partial")
        if self.path.is_dir():
            raise OutputError(f"output {self.path} is a folder; give a file name")
        try:
            self._file = open(self._partial, "wb")
        except OSError as e:
            raise OutputError(f"cannot write {self._partial}: {e.strerror}") from None
        self._file.write(_header(0, dim))

    def write(self, rows: np.ndarray) -> None:
        rows = np.asarray(rows, dtype=DTYPE).reshape(-1, self.dim)
        with self._disk_full_is_one_line():
            self._file.write(rows.tobytes())
        self.rows += len(rows)

    def finish(self) -> None:
        with self._disk_full_is_one_line():
            self._file.seek(0)
            self._file.write(_header(self.rows, self.dim))
            self._file.flush()
            os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self._partial, self.path)

    @contextlib.contextmanager
    def _disk_full_is_one_line(self) -> Iterator[None]:
        try:
            yield
        except OSError as e:
            if e.errno not in DISK_FULL:
                raise
            raise OutputError(f"disk full writing {self._partial}; free some space, then run the same command "
                              "again (computed embeddings are cached)") from None

    def __enter__(self) -> "EmbeddingsWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        if not self._file.closed:
            self._file.close()


def read_embeddings(path: str | os.PathLike, rows: int | None = None) -> np.ndarray:
    """The embeddings in `path` (any 2-D float `.npy`), memory-mapped; `rows` is the count the input has."""
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as e:
        raise InputError(f"cannot read embeddings {path}: {e}") from None
    if array.ndim != 2 or array.dtype.kind != "f":
        raise InputError(f"embeddings {path} hold a {array.dtype} array of shape {array.shape}; expected one float "
                         "row per record (made by `localscore embed`)")
    if rows is not None and len(array) != rows:
        raise InputError(f"embeddings {path} have {len(array):,} rows but the input has {rows:,} records; "
                         "make them from this input with `localscore embed`")
    return array


def _header(rows: int, dim: int) -> bytes:
    text = repr({"descr": DTYPE.str, "fortran_order": False, "shape": (rows, dim)})
    prefix = np.lib.format.magic(1, 0)
    body_len = _HEADER_BYTES - len(prefix) - 2
    body = text.ljust(body_len - 1).encode("latin1") + b"\n"
    return prefix + body_len.to_bytes(2, "little") + body
