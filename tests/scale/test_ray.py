"""Scoring on Ray: the session's local Ray cluster (2 CPUs, conftest.py), 2 actors x 1 thread, compared record for
record with the single-process run."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray
from click.testing import CliRunner

from localscore import LocalscoreError, ModelError, Scorer
from localscore.cli import cli
from localscore.errors import InputError
from localscore.runs.score import score_file
from localscore.options import InputOptions, OutputOptions, RayOptions, RunOptions, ScorerOptions
from tests.support.ray_actors import PoisonedActor, StillbornActor
from tests.support.files import write_hub_cache
from tests.support.processes import run_feeding

DATA = Path(__file__).parents[1] / "data"
ROOT = Path(__file__).parents[2]


@pytest.fixture(scope="module")
def model(gguf_file) -> Path:
    return gguf_file("f32")


@pytest.fixture(scope="module")
def records() -> list[dict]:
    """40 real records: Alpaca (some with an input), multi-turn ShareGPT, and three that cannot be scored."""
    alpaca = []
    with open(DATA / "self_instruct_user_oriented.jsonl", encoding="utf-8") as f:
        for line in list(f)[:28]:
            task = json.loads(line)
            alpaca.append({"id": task["id"], "instruction": task["instruction"],
                           "input": task["instances"][0]["input"], "output": task["instances"][0]["output"]})
    sharegpt = json.loads((DATA / "fastchat_dummy_conversation.json").read_text(encoding="utf-8"))[:9]
    bad = [
        {"id": "bad_empty", "instruction": "Say hi.", "input": "", "output": "   "},
        {"id": "bad_order", "conversations": [{"from": "gpt", "value": "Hello"}, {"from": "human", "value": "Hi"}]},
        {"id": "bad_shape", "instruction": "Only a question?"},
    ]
    mixed = alpaca[:10] + [bad[0]] + sharegpt[:5] + alpaca[10:20] + [bad[1]] + sharegpt[5:] + alpaca[20:] + [bad[2]]
    assert len(mixed) == 40
    return mixed


@pytest.fixture(scope="module")
def jsonl(tmp_path_factory, records) -> Path:
    path = tmp_path_factory.mktemp("ray") / "in.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def single(tmp_path_factory, jsonl, model) -> list[dict]:
    """The single-process run's output objects."""
    out = tmp_path_factory.mktemp("single") / "out.jsonl"
    with Scorer.from_path(model, run=RunOptions(threads=1)) as scorer:
        score_file(InputOptions(jsonl), OutputOptions(out), scorer)
    return [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]


def present(row: dict) -> dict:
    """A Parquet row as the JSON object it came from: a null column is a field the record does not have."""
    return {key: value for key, value in row.items() if value is not None}


