"""The scoring context: evaluate prompts (prefill only) on a loaded model and return just the logits of a
handful of tokens at each prompt's last position."""

from __future__ import annotations

import os
from typing import Sequence

import llama_cpp
import numpy as np

from ..errors import check_range
from ..options import RunOptions
from .model import EngineInfo, Model, physical_cores

__all__ = ["Engine", "EngineInfo", "HEAD_CELLS", "physical_cores"]

# KV cells reserved for the shared head (the Deita templates' heads are 23 and 27 tokens).
HEAD_CELLS = 64


class Engine(Model):
    """One llama.cpp model + scoring context. Prompts are token id lists (BOS included); each evaluation returns
    float32 logits of `targets` at the last position.

    The head (token ids every prompt starts with, e.g. the template's fixed text) is decoded once into
    sequence 0 and shared: each prompt copies the matching part into its own sequence and decodes only the
    rest. Everything a prompt computes is then a function of that prompt alone, so its score does not depend
    on which prompts ran before it, in what order, or where a resumed run restarted.

    The KV cache holds what the longest group so far needs (the full context only when the data needs it):
    prompts are still truncated to `n_ctx`, only the allocation follows the data. Scores are the same bit for
    bit as with a full-size cache.
    """

    def __init__(self, path: str | os.PathLike, run: RunOptions = RunOptions(), *, n_ctx: int | None = None,
                 n_seq_max: int = 2):
        super().__init__(path, run)
        try:
            # The longest prompt this engine evaluates; one decode call takes a whole prompt (or packed group).
            self.n_ctx = self.n_batch = n_ctx or self.n_ctx_train
            if self.n_ctx_train:  # positions past training are not what the scorer learned (and cost memory now)
                check_range("ctx", self.n_ctx, high=self.n_ctx_train, why="the context the model was trained on")
            self.n_seq_max = n_seq_max
            self._head: list[int] = []
            self._batch = llama_cpp.llama_batch_init(self.n_batch, 0, n_seq_max)
            self._tokens = np.ctypeslib.as_array(self._batch.token, shape=(self.n_batch,))
            self._pos = np.ctypeslib.as_array(self._batch.pos, shape=(self.n_batch,))
            self._logits_flags = np.ctypeslib.as_array(self._batch.logits, shape=(self.n_batch,))
            self._n_seq_id = np.ctypeslib.as_array(self._batch.n_seq_id, shape=(self.n_batch,))
            self._n_seq_id[:] = 1
            self._seq_of = np.full(self.n_batch, -1, dtype=np.int32)
            self._ensure_cells(HEAD_CELLS, self._max_cells)
            self.info = EngineInfo(self.path, self.architecture, self.file_type, self.full_precision, self.n_ctx,
                                   self.n_ctx_train, self.n_threads, self.n_gpu_layers, self.kernels, self.offload)
        except BaseException:
            self.close()
            raise

    @property
    def _max_cells(self) -> int:
        # Cells for the shared head on top of a full-length prompt: a prompt that does not start with the head
        # (or a packed group) must still fit beside it.
        return self.n_ctx + HEAD_CELLS

    def _context_params(self, n_cells: int) -> llama_cpp.llama_context_params:
        cparams = self._base_context_params(n_cells)
        cparams.n_batch = self.n_batch
        cparams.n_seq_max = self.n_seq_max
        # Shared head cells are visible to every sequence only in a unified KV cache.
        cparams.kv_unified = True
        return cparams

    def _on_new_context(self) -> None:
        if self._head:
            self._decode_group([(0, self._head, 0)], want_logits=False)

    # -- evaluation ---------------------------------------------------------------------------------------
    def set_head(self, head: Sequence[int]) -> None:
        """Decode the shared head into sequence 0 (done once; prompts copy its cells instead of recomputing)."""
        llama_cpp.llama_memory_clear(self._mem, True)
        self._head = list(head)[:HEAD_CELLS]
        self._on_new_context()

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
                results.extend(self._run_group(group, used, targets))
                group, used = [], 0
            group.append((len(group) + 1, prompt, shared))
            used += rest
        if group:
            results.extend(self._run_group(group, used, targets))
        return results

    def _shared_len(self, prompt: Sequence[int]) -> int:
        n = 0
        limit = min(len(self._head), len(prompt) - 1)  # at least one token must be decoded to get logits
        while n < limit and prompt[n] == self._head[n]:
            n += 1
        return n

    def _run_group(self, group: list[tuple[int, Sequence[int], int]], used: int,
                   targets: Sequence[int]) -> list[np.ndarray]:
        self._ensure_cells(HEAD_CELLS + used, self._max_cells)
        try:
            for seq, _, shared in group:
                if shared:
                    llama_cpp.llama_memory_seq_cp(self._mem, 0, seq, 0, shared)
            outputs = self._decode_group(group, want_logits=True)
            results = []
            for index in outputs:
                row = llama_cpp.llama_get_logits_ith(self._ctx, index)
                results.append(np.array([row[t] for t in targets], dtype=np.float32))
            return results
        finally:
            for seq, _, _ in group:
                llama_cpp.llama_memory_seq_rm(self._mem, seq, -1, -1)

    def _decode_group(self, group: list[tuple[int, Sequence[int], int]], want_logits: bool) -> list[int]:
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
        self._decode(self._batch)
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
    def __enter__(self) -> "Engine":
        return self
