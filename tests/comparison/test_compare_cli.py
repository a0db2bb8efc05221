"""`localscore compare` through its command line on two different quantizations, against figures computed here
with scipy from the two files `localscore score` writes; its exclusions and its "nothing compared" error."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
from click.testing import CliRunner

from localscore.cli import cli
from tests.support.data import sharegpt_conversations

TOP = {"5%": 0.05, "10%": 0.10, "25%": 0.25}


def run(*args: object):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def data(tmp_path_factory, pairs) -> Path:
    """24 Alpaca pairs and 6 multi-turn conversations."""
    multi = [c for c in sharegpt_conversations() if len(c["conversations"]) >= 4][:6]
    records = [{"instruction": a, "output": b} for a, b in pairs[:24]] + multi
    return write_jsonl(tmp_path_factory.mktemp("compare-cli") / "data.jsonl", records)


def turn_scores(record: dict) -> list[float]:
    return [record["quality_score"]] if "quality_score" in record else record["quality_scores"]


def figures(a: np.ndarray, b: np.ndarray) -> dict:
    """What README promises: scipy's correlations, |B - A|, top-k overlap with k = max(1, round(share * n)),
    equal scores ordered by position."""
    def top(scores: np.ndarray, k: int) -> set[int]:
        return set(sorted(range(len(scores)), key=lambda i: (-scores[i], i))[:k])

    return {
        "n": len(a),
        "spearman": scipy.stats.spearmanr(a, b).statistic,
        "kendall": scipy.stats.kendalltau(a, b).statistic,
        "pearson": scipy.stats.pearsonr(a, b).statistic,
        "mean_abs_delta": float(np.mean(np.abs(b - a))),
        "max_abs_delta": float(np.max(np.abs(b - a))),
        "top_overlap": {name: len(top(a, k) & top(b, k)) / k
                        for name, share in TOP.items() for k in [max(1, round(share * len(a)))]},
    }


def test_two_quantizations_against_scipy_on_their_score_files(tmp_path, gguf_file, data):
    a_model, b_model = gguf_file("f16"), gguf_file("q8_0")
    scored = {}
    for side, model in (("a", a_model), ("b", b_model)):
        out = tmp_path / f"{side}.jsonl"
        assert run("score", data, "-m", model, "-o", out, "-q").exit_code == 0
        scored[side] = [turn_scores(r) for r in read_jsonl(out)]
    result = run("compare", a_model, b_model, data, "--json", tmp_path / "c.json")
    assert result.exit_code == 0, result.output
    got = json.loads((tmp_path / "c.json").read_text())

    flat = {side: np.array([s for record in scores for s in record]) for side, scores in scored.items()}
    summed = {side: np.array([sum(record) for record in scores]) for side, scores in scored.items()}
    for level, (a, b) in (("per_turn", (flat["a"], flat["b"])), ("per_record", (summed["a"], summed["b"]))):
        expected = figures(a, b)
        assert got[level]["n"] == expected["n"]
        for name in ("spearman", "kendall", "pearson", "mean_abs_delta", "max_abs_delta"):
            assert got[level][name] == pytest.approx(expected[name], abs=1e-12), (level, name)
        assert got[level]["top_overlap"] == expected["top_overlap"]
    assert got["compared"] == 30 and got["excluded"] == []
    assert 0 < got["per_turn"]["max_abs_delta"] and got["per_turn"]["spearman"] < 1  # the two really differ

    turn_row = expected_row("per turn", figures(flat["a"], flat["b"]))
    record_row = expected_row("per record", figures(summed["a"], summed["b"]))
    assert result.stdout.splitlines()[5:7] == [turn_row, record_row]


def expected_row(name: str, f: dict) -> str:
    return (f"{name:<11}{f['n']:>6}  {f['spearman']:>10.4f}  {f['kendall']:>9.4f}  {f['pearson']:>9.4f}  "
            f"{f['mean_abs_delta']:>8.4f}  {f['max_abs_delta']:>7.4f}"
            + "".join(f"{f['top_overlap'][name]:>9.3f}" for name in TOP))


def test_exclusions_prompt_over_the_context_and_score_count(tmp_path, gguf_file, pairs):
    """A record whose prompt does not fit the context (`score --too-long error`), and a scored file with fewer
    scores than the record has turns, are left out of the figures, counted and named."""
    model = gguf_file("q8_0")
    long_pair = (" ".join(p[0] for p in pairs[:40]), " ".join(p[1] for p in pairs[:40]))
    conversation = [c for c in sharegpt_conversations() if len(c["conversations"]) == 4][0]
    records = ([{"instruction": a, "output": b} for a, b in pairs[:8]]
               + [{"instruction": long_pair[0], "output": long_pair[1]}, conversation])
    data = write_jsonl(tmp_path / "data.jsonl", records)
    a = tmp_path / "a.jsonl"
    scored = run("score", data, "-m", model, "-o", a, "-q", "--too-long", "error", "--ctx", "512")
    assert scored.exit_code == 0, scored.output
    a_records = read_jsonl(a)
    over = a_records[8]["quality_error"]
    assert over.startswith("prompt is ") and "longer than the 512-token context" in over
    a_records[9]["quality_scores"] = a_records[9]["quality_scores"][:1]  # one score for two turns
    write_jsonl(a, a_records)

    result = run("compare", a, model, data, "--json", tmp_path / "c.json")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[2] == f"all 10 records of {data} (quality scorer, seed 0): 8 compared, 2 excluded"
    assert result.stdout.splitlines()[-2:] == [f"excluded: record 9: A: {over}",
                                               "excluded: record 10: A: 1 scores for 2 turns"]
    got = json.loads((tmp_path / "c.json").read_text())
    assert got["excluded"] == [{"record": 9, "reason": f"A: {over}"},
                               {"record": 10, "reason": "A: 1 scores for 2 turns"}]
    assert got["per_turn"]["n"] == got["per_record"]["n"] == 8 and got["per_turn"]["max_abs_delta"] == 0.0


def test_nothing_compared_is_one_line(tmp_path, pairs):
    data = write_jsonl(tmp_path / "data.jsonl", [{"instruction": a, "output": b} for a, b in pairs[:3]])
    errored = write_jsonl(tmp_path / "a.jsonl", [{"instruction": a, "output": b, "quality_error": "prompt is too long"}
                                                  for a, b in pairs[:3]])
    result = run("compare", errored, errored, data)
    assert result.exit_code == 1
    assert result.stderr == f"Error: no record of {data} could be compared (record 1: A: prompt is too long)\n"
