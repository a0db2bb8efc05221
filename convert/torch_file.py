"""Read PyTorch .bin checkpoints (the zip format torch.save writes) without torch and without trusting them.

A .bin file is a zip: `<prefix>/data.pkl` is a pickle of the state dict whose tensors point, through
persistent ids, at raw storages in `<prefix>/data/<key>`. A pickle can call any importable function, so it is
read by an unpickler that resolves only the handful of globals torch.save emits for a state dict (checked with
pickletools on torch 2.13's output) and maps them to inert stand-ins that only record where each tensor's
bytes are. Anything else (os.system, builtins.eval, ...) is refused when the pickle names it, before any
call it sets up can run.
"""

from __future__ import annotations

import _compat_pickle
import collections
import pickle
import zipfile
import zlib
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from localscore.errors import ConversionError

from .tensor import DType, TensorRef

STORAGES = {"DoubleStorage": DType.F64, "FloatStorage": DType.F32, "HalfStorage": DType.F16,
            "BFloat16Storage": DType.BF16, "LongStorage": DType.I64, "IntStorage": DType.I32,
            "ShortStorage": DType.I16, "CharStorage": DType.I8, "ByteStorage": DType.U8, "BoolStorage": DType.BOOL}
# The first bytes of torch's pre-1.6 format: a pickled magic number, not a zip.
LEGACY_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"
ZIP_MAGIC = b"PK\x03\x04"
READ_CHUNK = 16 * 1024 * 1024


@dataclass(frozen=True)
class _StorageType:
    """What the pickle gets for torch.FloatStorage etc.: a fresh one per file, so a BUILD opcode aimed at it
    can only change this file's own marker, never shared state."""

    dtype: DType


@dataclass(frozen=True)
class _Storage:
    dtype: DType
    key: str
    numel: int


@dataclass(frozen=True)
class _Tensor:
    storage: _Storage
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    """Stands in for torch._utils._rebuild_tensor_v2: records the tensor instead of building it."""
    if not isinstance(storage, _Storage) or not _ints(storage_offset, *size, *stride):
        raise pickle.UnpicklingError("a tensor has a malformed storage, offset, size or stride")
    return _Tensor(storage, storage_offset, tuple(size), tuple(stride))


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    """Stands in for torch._utils._rebuild_parameter: a Parameter is its data."""
    return data


# Besides the torch.<X>Storage types, the only globals torch.save emits for a state dict.
ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
}


class _WeightsUnpickler(pickle.Unpickler):
    def __init__(self, file, path: Path):
        super().__init__(file)
        self.path = path

    def find_class(self, module: str, name: str):
        if module == "torch" and name in STORAGES:
            return _StorageType(STORAGES[name])
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise ConversionError(
                f"{self.path} is unsafe: its pickle calls {_python3_name(module, name)}, which a weights file never "
                "needs; refusing to load it (get the weights as .safetensors or from a source you trust)"
            ) from None

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and isinstance(pid[1], _StorageType)
                and isinstance(pid[2], str) and _ints(pid[4])):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        return _Storage(dtype=pid[1].dtype, key=pid[2], numel=pid[4])


def list_tensors(path: Path) -> list[TensorRef]:
    """The tensors of one torch zip checkpoint, every storage checked against the zip's entries."""
    try:
        with zipfile.ZipFile(path) as archive:
            prefix = _record_prefix(path, archive)
            sizes = {info.filename: info.file_size for info in archive.infolist()}
            # Written since torch 1.10; older files are little-endian, like every machine torch ran on then.
            byteorder = archive.read(prefix + "byteorder") if prefix + "byteorder" in sizes else b"little"
            if byteorder != b"little":
                raise ConversionError(f"{path} was saved on a big-endian machine; re-save it as safetensors")
            with archive.open(prefix + "data.pkl") as f:
                state = _unpickle(f, path)
    except zipfile.BadZipFile:
        raise ConversionError(_not_a_zip(path)) from None
    except (zlib.error, EOFError, OSError) as error:
        raise ConversionError(f"{path} cannot be read ({error}); download it again") from None
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        raise ConversionError(f"{path} does not hold a state dict (tensor name -> tensor)")
    refs = []
    for name, tensor in state.items():
        if not isinstance(tensor, _Tensor):
            raise ConversionError(f"{path}: {name} is not a tensor")
        entry = f"{prefix}data/{tensor.storage.key}"
        _check_bounds(path, name, tensor, sizes.get(entry))
        refs.append(TensorRef(name, tensor.storage.dtype, tensor.shape, path, partial(_load, path, entry, tensor)))
    return refs


