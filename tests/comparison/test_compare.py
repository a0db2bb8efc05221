"""`localscore compare`: the statistics against scipy, two quantizations of the test checkpoint against a direct
computation, scored files (localscore's JSONL, Deita's JSON array) as either side, the PNG, and one-line errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
from click.testing import CliRunner

from localscore import Scorer
from localscore.runs.compare.score_agreement import BUDGETS, agreement, kendall_tau_b, ranks, top_overlap
from localscore.cli import cli
from localscore.runs.compare.scorers import compare, sample_positions
from localscore.errors import InputError, LocalscoreError
from localscore.options import CompareOptions, RunOptions

DATA = Path(__file__).parents[1] / "data"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def run(*args: object):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def records(pairs) -> list[dict]:
    """36 Alpaca pairs and 12 multi-turn ShareGPT conversations, so per turn and per record differ."""
    conversations = json.loads((DATA / "fastchat_dummy_conversation.json").read_text(encoding="utf-8"))
    multi = [c for c in conversations if len(c["conversations"]) >= 4][:12]
    return [{"instruction": a, "output": b} for a, b in pairs[:36]] + multi


@pytest.fixture(scope="module")
def data_file(tmp_path_factory, records) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("compare") / "data.jsonl", records)


def turn_scores(model: Path, records: list[dict]) -> list[list[float]]:
    """Each record's turn scores, straight from the Scorer API (the direct computation)."""
    with Scorer.from_path(model) as scorer:
        out = []
        for record in records:
            if "conversations" in record:
                turns = record["conversations"]
                pairs = [(turns[i]["value"], turns[i + 1]["value"]) for i in range(0, len(turns) - 1, 2)]
            else:
                pairs = [(record["instruction"], record["output"])]
            out.append(scorer.score_many(pairs))
        return out


def expected_figures(a: np.ndarray, b: np.ndarray) -> dict:
    """The figures compare() must report, computed with scipy and plain numpy."""
    k = {budget: max(1, round(budget * len(a))) for budget in BUDGETS}
    return {
        "n": len(a),
        "spearman": scipy.stats.spearmanr(a, b).statistic,
        "kendall": scipy.stats.kendalltau(a, b).statistic,
        "pearson": scipy.stats.pearsonr(a, b).statistic,
        "mean_abs_delta": np.mean(np.abs(b - a)),
        "max_abs_delta": np.max(np.abs(b - a)),
        "top_overlap": {budget: len(set(np.argsort(-a, kind="stable")[:k[budget]])
                                    & set(np.argsort(-b, kind="stable")[:k[budget]])) / k[budget]
                        for budget in BUDGETS},
    }


def assert_figures(level, expected: dict) -> None:
    assert level.n == expected["n"]
    for name in ("spearman", "kendall", "pearson", "mean_abs_delta", "max_abs_delta"):
        assert getattr(level, name) == pytest.approx(expected[name], abs=1e-12), name
    assert level.top_overlap == expected["top_overlap"]


# --- the statistics ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(6))
def test_statistics_match_scipy(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 400))
    a = rng.normal(3.5, 1.0, n)
    b = a + rng.normal(0, 0.3 * seed, n)
    if seed % 2:  # ties on both sides, some shared
        a, b = np.round(a, 1), np.round(b, 1)
    got = agreement(a, b)
    assert got.spearman == pytest.approx(scipy.stats.spearmanr(a, b).statistic, abs=1e-12)
    assert got.kendall == pytest.approx(scipy.stats.kendalltau(a, b).statistic, abs=1e-12)
    assert got.pearson == pytest.approx(scipy.stats.pearsonr(a, b).statistic, abs=1e-12)
    assert np.array_equal(ranks(a), scipy.stats.rankdata(a))


def test_kendall_with_heavy_ties_and_reversal():
    a = np.array([1, 1, 2, 2, 3, 3, 3, 4], dtype=float)
    b = np.array([4, 3, 3, 3, 2, 2, 1, 1], dtype=float)
    assert kendall_tau_b(a, b) == pytest.approx(scipy.stats.kendalltau(a, b).statistic, abs=1e-12)
    assert kendall_tau_b(a, -a) == pytest.approx(-1.0)


def test_constant_side_has_no_correlation():
    got = agreement(np.full(5, 3.0), np.arange(5.0))
    assert np.isnan(got.spearman) and np.isnan(got.kendall) and np.isnan(got.pearson)
    assert got.to_dict()["spearman"] is None


def test_top_overlap_breaks_ties_by_position():
    a = np.array([5.0, 5.0, 5.0, 1.0])
    b = np.array([1.0, 5.0, 5.0, 5.0])
    assert top_overlap(a, b, 0.5) == 0.5  # top 2 by a: records 0, 1; by b: records 1, 2
    assert top_overlap(a, a, 0.01) == 1.0  # k is at least 1


