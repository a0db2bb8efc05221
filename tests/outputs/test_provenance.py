"""Every output knows what made it: resume and merge refuse another model's work in one line naming both, `info`
prints the identity and record of each output kind, and select and compare say what scored their input."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from localscore import Scorer
from localscore.cli import cli
from localscore.llama.fingerprint import fingerprint
from localscore.runs.score import Interrupted, score_file
from localscore.options import InputOptions, OutputOptions, RunOptions, ScorerOptions

RECORDS = 6


def run(*args) -> object:
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def source(tmp_path_factory, pairs) -> Path:
    path = tmp_path_factory.mktemp("provenance") / "in.jsonl"
    path.write_text("".join(json.dumps({"id": i, "instruction": a, "output": b}) + "\n"
                            for i, (a, b) in enumerate(pairs[:RECORDS])), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def f32(gguf_file):
    with Scorer.from_path(gguf_file("f32"), run=RunOptions(threads=1)) as scorer:
        yield scorer


def short(path: Path) -> str:
    return f"{path.name} ({fingerprint(path)[:12]})"


def interrupted(source: Path, out: Path, scorer, after: int) -> None:
    """Leave the partial output of a run stopped after `after` results."""
    def stop(done: int, total: int | None, tokens: int) -> None:
        if done >= after:
            raise KeyboardInterrupt

    with pytest.raises(Interrupted):
        score_file(InputOptions(source), OutputOptions(out), scorer, progress=stop)


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_resume_with_another_model_is_refused_in_one_line(tmp_path, source, f32, gguf_file, suffix):
    out = tmp_path / f"out{suffix}"
    interrupted(source, out, f32, after=2)
    partial = f"{out}.partial"
    result = run("score", source, "-m", gguf_file("q8_0"), "-o", out, "--resume", "-q", "-t", "1")
    assert result.exit_code == 1
    assert result.output == (f"Error: {partial} was scored by {short(gguf_file('f32'))}, not "
                             f"{short(gguf_file('q8_0'))}; remove it or drop --resume\n")
    result = run("score", source, "-m", gguf_file("f32"), "-o", out, "--resume", "-q", "-t", "1", "--ctx", "512")
    assert result.exit_code == 1
    assert result.output == (f"Error: {partial} was scored with context 2048, not context 512 (the same model, "
                             f"{short(gguf_file('f32'))}); remove it or drop --resume\n")
    assert not out.exists()
    # The partial's own record, and the finished output's once resumed with the same model.
    info = run("info", partial)
    assert info.exit_code == 0 and f"score: {short(gguf_file('f32'))}, the quality scorer" in info.output
    assert run("score", source, "-m", gguf_file("f32"), "-o", out, "--resume", "-q", "-t", "1").exit_code == 0
    alone = tmp_path / f"alone{suffix}"
    score_file(InputOptions(source), OutputOptions(alone), f32)
    assert out.read_bytes() == alone.read_bytes()
    if suffix == ".jsonl":
        assert Path(f"{out}.provenance.json").read_bytes() == Path(f"{alone}.provenance.json").read_bytes()
    assert not Path(f"{partial}.provenance.json").exists()
    # A finished output resumed with another model: refused, and again once its copy is the partial.
    for _ in range(2):
        result = run("score", source, "-m", gguf_file("q8_0"), "-o", out, "--resume", "-q", "-t", "1")
        assert result.exit_code == 1 and f"was scored by {short(gguf_file('f32'))}, not " in result.output


def test_merge_of_shards_from_two_models_is_refused_in_one_line(tmp_path, source, f32, q8_scorer, gguf_file):
    shards = [tmp_path / "shard-0.jsonl", tmp_path / "shard-1.jsonl"]
    score_file(InputOptions(source), OutputOptions(shards[0], shard="0/2"), f32)
    score_file(InputOptions(source), OutputOptions(shards[1], shard="1/2"), q8_scorer)
    result = run("merge", *shards, "-o", tmp_path / "merged.jsonl")
    assert result.exit_code == 1
    assert result.output == (f"Error: {shards[1]} was scored by {short(gguf_file('q8_0'))} but {shards[0]} by "
                             f"{short(gguf_file('f32'))}; merge the shards of one run\n")
    assert not (tmp_path / "merged.jsonl").exists()


def test_info_prints_identity_and_record_of_every_output_kind(tmp_path, source, q8_scorer, gguf_file,
                                                               embedder_gguf):
    import llama_cpp

    from localscore import __version__
    from localscore.api import embed, select

    model = gguf_file("q8_0")
    ran = (f"  ran with localscore {__version__}, llama-cpp-python {llama_cpp.__version__}, "
           f"{q8_scorer.engine.kernels.kernels} kernels on {q8_scorer.engine.kernels.cpu}, CPU only")
    scored = f"score: {short(model)}, the quality scorer, q8_0 weights, context 2048, pack 1, too-long policy truncate"
    jsonl, parquet = tmp_path / "scored.jsonl", tmp_path / "scored.parquet"
    for out in (jsonl, parquet):
        score_file(InputOptions(source), OutputOptions(out), q8_scorer)
        result = run("info", out)
        assert result.exit_code == 0 and result.output == f"{scored}\n{ran}\n"
    # Parquet: in the file's key-value metadata, no sidecar.
    held = json.loads(pq.read_metadata(parquet).metadata[b"localscore.provenance"])
    assert held["made_by"][0]["model"] == fingerprint(model)
    assert held["made_by"][0]["settings"]["scorer"] == "quality"
    assert not Path(f"{parquet}.provenance.json").exists()
    # A shard: its slice too.
    shard = tmp_path / "shard.jsonl"
    score_file(InputOptions(source), OutputOptions(shard, shard="1/3"), q8_scorer)
    lines = run("info", shard).output.splitlines()
    assert lines[:2] == [scored, ran] and lines[2].startswith(f"shard 1/3 of an input of {RECORDS} records (sha256 ")
    # Both scorers, one after the other, then embeddings and a selection from them.
    with Scorer.from_path(model, ScorerOptions(scorer="complexity"), RunOptions(threads=1)) as complexity:
        score_file(InputOptions(jsonl), OutputOptions(tmp_path / "both.jsonl"), complexity)
    embeddings = tmp_path / "both.npy"
    embed(tmp_path / "both.jsonl", embeddings, model=embedder_gguf, threads=1)
    embedded = f"embed: {short(embedder_gguf)}, all_f32 weights"
    assert run("info", embeddings).output.splitlines()[0] == embedded
    summary = select(tmp_path / "both.jsonl", tmp_path / "selected.jsonl", budget=3, embeddings=embeddings)
    assert summary.lines()[0] == (f"input scored by the quality scorer {short(model)} and the complexity scorer "
                                  f"{short(model)}")
    lines = run("info", tmp_path / "selected.jsonl").output.splitlines()
    assert [line for line in lines if not line.startswith("  ran with")] == [
        scored, scored.replace("quality", "complexity"), embedded, "select, budget 3, threshold 0.9"]
    result = run("info", source)
    assert result.exit_code == 1 and result.output.startswith(f"Error: {source} records nothing of what made it")


def test_compare_says_what_scored_its_inputs(tmp_path, source, f32, q8_scorer, gguf_file):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    score_file(InputOptions(source), OutputOptions(a), f32)
    score_file(InputOptions(source), OutputOptions(b), q8_scorer)
    b.with_name(b.name + ".provenance.json").unlink()  # made elsewhere, without its record
    result = run("compare", a, b, source, "-t", "1")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[:2] == [f"A: {a}, scored by the quality scorer {short(gguf_file('f32'))}",
                                              f"B: {b}, scored by the quality scorer (model not recorded)"]