def _record_prefix(path: Path, archive: zipfile.ZipFile) -> str:
    pickles = [name for name in archive.namelist() if name.count("/") == 1 and name.endswith("/data.pkl")]
    if len(pickles) != 1:
        raise ConversionError(f"{path} is a zip but not a PyTorch checkpoint (no single <name>/data.pkl in it)")
    return pickles[0][: -len("data.pkl")]


def _unpickle(file, path: Path) -> object:
    try:
        return _WeightsUnpickler(file, path).load()
    except ConversionError:
        raise
    except Exception as error:  # whatever a malformed pickle makes the unpickler raise is a fault of the file
        raise ConversionError(
            f"{path} has a corrupt data.pkl ({type(error).__name__}: {error}); download it again"
        ) from None


def _check_bounds(path: Path, name: str, tensor: _Tensor, entry_size: int | None) -> None:
    storage = tensor.storage
    if entry_size is None or entry_size < storage.numel * storage.dtype.numpy.itemsize:
        raise ConversionError(f"{path}: the data of {name} is missing or short; download the file again")
    if len(tensor.shape) != len(tensor.stride) or any(n < 0 for n in (tensor.offset, *tensor.shape, *tensor.stride)):
        raise ConversionError(f"{path}: {name} has a malformed shape or stride")
    last = tensor.offset + sum((n - 1) * s for n, s in zip(tensor.shape, tensor.stride))
    if 0 not in tensor.shape and last >= storage.numel:
        raise ConversionError(f"{path}: {name} reaches past the end of its storage")


def _load(path: Path, entry: str, tensor: _Tensor) -> np.ndarray:
    """Read the tensor's storage from the zip, then view it with the tensor's offset, shape and stride."""
    dtype = tensor.storage.dtype.numpy
    if 0 in tensor.shape:
        return np.empty(tensor.shape, dtype)
    storage = _read_entry(path, entry)[: tensor.storage.numel * dtype.itemsize].view(dtype)
    strides = tuple(s * dtype.itemsize for s in tensor.stride)
    view = np.lib.stride_tricks.as_strided(storage[tensor.offset:], tensor.shape, strides, writeable=False)
    return np.ascontiguousarray(view)  # a copy only when the tensor is not contiguous


def _read_entry(path: Path, entry: str) -> np.ndarray:
    # Read in chunks into one buffer: zipfile's read() would hold the bytes twice. Reading to the end lets
    # zipfile check the entry's CRC.
    try:
        with zipfile.ZipFile(path) as archive, archive.open(entry) as f:
            buffer = np.empty(archive.getinfo(entry).file_size, np.uint8)
            view = memoryview(buffer)
            done = 0
            while done < len(buffer):
                n = f.readinto(view[done:done + READ_CHUNK])
                if not n:
                    raise EOFError("the entry ends early")
                done += n
            f.read(1)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as error:
        raise ConversionError(f"{path} is corrupt ({error}); download it again") from None
    return buffer


def _python3_name(module: str, name: str) -> str:
    """The global as Python 3 resolves it: protocol 2 pickles spell some the Python 2 way (__builtin__.exec)."""
    module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
    return f"{_compat_pickle.IMPORT_MAPPING.get(module, module)}.{name}"


def _ints(*values: object) -> bool:
    return all(isinstance(v, int) and not isinstance(v, bool) for v in values)


def _not_a_zip(path: Path) -> str:
    """Say what a .bin that is not a zip is: torch's legacy format, a cut-off download, or something else."""
    with open(path, "rb") as f:
        head = f.read(len(LEGACY_MAGIC))
    if head == LEGACY_MAGIC:
        return (f"{path} is in torch's legacy (pre-1.6, non-zip) format, which is unsupported; "
                "re-save it with a current torch.save or as safetensors")
    if head.startswith(ZIP_MAGIC):
        return f"{path} is a truncated or damaged zip; download it again"
    return f"{path} is not a PyTorch checkpoint (neither a zip nor torch's legacy format); download it again"
