"""Files the tests write the way a user's tools would: JSON Lines, a Hugging Face hub cache of a dataset, and
what an embedding cache holds."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def write_hub_cache(cache: Path, repo_id: str, table, commit: str = "0" * 40) -> None:
    """A dataset repo laid out as huggingface_hub caches it: one Parquet file of the train split."""
    import pyarrow.parquet as pq  # here: the tests that need no Parquet do not need pyarrow

    repo = cache / f"datasets--{repo_id.replace('/', '--')}"
    (repo / "snapshots" / commit / "data").mkdir(parents=True)
    pq.write_table(table, repo / "snapshots" / commit / "data" / "train-00000-of-00001.parquet")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)


def cached_vectors(cache: Path) -> int:
    """Vectors committed to an embedding cache (what a killed run leaves)."""
    if not cache.exists():
        return 0
    with sqlite3.connect(cache) as db:
        try:
            return db.execute("SELECT count(*) FROM vectors").fetchone()[0]
        except sqlite3.OperationalError:  # the table is being created
            return 0
