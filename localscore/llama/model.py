"""A GGUF model loaded once through llama.cpp: weights, vocabulary, its own log, and a context that grows with
the data. The scoring engine and the embedder are two kinds of context built on this loading."""

from __future__ import annotations

import ctypes
import functools
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import llama_cpp

from ..errors import ModelError, check_range
from .devices import Device, Offload, backends_without_devices, gpu_devices
from .fingerprint import fingerprint
from ..options import RunOptions
from ..version import __version__
from .kernels import KernelChoice, choose, require_llama_cpp
from .log import LlamaLog

# Architectures whose GGUF is a Llama-shaped decoder (Deita scorers are Llama-7B; Mistral converts to "llama").
SUPPORTED_ARCHITECTURES = ("llama",)

# KV cells are allocated in steps of this many: a context follows the longest prompt seen so far instead of
# always holding the model's full context (~1 GB of KV cache at 7B), and regrows at most n_ctx / CELL_STEP times.
CELL_STEP = 256

_FTYPE_NAMES = {value: name.removeprefix("LLAMA_FTYPE_").removeprefix("MOSTLY_").lower()
                for name, value in vars(llama_cpp).items() if name.startswith("LLAMA_FTYPE_")}


def _file_type_name(ftype: int) -> str:
    return _FTYPE_NAMES.get(ftype, str(ftype))


@dataclass(frozen=True)
class Header:
    """What a GGUF's metadata says before its weights load."""

    file_type: str  # e.g. "q4_k_m"
    n_ctx_train: int


def read_header(path: Path, log: LlamaLog) -> Header:
    """A GGUF's file type and training context from its metadata, read by llama.cpp without loading the weights."""
    llama_cpp.llama_backend_init()
    mparams = llama_cpp.llama_model_default_params()
    mparams.vocab_only = True
    with log.scope(fresh=True):
        header = llama_cpp.llama_model_load_from_file(str(path).encode(), mparams)
    if not header:
        raise ModelError(f"cannot load {path}: not a valid GGUF model file{log.said()}")
    try:
        # llama_model_ftype() and the shape stay at their defaults in a vocab-only load; the metadata is read in full.
        def meta(key: str) -> str:
            buf = ctypes.create_string_buffer(32)
            n = llama_cpp.llama_model_meta_val_str(header, key.encode(), buf, len(buf))
            return buf.value.decode() if n >= 0 else ""

        ftype = meta("general.file_type")
        n_ctx_train = meta(f"{meta('general.architecture')}.context_length")
        return Header(_file_type_name(int(ftype)) if ftype.isdigit() else "unknown",
                      int(n_ctx_train) if n_ctx_train.isdigit() else 0)
    finally:
        llama_cpp.llama_model_free(header)


def model_file(path: str | os.PathLike) -> Path:
    """`path`, or ModelError when there is no such file."""
    if not os.path.isfile(path):
        raise ModelError(f"model file {os.fspath(path)} does not exist; convert one with `localscore convert`")
    return Path(path)


def check_model(path: str | os.PathLike, verbose: bool = False) -> Path:
    """`path`, checked to be a GGUF file by reading its header (the weights stay unread): a process that hands the
    loading to others (worker processes, actors) reports a missing or broken model once, before they start."""
    path = model_file(path)
    require_llama_cpp()
    read_header(path, LlamaLog(verbose))
    return path


