"""The table readers: a Parquet file or a folder of Parquet files, a `datasets` save_to_disk folder, or a hub
dataset (`hf://datasets/ORG/NAME`). Streamed record batch by record batch; each row becomes the plain
Python object a JSON record would be (lists, dicts, None), so shapes are detected exactly as for JSON."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from ..errors import InputError
from ..extras import require
from .records import Record, Records, make_record

HUB_PREFIX = "hf://datasets/"
# Rows per batch read: bounded memory whatever the size of the input.
BATCH_ROWS = 1024
PARQUET_MAGIC = b"PAR1"
SAVED_MARKERS = ("state.json", "dataset_dict.json")  # what datasets' save_to_disk writes


def parquet_records(files: list[Path]) -> Records:
    """The records of Parquet files read as one table, in the order given; they must share one schema."""
    pq = require("pyarrow.parquet", "parquet", "reading this input", InputError)
    schema = _parquet_call(pq.read_schema, files[0])
    for file in files[1:]:
        if not _parquet_call(pq.read_schema, file).equals(schema):
            raise InputError(f"{file} has other columns or types than {files[0]}; the Parquet files of one input "
                             "must share one schema")

    def batches() -> Iterator[object]:
        for file in files:  # one open at a time: a folder may hold thousands
            with _parquet_call(pq.ParquetFile, file) as parquet:
                yield from parquet.iter_batches(batch_size=BATCH_ROWS)

    def count() -> int:
        return sum(_parquet_call(pq.read_metadata, file).num_rows for file in files)

    name = os.fspath(files[0].parent if len(files) > 1 else files[0])
    return Records(name, _rows(batches()), schema=schema, count=count)


def _rows(batches: Iterable[object]) -> Iterator[Record]:
    """Row i as record i + 1, each as the plain Python object a JSON record would be."""
    number = 0
    for batch in batches:
        for row in batch.to_pylist():
            number += 1
            yield make_record(number, row)


def _parquet_call(function, file: Path):
    try:
        return function(file)
    except OSError as e:
        raise InputError(f"cannot read {file}: {e.strerror or e}") from None
    except Exception as e:  # pyarrow.ArrowInvalid: not a Parquet file, or a truncated one
        raise InputError(f"{file} is not a readable Parquet file: {e}") from None


def saved_records(path: Path, split: str) -> Records:
    """The records of a datasets save_to_disk folder (of `split`, for a saved DatasetDict)."""
    dataset = _saved_dataset(path, split)
    return _dataset_records(os.fspath(path), dataset, len(dataset))


def hub_records(name: str, repo_id: str, revision: str | None, split: str, config: str | None) -> Records:
    """The records of the hub dataset `repo_id` at `revision` (`split` of its `config`), `name` in messages."""
    return _dataset_records(name, _hub_dataset(repo_id, revision, split, config), None)


def _saved_dataset(path: Path, split: str):
    datasets = require("datasets", "datasets", "reading this input", InputError)
    try:
        dataset = datasets.load_from_disk(str(path))
    except (OSError, ValueError) as e:
        raise InputError(f"cannot read the saved dataset {path}: {e}") from None
    if isinstance(dataset, datasets.DatasetDict):
        if split not in dataset:
            raise InputError(f"{path} has no split {split!r}; its splits are {', '.join(dataset)} ({{split}})",
                             options=["split"])
        dataset = dataset[split]
    return dataset


def _hub_dataset(repo_id: str, revision: str | None, split: str, config: str | None):
    """A hub dataset through huggingface_hub's cache (HF_HUB_OFFLINE, HF_HUB_CACHE are honoured), read by
    `datasets` from the downloaded snapshot, streaming; offline it needs nothing but that cache."""
    datasets = require("datasets", "datasets", "reading this input", InputError)
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        folder = snapshot_download(repo_id, repo_type="dataset", revision=revision)
    except RepositoryNotFoundError:
        raise InputError(f"hub dataset {repo_id} not found (or private: log in with `hf auth login`)") from None
    except LocalEntryNotFoundError:
        raise InputError(f"hub dataset {repo_id} is not in the Hugging Face cache and the hub cannot be reached; "
                         "run once with network access, or copy the cache and set HF_HUB_CACHE") from None
    except (HfHubHTTPError, OSError) as e:
        raise InputError(f"cannot download hub dataset {repo_id}: {e}") from None
    try:
        return datasets.load_dataset(folder, name=config, split=split, streaming=True)
    except ValueError as e:  # a bad split or config; datasets lists the ones there are
        raise InputError(f"hub dataset {repo_id}: {e} ({{split}}, {{config}})", options=["split", "config"]) from None


def _dataset_records(name: str, dataset, count: int | None) -> Records:
    """A `datasets` Dataset or IterableDataset, read as Arrow batches (no per-feature decoding by `datasets`)."""
    batches = iter(dataset.with_format("arrow").iter(batch_size=BATCH_ROWS))
    first = next(batches, None)
    if first is None:
        return Records(name, iter(()), schema=dataset.features.arrow_schema, count=0)
    return Records(name, _rows(itertools.chain([first], batches)), schema=first.schema, count=count)

