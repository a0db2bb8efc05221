"""The only module that talks to llama.cpp: load a GGUF once, tokenize, and evaluate prompts (prefill only)
returning just the logits of a handful of tokens at each prompt's last position."""

from __future__ import annotations

import collections
import ctypes
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import llama_cpp
import numpy as np

from .errors import ModelError

# Architectures whose GGUF is a Llama-shaped decoder (Deita scorers are Llama-7B; Mistral converts to "llama").
SUPPORTED_ARCHITECTURES = ("llama",)

# KV cells reserved for the shared head (the Deita templates' heads are 23 and 27 tokens).
HEAD_CELLS = 64

_FTYPE_NAMES = {value: name.removeprefix("LLAMA_FTYPE_").removeprefix("MOSTLY_").lower()
                for name, value in vars(llama_cpp).items() if name.startswith("LLAMA_FTYPE_")}

_log_lines: collections.deque[str] = collections.deque(maxlen=50)
_log_verbose = False


@llama_cpp.llama_log_callback
def _log(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
    # llama.cpp explains load failures only in its log; keep the tail so errors can quote it.
    line = text.decode("utf-8", errors="replace")
    _log_lines.append(line)
    if _log_verbose:
        print(line, end="", file=sys.stderr, flush=True)


llama_cpp.llama_log_set(_log, ctypes.c_void_p(0))


def forget_log() -> None:
    """Start a fresh log tail before a llama.cpp call whose failure llama_said() should explain."""
    _log_lines.clear()


def llama_said() -> str:
    """" (llama.cpp: <first error it logged>)", or "" when it logged none."""
    errors = [ln.strip() for ln in _log_lines if "error" in ln.lower() or "failed" in ln.lower()]
    # The first complaint is the cause; later ones ("failed to load model") only repeat that it failed.
    return f" (llama.cpp: {errors[0].split('error loading model: ')[-1]})" if errors else ""


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


def has_amx() -> bool:
    """llama.cpp's AMX matmul crashes on quantized models (ggml-org/llama.cpp#20824)."""
    return b"AMX_INT8 = 1" in (llama_cpp.llama_print_system_info() or b"")


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


class Engine:
    """One llama.cpp model + context. Prompts are token id lists (BOS included); each evaluation returns
    float32 logits of `targets` at the last position.

    The head (token ids every prompt starts with, e.g. the template's fixed text) is decoded once into
    sequence 0 and shared: each prompt copies the matching part into its own sequence and decodes only the
    rest. Everything a prompt computes is then a function of that prompt alone, so its score does not depend
    on which prompts ran before it, in what order, or where a resumed run restarted.
    """

    def __init__(self, path: str | os.PathLike, *, n_ctx: int | None = None, n_threads: int | None = None,
                 n_gpu_layers: int | None = None, n_seq_max: int = 2, verbose: bool = False):
        global _log_verbose
        _log_verbose = verbose
        self._model = self._ctx = self._batch = None
        self.path = Path(path)
        if not self.path.is_file():
            raise ModelError(f"model file {self.path} does not exist; convert one with `localscore convert`")
        llama_cpp.llama_backend_init()

        mparams = llama_cpp.llama_model_default_params()
        if n_gpu_layers is not None:
            mparams.n_gpu_layers = n_gpu_layers
        if has_amx():
            # Without the extra (AMX/repack) buffer types the CPU path is stable and, measured here, faster.
            mparams.use_extra_bufts = False
        forget_log()
        self._model = llama_cpp.llama_model_load_from_file(str(self.path).encode(), mparams)
        if not self._model:
            raise ModelError(f"cannot load {self.path}: not a valid GGUF model file{llama_said()}")
        try:
            self._vocab = llama_cpp.llama_model_get_vocab(self._model)
            arch = self.meta("general.architecture") or "unknown"
            if arch not in SUPPORTED_ARCHITECTURES:
                raise ModelError(f"{self.path} is a '{arch}' model; localscore scores with Llama-family "
                                 "scorers (convert one with `localscore convert`)")
            self.n_vocab = llama_cpp.llama_vocab_n_tokens(self._vocab)
            self.bos = llama_cpp.llama_vocab_bos(self._vocab)
            ftype = llama_cpp.llama_model_ftype(self._model)
            full_precision = ftype == llama_cpp.LLAMA_FTYPE_ALL_F32
            n_ctx_train = llama_cpp.llama_model_n_ctx_train(self._model)
            n_threads = n_threads or physical_cores()

            cparams = llama_cpp.llama_context_default_params()
            requested = n_ctx or n_ctx_train
            # Cells for the shared head on top of a full-length prompt: a prompt that does not start with the
            # head (or a packed group) must still fit beside it.
            cparams.n_ctx = requested + HEAD_CELLS
            # One decode call per prompt: the batch holds a whole prompt.
            cparams.n_batch = requested
            cparams.n_seq_max = n_seq_max
            # Shared head cells are visible to every sequence only in a unified KV cache.
            cparams.kv_unified = True
            cparams.n_threads = cparams.n_threads_batch = n_threads
            cparams.no_perf = True
            if full_precision:
                # An F32 model is for exact scores: llama.cpp's f16 KV cache and f16 CPU flash attention
                # would move them by ~1e-3; an f32 cache without flash attention matches to ~1e-6.
                cparams.type_k = cparams.type_v = llama_cpp.GGML_TYPE_F32
                cparams.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
            self._ctx = llama_cpp.llama_init_from_model(self._model, cparams)
            if not self._ctx:
                raise ModelError(f"cannot create a llama.cpp context for {self.path} with n_ctx={cparams.n_ctx}"
                                 f"{llama_said()}; try a smaller --ctx")
            self._mem = llama_cpp.llama_get_memory(self._ctx)
            self.n_batch = llama_cpp.llama_n_batch(self._ctx)
            self.n_ctx = min(requested, self.n_batch)  # the longest prompt this engine evaluates
            self.n_seq_max = n_seq_max
            self._batch = llama_cpp.llama_batch_init(self.n_batch, 0, n_seq_max)
            self._tokens = np.ctypeslib.as_array(self._batch.token, shape=(self.n_batch,))
            self._pos = np.ctypeslib.as_array(self._batch.pos, shape=(self.n_batch,))
            self._logits_flags = np.ctypeslib.as_array(self._batch.logits, shape=(self.n_batch,))
            self._n_seq_id = np.ctypeslib.as_array(self._batch.n_seq_id, shape=(self.n_batch,))
            self._n_seq_id[:] = 1
            self._seq_of = np.full(self.n_batch, -1, dtype=np.int32)
            self._head: list[int] = []
            self.info = EngineInfo(self.path, arch, _FTYPE_NAMES.get(ftype, str(ftype)), full_precision, self.n_ctx,
                                   n_ctx_train, n_threads, mparams.n_gpu_layers)
        except BaseException:
            self.close()
            raise

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

    # -- evaluation ---------------------------------------------------------------------------------------
    def set_head(self, head: Sequence[int]) -> None:
        """Decode the shared head into sequence 0 (done once; prompts copy its cells instead of recomputing)."""
        llama_cpp.llama_memory_clear(self._mem, True)
        self._head = list(head)[:HEAD_CELLS]
        if self._head:
            self._decode([(0, self._head, 0)], want_logits=False)

    def logits(self, prompt: Sequence[int], targets: Sequence[int]) -> np.ndarray:
        """Evaluate one prompt; the logits of `targets` at its last position (float32, len(targets))."""
        return self.logits_many([prompt], targets)[0]

    def logits_many(self, prompts: Sequence[Sequence[int]], targets: Sequence[int]) -> list[np.ndarray]:
        """Evaluate prompts packed into shared decode calls (one sequence each), up to n_seq_max - 1 at once.

        With a single prompt this is the deterministic path. Packed prompts share matrix work, which helps
        GPUs; on CPU a prompt's logits can then shift slightly with its batch-mates (kernel choice depends on
        the batch shape), so packing is opt-in.
        """
        results: list[np.ndarray] = []
        group: list[tuple[int, Sequence[int], int]] = []
        used = 0
        for prompt in prompts:
            if not prompt:
                raise ValueError("empty prompt")
            if len(prompt) > self.n_ctx:
                raise ValueError(f"prompt of {len(prompt)} tokens exceeds the context of {self.n_ctx}")
            shared = self._shared_len(prompt)
            rest = len(prompt) - shared
            # Any one prompt fits a single decode (n_ctx <= n_batch); a group never outgrows it.
            if group and (len(group) == self.n_seq_max - 1 or used + rest > self.n_batch):
                results.extend(self._run_group(group, targets))
                group, used = [], 0
            group.append((len(group) + 1, prompt, shared))
            used += rest
        if group:
            results.extend(self._run_group(group, targets))
        return results

    def _shared_len(self, prompt: Sequence[int]) -> int:
        n = 0
        limit = min(len(self._head), len(prompt) - 1)  # at least one token must be decoded to get logits
        while n < limit and prompt[n] == self._head[n]:
            n += 1
        return n

    def _run_group(self, group: list[tuple[int, Sequence[int], int]], targets: Sequence[int]) -> list[np.ndarray]:
        try:
            for seq, _, shared in group:
                if shared:
                    llama_cpp.llama_memory_seq_cp(self._mem, 0, seq, 0, shared)
            outputs = self._decode(group, want_logits=True)
            results = []
            for index in outputs:
                row = llama_cpp.llama_get_logits_ith(self._ctx, index)
                results.append(np.array([row[t] for t in targets], dtype=np.float32))
            return results
        finally:
            for seq, _, _ in group:
                llama_cpp.llama_memory_seq_rm(self._mem, seq, -1, -1)

    def _decode(self, group: list[tuple[int, Sequence[int], int]], want_logits: bool) -> list[int]:
        """One llama_decode of each (seq, tokens, start) from `start` on (the caller keeps a group within
        n_batch); returns the batch index of each sequence's last token."""
        tokens, pos, flags = self._tokens, self._pos, self._logits_flags
        last_index = []
        n = 0
        for seq, prompt, start in group:
            take = len(prompt) - start
            tokens[n:n + take] = prompt[start:]
            pos[n:n + take] = np.arange(start, len(prompt), dtype=np.int32)
            flags[n:n + take] = 0
            self._set_seq(n, take, seq)
            n += take
            flags[n - 1] = want_logits
            last_index.append(n - 1)
        self._batch.n_tokens = n
        rc = llama_cpp.llama_decode(self._ctx, self._batch)
        if rc != 0:
            raise ModelError(f"llama_decode failed with code {rc} on {self.path}{llama_said()}")
        return last_index

    def _set_seq(self, start: int, count: int, seq: int) -> None:
        # seq_id is an array of pointers; write only cells whose sequence changed (in the one-prompt path
        # that is never after the first prompt).
        seq_ids = self._batch.seq_id
        stale = np.nonzero(self._seq_of[start:start + count] != seq)[0]
        for i in stale:
            seq_ids[start + i][0] = seq
        self._seq_of[start:start + count] = seq

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

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()
