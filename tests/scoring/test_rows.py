"""Records held in memory (`localscore.score_rows`): the output objects of a file run, for a list of records and for
a batch of columns, and the docs' `Dataset.map` example, run as written."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

import localscore
from localscore.cli import cli
from localscore.errors import InputError

ROOT = Path(__file__).parents[2]
DOCS = ROOT / "docs" / "datajuicer.md"


def file_run(tmp_path: Path, records: list, model: Path, *options: str) -> list[dict]:
    source, out = tmp_path / "in.json", tmp_path / "out.jsonl"
    source.write_text(json.dumps(records), encoding="utf-8")
    result = CliRunner().invoke(cli, ["score", str(source), "-m", str(model), "-t", "1", "-q", "-o", str(out),
                                      *options], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def model(gguf_file) -> Path:
    return gguf_file("q8_0")


@pytest.fixture(scope="module")
def records(pairs) -> list:
    from tests.support.data import sharegpt_conversations

    alpaca = [{"id": i, "instruction": a, "output": b} for i, (a, b) in enumerate(pairs[:4])]
    bad = [{"id": "empty", "instruction": "Say hi.", "output": ""}, {"id": "shape"}, "not an object"]
    return alpaca[:2] + [bad[0]] + sharegpt_conversations()[:2] + bad[1:] + alpaca[2:]


@pytest.mark.parametrize("scorer", ["quality", "complexity"])
def test_rows_give_the_file_runs_output_objects(tmp_path, records, model, scorer):
    got = localscore.score_rows(records, model=model, scorer=scorer, threads=1)
    assert got == file_run(tmp_path, records, model, "--scorer", scorer)  # every field, every score bit for bit
    assert sum(f"{scorer}_error" in r for r in got) == 3 - (scorer == "complexity")  # no answer needed


def test_a_batch_of_columns_comes_back_as_columns(tmp_path, records, model):
    rows = [r for r in records if isinstance(r, dict) and "instruction" in r]
    batch = {"id": [r["id"] for r in rows], "instruction": [r["instruction"] for r in rows],
             "output": [r["output"] for r in rows]}
    got = localscore.score_rows(batch, model=model, threads=1)
    assert list(got) == ["id", "instruction", "output", "quality_score", "quality_scores", "quality_truncated",
                         "quality_error"]
    expected = file_run(tmp_path, rows, model)
    assert [{k: v for k, v in zip(got, values) if v is not None} for values in zip(*got.values())] == expected
    with pytest.raises(InputError, match=r"^a batch of columns must have columns of one length, got lengths \[1, 2\]$"):
        localscore.score_rows({"instruction": ["a", "b"], "output": ["c"]}, model=model)


def test_the_docs_dataset_map_example_gives_the_file_runs_scores(tmp_path, model, monkeypatch):
    code = re.search(r"<!-- test: dataset map -->\n```python\n(.*?)```", DOCS.read_text(encoding="utf-8"), re.S)[1]
    (tmp_path / "examples").mkdir()
    (tmp_path / "examples" / "alpaca.jsonl").symlink_to(ROOT / "examples" / "alpaca.jsonl")
    (tmp_path / "deita-quality.q4_k_m.gguf").symlink_to(model)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, str(DOCS), "exec"), namespace)
    records = [json.loads(line) for line in (ROOT / "examples" / "alpaca.jsonl").read_text().splitlines()]
    expected = file_run(tmp_path, records, model)
    assert namespace["scored"]["quality_score"] == [r["quality_score"] for r in expected]
