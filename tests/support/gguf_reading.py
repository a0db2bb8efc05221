"""GGUF files read back with gguf-py's GGUFReader, once per file per session: parsing the 32,001-token vocabulary
of a file takes about a second, and several test modules read the same session conversions."""

from __future__ import annotations

from pathlib import Path

import gguf

_readers: dict[Path, gguf.GGUFReader] = {}


def reader(path: Path) -> gguf.GGUFReader:
    if path not in _readers:
        _readers[path] = gguf.GGUFReader(path)
    return _readers[path]


def field(path: Path, key: str):
    return reader(path).fields[key].contents()


def tensors(path: Path) -> dict[str, gguf.ReaderTensor]:
    return {t.name: t for t in reader(path).tensors}
