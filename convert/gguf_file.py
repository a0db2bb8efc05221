"""Write a GGUF file one tensor at a time, and read it back to check it.

GGUFWriter is driven through its explicit states: every tensor's name, type and size is declared first, the
header, metadata and tensor infos are written, then each tensor's data is produced and written in turn. Only
one tensor is ever in memory, and it is converted a block of rows at a time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import gguf
import numpy as np

from localscore.errors import ConversionError

from .tensor import DType, to_float32

Q = gguf.GGMLQuantizationType
# How each type a float GGUF holds is laid out in numpy (bf16 as its raw bits).
NUMPY_TYPES = {Q.F32: np.dtype(np.float32), Q.F16: np.dtype(np.float16), Q.BF16: np.dtype(np.uint16)}
# Elements converted per block: bounds the float32 temporaries whatever the tensor's size.
BLOCK_ELEMENTS = 4 * 1024 * 1024


@dataclass(frozen=True)
class OutTensor:
    """A tensor to write: `read()` returns its data, `shape` in numpy order, laid out as NUMPY_TYPES[type]."""

    name: str
    shape: tuple[int, ...]
    type: gguf.GGMLQuantizationType
    read: Callable[[], np.ndarray] = field(repr=False, compare=False)


def write(writer: gguf.GGUFWriter, tensors: Sequence[OutTensor], log: Callable[[str], None]) -> None:
    """Write the metadata already added to `writer`, then `tensors`, reading each only when its turn comes."""
    for t in tensors:
        dtype = NUMPY_TYPES[t.type]
        nbytes = int(np.prod(t.shape, dtype=np.int64)) * dtype.itemsize
        writer.add_tensor_info(t.name, t.shape, dtype, nbytes, raw_dtype=t.type)
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        step = max(1, len(tensors) // 10)
        for i, t in enumerate(tensors, start=1):
            data = t.read()
            if data.shape != t.shape or data.dtype != NUMPY_TYPES[t.type]:
                raise AssertionError(f"{t.name}: produced {data.dtype}{data.shape}, declared {t.type.name}{t.shape}")
            writer.write_tensor_data(data)
            if i % step == 0 or i == len(tensors):
                log(f"  {i}/{len(tensors)} tensors written")
    finally:
        writer.close()


def encode(data: np.ndarray, dtype: DType, target: gguf.GGMLQuantizationType, name: str,
           rows: np.ndarray | None = None) -> np.ndarray:
    """Checkpoint data (`dtype`, bf16 as raw bits) as `target`, rows taken in `rows` order when given.

    Converted a block of rows at a time so that besides the source and the result only one block's float32
    copy exists. bf16 to bf16 is copied bit for bit; float32 to bf16 rounds to nearest even as ggml does."""
    out = np.empty(data.shape, NUMPY_TYPES[target])
    row_size = data.size // data.shape[0] if data.size else 1
    step = max(1, BLOCK_ELEMENTS // row_size)
    for start in range(0, data.shape[0], step):
        block = data[rows[start:start + step]] if rows is not None else data[start:start + step]
        out[start:start + step] = _encode_block(block, dtype, target, name)
    return out


def _encode_block(block: np.ndarray, dtype: DType, target: gguf.GGMLQuantizationType, name: str) -> np.ndarray:
    if target is Q.BF16 and dtype is DType.BF16:
        return block
    values = to_float32(block, dtype)
    if target is Q.F32:
        return values
    if target is Q.BF16:
        return gguf.quants.quantize(values, Q.BF16).view(np.uint16)
    with np.errstate(over="ignore"):  # overflow is checked, and reported with the tensor's name, just below
        halves = values.astype(np.float16)
    if not np.isfinite(halves).all() and np.isfinite(values).all():
        raise ConversionError(f"{name} has values beyond float16's range; convert with {{quant}} bf16 or f32 instead",
                              options=["quant"])
    return halves


def verify(path: Path, tensors: Sequence[OutTensor], *, check_types: bool = True) -> None:
    """Read `path` back and check it holds exactly `tensors`, by name and shape (and type if `check_types`),
    in any order: llama.cpp's quantizer reorders them."""
    try:
        reader = gguf.GGUFReader(path)
    except (ValueError, OSError) as error:
        raise ConversionError(f"{path} was written but cannot be read back ({error})") from None
    found = {t.name: (tuple(int(n) for n in reversed(t.shape)), t.tensor_type if check_types else None)
             for t in reader.tensors}
    wanted = {t.name: (t.shape, t.type if check_types else None) for t in tensors}
    if len(reader.tensors) != len(tensors) or found != wanted:
        name = next((n for n in wanted if found.get(n) != wanted[n]), None)
        problem = f"{name}: {found.get(name)} instead of {wanted[name]}" if name else f"{len(reader.tensors)} tensors"
        raise ConversionError(f"{path} was written but does not hold the expected tensors ({problem})")
