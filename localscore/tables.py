"""Read records from Arrow tables: a Parquet file or a folder of Parquet files, a `datasets` save_to_disk folder,
or a hub dataset (`hf://datasets/ORG/NAME`). Streamed record batch by record batch; each row becomes the plain
Python object a JSON record would be (lists, dicts, None), so shapes are detected exactly as for JSON."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from .errors import InputError
from .extras import require
from .records import Record, make_record
from .templates import Template

HUB_PREFIX = "hf://datasets/"
# Rows per batch read: bounded memory whatever the size of the input.
BATCH_ROWS = 1024
_PARQUET_MAGIC = b"PAR1"
_SAVED_MARKERS = ("state.json", "dataset_dict.json")  # what datasets' save_to_disk writes


def is_table_source(source: object) -> bool:
    """Whether `source` is read by this module: a hub id, a folder, or a file that starts like Parquet."""
    if not isinstance(source, (str, os.PathLike)):
        return False
    if os.fspath(source).startswith(HUB_PREFIX) or os.path.isdir(source):
        return True
    try:
        with open(source, "rb") as f:
            return f.read(len(_PARQUET_MAGIC)) == _PARQUET_MAGIC
    except OSError:
        return False  # the JSON reader reports it


class TableRecords(Iterator[Record]):
    """The records of a table, row by row; `schema` is the table's Arrow schema, which Parquet output keeps."""

    def __init__(self, schema: object, batches: Iterable[object], template: Template):
        self.schema = schema
        self._records = self._read(batches, template)

    def __next__(self) -> Record:
        return next(self._records)

    @staticmethod
    def _read(batches: Iterable[object], template: Template) -> Iterator[Record]:
        number = 0
        for batch in batches:
            for row in batch.to_pylist():
                number += 1
                yield make_record(number, row, template)


def read_table_records(source: str | os.PathLike, template: Template, *, split: str = "train",
                       config: str | None = None) -> TableRecords:
    """The records of a table source (see `is_table_source`). `split` and `config` choose the part of a hub
    dataset or of a saved DatasetDict. Opens the source before returning: a bad one raises InputError here."""
    name = os.fspath(source)
    if name.startswith(HUB_PREFIX):
        return _dataset_records(_hub_dataset(name[len(HUB_PREFIX):], split, config), template)
    path = Path(source)
    if path.is_dir():
        if any((path / marker).is_file() for marker in _SAVED_MARKERS):
            return _dataset_records(_saved_dataset(path, split), template)
        files = sorted(path.glob("*.parquet"))
        if not files:
            raise InputError(f"{path} is a folder without .parquet files or a datasets save_to_disk folder; "
                             "give a data file, a folder of Parquet files or a saved dataset")
        return _parquet_records(files, template)
    return _parquet_records([path], template)


def _parquet_records(files: list[Path], template: Template) -> TableRecords:
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

    return TableRecords(schema, batches(), template)


def _parquet_call(function, file: Path):
    try:
        return function(file)
    except OSError as e:
        raise InputError(f"cannot read {file}: {e.strerror or e}") from None
    except Exception as e:  # pyarrow.ArrowInvalid: not a Parquet file, or a truncated one
        raise InputError(f"{file} is not a readable Parquet file: {e}") from None


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


def _hub_dataset(repo: str, split: str, config: str | None):
    """A hub dataset through huggingface_hub's cache (HF_HUB_OFFLINE, HF_HUB_CACHE are honoured), read by
    `datasets` from the downloaded snapshot, streaming; offline it needs nothing but that cache."""
    datasets = require("datasets", "datasets", "reading this input", InputError)
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    repo_id, _, revision = repo.partition("@")
    try:
        folder = snapshot_download(repo_id, repo_type="dataset", revision=revision or None)
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


def _dataset_records(dataset, template: Template) -> TableRecords:
    """A `datasets` Dataset or IterableDataset, read as Arrow batches (no per-feature decoding by `datasets`)."""
    batches = iter(dataset.with_format("arrow").iter(batch_size=BATCH_ROWS))
    first = next(batches, None)
    if first is None:
        return TableRecords(dataset.features.arrow_schema, (), template)
    return TableRecords(first.schema, itertools.chain([first], batches), template)

