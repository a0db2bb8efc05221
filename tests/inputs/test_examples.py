"""The sample data the README's first command scores: every record reads cleanly and scores through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from localscore.cli import cli
from localscore.forms.reader import read_records
from localscore.deita.templates import COMPLEXITY, QUALITY

EXAMPLES = Path(__file__).parents[2] / "examples"


@pytest.mark.parametrize("name, kind, turns", [("alpaca.jsonl", "alpaca", 24), ("sharegpt.json", "sharegpt", 24)])
@pytest.mark.parametrize("template", [QUALITY, COMPLEXITY])
def test_examples_read_without_errors(name, kind, turns, template):
    records = [record.reading(template) for record in read_records(EXAMPLES / name)]
    assert [r.error for r in records] == [None] * len(records)
    assert {r.kind for r in records} == {kind}
    assert sum(len(r.turns) for r in records) == turns


def test_readme_first_command_scores_the_alpaca_sample(tmp_path, gguf_file):
    out = tmp_path / "scored.jsonl"
    result = CliRunner().invoke(cli, ["score", str(EXAMPLES / "alpaca.jsonl"), "-o", str(out), "-q",
                                      "-m", str(gguf_file("q8_0"))], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(lines) == 24
    assert all(1.0 <= line["quality_score"] <= 6.0 for line in lines)
