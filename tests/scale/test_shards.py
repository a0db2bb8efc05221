"""Shards for job arrays: shards 0..N-1 merged are exactly the single run's output; merge refuses a missing shard, a
repeated one, and shards of another input."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from localscore.cli import cli
from localscore.errors import InputError
from localscore.forms.provenance import read_provenance
from localscore.runs.score import score_file
from localscore.runs.shards import Shard
from localscore.options import InputOptions, OutputOptions

N_SHARDS = 3


@pytest.fixture(scope="module")
def records(pairs) -> list[dict]:
    rows = [{"id": i, "instruction": a, "output": b} for i, (a, b) in enumerate(pairs[:16])]
    rows[5]["output"] = ""  # an error result: merged like any other
    return rows


def merge(*args) -> object:
    return CliRunner().invoke(cli, ["merge", *map(str, args)], catch_exceptions=False)


def shard_outputs(tmp_path: Path, source: Path, scorer, suffix: str) -> list[Path]:
    outputs = []
    for index in range(N_SHARDS):
        out = tmp_path / f"shard-{index}{suffix}"
        score_file(InputOptions(source), OutputOptions(out, shard=f"{index}/{N_SHARDS}"), scorer)
        outputs.append(out)
    return outputs


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_merged_shards_are_the_single_run(tmp_path, q8_scorer, records, suffix):
    if suffix == ".jsonl":
        source = tmp_path / "in.jsonl"
        source.write_text("".join(json.dumps(r) + "\n" + "\n" * (i % 2) for i, r in enumerate(records)))
    else:
        source = tmp_path / "in.parquet"
        pq.write_table(pa.Table.from_pylist(records), source, row_group_size=5)
    single = tmp_path / f"single{suffix}"
    score_file(InputOptions(source), OutputOptions(single), q8_scorer)
    outputs = shard_outputs(tmp_path, source, q8_scorer, suffix)
    made = read_provenance(outputs[1])
    assert {k: made.shard[k] for k in ("shard", "shards", "records")} == {
        "shard": 1, "shards": N_SHARDS, "records": len(records)}
    assert made.last.settings["scorer"] == "quality"
    merged = tmp_path / f"merged{suffix}"
    result = merge(outputs[2], outputs[0], outputs[1], "-o", merged)  # any order
    assert result.exit_code == 0, result.output
    assert result.stderr == f"localscore: merged 3 shards, {len(records)} records, into {merged}\n"
    assert merged.read_bytes() == single.read_bytes()
    if suffix == ".jsonl":  # what made it, beside it (Parquet: in the bytes compared above)
        assert Path(f"{merged}.provenance.json").read_bytes() == Path(f"{single}.provenance.json").read_bytes()


def test_merge_refuses_missing_repeated_and_foreign_shards(tmp_path, q8_scorer, records):
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in records))
    outputs = shard_outputs(tmp_path, source, q8_scorer, ".jsonl")
    other = tmp_path / "other.jsonl"
    other.write_text("".join(json.dumps(dict(r, id=-1)) + "\n" for r in records))
    foreign = tmp_path / "foreign.jsonl"
    score_file(InputOptions(other), OutputOptions(foreign, shard=f"2/{N_SHARDS}"), q8_scorer)
    out = tmp_path / "merged.jsonl"
    cases = [
        ([outputs[0], outputs[2]], f"Error: shard 1/{N_SHARDS} missing: give every shard's output to merge"),
        ([outputs[0], outputs[1], outputs[1], outputs[2]],
         f"Error: shard 1/{N_SHARDS} is given twice: {outputs[1]} and {outputs[1]}"),
        ([outputs[0], outputs[1], foreign],
         f"Error: {foreign} is a shard of another input, split, scorer or embedder than {outputs[0]}; merge the shards of "
         "one run"),
        ([outputs[0], outputs[1], source], f"Error: {source} has no in.jsonl.provenance.json: it is not the finished "
                                           "output of a run with --shard"),
    ]
    for args, message in cases:
        result = merge(*args, "-o", out)
        assert result.exit_code == 1
        assert result.output == message + "\n"
        assert sorted(p.name for p in tmp_path.glob("merged*")) == []
    # A shard output cut short (edited, or copied before it finished) is caught while merging.
    outputs[1].write_text(outputs[1].read_text().split("\n", 1)[1])
    result = merge(*outputs, "-o", out)
    assert result.exit_code == 1
    assert result.output == (f"Error: {outputs[1]} has 4 results but shard 1/{N_SHARDS} of 16 records has 5: it is "
                             "incomplete or was changed; rerun that shard\n")
    assert sorted(p.name for p in tmp_path.glob("merged*")) == []


def test_score_command_shards(tmp_path, gguf_file, records, q8_scorer):
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in records[:4]))
    model = gguf_file("q8_0")
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(cli, ["score", str(source), "-m", str(model), "-o", str(out), "--shard", "1/2", "-q"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == [1, 3]
    # The same file rewritten by a whole run is no longer a shard.
    score_file(InputOptions(source), OutputOptions(out), q8_scorer)
    assert read_provenance(out).shard is None
    for args, message in [(["--shard", "2/2"], "Error: shard '2/2' must be I/N with 0 <= I < N, e.g. 0/4 for the "
                                                 "first of four"),
                          (["--shard", "0/2", "-o", "/dev/null"], "Error: --shard needs an output file (--output): each "
                                                                   "shard writes its own, merged afterwards")]:
        result = CliRunner().invoke(cli, ["score", str(source), "-m", str(model), "-q", *args])
        assert result.exit_code == 1 and result.output == message + "\n"


def test_shard_spec():
    assert Shard.parse("2/4") == Shard(2, 4)
    for bad in ("4/4", "1", "-1/4", "a/b", "0/0"):
        with pytest.raises(InputError, match=r"must be I/N with 0 <= I < N"):
            Shard.parse(bad)
