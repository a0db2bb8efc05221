"""Read .safetensors files by hand: an 8-byte little-endian header length, a JSON header, then raw data.

The `safetensors` package's numpy API cannot return bf16 (numpy has no such dtype) and would pull in torch
for it, so the format's few rules are applied here and each tensor is memory-mapped on its own when loaded.
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import numpy as np

from localscore.errors import ConversionError

from .tensor import DType, TensorRef

# A header is JSON describing tensors; anything bigger than this is not a safetensors file.
MAX_HEADER_BYTES = 100 * 1024 * 1024
DTYPES = {"F64": DType.F64, "F32": DType.F32, "F16": DType.F16, "BF16": DType.BF16, "I64": DType.I64,
          "I32": DType.I32, "I16": DType.I16, "I8": DType.I8, "U8": DType.U8, "BOOL": DType.BOOL}


def list_tensors(path: Path) -> list[TensorRef]:
    """The tensors of one .safetensors file, every offset checked against the file's size."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        prefix = f.read(8)
        header_len = int.from_bytes(prefix, "little")
        if len(prefix) < 8 or header_len > min(size - 8, MAX_HEADER_BYTES):
            raise ConversionError(f"{path} is truncated or not a safetensors file; download it again")
        try:
            header = json.loads(f.read(header_len).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise ConversionError(f"{path} has a corrupt header; download it again") from None
    if not isinstance(header, dict):
        raise ConversionError(f"{path} has a corrupt header; download it again")
    data_start = 8 + header_len
    refs = []
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        dtype, shape, begin, end = _parse_entry(path, name, entry)
        if data_start + end > size:
            raise ConversionError(
                f"{path} is truncated: {name} ends at byte {data_start + end} but the file has {size}; "
                "download it again"
            )
        refs.append(TensorRef(name, dtype, shape, path, partial(_load, path, dtype, shape, data_start + begin)))
    return refs


def _parse_entry(path: Path, name: str, entry: object) -> tuple[DType, tuple[int, ...], int, int]:
    try:
        dtype = DTYPES[entry["dtype"]]
        shape = tuple(entry["shape"])
        begin, end = entry["data_offsets"]
    except (TypeError, KeyError, ValueError):
        raise ConversionError(f"{path}: tensor {name} has an unsupported dtype or a corrupt header entry") from None
    if not all(isinstance(n, int) and n >= 0 for n in (*shape, begin, end)):
        raise ConversionError(f"{path}: tensor {name} has a corrupt shape or offsets; download it again")
    if end - begin != int(np.prod(shape, dtype=np.int64)) * dtype.numpy.itemsize:
        raise ConversionError(f"{path}: tensor {name}'s offsets do not match its shape {shape}; download it again")
    return dtype, shape, begin, end


def _load(path: Path, dtype: DType, shape: tuple[int, ...], offset: int) -> np.ndarray:
    count = int(np.prod(shape, dtype=np.int64))
    if count == 0:
        return np.empty(shape, dtype.numpy)
    # A map per tensor, dropped with the array: pages of tensors already written leave the process's memory.
    return np.memmap(path, dtype=dtype.numpy, mode="r", offset=offset, shape=(count,)).reshape(shape)
