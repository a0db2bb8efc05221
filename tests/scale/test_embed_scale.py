"""Embedding and selection beyond one process: `embed --shard` + `merge` (real processes, as a job array runs them),
`embed --ray`, and `select --ray`, whose actors embed ahead of Deita's sequential walk. Each is checked against the
single-process run: the same `.npy` bytes, the same picks in the same order. Every run gets a cache of its own, so
no result can come from another run's vectors."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest
import ray
from click.testing import CliRunner

from localscore import api
from localscore.cli import cli
from localscore.forms.provenance import read_provenance
from tests.support.data import scored, sharegpt_conversations
from tests.support.files import cached_vectors, write_jsonl
from tests.support.processes import localscore, run_feeding, stop_when
from tests.support.reference import deita_filter

ROOT = Path(__file__).parents[2]
# A conversation that cannot be embedded (a question without its answer): its row is NaN, and the walk skips it.
UNANSWERED = {"id": "unanswered", "conversations": [{"from": "human", "value": "Only a question?"}],
              "quality_scores": [6.0], "complexity_scores": [6.0]}


@pytest.fixture(scope="module")
def pool() -> list[dict]:
    """61 scored records: 1- to 3-turn conversations, and one that cannot be embedded, ranked near the top."""
    records = sharegpt_conversations()
    return scored(records[:25] + records[167:185] + records[333:350]) + [UNANSWERED]


@pytest.fixture(scope="module")
def single(tmp_path_factory, pool, embedder_gguf) -> tuple[Path, Path]:
    """The input file and the single-process run's `.npy`."""
    folder = tmp_path_factory.mktemp("single")
    source = write_jsonl(folder / "pool.jsonl", pool)
    _embed_here(source, folder / "single.npy", embedder_gguf, folder / "cache")
    return source, folder / "single.npy"


def _embed_here(source: Path, output: Path, model: Path, cache: Path) -> None:
    result = CliRunner(env={"LOCALSCORE_CACHE": str(cache)}).invoke(
        cli, ["embed", str(source), "-m", str(model), "-t", "1", "-q", "-o", str(output)], catch_exceptions=False)
    assert result.exit_code == 0, result.output


def _env(cache: Path) -> dict:
    """A child process with a cache of its own, on the session's Ray cluster when there is one."""
    env = {**os.environ, "LOCALSCORE_CACHE": str(cache)}
    if ray.is_initialized():
        env["RAY_ADDRESS"] = ray.get_runtime_context().gcs_address
    return env


