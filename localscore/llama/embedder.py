"""The embedding context: a conversation's vector as Deita's embedder computes it, the final hidden state (after
the last norm) of the last token."""

from __future__ import annotations

import os
from typing import Iterable, Sequence

import llama_cpp
import numpy as np

from ..deita.conversation import MAX_TOKENS, conversation_ids
from ..options import RunOptions
from .model import Model


class Embedder(Model):
    """A Llama-family GGUF (Deita uses Mistral-7B-v0.1) loaded for embeddings.

    >>> with Embedder.from_path("mistral-7b.q4_k_m.gguf") as embedder:
    ...     vectors = embedder.embed([[("What is 2+2?", "4")]])   # one row per conversation
    """

    def __init__(self, path: str | os.PathLike, run: RunOptions = RunOptions(), *, vocab_only: bool = False):
        super().__init__(path, run, vocab_only=vocab_only)
        try:
            self.max_tokens = min(MAX_TOKENS, self.n_ctx_train)
            if vocab_only:
                return
            self._batch = llama_cpp.llama_batch_init(self.max_tokens, 0, 1)
            for i in range(self.max_tokens):
                self._batch.n_seq_id[i] = 1
                self._batch.seq_id[i][0] = 0
            self._tokens = np.ctypeslib.as_array(self._batch.token, shape=(self.max_tokens,))
            self._pos = np.ctypeslib.as_array(self._batch.pos, shape=(self.max_tokens,))
            self._output = np.ctypeslib.as_array(self._batch.logits, shape=(self.max_tokens,))
        except BaseException:
            self.close()
            raise

    @classmethod
    def from_path(cls, path: str | os.PathLike, run: RunOptions = RunOptions()) -> "Embedder":
        """Load an embedder GGUF, run as `run` says (threads, GPU layers, kernels: options.RunOptions)."""
        return cls(path, run)

    @classmethod
    def vocabulary(cls, path: str | os.PathLike, *, verbose: bool = False) -> "Embedder":
        """The embedder without its weights: token ids, width and fingerprint (cache keys), but no embedding. For a
        process that hands the embedding itself to others (a Ray driver)."""
        return cls(path, RunOptions(verbose=verbose), vocab_only=True)

    def _context_params(self, n_cells: int) -> llama_cpp.llama_context_params:
        cparams = self._base_context_params(n_cells)
        # The whole prompt in one micro-batch, one sequence. Pooling LAST would make llama.cpp output (and run
        # the vocabulary head on) every position; without pooling only the last position is an output, and its
        # embedding is the same last-token final hidden state.
        cparams.n_batch = cparams.n_ubatch = n_cells
        cparams.n_seq_max = 1
        cparams.embeddings = True
        cparams.pooling_type = llama_cpp.LLAMA_POOLING_TYPE_NONE
        return cparams

    def ids(self, turns: Sequence[tuple[str, str]]) -> list[int]:
        """Token ids of a conversation ((instruction, response) per turn), as Deita's embedder reads it."""
        return conversation_ids(turns, self, self.max_tokens)

    def embed_ids(self, ids: Sequence[int]) -> np.ndarray:
        """The vector (float32, n_embd) of one token id list; BOS included, at most max_tokens long."""
        if not ids or len(ids) > self.max_tokens:
            raise ValueError(f"{len(ids)} tokens; an embedding takes 1 to {self.max_tokens}")
        self._ensure_cells(len(ids), self.max_tokens)
        llama_cpp.llama_memory_clear(self._mem, True)
        n = len(ids)
        self._tokens[:n] = ids
        self._pos[:n] = np.arange(n, dtype=np.int32)
        self._output[:n] = 0
        self._output[n - 1] = 1
        self._batch.n_tokens = n
        self._decode(self._batch)
        vector = llama_cpp.llama_get_embeddings_ith(self._ctx, n - 1)
        return np.ctypeslib.as_array(vector, shape=(self.n_embd,)).copy()

    def embed(self, conversations: Iterable[Sequence[tuple[str, str]]]) -> np.ndarray:
        """One row (float32) per conversation, each a sequence of (instruction, response) turns."""
        rows = [self.embed_ids(self.ids(turns)) for turns in conversations]
        return np.stack(rows) if rows else np.zeros((0, self.n_embd), dtype=np.float32)

    def __enter__(self) -> "Embedder":
        return self

