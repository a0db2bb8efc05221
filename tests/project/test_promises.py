"""README promises that nothing else checks, each through a public entry point (the CLI, in a real process where
the promise is about processes): every --quant type loads and scores; `embed` on a full disk and after an
interruption; `embed`/`select` never take the input as output; `--shard` with `--resume`; `hf://...@REVISION`
and `--config`; `select`'s threshold check and Ctrl-C keeping the embedding cache."""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
from pathlib import Path

import gguf
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import scipy.stats
from click.testing import CliRunner

from localscore import Scorer
from localscore.cli import cli
from localscore.options import QUANT_TYPES, InputOptions, OutputOptions, RunOptions, SelectOptions
from tests.support.data import scored, sharegpt_conversations
from tests.support.gguf_reading import field
from tests.support.files import cached_vectors, write_jsonl
from tests.support.processes import localscore, stop_when

ROOT = Path(__file__).parents[2]
# Spearman rho of each quantization's scores with f32's on 24 real pairs, measured: f16 1.00, bf16 1.00, q8_0 0.99,
# q6_k 0.98, q5_k_m 0.98, q5_k_s 0.99, q4_k_m 0.90-0.91, q4_k_s 0.92 (random weights quantize worse than trained
# ones); a broken one is near 0.
QUANT_RANK_AGREEMENT = 0.8
# Embedded by the tests of `embed` and `select` below: the interrupted runs are stopped once the cache holds 64.
N_CONVERSATIONS = 80


def run(*args: object, env: dict[str, str] | None = None):
    return CliRunner().invoke(cli, [str(a) for a in args], env=env, catch_exceptions=False)


@pytest.fixture(scope="module")
def conversations() -> list[dict]:
    """80 distinct conversations: more than one commit of the embedding cache (64 vectors), and 80 KiB of
    embeddings from the tiny embedder, more than the 64 KiB disk below."""
    return [{"id": i, **record} for i, record in enumerate(sharegpt_conversations()[:N_CONVERSATIONS])]


@pytest.fixture(scope="module")
def embed_input(tmp_path_factory, conversations) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("embed") / "in.jsonl", conversations)