def test_ray_cli_equals_the_single_process_run(ray_cluster, jsonl, model, single, tmp_path):
    out = tmp_path / "out.parquet"
    result = CliRunner().invoke(cli, ["score", str(jsonl), "-m", str(model), "--ray", "--actors", "2", "--threads",
                                      "1", "-o", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    got = [present(row) for row in pq.read_table(out).to_pylist()]
    assert got == single  # every field, every score bit for bit, in input order
    assert sum("quality_error" in r for r in got) == 3 and sum("quality_scores" in r for r in got) == 9
    assert not out.with_name("out.parquet.partial").exists()
    log = result.stderr.splitlines()
    actors = [line for line in log if line.startswith("localscore: actor ")]
    assert len(actors) == 2  # both actors scored
    assert log[-1].startswith("localscore: 40 records (")
    assert log[-1].endswith(" tokens/s: 37 scored, 3 errored, 0 truncated")


def test_ray_writes_json_lines_for_other_names(ray_cluster, jsonl, model, single, tmp_path):
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(cli, ["score", str(jsonl), "-m", str(model), "--ray", "--actors", "2", "-q",
                                      "-o", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()] == single


def test_ray_reads_parquet_input_like_the_single_process_run(ray_cluster, records, model, single, tmp_path):
    src = tmp_path / "in.parquet"
    # Every record's keys (from_pylist takes the first row's); several row groups, so both actors get blocks.
    pq.write_table(pa.Table.from_struct_array(pa.array(records)), src, row_group_size=7)
    out, alone = tmp_path / "out.jsonl", tmp_path / "single.jsonl"
    result = CliRunner().invoke(cli, ["score", str(src), "-m", str(model), "--ray", "--actors", "2", "--threads",
                                      "1", "-q", "-o", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    with Scorer.from_path(model, run=RunOptions(threads=1)) as scorer:
        score_file(InputOptions(src), OutputOptions(alone), scorer)
    assert out.read_bytes() == alone.read_bytes()
    # The same scores as from the JSON Lines input (a null column reads as a null field, so the one bad record's
    # reason names null where JSON Lines has no field).
    got = [present(json.loads(line)) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r.get("quality_score", r.get("quality_scores")) for r in got] == [
        r.get("quality_score", r.get("quality_scores")) for r in single]
    assert [r["id"] for r in got if "quality_error" in r] == [r["id"] for r in single if "quality_error" in r]


def test_parquet_input_and_strict(ray_cluster, jsonl, records, model, single, tmp_path):
    from localscore.runs.ray import score_on_ray

    src = tmp_path / "in.parquet"
    pq.write_table(pa.Table.from_pylist(records), src)
    with pytest.raises(InputError) as error:
        score_on_ray(InputOptions(src), OutputOptions(tmp_path / "out.parquet"), model, ScorerOptions(),
                     RunOptions(threads=1), RayOptions(2), strict=True)
    with Scorer.from_path(model, run=RunOptions(threads=1)) as scorer, pytest.raises(InputError) as expected:
        score_file(InputOptions(jsonl), OutputOptions(tmp_path / "single.jsonl"), scorer, strict=True)
    assert str(error.value) == str(expected.value) == (
        "record 11: 'output' is empty ('strict' stops at the first bad record)")
    # As in a single-process run, the output takes its name only when complete; what was scored stays partial.
    assert not (tmp_path / "out.parquet").exists()


def test_a_model_an_actor_cannot_load_is_one_line(ray_cluster, jsonl, tmp_path):
    from localscore.runs.ray import score_on_ray

    with pytest.raises(ModelError, match=r"^on [^:]+: model file .*nope\.gguf does not exist; "):
        score_on_ray(InputOptions(jsonl), OutputOptions(tmp_path / "out.parquet"), tmp_path / "nope.gguf",
                     ScorerOptions(), RunOptions(threads=1), RayOptions(1))


def test_a_malformed_json_line_is_a_per_record_error_as_without_ray(ray_cluster, model, tmp_path):
    from localscore.runs.ray import score_on_ray

    src = tmp_path / "broken.jsonl"
    src.write_text('{"instruction": "a", "output": "b"}\n{"instruction": \n{"instruction": "c", "output": "d"}\n',
                   encoding="utf-8")
    score_on_ray(InputOptions(src), OutputOptions(tmp_path / "ray.jsonl"), model, ScorerOptions(), RunOptions(),
                 RayOptions(2))
    with Scorer.from_path(model, run=RunOptions(threads=1)) as scorer:
        score_file(InputOptions(src), OutputOptions(tmp_path / "single.jsonl"), scorer)
    assert (tmp_path / "ray.jsonl").read_bytes() == (tmp_path / "single.jsonl").read_bytes()
    # What made it, beside it: the same record as the single run's (one node, one setup).
    assert (tmp_path / "ray.jsonl.provenance.json").read_bytes() == \
        (tmp_path / "single.jsonl.provenance.json").read_bytes()
    lines = [json.loads(line) for line in (tmp_path / "ray.jsonl").read_text(encoding="utf-8").splitlines()]
    assert lines[1] == {"line": 2, "raw": '{"instruction": ',
                        "quality_error": "not valid JSON: Expecting value at column 1"}
    assert "quality_score" in lines[0] and "quality_score" in lines[2]


def test_options_that_do_not_work_with_ray(tmp_path, jsonl):
    cases = [
        (["--n-gpu-layers", "1", "-o", "x.parquet"], "Error: --n-gpu-layers does not work with --ray"),
        (["--resume"], "Error: --resume needs an output file (--output)"),
    ]
    for args, message in cases:
        result = CliRunner().invoke(cli, ["score", str(jsonl), "-m", "m.gguf", "--ray", *args])
        assert result.exit_code == 2 and result.output.splitlines()[-1] == message
    result = CliRunner().invoke(cli, ["score", str(jsonl), "-m", "m.gguf", "--actors", "2"])
    assert result.exit_code == 2 and result.output.splitlines()[-1] == "Error: --actors needs --ray"


def test_every_table_form_on_ray_equals_the_single_run(ray_cluster, records, model, tmp_path):
    import datasets

    table = pa.Table.from_struct_array(pa.array(records))
    (tmp_path / "folder").mkdir()
    for i, start in enumerate(range(0, len(records), 15)):
        pq.write_table(table.slice(start, 15), tmp_path / "folder" / f"part-{i}.parquet")
    datasets.Dataset(table).save_to_disk(str(tmp_path / "saved"))
    for name in ("folder", "saved"):
        out, alone = tmp_path / f"{name}.parquet", tmp_path / f"{name}-single.parquet"
        result = CliRunner().invoke(cli, ["score", str(tmp_path / name), "-m", str(model), "--ray", "--actors", "2",
                                          "-q", "-o", str(out)], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        with Scorer.from_path(model, run=RunOptions(threads=1)) as scorer:
            score_file(InputOptions(tmp_path / name), OutputOptions(alone), scorer)
        assert out.read_bytes() == alone.read_bytes(), name
        assert pq.read_table(out).num_rows == len(records)
        # The input's own column types, as a single-process run keeps them.
        assert pq.read_schema(out).field("conversations").type == table.schema.field("conversations").type

    # huggingface_hub reads HF_HUB_* once, on import: the hub runs are processes of their own, on this cluster.
    write_hub_cache(tmp_path / "hub", "org/mixed", table)
    outputs = []
    for extra in (["--ray", "--actors", "2"], []):
        outputs.append(tmp_path / f"hub{len(outputs)}.jsonl")
        hub = subprocess.run([sys.executable, "-m", "localscore", "score", "hf://datasets/org/mixed", "-m",
                              str(model), *extra, "-q", "-t", "1", "-o", str(outputs[-1])], cwd=ROOT,
                             env=_env(tmp_path), capture_output=True, text=True, timeout=600)
        assert hub.returncode == 0, hub.stderr
    assert outputs[0].read_bytes() == outputs[1].read_bytes()
    assert len(outputs[0].read_text(encoding="utf-8").splitlines()) == len(records)


def _env(tmp_path: Path) -> dict:
    """A child process on the session's cluster, with an offline hub cache under tmp_path."""
    return {**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address, "HF_HUB_OFFLINE": "1",
            "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_DATASETS_CACHE": str(tmp_path / "datasets-cache"),
            "HF_HOME": str(tmp_path / "hf-home")}


def test_a_killed_ray_driver_resumes_to_the_uninterrupted_bytes(ray_cluster, records, model, tmp_path):
    many = [{**record, "id": f"{copy}-{record['id']}"} for copy in range(20) for record in records]  # 800
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in many), encoding="utf-8")
    full = tmp_path / "full.jsonl"
    with Scorer.from_path(model, run=RunOptions(threads=1)) as scorer:
        score_file(InputOptions(src), OutputOptions(full), scorer)

    out = tmp_path / "out.jsonl"
    partial = tmp_path / "out.jsonl.partial"
    driver = subprocess.Popen([sys.executable, "-m", "localscore", "score", str(src), "-m", str(model), "--ray",
                               "--actors", "2", "-q", "-o", str(out)], cwd=ROOT, env=_env(tmp_path),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and driver.poll() is None and _lines(partial) < 60:
        time.sleep(0.02)
    driver.send_signal(signal.SIGKILL)
    driver.communicate(timeout=60)
    assert 60 <= _lines(partial) < len(many), "the run finished before it could be killed"
    assert not out.exists()

    result = CliRunner().invoke(cli, ["score", str(src), "-m", str(model), "--ray", "--actors", "2", "--resume",
                                      "-o", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert out.read_bytes() == full.read_bytes()
    assert Path(f"{out}.provenance.json").read_bytes() == Path(f"{full}.provenance.json").read_bytes()
    assert re.search(r", \d+ resumed$", result.stderr.splitlines()[-1])


def _lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


# An input of unknown length (stdin) goes to the actors in blocks of 32. Fed 40 records, the driver sends the first
# block to one actor and waits for the rest of the second; the kill comes then, and the other 40 records complete the
# second block and make a third, one block for each actor, so the lost actor is always sent one after its loss.
# Short records: the runs take little more than their start.
FEED = [json.dumps({"id": i, "instruction": f"Add {i} and {i}.", "output": f"{2 * i}"}).encode() + b"\n"
        for i in range(80)]


@pytest.mark.parametrize("name", ["out.jsonl", "out.parquet"])
def test_a_lost_actor_is_replaced_and_the_output_is_the_uninterrupted_runs(ray_cluster, model, tmp_path, name):
    src, alone, out = tmp_path / "in.jsonl", tmp_path / f"alone-{name}", tmp_path / name
    src.write_bytes(b"".join(FEED))
    with Scorer.from_path(model, run=RunOptions(threads=1)) as scorer:
        score_file(InputOptions(src), OutputOptions(alone), scorer)

    result = run_feeding(["score", "-", "-m", str(model), "--ray", "--actors", "2", "-o", str(out)],
                         b"".join(FEED[:40]), b"".join(FEED[40:]), "_ScoreActor", _env(tmp_path))
    assert result.returncode == 0, result.stderr
    assert out.read_bytes() == alone.read_bytes()
    # One line per actor (the lost one says so), the summary: localscore's lines only, none of Ray's.
    log = result.stderr.splitlines()
    assert result.stdout == "" and all(line.startswith("localscore: ") for line in log), result.stderr
    assert sum(line.endswith("; lost, and replaced (what it had not finished was redone)") for line in log) == 1
    assert log[-1].startswith("localscore: 80 records (") and log[-1].endswith("; 1 actor lost and replaced")


def test_an_actor_killed_by_every_try_at_a_block_ends_the_run_naming_its_records(ray_cluster, records, model,
                                                                                tmp_path, monkeypatch):
    import localscore.runs.ray as on_ray

    src = tmp_path / "in.jsonl"
    poisoned = [{**record, "id": "poison"} if i == 19 else record for i, record in enumerate(records)]
    src.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in poisoned), encoding="utf-8")
    out = tmp_path / "out.jsonl"
    monkeypatch.setattr(on_ray, "_ScoreActor", PoisonedActor)
    result = CliRunner().invoke(cli, ["score", str(src), "-m", str(model), "--ray", "--actors", "2", "-o", str(out)],
                                catch_exceptions=False)
    assert result.exit_code == 1
    # 40 records in blocks of 5: the poisoned one is record 20, in the fourth block; the three before it are kept.
    assert result.stderr.splitlines()[-1] == (
        "Error: 3 Ray actors in turn died working on records 16-20 (out of memory on their nodes, or a crash in "
        "llama.cpp); run those records without Ray to find the one at fault, or leave them out")
    assert _lines(tmp_path / "out.jsonl.partial") == 15 and not out.exists()


def test_actors_that_die_while_starting_end_the_run_in_one_line(ray_cluster, jsonl, model, tmp_path, monkeypatch):
    import localscore.runs.ray as on_ray

    monkeypatch.setattr(on_ray, "_ScoreActor", StillbornActor)
    with pytest.raises(ModelError) as error:
        on_ray.score_on_ray(InputOptions(jsonl), OutputOptions(tmp_path / "out.jsonl"), model, ScorerOptions(),
                            RunOptions(), RayOptions(1))
    assert str(error.value) == ("3 Ray actors died while starting, loading the model (out of memory on their nodes?); "
                                "give each actor a node with room for the model, or fewer actors per node")


def test_missing_ray_names_the_extra(monkeypatch, jsonl, tmp_path):
    from localscore.runs.ray import score_on_ray

    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(LocalscoreError) as error:
        score_on_ray(InputOptions(jsonl), OutputOptions(tmp_path / "out.parquet"), None, ScorerOptions(), RunOptions(),
                     RayOptions())
    assert str(error.value) == "running on Ray needs the ray extra: pip install 'localscore[ray]'"