def available_cpus() -> int:
    """Logical CPUs this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def physical_cores() -> int:
    """Physical cores this process may run on: llama.cpp's matmuls gain nothing from hyper-threads."""
    if hasattr(os, "sched_getaffinity"):
        cpus = os.sched_getaffinity(0)
        siblings = set()
        for cpu in cpus:
            try:
                siblings.add(Path(f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list").read_text())
            except OSError:
                return len(cpus)
        return max(1, len(siblings))
    if sys.platform == "darwin":
        import subprocess

        try:
            out = subprocess.run(["sysctl", "-n", "hw.physicalcpu"], capture_output=True, text=True, check=True)
            return max(1, int(out.stdout))
        except (OSError, ValueError, subprocess.CalledProcessError):
            pass
    return os.cpu_count() or 1


def _offload_devices(n_gpu_layers: int | None) -> tuple[Device, ...]:
    """The GPUs the model's layers may go to; none when `n_gpu_layers` is 0. Asking for layers on a GPU that is
    not there is an error: the run would go on on the CPU, slower than the user planned for."""
    if n_gpu_layers == 0:
        return ()
    devices = gpu_devices()
    if devices or n_gpu_layers is None:
        return devices
    missing = backends_without_devices()
    if missing:
        raise ModelError(f"this llama.cpp build has the {' and '.join(missing)} backend but it found no device: "
                         "check the GPU's driver (for Vulkan, `vulkaninfo` lists the devices it sees), or drop "
                         "{n_gpu_layers} to run on the CPU", options=["n_gpu_layers"])
    raise ModelError("this llama-cpp-python is built for the CPU only, so {n_gpu_layers} has nothing to offload "
                     "to: reinstall it with a GPU backend (docs/gpu.md) or drop {n_gpu_layers}",
                     options=["n_gpu_layers"])


def _does_not_fit(what: str, devices: tuple[Device, ...], remedy: str, log: LlamaLog) -> ModelError:
    free = sum(device.memory()[0] for device in devices) / 2**20
    return ModelError(f"{what} does not fit in the memory of {' + '.join(device.label for device in devices)} "
                      f"({free:,.0f} MiB free): offload fewer layers with {{n_gpu_layers}}, or {remedy}{log.said()}",
                      options=["n_gpu_layers"])


@dataclass(frozen=True)
class EngineInfo:
    path: Path
    architecture: str
    file_type: str
    full_precision: bool
    n_ctx: int
    n_ctx_train: int
    n_threads: int
    n_gpu_layers: int
    kernels: KernelChoice
    offload: Offload


class Model:
    """A loaded GGUF and its vocabulary. Subclasses say how their context is configured (`_context_params`) and
    what to redo in a fresh one (`_on_new_context`); `_ensure_cells` gives them a context with enough KV cells,
    recreating it larger when a longer prompt arrives."""

    def __init__(self, path: str | os.PathLike, run: RunOptions = RunOptions(), *, vocab_only: bool = False):
        self._model = self._ctx = None
        self._batch: llama_cpp.llama_batch | None = None  # the subclass's decode batch, freed by close()
        n_threads, n_gpu_layers = run.threads, run.n_gpu_layers
        self.log = LlamaLog(run.verbose)
        self.path = model_file(path)
        if n_threads is not None:  # llama.cpp's thread pool crashes far past that
            check_range("threads", n_threads, 1, available_cpus(), why="the CPUs this process may run on")
        require_llama_cpp()
        llama_cpp.llama_backend_init()
        mparams = llama_cpp.llama_model_default_params()
        # vocab_only: the vocabulary and shape without the weights (no context can be made), for a process that
        # only tokenizes and leaves the model's work to others (a Ray driver).
        self.vocab_only = mparams.vocab_only = vocab_only
        self.kernels: KernelChoice | None = None
        if not vocab_only:
            # The kernels depend on the weight type, and llama.cpp fixes them at load: read the header first.
            self.kernels = choose(run.kernels, read_header(self.path, self.log).file_type)
            mparams.use_extra_bufts = self.kernels.use_extra_bufts
        devices = _offload_devices(n_gpu_layers)
        if n_gpu_layers is not None:
            mparams.n_gpu_layers = n_gpu_layers
        if n_gpu_layers == 0:
            # No device at all, not merely no layers: llama.cpp would still put the KV cache (offload_kqv) and
            # large matrix products (op_offload) on a GPU, and the CPU build's results would not hold. The list
            # is NULL-terminated, so one NULL is an empty list.
            self._no_devices = (ctypes.c_void_p * 1)()
            mparams.devices = ctypes.addressof(self._no_devices)
        self.n_gpu_layers = mparams.n_gpu_layers
        with self.log.scope(fresh=True):
            self._model = llama_cpp.llama_model_load_from_file(str(self.path).encode(), mparams)
        if not self._model:
            if devices and self.log.said_allocation_failed():
                raise _does_not_fit(str(self.path), devices, "use a smaller quantization", self.log)
            if self.log.said_out_of_memory():
                raise ModelError(f"cannot load {self.path}: this process may not use the memory it needs"
                                 f"{self.log.said()}; free memory, raise the process's limit, or use a smaller "
                                 "quantization")
            raise ModelError(f"cannot load {self.path}: not a valid GGUF model file{self.log.said()}")
        self.offload = Offload.of(self.n_gpu_layers, llama_cpp.llama_model_n_layer(self._model), devices)
        self._vocab = llama_cpp.llama_model_get_vocab(self._model)
        self.architecture = self.meta("general.architecture") or "unknown"
        if self.architecture not in SUPPORTED_ARCHITECTURES:
            self.close()
            raise ModelError(f"{self.path} is a '{self.architecture}' model; localscore scores with Llama-family "
                             "scorers (convert one with `localscore convert`)")
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(self._vocab)
        self.n_embd = llama_cpp.llama_model_n_embd(self._model)
        self.n_ctx_train = llama_cpp.llama_model_n_ctx_train(self._model)
        ftype = llama_cpp.llama_model_ftype(self._model)
        if vocab_only:  # llama.cpp leaves the shape and type unset without the weights; the metadata has them
            self.n_embd = int(self.meta(f"{self.architecture}.embedding_length") or 0)
            self.n_ctx_train = int(self.meta(f"{self.architecture}.context_length") or 0)
            ftype = int(self.meta("general.file_type") or ftype)
        self.bos = llama_cpp.llama_vocab_bos(self._vocab)
        self.eos = llama_cpp.llama_vocab_eos(self._vocab)
        self.file_type = _file_type_name(ftype)
        self.full_precision = ftype == llama_cpp.LLAMA_FTYPE_ALL_F32
        self.n_threads = n_threads or physical_cores()
        self.n_cells = 0  # KV cells of the current context; 0 before the first one

    @functools.cached_property
    def fingerprint(self) -> str:
        """The file's content fingerprint (fingerprint.py): cache keys, and what outputs record of their model."""
        return fingerprint(self.path)

    def setup(self) -> dict:
        """What runs this model here, for an output's record: the versions, kernels and backend."""
        return {"localscore": __version__, "llama_cpp_python": llama_cpp.__version__,
                "kernels": self.kernels.kernels if self.kernels else None,
                "cpu": self.kernels.cpu if self.kernels else None, "backend": str(self.offload)}

    # -- vocabulary ---------------------------------------------------------------------------------------
    def meta(self, key: str) -> str | None:
        buf = ctypes.create_string_buffer(256)
        n = llama_cpp.llama_model_meta_val_str(self._model, key.encode(), buf, len(buf))
        return buf.value.decode("utf-8", errors="replace") if n >= 0 else None

    def tokenize(self, text: str, *, bos: bool = True) -> list[int]:
        """Ids as SentencePiece gives them; user text is never parsed for special tokens."""
        data = text.encode("utf-8")
        cap = len(data) + 8
        buf = (llama_cpp.llama_token * cap)()
        n = llama_cpp.llama_tokenize(self._vocab, data, len(data), buf, cap, False, False)
        if n < 0:
            cap = -n
            buf = (llama_cpp.llama_token * cap)()
            n = llama_cpp.llama_tokenize(self._vocab, data, len(data), buf, cap, False, False)
        ids = buf[:n]
        return [self.bos, *ids] if bos else ids

    def detokenize(self, ids: Sequence[int]) -> str:
        arr = (llama_cpp.llama_token * len(ids))(*ids)
        cap = 4 * len(ids) + 16
        while True:
            buf = ctypes.create_string_buffer(cap)
            n = llama_cpp.llama_detokenize(self._vocab, arr, len(ids), buf, cap, False, False)
            if n >= 0:
                return buf.raw[:n].decode("utf-8", errors="replace")
            cap = -n

    def token_text(self, token: int) -> bytes:
        return llama_cpp.llama_vocab_get_text(self._vocab, token) or b""

    def single_token_ids(self, labels: Sequence[str]) -> tuple[int, ...]:
        """The ids of the tokens whose text is exactly each label ("1".."6"), from the model's own vocabulary."""
        wanted = {label.encode(): label for label in labels}
        found: dict[str, int] = {}
        for token in range(self.n_vocab):
            label = wanted.get(self.token_text(token))
            if label is not None and label not in found:
                found[label] = token
        missing = [label for label in labels if label not in found]
        if missing:
            raise ModelError(f"{self.path} has no single-token {', '.join(repr(m) for m in missing)} in its "
                             "vocabulary, so it cannot be a Deita scorer (the score is read from the digit tokens)")
        return tuple(found[label] for label in labels)

    # -- context ------------------------------------------------------------------------------------------
    def _base_context_params(self, n_cells: int) -> llama_cpp.llama_context_params:
        cparams = llama_cpp.llama_context_default_params()
        cparams.n_ctx = n_cells
        cparams.n_threads = cparams.n_threads_batch = self.n_threads
        cparams.no_perf = True
        if self.full_precision:
            # An F32 model is for exact results: llama.cpp's f16 KV cache and f16 CPU flash attention would move
            # them by ~1e-3; an f32 cache without flash attention matches the reference to ~1e-6. With some layers
            # on a GPU, the CPU's layers stay on the CPU: op_offload would run their large matrix products on the
            # GPU, in its arithmetic (see docs/gpu.md).
            cparams.type_k = cparams.type_v = llama_cpp.GGML_TYPE_F32
            cparams.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
            cparams.op_offload = False
        return cparams

    def _context_params(self, n_cells: int) -> llama_cpp.llama_context_params:
        return self._base_context_params(n_cells)

    def _on_new_context(self) -> None:
        """Called after the context was (re)created; its KV cache is empty."""

    def _ensure_cells(self, needed: int, limit: int) -> None:
        """Make sure the context holds `needed` KV cells: from CELL_STEP up in steps of it, at most `limit`."""
        if self._ctx and needed <= self.n_cells:
            return
        if self.vocab_only:
            raise ValueError(f"{self.path} was loaded without its weights (vocab_only): it has no context")
        n_cells = min(limit, -(-max(needed, 1) // CELL_STEP) * CELL_STEP)
        if self._ctx:
            llama_cpp.llama_free(self._ctx)
            self._ctx = None
        with self.log.scope(fresh=True):
            self._ctx = llama_cpp.llama_init_from_model(self._model, self._context_params(n_cells))
        if not self._ctx:
            self.n_cells = 0
            if self.offload.devices and self.log.said_allocation_failed():
                raise _does_not_fit(f"a context of {n_cells} tokens for {self.path}", self.offload.devices,
                                    "try a smaller context", self.log)
            raise ModelError(f"cannot create a llama.cpp context of {n_cells} tokens for {self.path}"
                             f"{self.log.said()}; try a smaller context")
        self.n_cells = n_cells
        self._mem = llama_cpp.llama_get_memory(self._ctx)
        self._on_new_context()

    def _decode(self, batch: llama_cpp.llama_batch) -> None:
        with self.log.scope(fresh=True):
            rc = llama_cpp.llama_decode(self._ctx, batch)
        if rc != 0:
            raise ModelError(f"llama_decode failed with code {rc} on {self.path}{self.log.said()}")

    # -- lifecycle ----------------------------------------------------------------------------------------
    def close(self) -> None:
        if self._batch is not None:
            llama_cpp.llama_batch_free(self._batch)
            self._batch = None
        if self._ctx:
            llama_cpp.llama_free(self._ctx)
            self._ctx = None
        if self._model:
            llama_cpp.llama_model_free(self._model)
            self._model = None

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()