@pytest.fixture(scope="module")
def uninterrupted_embeddings(tmp_path_factory, embedder_gguf, embed_input):
    """uninterrupted_embeddings() -> the bytes an uninterrupted `embed` writes. A process of its own computes them
    beside the first test that asks for them (one thread each, so both have a core)."""
    folder = tmp_path_factory.mktemp("embed-reference")
    out = folder / "emb.npy"
    process = subprocess.Popen(localscore("embed", embed_input, "-m", embedder_gguf, "-o", out, "-t", "1"), cwd=ROOT,
                               env={**os.environ, "LOCALSCORE_CACHE": str(folder / "cache")},
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    @functools.cache
    def result() -> bytes:
        _, stderr = process.communicate(timeout=600)
        assert process.returncode == 0, stderr
        return out.read_bytes()

    yield result
    if process.poll() is None:  # no test waited for it
        process.kill()
        process.communicate()


# --- every quantization ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def f32_scores(gguf_file, pairs) -> np.ndarray:
    with Scorer.from_path(gguf_file("f32")) as scorer:
        return np.array(scorer.score_many(pairs[:24]))


@pytest.mark.parametrize("quant", QUANT_TYPES)
def test_every_quant_type_converts_loads_and_scores(gguf_file, pairs, f32_scores, quant):
    path = gguf_file(quant)
    file_type = field(path, gguf.Keys.General.FILE_TYPE)  # read once per session (test_convert reads it too)
    assert file_type == {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                         "bf16": gguf.LlamaFileType.MOSTLY_BF16, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
                         "q6_k": gguf.LlamaFileType.MOSTLY_Q6_K, "q5_k_m": gguf.LlamaFileType.MOSTLY_Q5_K_M,
                         "q5_k_s": gguf.LlamaFileType.MOSTLY_Q5_K_S, "q4_k_m": gguf.LlamaFileType.MOSTLY_Q4_K_M,
                         "q4_k_s": gguf.LlamaFileType.MOSTLY_Q4_K_S}[quant]
    with Scorer.from_path(path) as scorer:
        scores = np.array(scorer.score_many(pairs[:24]))
    assert np.all((scores >= 1) & (scores <= 6))
    # The same model, quantized: it still ranks the pairs the way f32 does (a broken quantization does not).
    assert scipy.stats.spearmanr(scores, f32_scores).statistic > QUANT_RANK_AGREEMENT


# --- embed: a full disk, an interruption --------------------------------------------------------------------------

@pytest.fixture
def tmpfs(tmp_path, request):
    """A real file system (tmpfs) of 64 KiB, or the size a test passes as its parameter; `grow()` makes room. Needs
    root: without it the test is skipped, which fails under CI (tests/conftest.py)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    size = getattr(request, "param", "64k")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(disk)], capture_output=True,
                             text=True)
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")

    class Disk:
        path = disk

        @staticmethod
        def grow() -> None:
            subprocess.run(["mount", "-o", "remount,size=4m", str(disk)], check=True)

    yield Disk
    subprocess.run(["umount", str(disk)], check=True)


def test_embed_on_a_full_disk_is_one_line_and_the_rerun_computes_only_the_rest(
        tmp_path, monkeypatch, tmpfs, embedder_gguf, embed_input, uninterrupted_embeddings):
    monkeypatch.setenv("LOCALSCORE_CACHE", str(tmp_path / "cache"))
    out = tmpfs.path / "emb.npy"
    full = run("embed", embed_input, "-m", embedder_gguf, "-o", out, "-t", "1")
    assert full.exit_code == 1
    assert full.output == (f"Error: disk full writing {out}.partial; free some space, then run the same command "
                           "again (computed embeddings are cached)\n")
    assert not out.exists()
    cached = cached_vectors(tmp_path / "cache" / "embeddings.sqlite")
    assert 0 < cached < N_CONVERSATIONS

    tmpfs.grow()
    again = run("embed", embed_input, "-m", embedder_gguf, "-o", out, "-t", "1")
    assert again.exit_code == 0, again.output
    assert f" {N_CONVERSATIONS - cached} embedded " in again.output and f"{cached} from the cache" in again.output
    assert out.read_bytes() == uninterrupted_embeddings()


# 160 KiB holds the embedding cache's first commit (64 vectors of the tiny embedder) and not one more.
@pytest.mark.parametrize("tmpfs", ["160k"], indirect=True)
def test_select_with_the_embedding_cache_on_a_full_disk_is_one_line_and_the_rerun_reuses_what_it_kept(
        tmp_path, monkeypatch, tmpfs, embedder_gguf):
    short = [{"conversations": [{"from": "human", "value": f"Write {i} in words."},
                                {"from": "gpt", "value": f"{i} is written as number {i}."}]} for i in range(70)]
    source = write_jsonl(tmp_path / "scored.jsonl", scored(short))
    out = tmp_path / "selected.jsonl"
    args = ("select", source, "-k", len(short), "-m", embedder_gguf, "-o", out, "-t", "1")
    monkeypatch.setenv("LOCALSCORE_CACHE", str(tmpfs.path))
    full = run(*args)
    cache = tmpfs.path / "embeddings.sqlite"
    assert (full.exit_code, full.output) == (1, f"Error: disk full writing {cache}; free some space, then run the "
                                                "same command again (computed embeddings are cached)\n")
    assert not out.exists() and cached_vectors(cache) == 64  # what the cache committed before the disk filled

    tmpfs.grow()
    again = run(*args)
    assert again.exit_code == 0, again.output
    assert f"{len(short) - 64} embedded, 64 from the cache" in again.stderr
    assert out.exists()


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["kill-9", "ctrl-c"])
def test_an_interrupted_embed_computes_only_the_missing_rows(tmp_path, embedder_gguf, embed_input,
                                                            uninterrupted_embeddings, sig):
    cache = tmp_path / "cache" / "embeddings.sqlite"
    env = {**os.environ, "LOCALSCORE_CACHE": str(cache.parent)}
    out = tmp_path / "emb.npy"
    args = ("embed", embed_input, "-m", embedder_gguf, "-o", out, "-t", "1")
    process = subprocess.Popen(localscore(*args), cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    stop_when(process, lambda: cached_vectors(cache) >= 64, sig)
    done = cached_vectors(cache)
    assert 64 <= done < N_CONVERSATIONS, "the run finished before it could be interrupted"
    assert not out.exists()
    if sig == signal.SIGINT:
        assert process.returncode == 130

    rerun = run(*args, env={"LOCALSCORE_CACHE": str(cache.parent)})  # in this process: only the stopped run must be one
    assert rerun.exit_code == 0, rerun.output
    assert f" {N_CONVERSATIONS - done} embedded " in rerun.stderr and f"{done} from the cache" in rerun.stderr
    assert out.read_bytes() == uninterrupted_embeddings()


# --- never the input as output ------------------------------------------------------------------------------------

def test_embed_and_select_refuse_the_input_as_output(tmp_path, embedder_gguf):
    records = [{"instruction": "Name a colour.", "output": "Blue.", "quality_score": 3.0, "complexity_score": 2.0},
               {"instruction": "Add 2 and 3.", "output": "5", "quality_score": 4.0, "complexity_score": 1.0}]
    source = write_jsonl(tmp_path / "in.jsonl", records)
    (tmp_path / "link.jsonl").symlink_to(source)
    np.save(tmp_path / "emb.npy", np.eye(2, 8, dtype=np.float32))
    before = source.read_bytes()
    for output in (source, tmp_path / "link.jsonl"):
        for args in (["embed", source, "-m", embedder_gguf, "-o", output],
                     ["select", source, "-k", "1", "--embeddings", tmp_path / "emb.npy", "-o", output]):
            result = run(*args)
            assert (result.exit_code, result.output) == (1, (
                f"Error: output {output} is the input {source}; give another output file, the input is never "
                "overwritten\n")), args
    assert source.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["emb.npy", "in.jsonl", "link.jsonl"]


# --- a shard, killed and resumed ----------------------------------------------------------------------------------

def test_a_killed_shard_resumes_and_merges_into_the_single_run(tmp_path, gguf_file):
    from localscore.runs.score import score_file

    model = gguf_file("q8_0")
    # Short records: what matters is where the kill lands, not what is scored.
    records = [{"id": i, "instruction": f"Write the number {i} in words.", "output": f"{i:,} in words."}
               for i in range(150)]
    source = write_jsonl(tmp_path / "in.jsonl", records)
    single = tmp_path / "single.jsonl"
    outputs = [tmp_path / f"shard-{i}.jsonl" for i in range(3)]
    with Scorer.from_path(model,
                          run=RunOptions(threads=1)) as scorer:  # one thread: no spinning threads on a busy machine
        score_file(InputOptions(source), OutputOptions(single), scorer)
        for i in (0, 2):
            score_file(InputOptions(source), OutputOptions(outputs[i], shard=f"{i}/3"), scorer)

    partial = tmp_path / "shard-1.jsonl.partial"
    args = ("score", source, "-m", model, "-o", outputs[1], "--shard", "1/3", "-q", "-t", "1")
    process = subprocess.Popen(localscore(*args), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    stop_when(process, lambda: partial.exists() and partial.read_bytes().count(b"\n") >= 10, signal.SIGKILL)
    done = partial.read_bytes().count(b"\n")
    assert 10 <= done < 50, "the shard finished before it could be killed"
    assert not outputs[1].exists()

    resumed = run(*args, "--resume")  # in this process: only the killed run must be one
    assert resumed.exit_code == 0, resumed.output
    merged = tmp_path / "merged.jsonl"
    assert run("merge", *outputs, "-o", merged).exit_code == 0
    assert merged.read_bytes() == single.read_bytes()
    assert Path(f"{merged}.provenance.json").read_bytes() == Path(f"{single}.provenance.json").read_bytes()


# --- hub datasets: a revision, a config ---------------------------------------------------------------------------

def hub_snapshot(cache: Path, repo_id: str, commit: str, files: dict[str, pa.Table], readme: str = "") -> None:
    """One snapshot of a dataset repo laid out as huggingface_hub caches it."""
    snapshot = cache / f"datasets--{repo_id.replace('/', '--')}" / "snapshots" / commit
    for name, table in files.items():
        (snapshot / name).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, snapshot / name)
    if readme:
        (snapshot / "README.md").write_text(readme)


def test_hub_dataset_revision_and_config_from_an_offline_cache(tmp_path, hub_cache, gguf_file, q8_scorer, pairs):
    from localscore.runs.score import score_file

    old, new, small, large = (pa.Table.from_pylist([{"instruction": a, "output": b} for a, b in chunk])
                              for chunk in (pairs[0:3], pairs[3:7], pairs[7:9], pairs[9:14]))
    first, second = "1" * 40, "2" * 40
    hub_snapshot(hub_cache, "org/data", first, {"data/train-00000-of-00001.parquet": old})
    hub_snapshot(hub_cache, "org/data", second, {"data/train-00000-of-00001.parquet": new})
    (hub_cache / "datasets--org--data" / "refs").mkdir()
    (hub_cache / "datasets--org--data" / "refs" / "main").write_text(second)
    configs = ("---\nconfigs:\n"
               "- config_name: small\n  data_files:\n  - split: train\n    path: small/*.parquet\n"
               "- config_name: large\n  data_files:\n  - split: train\n    path: large/*.parquet\n---\n")
    hub_snapshot(hub_cache, "org/configs", first, {"small/part.parquet": small, "large/part.parquet": large}, configs)
    (hub_cache / "datasets--org--configs" / "refs").mkdir()
    (hub_cache / "datasets--org--configs" / "refs" / "main").write_text(first)

    def score(source: str, *extra: str) -> list[dict]:
        out = tmp_path / "out.jsonl"
        # In this process: the session reads the hub offline from `hub_cache` (tests/conftest.py).
        done = run("score", source, "-m", gguf_file("q8_0"), "-o", out, "-q", *extra)
        assert done.exit_code == 0, done.output
        return [json.loads(line) for line in out.read_text().splitlines()]

    def expected(table: pa.Table) -> list[dict]:
        src = write_jsonl(tmp_path / "expected-in.jsonl", table.to_pylist())
        score_file(InputOptions(src), OutputOptions(tmp_path / "expected.jsonl"), q8_scorer)
        return [json.loads(line) for line in (tmp_path / "expected.jsonl").read_text().splitlines()]

    assert score("hf://datasets/org/data") == expected(new)
    assert score(f"hf://datasets/org/data@{first}") == expected(old)
    assert score("hf://datasets/org/configs", "--config", "large") == expected(large)
    other = run("score", "hf://datasets/org/configs", "--config", "medium", "-m", gguf_file("q8_0"))
    assert other.exit_code == 1
    last = other.stderr.splitlines()[-1]
    assert last.startswith("Error: hub dataset org/configs: ") and last.endswith(" (--split, --config)")
    assert "medium" in last and "small" in last and "large" in last


# --- select: the threshold, Ctrl-C ----------------------------------------------------------------------------------

@pytest.mark.parametrize("threshold, code, message", [
    ("-0.1", 2, "Error: Invalid value for '--threshold': -0.1 is not in the range 0<=x<=1."),
    ("1.5", 2, "Error: Invalid value for '--threshold': 1.5 is not in the range 0<=x<=1."),
    ("nan", 2, "Error: --threshold must be between 0 and 1, got nan"),  # passes click's range, not select's
])
def test_select_refuses_a_threshold_outside_0_to_1(tmp_path, threshold, code, message):
    source = write_jsonl(tmp_path / "in.jsonl", [{"instruction": "a", "output": "b", "quality_score": 1.0,
                                                  "complexity_score": 1.0}])
    np.save(tmp_path / "emb.npy", np.ones((1, 4), dtype=np.float32))
    out = tmp_path / "selected.jsonl"
    result = run("select", source, "-k", "1", "--embeddings", tmp_path / "emb.npy", "--threshold", threshold,
                 "-o", out)
    assert (result.exit_code, result.output.splitlines()[-1]) == (code, message)
    assert not out.exists()


def test_select_api_refuses_a_threshold_outside_0_to_1(tmp_path):
    from localscore.errors import InputError
    from localscore.runs.select import select_file

    np.save(tmp_path / "emb.npy", np.ones((1, 4), dtype=np.float32))
    for threshold in (-0.1, 1.5, float("nan")):
        with pytest.raises(InputError, match=rf"^'threshold' must be between 0 and 1, got {threshold}$"):
            select_file(InputOptions(tmp_path / "in.jsonl"), None,
                        SelectOptions(budget=1, threshold=threshold, embeddings=tmp_path / "emb.npy"), RunOptions())


def test_ctrl_c_in_select_keeps_the_embeddings_computed(tmp_path, embedder_gguf, conversations):
    rng = np.random.default_rng(0)
    scored = [{**c, "quality_scores": list(rng.uniform(1, 6, len(c["conversations"]) // 2)),
               "complexity_scores": list(rng.uniform(1, 6, len(c["conversations"]) // 2))} for c in conversations]
    source = write_jsonl(tmp_path / "scored.jsonl", scored)
    cache = tmp_path / "cache" / "embeddings.sqlite"
    env = {**os.environ, "LOCALSCORE_CACHE": str(cache.parent)}
    args = ("select", source, "-k", len(scored), "--threshold", "0.999", "-m", embedder_gguf, "-t", "1",
            "-o", tmp_path / "selected.jsonl")
    process = subprocess.Popen(localscore(*args), cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    stop_when(process, lambda: cached_vectors(cache) >= 64, signal.SIGINT)
    done = cached_vectors(cache)
    assert 64 <= done < len(scored), "select finished before it could be interrupted"
    assert process.returncode == 130
    assert not (tmp_path / "selected.jsonl").exists()

    rerun = run(*args, env={"LOCALSCORE_CACHE": str(cache.parent)})  # in this process: only the stopped run must be one
    assert rerun.exit_code == 0, rerun.output
    summary = rerun.stderr.splitlines()[-1]
    examined = int(summary.split(" examined")[0].rsplit(" ", 1)[1].replace(",", ""))
    assert summary.endswith(f"{examined - done:,} embedded, {done:,} from the cache")
