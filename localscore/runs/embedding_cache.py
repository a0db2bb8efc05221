"""Embeddings already computed, kept on disk so that a rerun (another budget or threshold, an interrupted
`embed`) computes none twice. Keyed by the embedder's fingerprint and the exact token ids it embedded."""

from __future__ import annotations

import hashlib
import os
import sqlite3
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import OutputError
from .default_model import cache_dir

# Commits are batched: one fsync per this many new vectors (a killed run loses at most these).
_COMMIT_EVERY = 64


def default_path() -> Path:
    return cache_dir() / "embeddings.sqlite"


class EmbeddingCache:
    """A key -> float32 vector store in one SQLite file (safe to share between runs, never corrupt on a kill)."""

    def __init__(self, fingerprint: str, path: str | os.PathLike | None = None):
        self.path = Path(path) if path is not None else default_path()
        self._fingerprint = fingerprint.encode()
        self._pending = 0
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("CREATE TABLE IF NOT EXISTS vectors (key BLOB PRIMARY KEY, vector BLOB NOT NULL)")
        except (OSError, sqlite3.Error) as e:
            raise OutputError(f"cannot use the embedding cache {self.path}: {e}; set LOCALSCORE_CACHE to a "
                             "writable folder") from None

    def _key(self, ids: Sequence[int]) -> bytes:
        return hashlib.sha256(self._fingerprint + np.asarray(ids, dtype="<i4").tobytes()).digest()

    def get(self, ids: Sequence[int]) -> np.ndarray | None:
        row = self._db.execute("SELECT vector FROM vectors WHERE key = ?", (self._key(ids),)).fetchone()
        return None if row is None else np.frombuffer(row[0], dtype="<f4")

    def put(self, ids: Sequence[int], vector: np.ndarray) -> None:
        blob = np.asarray(vector, dtype="<f4").tobytes()
        self._db.execute("INSERT OR REPLACE INTO vectors VALUES (?, ?)", (self._key(ids), blob))
        self._pending += 1
        if self._pending >= _COMMIT_EVERY:
            self._db.commit()
            self._pending = 0

    def close(self) -> None:
        self._db.commit()
        self._db.close()

    def __enter__(self) -> "EmbeddingCache":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class CachedEmbedder:
    """An Embedder behind the cache: the vector of a conversation, computed only when the cache lacks it."""

    def __init__(self, embedder, cache: EmbeddingCache):
        self.embedder = embedder
        self.cache = cache
        self.computed = 0
        self.reused = 0
        self.tokens = 0  # tokens of the conversations computed

    def vector(self, turns: Sequence[tuple[str, str]]) -> np.ndarray:
        ids = self.embedder.ids(turns)
        vector = self.cache.get(ids)
        if vector is not None and len(vector) == self.embedder.n_embd:
            self.reused += 1
            return vector
        vector = self.embedder.embed_ids(ids)
        self.cache.put(ids, vector)
        self.computed += 1
        self.tokens += len(ids)
        return vector
