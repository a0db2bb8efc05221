"""The GPU devices of the llama.cpp build that runs here, and where a model's layers go: the backend registry of
ggml (which backends the build has, which devices each found), read through ctypes because llama-cpp-python
binds none of it."""

from __future__ import annotations

import ctypes
import functools
from dataclasses import dataclass

from llama_cpp._ggml import libggml

# ggml_backend_dev_type: the kinds of device llama.cpp offloads layers to (dedicated and integrated GPUs).
_GPU_TYPES = (1, 2)
# Backends that are not GPUs yet may have no device: the CPU, BLAS (an accelerator of the CPU backend), and RPC
# (its devices are remote servers, added at run time).
_NOT_GPU_BACKENDS = ("CPU", "BLAS", "RPC")

_SIGNATURES = {
    "ggml_backend_dev_count": ([], ctypes.c_size_t),
    "ggml_backend_dev_get": ([ctypes.c_size_t], ctypes.c_void_p),
    "ggml_backend_dev_name": ([ctypes.c_void_p], ctypes.c_char_p),
    "ggml_backend_dev_description": ([ctypes.c_void_p], ctypes.c_char_p),
    "ggml_backend_dev_type": ([ctypes.c_void_p], ctypes.c_int),
    "ggml_backend_dev_memory": ([ctypes.c_void_p, ctypes.POINTER(ctypes.c_size_t), ctypes.POINTER(ctypes.c_size_t)],
                                None),
    "ggml_backend_reg_count": ([], ctypes.c_size_t),
    "ggml_backend_reg_get": ([ctypes.c_size_t], ctypes.c_void_p),
    "ggml_backend_reg_name": ([ctypes.c_void_p], ctypes.c_char_p),
    "ggml_backend_reg_dev_count": ([ctypes.c_void_p], ctypes.c_size_t),
}


@functools.cache
def _ggml(name: str):
    function = getattr(libggml, name)
    function.argtypes, function.restype = _SIGNATURES[name]
    return function


@dataclass(frozen=True)
class Device:
    handle: int  # ggml_backend_dev_t
    name: str  # llama.cpp's name: "Vulkan0", "CUDA0", "MTL0"
    description: str  # the driver's: "llvmpipe (LLVM 15.0.6, 256 bits)", "NVIDIA H200"

    @property
    def label(self) -> str:
        """"Vulkan0 (llvmpipe)": the name and the description without its details in parentheses."""
        return f"{self.name} ({self.description.split(' (')[0]})"

    def memory(self) -> tuple[int, int]:
        """(free, total) bytes of device memory, as the driver reports them."""
        free, total = ctypes.c_size_t(0), ctypes.c_size_t(0)
        _ggml("ggml_backend_dev_memory")(self.handle, ctypes.byref(free), ctypes.byref(total))
        return free.value, total.value


def gpu_devices() -> tuple[Device, ...]:
    """The GPUs llama.cpp offloads to by default, in its order."""
    found = []
    for index in range(_ggml("ggml_backend_dev_count")()):
        handle = _ggml("ggml_backend_dev_get")(index)
        if _ggml("ggml_backend_dev_type")(handle) in _GPU_TYPES:
            found.append(Device(handle, _text(_ggml("ggml_backend_dev_name")(handle)),
                                _text(_ggml("ggml_backend_dev_description")(handle))))
    return tuple(found)


def backends_without_devices() -> tuple[str, ...]:
    """GPU backends this build has that found no device ("Vulkan" when no Vulkan driver offers a GPU)."""
    names = []
    for index in range(_ggml("ggml_backend_reg_count")()):
        reg = _ggml("ggml_backend_reg_get")(index)
        name = _text(_ggml("ggml_backend_reg_name")(reg))
        if name not in _NOT_GPU_BACKENDS and _ggml("ggml_backend_reg_dev_count")(reg) == 0:
            names.append(name)
    return tuple(names)


def _text(value: bytes | None) -> str:
    return (value or b"").decode("utf-8", errors="replace")


@dataclass(frozen=True)
class Offload:
    """Where a loaded model's layers are: llama.cpp counts the output layer as one more layer, and offloads the
    last `on_device` of the `total`."""

    on_device: int
    total: int
    devices: tuple[Device, ...]

    @classmethod
    def of(cls, n_gpu_layers: int, n_layer: int, devices: tuple[Device, ...]) -> "Offload":
        total = n_layer + 1
        # As llama_model::n_gpu_layers() reads it: a negative count means all.
        wanted = total if n_gpu_layers < 0 else n_gpu_layers
        return cls(min(wanted, total) if devices else 0, total, devices)

    def __str__(self) -> str:
        if not self.devices:
            return "CPU only"
        return f"{self.on_device}/{self.total} layers on {' + '.join(device.label for device in self.devices)}"
