"""Data where it lives: the same records from JSONL, Parquet (a file, a folder of files), a datasets save_to_disk
folder and a hub dataset from a local cache give the same scores; Parquet output keeps every input column's type;
a Parquet-output run killed with SIGKILL resumes to the uninterrupted run's bytes."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from localscore.cli import cli
from localscore.errors import InputError, OutputError
from localscore.forms import parquet_output
from localscore.forms.writers import open_writer
from localscore.forms.reader import read_records
from localscore.runs.score import score_file
from localscore.options import InputOptions, OutputOptions
from tests.support.data import sharegpt_conversations
from tests.support.files import write_hub_cache
from tests.support.writing import result_of, sample_records, score

ROOT = Path(__file__).parents[2]


@pytest.fixture(scope="module")
def model(gguf_file) -> Path:
    return gguf_file("q8_0")


@pytest.fixture(scope="module")
def mixed(pairs) -> list[dict]:
    """Alpaca records (some with an `input`) and ShareGPT conversations, as one table would hold them."""
    records = [{"id": i, "instruction": a, "output": b} for i, (a, b) in enumerate(pairs[:8])]
    records[3]["input"] = "Answer briefly."
    return records + [{**c, "id": 100 + i} for i, c in enumerate(sharegpt_conversations()[:3])]


def scores(path: Path) -> list:
    return [(r.get("quality_score"), r.get("quality_scores"), r.get("quality_error"))
            for r in map(json.loads, path.read_text(encoding="utf-8").splitlines())]


def test_every_input_form_gives_the_same_scores(tmp_path, hub_cache, mixed, q8_scorer, model):
    import datasets

    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in mixed), encoding="utf-8")
    table = pa.Table.from_struct_array(pa.array(mixed))  # every row's keys (from_pylist takes the first row's)
    pq.write_table(table, tmp_path / "in.parquet", row_group_size=3)
    (tmp_path / "folder").mkdir()
    for i, start in enumerate(range(0, len(mixed), 5)):  # names sort in row order
        pq.write_table(table.slice(start, 5), tmp_path / "folder" / f"part-{i:02d}.parquet")
    datasets.Dataset(table).save_to_disk(str(tmp_path / "saved"))
    datasets.DatasetDict({"test": datasets.Dataset(table)}).save_to_disk(str(tmp_path / "saved-dict"))

    got = {}
    for name, source, split in [("jsonl", src, "train"), ("parquet", tmp_path / "in.parquet", "train"),
                                ("folder", tmp_path / "folder", "train"), ("saved", tmp_path / "saved", "train"),
                                ("saved-dict", tmp_path / "saved-dict", "test")]:
        out = tmp_path / f"{name}.jsonl"
        score_file(InputOptions(source, split=split), OutputOptions(out), q8_scorer)
        got[name] = scores(out)

    # In this process: the session reads the hub offline from `hub_cache` (tests/conftest.py).
    write_hub_cache(hub_cache, "org/instructions", table)
    hub = CliRunner().invoke(cli, ["score", "hf://datasets/org/instructions", "-o", str(tmp_path / "hub.jsonl"), "-m",
                                   str(model), "-q"], catch_exceptions=False)
    assert hub.exit_code == 0, hub.output
    got["hub"] = scores(tmp_path / "hub.jsonl")

    assert all(error is None for _, _, error in got["jsonl"])
    assert sum(score is not None for score, _, _ in got["jsonl"]) == 8
    for name, values in got.items():
        assert values == got["jsonl"], name

    missing = CliRunner().invoke(cli, ["score", "hf://datasets/org/other", "-m", str(model)], catch_exceptions=False)
    assert missing.exit_code == 1
    assert missing.stderr.splitlines()[-1] == (
        "Error: hub dataset org/other is not in the Hugging Face cache and the hub cannot be reached; run once "
        "with network access, or copy the cache and set HF_HUB_CACHE")


def test_parquet_output_round_trips_every_column_type(tmp_path, q8_scorer):
    struct = pa.struct([("source", pa.string()), ("tags", pa.list_(pa.string())), ("score", pa.float32())])
    table = pa.table({
        "id": pa.array([1, 2, None], pa.int32()),
        "instruction": ["Name a colour.", "Add 2 and 3.", "Say hi."],
        "input": [None, "", "politely"],
        "output": ["Blue.", "5", "Hello!"],
        "meta": pa.array([{"source": "a", "tags": ["x", "y"], "score": 0.5}, None,
                          {"source": None, "tags": [], "score": None}], struct),
        "flags": pa.array([[True], None, [False, None]], pa.list_(pa.bool_())),
        "quality_score": [9.0, 9.0, 9.0],  # an old score: replaced
    })
    src = tmp_path / "in.parquet"
    pq.write_table(table, src)
    out = tmp_path / "out.parquet"
    score_file(InputOptions(src), OutputOptions(out), q8_scorer)
    got = pq.read_table(out)
    assert got.schema.names == ["id", "instruction", "input", "output", "meta", "flags", "quality_score",
                                "quality_truncated", "quality_error"]
    kept = table.drop_columns(["quality_score"])
    assert got.select(kept.schema.names).equals(kept)
    assert got.schema.field("quality_score").type == pa.float64()
    assert got.column("quality_score").to_pylist() == q8_scorer.score_many(
        [("Name a colour.", "Blue."), ("Add 2 and 3.", "5"), ("Say hi.\npolitely", "Hello!")])
    assert got.column("quality_error").to_pylist() == [None] * 3


def test_json_input_to_parquet_infers_columns(tmp_path, q8_scorer, mixed):
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in mixed) + "not json\n", encoding="utf-8")
    score_file(InputOptions(src), OutputOptions(tmp_path / "out.parquet"), q8_scorer)
    score_file(InputOptions(src), OutputOptions(tmp_path / "out.jsonl"), q8_scorer)
    got = pq.read_table(tmp_path / "out.parquet")
    assert got.schema.field("quality_scores").type == pa.list_(pa.float64())
    assert got.schema.field("conversations").type == pa.list_(pa.struct([("from", pa.string()),
                                                                         ("value", pa.string())]))
    as_json = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [{k: v for k, v in row.items() if v is not None} for row in got.to_pylist()] == as_json


def test_json_fields_that_change_type_are_one_line(tmp_path, q8_scorer):
    src = tmp_path / "in.jsonl"
    src.write_text('{"id": 1, "instruction": "a", "output": "b"}\n{"id": "two", "instruction": "c", "output": "d"}\n')
    with pytest.raises(OutputError, match=r"^result 2 does not fit one Parquet schema with the results before it "
                                          r"\(a field changed type, or holds mixed types\); write JSON Lines instead"):
        score_file(InputOptions(src), OutputOptions(tmp_path / "out.parquet"), q8_scorer)


def test_an_interrupted_parquet_run_keeps_every_finished_result(tmp_path):
    records = sample_records()
    reference = tmp_path / "reference.parquet"
    score(reference, records)
    out = tmp_path / "out.parquet"
    with pytest.raises(KeyboardInterrupt):
        with open_writer(out) as writer:
            for record in records[:5]:
                writer.write(result_of(record))
            raise KeyboardInterrupt  # Ctrl-C long before a part is due
    assert score(out, records, resume=True) == 5
    assert out.read_bytes() == reference.read_bytes()


def test_table_inputs_that_cannot_be_read_are_one_line(tmp_path):
    import datasets

    table = pa.table({"instruction": ["a"], "output": ["b"]})
    datasets.DatasetDict({"test": datasets.Dataset(table)}).save_to_disk(str(tmp_path / "saved"))
    with pytest.raises(InputError, match=r"^.*saved has no split 'train'; its splits are test \('split'\)$"):
        read_records(tmp_path / "saved")
    (tmp_path / "folder").mkdir()
    pq.write_table(table, tmp_path / "folder" / "a.parquet")
    pq.write_table(pa.table({"instruction": [1]}), tmp_path / "folder" / "b.parquet")
    with pytest.raises(InputError, match=r"b\.parquet has other columns or types than .*a\.parquet; the Parquet "
                                         r"files of one input must share one schema$"):
        read_records(tmp_path / "folder")
    cut = tmp_path / "cut.parquet"
    cut.write_bytes((tmp_path / "folder" / "a.parquet").read_bytes()[:100])
    with pytest.raises(InputError, match=r"cut\.parquet is not a readable Parquet file: "):
        read_records(cut)


def test_missing_extras_name_the_pip_command(tmp_path, monkeypatch):
    pq.write_table(pa.table({"instruction": ["a"], "output": ["b"]}), tmp_path / "in.parquet")
    (tmp_path / "saved").mkdir()
    (tmp_path / "saved" / "state.json").write_text("{}")
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(InputError, match=r"^reading this input needs the parquet extra: "
                                         r"pip install 'localscore\[parquet\]'$"):
        read_records(tmp_path / "in.parquet")
    with pytest.raises(InputError, match=r"needs the datasets extra: pip install 'localscore\[datasets\]'$"):
        read_records(tmp_path / "saved")
    with pytest.raises(OutputError, match=r"^writing Parquet needs the parquet extra: "
                                          r"pip install 'localscore\[parquet\]'$"):
        open_writer(tmp_path / "out.parquet")


N_RECORDS = 240
# The part size is a module constant; the killed process sets a small one so that parts exist before the kill.
_SCORE = ("import sys; from localscore.forms import parquet_output; parquet_output.PART_ROWS = 20; "
          "from localscore.cli import cli; sys.exit(cli(sys.argv[1:]))")


def _args(src: Path, out: Path, model: Path, *extra: str) -> list[str]:
    return ["score", str(src), "-o", str(out), "-m", str(model), "-q", *extra]


def _command(src: Path, out: Path, model: Path, *extra: str) -> list[str]:
    return [sys.executable, "-c", _SCORE, *_args(src, out, model, *extra)]


def test_killed_parquet_run_resumes_to_the_same_file(tmp_path, model, monkeypatch):
    # Short records: what matters is where the kill lands, not what is scored.
    table = pa.Table.from_pylist([{"id": i, "instruction": f"Write the number {i} in words.",
                                   "output": f"{i:,} in words."} for i in range(N_RECORDS)])
    src = tmp_path / "in.parquet"
    pq.write_table(table, src)
    full = tmp_path / "full.parquet"  # in this process, with the killed process's part size
    monkeypatch.setattr(parquet_output, "PART_ROWS", 20)
    uninterrupted = CliRunner().invoke(cli, _args(src, full, model), catch_exceptions=False)
    assert uninterrupted.exit_code == 0, uninterrupted.output

    out = tmp_path / "out.parquet"
    parts = tmp_path / "out.parquet.partial"
    process = subprocess.Popen(_command(src, out, model), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None and len(list(parts.glob("part-*.parquet"))) < 2:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)
    done = sum(pq.ParquetFile(p).metadata.num_rows for p in parts.glob("part-*.parquet"))
    assert 40 <= done < N_RECORDS, "the run finished before it could be killed"
    assert not out.exists()

    resumed = CliRunner().invoke(cli, _args(src, out, model, "--resume"), catch_exceptions=False)  # in-process
    assert resumed.exit_code == 0, resumed.output
    assert out.read_bytes() == full.read_bytes()
    assert not parts.exists()
