"""`embed` and `select` read every input form `score` reads (one reader): JSONL, stdin, a Parquet file, a folder of
Parquet files, a datasets save_to_disk folder and a hub dataset from an offline cache, with the same result."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from localscore.cli import cli
from tests.support.data import scored
from tests.support.files import write_hub_cache

REPO = "org/scored"
# ShareGPT records of 1, 2 and 3 turns, 4 of each: a Parquet file of 3 row groups, a folder of 2 files.
N_RECORDS = 12


@pytest.fixture(scope="module")
def forms(tmp_path_factory, hub_cache) -> dict[str, tuple[str, str | None]]:
    """name -> (INPUT, what stdin holds or None)."""
    import datasets

    from tests.support.data import sharegpt_conversations

    records = scored(sharegpt_conversations()[:N_RECORDS], seed=3)
    folder = tmp_path_factory.mktemp("forms")
    src = folder / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    table = pa.Table.from_struct_array(pa.array(records))
    pq.write_table(table, folder / "in.parquet", row_group_size=5)
    (folder / "parts").mkdir()
    for i, start in enumerate(range(0, len(records), 10)):
        pq.write_table(table.slice(start, 10), folder / "parts" / f"part-{i}.parquet")
    datasets.Dataset(table).save_to_disk(str(folder / "saved"))
    write_hub_cache(hub_cache, REPO, table)
    return {"jsonl": (str(src), None), "stdin": ("-", src.read_text(encoding="utf-8")),
            "parquet": (str(folder / "in.parquet"), None), "folder": (str(folder / "parts"), None),
            "saved": (str(folder / "saved"), None), "hub": (f"hf://datasets/{REPO}", None)}


FORMS = ["jsonl", "stdin", "parquet", "folder", "saved", "hub"]


def run(forms: dict, name: str, args: list[str]) -> str:
    """`localscore COMMAND INPUT ARGS...` on the input form `name`, in this process (the session reads the hub
    offline from `hub_cache`, tests/conftest.py); returns what it wrote to stdout."""
    source, stdin = forms[name]
    command, *rest = args
    result = CliRunner().invoke(cli, [command, source, *rest], input=stdin, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


def test_embed_reads_every_input_form(forms, embedder_gguf, tmp_path, monkeypatch):
    monkeypatch.setenv("LOCALSCORE_CACHE", str(tmp_path / "cache"))
    rows = {}
    for name in FORMS:
        out = tmp_path / f"{name}.npy"
        # A fresh cache for each: every form computes its embeddings, none is read back from another's.
        monkeypatch.setenv("LOCALSCORE_CACHE", str(tmp_path / f"cache-{name}"))
        run(forms, name, ["embed", "-m", str(embedder_gguf), "-o", str(out), "-q", "-t", "1"])
        rows[name] = np.load(out)
    assert rows["jsonl"].shape[0] == N_RECORDS and np.isfinite(rows["jsonl"]).all()
    for name, got in rows.items():
        np.testing.assert_array_equal(got, rows["jsonl"], err_msg=name)


def test_select_reads_every_input_form(forms, embedder_gguf, tmp_path):
    embeddings = tmp_path / "emb.npy"
    np.save(embeddings, np.random.default_rng(0).normal(size=(N_RECORDS, 16)).astype(np.float32))
    selected = {name: run(forms, name, ["select", "-k", "8", "--threshold", "0.6", "--embeddings", str(embeddings),
                                        "-q"])
                for name in FORMS}
    assert len(selected["jsonl"].splitlines()) == 8
    for name, got in selected.items():
        assert got == selected["jsonl"], name
