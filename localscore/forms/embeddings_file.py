"""Embeddings on disk: one `.npy` file (float32, one row per input record), written row by row.

The header is written with a fixed size, so it can be rewritten in place with the final row count when the run
completes; until then the file is `<path>.partial`. numpy reads the result with `np.load(path, mmap_mode="r")`.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import InputError, OutputError
from .durable import OutputLock, Sink
from .provenance import Provenance, commit_with_sidecar, remove_sidecar, write_sidecar

DTYPE = np.dtype("<f4")
# Room for any shape's header (the dict is ~70 characters); a multiple of 64 keeps the rows aligned.
_HEADER_BYTES = 128
# What to do after a full disk: the vectors computed so far are in the embedding cache.
RUN_AGAIN = "run the same command again (computed embeddings are cached)"


class EmbeddingsWriter:
    """Append rows of `dim` floats to `<path>.partial`; `finish()` writes the count and renames it onto `path`.

    An existing `path` is untouched until then; leaving the `with` block without `finish()` keeps the partial.
    The output is locked from here to the end (see durable.OutputLock)."""

    def __init__(self, path: str | os.PathLike, dim: int):
        self.path = Path(path)
        self.dim = dim
        self.rows = 0
        if self.path.is_dir():
            raise OutputError(f"output {self.path} is a folder; give a file name")
        self._sink: Sink | None = None
        self._lock = OutputLock(self.path).acquire()
        try:
            partial = self.path.with_name(self.path.name + ".partial")
            remove_sidecar(partial)
            self._sink = Sink.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, resumable=False, advice=RUN_AGAIN)
            self._sink.write(_header(0, dim))
        except BaseException:
            self.close()
            raise

    def write(self, rows: np.ndarray) -> None:
        rows = np.asarray(rows, dtype=DTYPE).reshape(-1, self.dim)
        self._sink.write(rows.tobytes())
        self.rows += len(rows)

    def begin(self, provenance: Provenance) -> None:
        """Record what makes these embeddings beside the partial file."""
        write_sidecar(self._sink.name, provenance)

    def finish(self, provenance: Provenance | None = None) -> None:
        self._sink.write_at(0, _header(self.rows, self.dim))
        commit_with_sidecar(self._sink, self.path, provenance)

    def close(self) -> None:
        if self._sink is not None:
            self._sink.close()
        self._lock.release()

    def __enter__(self) -> "EmbeddingsWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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
