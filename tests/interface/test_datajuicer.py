"""The Deita operators in real data-juicer: `dj-process` runs the committed recipe (examples/deita.yaml) on the example
data, on the local executor with 2 worker processes and on the Ray executor with 2 actors per filter, and keeps and
selects exactly what `localscore score` + `localscore select` give with the same models, thresholds and budget."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from localscore.cli import cli
from localscore.errors import LocalscoreError, ModelError
from localscore.deita.selection import EVOL_FIELD, SIMILARITY_FIELD
from localscore.deita.templates import COMPLEXITY, QUALITY

ROOT = Path(__file__).parents[2]
EXAMPLES = ROOT / "examples"
RECIPE = EXAMPLES / "deita.yaml"
STATS = "__dj__stats__"
# The two runs: (data, output, executor options, thresholds, budget, similarity threshold). The local run's
# thresholds and similarity leave some records out at each step; the Ray run keeps every record that passes the
# filters, so its output is exactly the filters' keep set, in selection order. Ray writes JSON through pandas, which
# keeps floats to 10 digits: its run writes Parquet.
RUNS = {
    "local": ("alpaca.jsonl", "selected.jsonl", ["--np", "2"], (3.0, 3.3), 5, 0.8),
    # Two actors per filter, each reserving a quarter CPU: data-juicer reserves every actor pool at once, and the
    # machine has 2 CPUs, one left for Ray's reading and filtering tasks. Each actor runs one llama.cpp thread.
    "ray": ("sharegpt.jsonl", "selected.parquet", ["--executor_type", "ray", "--ray_address", "local", "--text_keys", "conversations",
                               *[arg for scorer in ("quality", "complexity") for option, value in
                                 (("num_proc", "2"), ("num_cpus", "0.25"))
                                 for arg in (f"--deita_{scorer}_score_filter.{option}", value)]], (3.3, 2.5), 100, 1.0),
}


def cli_run(*args: object) -> None:
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def read_output(path: Path) -> list[dict]:
    """dj-process's output: JSON Lines, or the folder of Parquet files Ray writes (a null column is a field the
    record does not have)."""
    if path.suffix != ".parquet":
        return read_jsonl(path)
    import pyarrow.parquet as pq

    return [{k: v for k, v in row.items() if v is not None} for row in pq.read_table(path).to_pylist()]


def turn_scores(record: dict, template) -> list[float]:
    return record.get(template.scores_field) or [record[template.score_field]]


@pytest.fixture(scope="module")
def models(gguf_file, embedder_gguf) -> dict[str, Path]:
    return {"quality": gguf_file("q8_0"), "complexity": gguf_file("f32"), "embedder": embedder_gguf}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("dj-data")
    # data-juicer's Ray executor reads JSON Lines only: the ShareGPT sample's records, one per line.
    sharegpt = folder / "sharegpt.jsonl"
    sharegpt.write_text("".join(json.dumps(r) + "\n" for r in json.loads((EXAMPLES / "sharegpt.json").read_text())))
    return {"alpaca.jsonl": EXAMPLES / "alpaca.jsonl", "sharegpt.jsonl": sharegpt}


@pytest.fixture(scope="module")
def dj_runs(tmp_path_factory, models, data) -> dict[str, Path]:
    """Both dj-process runs, started together (each spends most of its time starting up), their outputs once
    done."""
    started = {}
    for name, (source, output, options, (min_quality, min_complexity), budget, threshold) in RUNS.items():
        folder = tmp_path_factory.mktemp(f"dj-{name}")
        env = {**os.environ, "LOCALSCORE_CACHE": str(folder / "cache")}
        env.pop("RAY_ADDRESS", None)
        command = [str(Path(sys.executable).with_name("dj-process")), "--config", str(RECIPE),
                   "--dataset_path", str(data[source]), "--export_path", str(folder / "out" / output),
                   "--keep_stats_in_res_ds", "true", *options,
                   "--deita_quality_score_filter.model", str(models["quality"]),
                   "--deita_quality_score_filter.min_score", str(min_quality),
                   "--deita_complexity_score_filter.model", str(models["complexity"]),
                   "--deita_complexity_score_filter.min_score", str(min_complexity),
                   "--deita_diversity_selector.model", str(models["embedder"]),
                   "--deita_diversity_selector.budget", str(budget),
                   "--deita_diversity_selector.threshold", str(threshold)]
        log = open(folder / "log", "wb")
        started[name] = (subprocess.Popen(command, cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT),
                         folder, log)
    outputs = {}
    for name, (process, folder, log) in started.items():
        try:
            process.wait(timeout=300)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
        finally:
            log.close()
        assert process.returncode == 0, (folder / "log").read_text(errors="replace")[-4000:]
        outputs[name] = folder / "out" / RUNS[name][1]
    return outputs


def reference(tmp_path: Path, source: Path, models: dict, thresholds: tuple, budget: int, threshold: float):
    """What `localscore score` (both scorers) and `localscore select` give: every scored record, and the
    selection from those that pass the thresholds (the mean of the turns' scores, as the filters keep)."""
    quality, both = tmp_path / "quality.jsonl", tmp_path / "both.jsonl"
    cli_run("score", source, "-m", models["quality"], "-t", "1", "-q", "-o", quality)
    cli_run("score", quality, "--scorer", "complexity", "-m", models["complexity"], "-t", "1", "-q", "-o", both)
    scored = read_jsonl(both)
    kept = [r for r in scored if all(sum(turn_scores(r, t)) / len(turn_scores(r, t)) >= bound
                                     for t, bound in zip((QUALITY, COMPLEXITY), thresholds))]
    assert 0 < len(kept) < len(scored)  # the thresholds cut
    (tmp_path / "kept.jsonl").write_text("".join(json.dumps(r) + "\n" for r in kept))
    cli_run("select", tmp_path / "kept.jsonl", "-k", budget, "--threshold", threshold, "-m", models["embedder"],
            "-t", "1", "-q", "-o", tmp_path / "selected.jsonl")
    return scored, kept, read_jsonl(tmp_path / "selected.jsonl")


@pytest.mark.parametrize("name", list(RUNS))
def test_dj_process_keeps_and_selects_what_localscore_does(name, dj_runs, models, data, tmp_path, monkeypatch):
    monkeypatch.setenv("LOCALSCORE_CACHE", str(tmp_path / "cache"))
    source, _, _, thresholds, budget, threshold = RUNS[name]
    scored, kept, selected = reference(tmp_path, data[source], models, thresholds, budget, threshold)
    got = read_output(dj_runs[name])
    fields = {QUALITY.score_field, QUALITY.scores_field, COMPLEXITY.score_field, COMPLEXITY.scores_field,
              EVOL_FIELD, SIMILARITY_FIELD}
    # The same records, in the same (selection) order, every field of the input as it was.
    assert [{k: v for k, v in r.items() if k != STATS} for r in got] == [
        {k: v for k, v in r.items() if k not in fields} for r in selected]
    if name == "ray":
        assert len(got) == len(kept) and len(selected) == len(kept)  # every record the filters kept is selected
    else:
        assert 1 < len(got) < len(kept)  # the walk rejected near-duplicates before the budget filled
    for row, ref in zip(got, selected):
        stats = row[STATS]
        for template in (QUALITY, COMPLEXITY):
            turns = turn_scores(ref, template)
            assert stats[f"deita_{template.name}_scores"] == turns  # bit for bit
            assert stats[f"deita_{template.name}_score"] == sum(turns) / len(turns)
            assert stats[f"deita_{template.name}_error"] == ""
        assert stats["deita_evol_score"] == ref[EVOL_FIELD]
        assert stats["deita_nearest_similarity"] == ref[SIMILARITY_FIELD]
    if name == "ray":
        assert any(len(turn_scores(r, QUALITY)) > 1 for r in selected)  # multi-turn records, scored per turn


def test_importing_localscore_does_not_import_data_juicer():
    code = ("import sys, localscore, localscore.api, localscore.forms.samples, localscore.runs.rows; "
            "print('data_juicer' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out == "False\n"


@pytest.fixture(scope="module")
def operators():
    """data-juicer's operator registry, with the plugin loaded through its entry point, as dj-process loads it."""
    from data_juicer.ops import OPERATORS

    return OPERATORS.modules


def test_a_sample_that_cannot_be_scored_is_flagged_and_never_scored(operators, models):
    from data_juicer.core.data import NestedDataset

    samples = [
        {"instruction": "Name a primary colour.", "output": "Red."},
        {"instruction": "Say hi.", "output": "   "},
        {"query": "And then?", "response": "Done.", "history": [["Only a question"]]},
        {"conversations": [{"from": "human", "value": "A question without an answer"}]},
        {"prompt": "no shape localscore or data-juicer knows"},
    ]
    reasons = ["", "'output' is empty", "'history' must be a list of [query, response] pairs",
               "turn 1 is from 'human' and has no answer; the quality scorer needs one",
               "no known sample shape: expected 'query'/'response' (and 'history'), 'instruction'/'output', "
               "'conversations', 'messages' or 'text'"]
    keys = {key: None for sample in samples for key in sample}  # a table's columns: null where a sample has none
    dataset = NestedDataset.from_list([{**keys, **sample} for sample in samples])
    for unscored, kept in (("keep", reasons), ("drop", reasons[:1])):
        op = operators["deita_quality_score_filter"](model=str(models["quality"]), unscored=unscored, num_proc=1)
        stats = op.run(dataset, reduce=False)[STATS]
        assert [s["deita_quality_error"] for s in stats] == reasons
        assert [s["deita_quality_scores"] for s in stats][1:] == [[]] * 4  # no score, not 3.0, not 0
        assert all(s["deita_quality_score"] != s["deita_quality_score"] for s in stats[1:])  # NaN
        assert 1.0 <= stats[0]["deita_quality_score"] <= 6.0
        out = op.run(dataset)
        assert [s["deita_quality_error"] for s in out[STATS]] == kept


def test_a_missing_model_is_one_line_when_the_recipe_is_built(operators, tmp_path):
    missing = tmp_path / "deita-quality.gguf"
    with pytest.raises(ModelError) as error:
        operators["deita_quality_score_filter"](model=str(missing))
    assert str(error.value) == (f"deita_quality_score_filter: model file {missing} does not exist; convert one "
                                "with `localscore convert`")
    (tmp_path / "broken.gguf").write_bytes(b"not a GGUF")
    with pytest.raises(ModelError, match=r"^deita_diversity_selector: cannot load .*broken\.gguf: not a valid GGUF"):
        operators["deita_diversity_selector"](model=str(tmp_path / "broken.gguf"))


def test_dj_process_with_a_missing_model_stops_on_the_operators_line(tmp_path):
    """dj-process logs every error with its traceback (data-juicer's logger, which also writes it to the job's
    log); the operator's line ends the output, raised where data-juicer builds its operators, before any sample is
    processed."""
    missing = tmp_path / "deita-quality.gguf"
    export = tmp_path / "out" / "selected.jsonl"
    result = subprocess.run([str(Path(sys.executable).with_name("dj-process")), "--config", str(RECIPE),
                             "--export_path", str(export), "--np", "1",
                             "--deita_quality_score_filter.model", str(missing)],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    output = result.stdout + result.stderr
    assert output.rstrip().splitlines()[-1] == ("localscore.errors.ModelError: deita_quality_score_filter: model file "
                                                f"{missing} does not exist; convert one with `localscore convert`")
    assert "in load_ops" in output and "OP [deita_" not in output  # raised building the operators; none ran
    assert not export.exists()


@pytest.mark.parametrize("name, options, message", [
    ("deita_quality_score_filter", {"min_score": "3"}, "'min_score' must be a number, got '3'"),
    ("deita_quality_score_filter", {"max_score": float("nan")}, "'max_score' must be a number, got nan"),
    ("deita_quality_score_filter", {"threads": "two"}, "'threads' must be a whole number, got 'two'"),
    ("deita_quality_score_filter", {"threads": 0}, "'threads' must be at least 1, got 0"),
    ("deita_complexity_score_filter", {"n_gpu_layers": 1.5}, "'n_gpu_layers' must be a whole number, got 1.5"),
    ("deita_complexity_score_filter", {"unscored": "maybe"}, "unknown unscored policy 'maybe'; choose keep or drop"),
    ("deita_complexity_score_filter", {"too_long": "cut"}, "unknown too-long policy 'cut'; choose truncate or error"),
    ("deita_quality_score_filter", {"model": 5}, "'model' must be the path of a GGUF file, got 5"),
    ("deita_diversity_selector", {"budget": "10"}, "'budget' must be a whole number, got '10'"),
    ("deita_diversity_selector", {"budget": None}, "'budget' must be a whole number, got None"),
    ("deita_diversity_selector", {"budget": 0}, "'budget' must be at least 1, got 0"),
    ("deita_diversity_selector", {"threshold": 2}, "'threshold' must be between 0 and 1, got 2"),
    ("deita_diversity_selector", {"kernels": "fast"}, "unknown kernels 'fast'; choose one of auto, repacked, direct"),
])
def test_a_recipe_value_data_juicer_passes_unchecked_is_one_line(operators, models, name, options, message):
    # data-juicer's preflight checks only options typed without Optional; YAML gives "3" for a quoted 3.
    model = models["embedder" if name == "deita_diversity_selector" else "quality"]
    with pytest.raises(LocalscoreError) as error:
        operators[name](**{"model": str(model), **options})
    assert str(error.value) == f"{name}: {message}"


def test_whole_numbers_written_as_floats_are_taken(operators, models):
    op = operators["deita_quality_score_filter"](model=str(models["quality"]), threads=2.0, min_score=3)
    assert (op.threads, op.min_score) == (2, 3)