def test_sample_is_seeded_and_in_file_order():
    first = sample_positions(100, 10, seed=3)
    assert np.array_equal(first, sample_positions(100, 10, seed=3))
    assert not np.array_equal(first, sample_positions(100, 10, seed=4))
    assert list(first) == sorted(set(first)) and len(first) == 10
    assert list(sample_positions(5, 10, seed=0)) == [0, 1, 2, 3, 4]


# --- two quantizations of the test checkpoint ---------------------------------------------------------------------

def test_identical_model_agrees_perfectly(gguf_file, data_file):
    model = gguf_file("f16")
    result = compare(model, model, data_file, CompareOptions(), RunOptions())
    for level in (result.per_turn, result.per_record):
        assert (level.spearman, level.kendall, level.pearson) == (1.0, 1.0, 1.0)
        assert level.mean_abs_delta == level.max_abs_delta == 0.0
        assert set(level.top_overlap.values()) == {1.0}
    assert result.per_record.n == 48 and result.per_turn.n > 48 and not result.excluded


def test_two_quantizations_match_a_direct_computation(gguf_file, data_file, records, tmp_path):
    a_model, b_model = gguf_file("f16"), gguf_file("q8_0")
    result = compare(a_model, b_model, data_file, CompareOptions(sample=30, seed=7, json_path=tmp_path / "c.json"),
                     RunOptions())
    chosen = [records[i] for i in sample_positions(len(records), 30, seed=7)]
    a_scores, b_scores = turn_scores(a_model, chosen), turn_scores(b_model, chosen)
    flat = lambda scores: np.array([s for record in scores for s in record])  # noqa: E731
    assert_figures(result.per_turn, expected_figures(flat(a_scores), flat(b_scores)))
    assert_figures(result.per_record, expected_figures(np.array([sum(s) for s in a_scores]),
                                                       np.array([sum(s) for s in b_scores])))
    assert result.per_turn.spearman < 1.0 and result.per_turn.max_abs_delta > 0  # the quantization is visible
    written = json.loads((tmp_path / "c.json").read_text())
    assert written == json.loads(result.to_json())
    assert written["sampled"] == 30 and written["compared"] == 30 and written["excluded"] == []
    assert set(written["per_record"]["top_overlap"]) == {"5%", "10%", "25%"}


# --- scored files -------------------------------------------------------------------------------------------------

def test_localscore_output_against_its_model(gguf_file, data_file, tmp_path):
    model = gguf_file("q8_0")
    scored = tmp_path / "scored.jsonl"
    assert run("score", data_file, "-m", model, "-o", scored, "-q").exit_code == 0
    result = compare(scored, model, data_file, CompareOptions(sample=20, seed=1), RunOptions())
    assert result.per_turn.max_abs_delta == 0.0 and result.per_record.spearman == 1.0