def test_sharded_embed_merges_into_the_single_runs_bytes(tmp_path, single, embedder_gguf):
    source, expected = single
    # Three shards at once, each its own process with its own cache, as three machines of a job array.
    shards = [tmp_path / f"part-{i}-of-3.npy" for i in range(3)]
    children = [subprocess.Popen(localscore("embed", source, "-m", embedder_gguf, "--shard", f"{i}/3", "-t", "1",
                                            "-q", "-o", shard), cwd=ROOT, env=_env(tmp_path / f"cache-{i}"),
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for i, shard in enumerate(shards)]
    for child in children:
        _, stderr = child.communicate(timeout=300)
        assert child.returncode == 0, stderr
    sidecar = read_provenance(shards[1]).shard
    assert {key: sidecar[key] for key in ("shard", "shards", "records")} == {"shard": 1, "shards": 3, "records": 61}
    assert len(np.load(shards[1])) == 20

    merged = tmp_path / "merged.npy"
    result = CliRunner().invoke(cli, ["merge", *map(str, reversed(shards)), "-o", str(merged)],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert result.output == f"localscore: merged 3 shards, 61 records, into {merged}\n"
    assert merged.read_bytes() == expected.read_bytes()
    assert Path(f"{merged}.provenance.json").read_bytes() == Path(f"{expected}.provenance.json").read_bytes()
    assert np.isnan(np.load(merged)[-1]).all()  # the unanswered record's row, in its place


def test_merge_refuses_embedding_shards_that_do_not_make_one_run(tmp_path, single, pool, embedder_gguf,
                                                                gguf_file):
    source, _ = single
    shards = []
    for i in range(3):
        shards.append(tmp_path / f"s{i}.npy")
        api.embed(source, shards[-1], model=embedder_gguf, threads=1, shard=f"{i}/3")
    other = write_jsonl(tmp_path / "other.jsonl", pool[:-2])
    api.embed(other, tmp_path / "other-1.npy", model=embedder_gguf, threads=1, shard="1/3")
    api.score(source, tmp_path / "scores-1.jsonl", model=gguf_file("q8_0"), threads=1, shard="1/3")
    shutil.copy(shards[2], tmp_path / "copy-2.npy")
    shutil.copy(f"{shards[2]}.provenance.json", tmp_path / "copy-2.npy.provenance.json")
    cut = tmp_path / "cut-2.npy"
    np.save(cut, np.load(shards[2])[:-1])
    shutil.copy(f"{shards[2]}.provenance.json", f"{cut}.provenance.json")

    def merge(*paths: Path) -> str:
        out = tmp_path / "merged.npy"
        result = CliRunner().invoke(cli, ["merge", *map(str, paths), "-o", str(out)], catch_exceptions=False)
        assert result.exit_code == 1 and not out.exists(), result.output
        return result.output.strip()

    assert merge(shards[0], shards[1]) == "Error: shard 2/3 missing: give every shard's output to merge"
    assert merge(*shards, tmp_path / "copy-2.npy") == \
        f"Error: shard 2/3 is given twice: {shards[2]} and {tmp_path / 'copy-2.npy'}"
    for foreign in (tmp_path / "other-1.npy", tmp_path / "scores-1.jsonl"):
        assert merge(shards[0], foreign, shards[2]) == (f"Error: {foreign} is a shard of another input, split, "
                                                        f"scorer or embedder than {shards[0]}; merge the shards of "
                                                        "one run")
    assert merge(shards[0], shards[1], cut) == (f"Error: {cut} has 19 results but shard 2/3 of 61 records has 20: "
                                                "it is incomplete or was changed; rerun that shard")


def test_embed_on_ray_is_the_single_runs_bytes(ray_cluster, tmp_path, single, embedder_gguf):
    source, expected = single
    out = tmp_path / "ray.npy"
    result = CliRunner(env={"LOCALSCORE_CACHE": str(tmp_path / "cache")}).invoke(
        cli, ["embed", str(source), "-m", str(embedder_gguf), "--ray", "--actors", "2", "-o", str(out)],
        catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert out.read_bytes() == expected.read_bytes()
    assert Path(f"{out}.provenance.json").read_bytes() == Path(f"{expected}.provenance.json").read_bytes()
    lines = result.stderr.splitlines()
    assert sum(line.startswith("localscore: actor ") for line in lines) == 2
    assert re.fullmatch(r"localscore: 61 records in [\d.]+ s: 60 embedded \([\d.,]+/s, [\d,]+ tokens\), "
                        r"0 from the cache, 1 errored \(NaN rows\)", lines[-1])

    # A shard on Ray is the same shard as without.
    alone, on_ray = tmp_path / "alone-1.npy", tmp_path / "ray-1.npy"
    api.embed(source, alone, model=embedder_gguf, threads=1, shard="1/2")
    api.embed(source, on_ray, model=embedder_gguf, shard="1/2", ray=True, actors=2)
    assert on_ray.read_bytes() == alone.read_bytes()


def test_a_killed_embed_on_ray_resumes_to_the_same_bytes(ray_cluster, tmp_path, embedder_gguf):
    # 160 distinct short conversations: enough that the run can be killed midway, once the cache holds some.
    many = [{"conversations": [{"from": "human", "value": f"Question {i}: what is {i} + {i}?"},
                               {"from": "gpt", "value": f"{i} + {i} = {2 * i}."}]} for i in range(160)]
    source = write_jsonl(tmp_path / "many.jsonl", many)
    expected = tmp_path / "single.npy"
    _embed_here(source, expected, embedder_gguf, tmp_path / "single-cache")

    cache = tmp_path / "cache"
    out = tmp_path / "out.npy"
    driver = subprocess.Popen(localscore("embed", source, "-m", embedder_gguf, "--ray", "--actors", "2", "-q",
                                         "-o", out), cwd=ROOT, env=_env(cache), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)
    stop_when(driver, lambda: cached_vectors(cache / "embeddings.sqlite") >= 64, signal.SIGKILL)
    done = cached_vectors(cache / "embeddings.sqlite")
    assert 64 <= done < len(many), "the run finished before it could be killed"
    assert not out.exists()

    result = CliRunner(env={"LOCALSCORE_CACHE": str(cache)}).invoke(
        cli, ["embed", str(source), "-m", str(embedder_gguf), "--ray", "--actors", "2", "-o", str(out)],
        catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert out.read_bytes() == expected.read_bytes()
    reused = int(re.search(r"([\d,]+) from the cache", result.stderr).group(1).replace(",", ""))
    assert reused >= done


def test_an_embed_actor_lost_mid_run_is_replaced_with_the_same_bytes(ray_cluster, tmp_path, embedder_gguf):
    # 80 distinct conversations from stdin, fed as test_ray.FEED is.
    many = [{"conversations": [{"from": "human", "value": f"{i} + {i}?"}, {"from": "gpt", "value": f"{2 * i}"}]}
            for i in range(80)]
    source = write_jsonl(tmp_path / "many.jsonl", many)
    expected, out = tmp_path / "single.npy", tmp_path / "out.npy"
    _embed_here(source, expected, embedder_gguf, tmp_path / "single-cache")
    lines = source.read_bytes().splitlines(keepends=True)
    result = run_feeding(["embed", "-", "-m", str(embedder_gguf), "--ray", "--actors", "2", "-o", str(out)],
                         b"".join(lines[:40]), b"".join(lines[40:]), "_EmbedActor", _env(tmp_path / "cache"))
    assert result.returncode == 0, result.stderr
    assert out.read_bytes() == expected.read_bytes()
    log = result.stderr.splitlines()
    assert all(line.startswith("localscore: ") for line in log), result.stderr
    assert sum(line.endswith("; lost, and replaced (what it had not finished was redone)") for line in log) == 1
    assert re.fullmatch(r"localscore: 80 records in [\d.]+ s: 80 embedded .*, 0 from the cache, 0 errored.*",
                        log[-1])


def test_select_on_ray_picks_the_sequential_walks_records(ray_cluster, tmp_path, single, pool, embedder_gguf):
    source, embeddings = single
    vectors = np.load(embeddings)
    for budget, threshold in [(5, 0.97), (20, 0.99), (len(pool) * 2, 0.95)]:
        name = f"{budget}-{threshold}"
        alone = _select(source, tmp_path / f"alone-{name}.jsonl", budget, threshold, embedder_gguf,
                        tmp_path / f"alone-{name}")
        on_ray = _select(source, tmp_path / f"ray-{name}.jsonl", budget, threshold, embedder_gguf,
                         tmp_path / f"ray-{name}", ray=True)
        assert (tmp_path / f"ray-{name}.jsonl").read_bytes() == (tmp_path / f"alone-{name}.jsonl").read_bytes()
        # And both are Deita's walk over the single run's embeddings (the unanswered record skipped).
        usable = [i for i in range(len(pool)) if not np.isnan(vectors[i]).any()]
        picks, _ = deita_filter([pool[i] for i in usable], vectors[usable], budget, threshold)
        chosen = [json.loads(line)["id"] for line in (tmp_path / f"ray-{name}.jsonl").read_text().splitlines()]
        assert chosen == [pool[usable[i]]["id"] for i in picks], name
        assert on_ray.examined == alone.examined == alone.computed
        # The actors ran ahead of the walk by at most two conversations each; what they did ahead is counted.
        assert on_ray.computed == on_ray.examined + on_ray.ahead and 0 <= on_ray.ahead <= 4, name
        assert on_ray.unusable == alone.unusable
    # A budget larger than what passes: the walk took every candidate, so nothing was embedded in vain.
    assert on_ray.ahead == 0 and on_ray.unusable == {"NaN embedding": 1}
    assert on_ray.selected < len(pool) - 1


def _select(source: Path, output: Path, budget: int, threshold: float, model: Path, cache: Path, **ray):
    from localscore.options import InputOptions, RayOptions, RunOptions, SelectOptions
    from localscore.runs.select import select_file

    return select_file(InputOptions(source), output, SelectOptions(budget, threshold, model),
                       RunOptions(threads=None if ray else 1), RayOptions(2) if ray.get("ray") else None,
                       cache_path=cache / "embeddings.sqlite")


def test_embeddings_made_on_ray_land_in_the_drivers_cache(ray_cluster, tmp_path, single, embedder_gguf):
    source, _ = single
    cache = tmp_path / "cache"
    first = _select(source, tmp_path / "first.jsonl", 20, 0.99, embedder_gguf, cache, ray=True)
    # What the actors embedded ahead of the walk is in the cache too, not only what the walk examined.
    assert first.ahead > 0 and cached_vectors(cache / "embeddings.sqlite") == first.computed == \
        first.examined + first.ahead
    # Another budget, on one machine: every candidate it examines was embedded by the actors.
    smaller = _select(source, tmp_path / "smaller.jsonl", 12, 0.99, embedder_gguf, cache)
    assert (smaller.computed, smaller.reused) == (0, smaller.examined)
    # `embed --ray` fills the same cache: a walk over everything then computes nothing, on Ray or not.
    result = CliRunner(env={"LOCALSCORE_CACHE": str(cache)}).invoke(
        cli, ["embed", str(source), "-m", str(embedder_gguf), "--ray", "--actors", "2", "-q",
              "-o", str(tmp_path / "all.npy")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    everything = _select(source, tmp_path / "all.jsonl", 1000, 0.95, embedder_gguf, cache, ray=True)
    assert (everything.computed, everything.reused) == (0, everything.examined)


@pytest.mark.parametrize("args, message", [
    (["embed", "{src}", "-m", "{model}", "-o", "{out}", "--actors", "2"], "--actors needs --ray"),
    (["embed", "{src}", "-m", "{model}", "-o", "{out}", "--ray", "--kernels", "direct"],
     "--kernels does not work with --ray: each node chooses its own"),
    (["select", "{src}", "-k", "2", "--embeddings", "{out}", "--ray"],
     "--ray embeds with --model; precomputed --embeddings need no actors"),
    (["select", "{src}", "-k", "2", "-m", "{model}", "--ray", "--n-gpu-layers", "0"],
     "--n-gpu-layers does not work with --ray"),
])
def test_options_that_do_not_work_with_ray(tmp_path, single, embedder_gguf, args, message):
    source, embeddings = single
    args = [a.format(src=source, model=embedder_gguf, out=embeddings) for a in args]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 2 and result.output.splitlines()[-1] == f"Error: {message}", result.output
