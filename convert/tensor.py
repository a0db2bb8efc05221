"""A tensor of a checkpoint before it is read: its element type, shape and a loader for its data."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Callable

import numpy as np


class DType(Enum):
    """Element types a checkpoint may hold. The value is the numpy dtype that views the raw little-endian
    bytes; bf16 has no numpy type, so its bits stay uint16 until `to_float32` widens them exactly."""

    F64 = "<f8"
    F32 = "<f4"
    F16 = "<f2"
    BF16 = "<u2"
    I64 = "<i8"
    I32 = "<i4"
    I16 = "<i2"
    I8 = "i1"
    U8 = "u1"
    BOOL = "?"

    @property
    def numpy(self) -> np.dtype:
        return np.dtype(self.value)

    @property
    def is_float(self) -> bool:
        return self in (DType.F64, DType.F32, DType.F16, DType.BF16)


@dataclass(frozen=True)
class TensorRef:
    """One tensor of a checkpoint, not yet read. `load()` reads it, and only it, from `file`: an array of
    `dtype.numpy` (raw bf16 bits for BF16) with `shape`."""

    name: str
    dtype: DType
    shape: tuple[int, ...]
    file: Path
    load: Callable[[], np.ndarray] = field(repr=False, compare=False)


def to_float32(array: np.ndarray, dtype: DType) -> np.ndarray:
    """Float data as float32. bf16 is the top half of a float32, so the shift is exact."""
    if dtype is DType.BF16:
        return (array.astype(np.uint32) << 16).view(np.float32)
    if not dtype.is_float:
        raise ValueError(f"{dtype.name} is not a float type")
    return array.astype(np.float32, copy=False)
