"""Embeddings already computed, kept on disk so that a rerun (another budget or threshold, an interrupted
`embed`) computes none twice. Keyed by the embedder's fingerprint and the exact token ids it embedded."""

from __future__ import annotations

import hashlib
import os
import sqlite3
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from ..errors import LocalscoreError, OutputError
from ..forms.durable import database_write_error
from ..forms.embeddings_file import RUN_AGAIN
from .default_model import cache_dir
from .embed_step import Embedding, Job

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
        try:
            self._db.execute("INSERT OR REPLACE INTO vectors VALUES (?, ?)", (self._key(ids), blob))
            self._pending += 1
            if self._pending >= _COMMIT_EVERY:
                self._db.commit()
                self._pending = 0
        except sqlite3.DatabaseError as e:
            raise self._write_error(e) from None

    def close(self) -> None:
        """Commit what is pending and close; what an earlier commit stored stays whatever happens here."""
        try:
            self._db.commit()
        except sqlite3.DatabaseError as e:
            raise self._write_error(e) from None
        finally:
            self._db.close()

    def _write_error(self, error: sqlite3.DatabaseError) -> LocalscoreError:
        return database_write_error(self.path, error, advice=RUN_AGAIN)

    def __enter__(self) -> "EmbeddingCache":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        try:
            self.close()
        except OutputError:
            if exc_type is None:
                raise  # else the error that stopped the run is the one to report (a full disk fails this too)


class CachedEmbeddings:
    """Vectors of conversations, in order: from the cache where it holds them, else computed by the embedding's
    step (this process, or Ray actors that may run ahead) and stored in the cache here, as they arrive, so that
    whatever computes them, a rerun finds them."""

    def __init__(self, embedding: Embedding, cache: EmbeddingCache):
        self.embedding = embedding
        self.cache = cache
        self.computed = 0
        self.reused = 0
        self.tokens = 0  # tokens of the conversations computed
        self.ahead = 0  # computed ahead of a consumer that stopped early (see finish)

    def jobs(self, conversations: Iterable[tuple[int | None, Sequence[tuple[str, str]] | None]],
             count: int | None = None) -> Iterator[Job]:
        """One job per conversation (its record's number, and its (instruction, response) turns; None: a record
        that cannot be embedded, whose vector is a row of NaN), in order, each with its vector. `count`: how many
        conversations, where known."""
        for job in self.embedding.step.map((self._job(*conversation) for conversation in conversations), count):
            self._count(job)
            yield job

    def vector(self, turns: Sequence[tuple[str, str]]) -> np.ndarray:
        return next(self.jobs([(None, turns)])).vector

    def finish(self) -> None:
        """The consumer stopped: what the step computed ahead goes into the cache too (a rerun with a larger budget
        finds it), counted in `ahead`."""
        for job in self.embedding.step.drain():
            if job.computed:
                self._count(job)
                self.ahead += 1

    def _job(self, number: int | None, turns: Sequence[tuple[str, str]] | None) -> Job:
        vocab = self.embedding.vocab
        if turns is None:
            return Job(None, np.full(vocab.n_embd, np.nan, dtype=np.float32), number=number)
        ids = vocab.ids(turns)
        vector = self.cache.get(ids)
        return Job(ids, vector if vector is not None and len(vector) == vocab.n_embd else None, number=number)

    def _count(self, job: Job) -> None:
        if job.computed:
            self.cache.put(job.ids, job.vector)
            self.computed += 1
            self.tokens += len(job.ids)
        elif job.ids is not None:
            self.reused += 1