def test_deita_json_array_is_read(gguf_file, tmp_path):
    """Deita's ScorePipeline writes the input's JSON array back, pretty-printed, each record with a
    `quality_scores` list (one float per human/gpt turn)."""
    model = gguf_file("f16")
    conversations = json.loads((DATA / "fastchat_dummy_conversation.json").read_text(encoding="utf-8"))[:25]
    data = tmp_path / "sharegpt.json"
    data.write_text(json.dumps(conversations, indent=2), encoding="utf-8")
    deita = [dict(c, quality_scores=scores) for c, scores in zip(conversations, turn_scores(model, conversations))]
    deita_file = tmp_path / "deita_scored.json"
    deita_file.write_text(json.dumps(deita, indent=2, ensure_ascii=False), encoding="utf-8")
    result = compare(deita_file, model, data, CompareOptions(), RunOptions())
    assert result.compared == 25 and result.per_turn.n == sum(len(c["conversations"]) // 2 for c in conversations)
    assert result.per_turn.max_abs_delta == 0.0 and result.per_turn.pearson == pytest.approx(1.0)


def test_records_that_errored_are_excluded_and_counted(data_file, records, tmp_path):
    data = write_jsonl(tmp_path / "data.jsonl", records[:6] + [{"instruction": "no output"}])
    scores = [3.0, 2.5, 4.0, 5.0, 1.5, 2.0]
    a = write_jsonl(tmp_path / "a.jsonl", [dict(r, quality_score=s) for r, s in zip(records[:5], scores)]
                    + [dict(records[5], quality_error="prompt is 3000 tokens"), {"instruction": "no output"}])
    b = write_jsonl(tmp_path / "b.jsonl", [dict(r, quality_score=s + 0.5) for r, s in zip(records[:6], scores)]
                    + [{"instruction": "no output"}])
    result = compare(a, b, data, CompareOptions(), RunOptions())
    assert [(e.record, e.reason) for e in result.excluded] == [
        (6, "A: prompt is 3000 tokens"), (7, "data: 'output' is missing")]
    assert result.compared == 5 and result.per_turn.mean_abs_delta == pytest.approx(0.5)
    assert result.per_turn.spearman == 1.0


# --- the command line ---------------------------------------------------------------------------------------------

def test_cli_table_json_and_plot(gguf_file, data_file, records, tmp_path):
    model = gguf_file("f16")
    chosen = [records[i] for i in sample_positions(len(records), 40, seed=2)]
    turns = sum(len(r["conversations"]) // 2 if "conversations" in r else 1 for r in chosen)
    plot = tmp_path / "compare.png"
    result = run("compare", model, model, data_file, "--sample", "40", "--seed", "2", "--plot", plot)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        f"A: {model}",
        f"B: {model}",
        f"40 of 48 records of {data_file} (quality scorer, seed 2): 40 compared, 0 excluded",
        "",
        "                n  Spearman ρ  Kendall τ  Pearson r  mean |Δ|  max |Δ|   top 5%  top 10%  top 25%",
        f"per turn   {turns:>6}      1.0000     1.0000     1.0000    0.0000   0.0000"
        "    1.000    1.000    1.000",
        "per record     40      1.0000     1.0000     1.0000    0.0000   0.0000    1.000    1.000    1.000",
        "Δ = B - A; per record = the sum of its turn scores (Deita's ranking); top k% = share of A's top k% also in B's",
    ]
    assert "localscore: scoring 40 records of" in result.stderr
    png = plot.read_bytes()
    assert png.startswith(PNG_SIGNATURE)
    from PIL import Image

    with Image.open(plot) as image:
        image.load()
        assert image.format == "PNG" and image.width > 0 and image.height > 0

    as_json = run("compare", model, model, data_file, "--sample", "40", "--seed", "2", "--json", "-")
    assert as_json.exit_code == 0
    figures = json.loads(as_json.stdout)
    assert figures["per_record"]["spearman"] == 1.0 and figures["compared"] == 40


def test_cli_mismatched_files(data_file, records, tmp_path):
    shifted = write_jsonl(tmp_path / "shifted.jsonl", records[1:] + records[:1])
    result = run("compare", shifted, shifted, data_file)
    assert result.exit_code == 1
    assert result.stderr == f"Error: {shifted} record 1 does not match {data_file} record 1: its text differs; " \
                            f"compare a file scored from {data_file}\n"
    short = write_jsonl(tmp_path / "short.jsonl", [dict(r, quality_score=3.0) for r in records[:10]])
    result = run("compare", short, short, data_file)
    assert result.exit_code == 1
    assert result.stderr == f"Error: {short} has 10 records but {data_file} has 48: compare a file scored from " \
                            f"{data_file} (one result per record, in order)\n"


def test_cli_missing_or_other_scorer_field(records, tmp_path):
    data = write_jsonl(tmp_path / "data.jsonl", records[:3])
    unscored = write_jsonl(tmp_path / "unscored.jsonl", records[:3])
    result = run("compare", unscored, unscored, data)
    assert result.exit_code == 1
    assert result.stderr == f"Error: {unscored} record 1 has no 'quality_score' or 'quality_scores'\n"
    complexity = write_jsonl(tmp_path / "complexity.jsonl", [dict(r, complexity_score=2.0) for r in records[:3]])
    result = run("compare", complexity, complexity, data)
    assert result.stderr == (f"Error: {complexity} record 1 has no 'quality_score' or 'quality_scores'; it has "
                             "'complexity_score': was it scored by another scorer?\n")
    text = write_jsonl(tmp_path / "text.jsonl", [dict(r, quality_score="high") for r in records[:3]])
    result = run("compare", text, text, data)
    assert result.stderr == (f"Error: {text} record 1: 'quality_score' must be a number (a list of numbers for "
                             "conversations), got \"high\"\n")
    result = run("compare", unscored, unscored, data, "--scorer", "fluency")
    assert result.exit_code == 2 and "'fluency' is not one of 'quality', 'complexity'" in result.stderr
    with pytest.raises(InputError, match="unknown scorer 'fluency'; choose quality or complexity"):
        compare(unscored, unscored, data, CompareOptions(scorer="fluency"), RunOptions())


def test_outputs_never_overwrite_inputs(records, tmp_path):
    data = write_jsonl(tmp_path / "data.jsonl", records[:3])
    scored = write_jsonl(tmp_path / "scored.jsonl", [dict(r, quality_score=3.0) for r in records[:3]])
    before = scored.read_bytes()
    result = run("compare", scored, scored, data, "--json", scored)
    assert result.exit_code == 1
    assert result.stderr == f"Error: {scored} is one of the inputs; write the JSON and the plot to new files\n"
    assert scored.read_bytes() == before


def test_missing_matplotlib_is_one_line(records, tmp_path, monkeypatch):
    data = write_jsonl(tmp_path / "data.jsonl", records[:3])
    scored = write_jsonl(tmp_path / "scored.jsonl", [dict(r, quality_score=3.0) for r in records[:3]])
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    with pytest.raises(LocalscoreError, match=r"^plotting needs the plot extra: pip install 'localscore\[plot\]'$"):
        compare(scored, scored, data, CompareOptions(plot=tmp_path / "p.png"), RunOptions())
    assert not (tmp_path / "p.png").exists()
