"""The command line, through click's CliRunner: every input format, bad input, options, default model."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from localscore import Scorer
from localscore.cli import cli
from localscore.options import ScorerOptions
from tests.support.checkpoints import populate_hub_cache

DATA = Path(__file__).parents[1] / "data"


@pytest.fixture(scope="module")
def model(gguf_file) -> Path:
    return gguf_file("f32")


@pytest.fixture(scope="module")
def api_scorer(model):
    with Scorer.from_path(model) as scorer:
        yield scorer


def run(*args: str, input: str | bytes | None = None, env: dict | None = None):
    return CliRunner().invoke(cli, [str(a) for a in args], input=input, env=env, catch_exceptions=False)


def lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def alpaca(pairs) -> list[dict]:
    return [{"id": i, "instruction": a, "output": b} for i, (a, b) in enumerate(pairs[:12])]


def test_alpaca_jsonl_round_trip(tmp_path, model, alpaca, api_scorer):
    src = write_jsonl(tmp_path / "in.jsonl", alpaca)
    out = tmp_path / "out.jsonl"
    result = run("score", src, "-o", out, "-m", model)
    assert result.exit_code == 0, result.output
    got = lines(out.read_text())
    assert [{k: v for k, v in r.items() if k != "quality_score"} for r in got] == alpaca
    assert [r["quality_score"] for r in got] == api_scorer.score_many([(r["instruction"], r["output"]) for r in alpaca])
    assert "12 records (12 turns" in result.stderr and "12 scored, 0 errored, 0 truncated" in result.stderr
    assert not (tmp_path / "out.jsonl.partial").exists()


def test_alpaca_input_field_is_joined_to_the_instruction(tmp_path, model, api_scorer):
    src = write_jsonl(tmp_path / "in.jsonl", [{"instruction": "Translate to French.", "input": "Good morning",
                                                "output": "Bonjour"}])
    got = lines(run("score", src, "-m", model, "-q").stdout)
    assert got[0]["quality_score"] == api_scorer.score("Translate to French.\nGood morning", "Bonjour")


def test_json_array_from_stdin_to_stdout(model, alpaca):
    result = run("score", "-", "-m", model, "-q", input=json.dumps(alpaca))
    assert result.exit_code == 0
    got = lines(result.stdout)
    assert [r["id"] for r in got] == [r["id"] for r in alpaca]
    assert all(1 <= r["quality_score"] <= 6 for r in got)
    assert result.stderr == ""  # -q: no summary


def test_sharegpt_scores_every_human_gpt_turn(tmp_path, model, api_scorer):
    conversations = json.loads((DATA / "fastchat_dummy_conversation.json").read_text())[:6]
    src = tmp_path / "sharegpt.json"
    src.write_text(json.dumps(conversations))
    got = lines(run("score", src, "-m", model, "-q").stdout)
    assert len(got) == 6
    for record, original in zip(got, conversations):
        turns = original["conversations"]
        expected_pairs = [(turns[i]["value"], turns[i + 1]["value"]) for i in range(0, len(turns) - 1, 2)]
        assert record["conversations"] == turns
        assert record["quality_scores"] == api_scorer.score_many(expected_pairs)


def test_messages_skip_system_turns(tmp_path, model, api_scorer):
    questions = [json.loads(x) for x in (DATA / "mt_bench_question.jsonl").read_text().splitlines()]
    answers = {a["question_id"]: a["choices"][0]["turns"]
               for a in map(json.loads, (DATA / "mt_bench_gpt4_reference.jsonl").read_text().splitlines())}
    records = []
    for q in questions:
        if q["question_id"] in answers:
            a = answers[q["question_id"]]
            records.append({"messages": [{"role": "system", "content": "You are helpful."},
                                         {"role": "user", "content": q["turns"][0]},
                                         {"role": "assistant", "content": a[0]},
                                         {"role": "user", "content": q["turns"][1]},
                                         {"role": "assistant", "content": a[1]}]})
    records = records[:4]
    src = write_jsonl(tmp_path / "messages.jsonl", records)
    got = lines(run("score", src, "-m", model, "-q").stdout)
    for record in got:
        m = record["messages"]
        assert record["quality_scores"] == api_scorer.score_many(
            [(m[1]["content"], m[2]["content"]), (m[3]["content"], m[4]["content"])])


def test_complexity_scorer_names_its_fields(tmp_path, model):
    src = write_jsonl(tmp_path / "in.jsonl", [{"instruction": "Prove that sqrt(2) is irrational."},
                                               {"conversations": [{"from": "human", "value": "Hi"},
                                                                  {"from": "gpt", "value": "Hello"},
                                                                  {"from": "human", "value": "Tell a joke"}]}])
    result = run("score", src, "-m", model, "--scorer", "complexity", "-q")
    got = lines(result.stdout)
    assert 1 <= got[0]["complexity_score"] <= 6
    assert len(got[1]["complexity_scores"]) == 2  # an unanswered last question still has a complexity
    with Scorer.from_path(model, ScorerOptions(scorer="complexity")) as scorer:
        assert got[0]["complexity_score"] == scorer.score("Prove that sqrt(2) is irrational.")


BAD_LINES = [
    (b'{"instruction": "ok", "output": "fine"}', None),
    (b'this is not json', "not valid JSON"),
    (b'{"prompt": "x", "completion": "y"}', "no known record shape"),
    (b'{"instruction": "x", "output": 3}', "'output' must be a string"),
    (b'{"instruction": "   ", "output": "y"}', "'instruction' is empty"),
    (b'{"conversations": [{"from": "gpt", "value": "a"}, {"from": "human", "value": "b"}]}', "turn 1"),
    (b'{"instruction": "a\\u0000b", "output": "y"}', "NUL"),
    (b'{"instruction": "caf\xe9", "output": "y"}', "UTF-8"),
    (b'[1, 2]', None),
    (b'{"instruction": "x", "output": "' + b"y" * 1_100_000 + b'"}', "limit"),
]


def test_bad_records_are_marked_and_the_run_goes_on(tmp_path, model):
    src = tmp_path / "bad.jsonl"
    src.write_bytes(b"\n".join(line for line, _ in BAD_LINES) + b"\n")
    out = tmp_path / "out.jsonl"
    result = run("score", src, "-o", out, "-m", model)
    assert result.exit_code == 0, result.output
    got = lines(out.read_text())
    assert len(got) == len(BAD_LINES)
    assert "quality_score" in got[0] and "quality_error" not in got[0]
    for record, (_, reason) in zip(got[1:], BAD_LINES[1:]):
        assert "quality_score" not in record
        if reason:
            assert reason in record["quality_error"]
    assert "1 scored, 9 errored" in result.stderr


def test_strict_stops_at_the_first_bad_record(tmp_path, model):
    src = tmp_path / "bad.jsonl"
    src.write_bytes(b"\n".join(line for line, _ in BAD_LINES[:3]) + b"\n")
    out = tmp_path / "out.jsonl"
    out.write_text("previous results\n")
    result = CliRunner().invoke(cli, ["score", str(src), "-o", str(out), "-m", str(model), "--strict"])
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "Error: record 2: not valid JSON: Expecting value at column 1 (--strict stops at the first bad record)")
    assert out.read_text() == "previous results\n"  # an existing output is never half-overwritten


def test_truncation_is_marked_and_the_error_policy_reports(tmp_path, model):
    long = " ".join(f"Paragraph {i} goes on and on." for i in range(300))
    src = write_jsonl(tmp_path / "in.jsonl", [{"instruction": "Summarize.", "output": long},
                                               {"instruction": "Short?", "output": "Yes."}])
    result = run("score", src, "-m", model, "--ctx", "256")
    got = lines(result.stdout)
    assert got[0]["quality_truncated"] is True and 1 <= got[0]["quality_score"] <= 6
    assert "quality_truncated" not in got[1]
    assert "2 scored, 0 errored, 1 truncated" in result.stderr
    got = lines(run("score", src, "-m", model, "--ctx", "256", "--too-long", "error", "-q").stdout)
    assert "longer than the 256-token context" in got[0]["quality_error"]
    assert "quality_score" in got[1]


def test_resume_completes_an_interrupted_file_identically(tmp_path, model, alpaca):
    src = write_jsonl(tmp_path / "in.jsonl", alpaca)
    full = tmp_path / "full.jsonl"
    assert run("score", src, "-o", full, "-m", model, "-q").exit_code == 0
    reference = full.read_bytes()
    out = tmp_path / "out.jsonl"
    cut = reference.index(b"\n", len(reference) // 2) + 20  # mid-line, as kill -9 leaves it
    (tmp_path / "out.jsonl.partial").write_bytes(reference[:cut])
    result = run("score", src, "-o", out, "-m", model, "--resume")
    assert result.exit_code == 0, result.output
    assert out.read_bytes() == reference
    assert Path(f"{out}.provenance.json").read_bytes() == Path(f"{full}.provenance.json").read_bytes()
    assert "resumed" in result.stderr
    # Resuming against another input is refused rather than mixed in.
    other = write_jsonl(tmp_path / "other.jsonl", [dict(r, instruction=r["instruction"] + "!") for r in alpaca])
    (tmp_path / "out.jsonl.partial").write_bytes(reference[:cut])
    result = CliRunner().invoke(cli, ["score", str(other), "-o", str(out), "-m", str(model), "--resume"])
    assert result.exit_code == 1 and "drop --resume" in result.output


def test_user_errors_are_one_line(tmp_path, model):
    cases = [
        (["score", str(tmp_path / "missing.jsonl"), "-m", str(model)], "missing.jsonl"),
        (["score", "-", "-m", str(tmp_path / "nope.gguf")], "nope.gguf does not exist"),
        (["score", "-", "-m", str(model), "--resume"], "--resume needs an output file"),
        (["score", "-", "-m", str(model), "--scorer", "helpfulness"], "Invalid value for '-s' / '--scorer'"),
    ]
    for args, expected in cases:
        result = CliRunner().invoke(cli, args, input="")
        assert result.exit_code in (1, 2), args
        assert expected in result.output
        assert "Traceback" not in result.output
        assert result.output.strip().count("\n") <= 3  # click usage lines at most, never a traceback


# --- option values at their edges, hub URIs that name nothing: one line, before any work ---------------------------

LONG = {"instruction": "Explain this. " * 300, "output": "Because. " * 300}


def usage_error(result) -> str:
    """The error line of a usage error (click prints the usage first); never a traceback."""
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    return result.output.splitlines()[-1]


@pytest.mark.parametrize("scorer, smallest", [("quality", 174), ("complexity", 98)])
def test_a_context_too_small_for_the_prompt_names_the_smallest_that_works(model, scorer, smallest):
    """174 and 98 in the Llama vocabulary: each template's fixed text and 64 tokens of each field it fills around
    the cut marker (cut prompts of real records measure 168-172 and 95-97 tokens)."""
    record = json.dumps(LONG) + "\n"
    for ctx in (16, smallest - 1):
        refused = run("score", "-", "-m", model, "-s", scorer, "--ctx", ctx, input=record)
        assert usage_error(refused) == (f"Error: --ctx must be at least {smallest}, got {ctx} (a {scorer} prompt cut "
                                        "to fit: its fixed text and 64 tokens of each field)")
    fits = run("score", "-", "-m", model, "-s", scorer, "--ctx", smallest, "-q", input=record)
    assert fits.exit_code == 0, fits.output
    assert lines(fits.stdout)[0][f"{scorer}_truncated"] is True


def test_a_context_past_the_trained_one_is_refused(model):
    result = run("score", "-", "-m", model, "--ctx", 2049, input="")  # the tiny model's trained context is 2048
    assert usage_error(result) == "Error: --ctx must be at most 2048, got 2049 (the context the model was trained on)"


def test_more_threads_than_cpus_is_refused(model):
    cpus = len(os.sched_getaffinity(0))
    result = run("score", "-", "-m", model, "--threads", 100_000, input="")  # llama.cpp crashes there
    assert usage_error(result) == (f"Error: --threads must be between 1 and {cpus}, got 100000 (the CPUs this "
                                   "process may run on)")


def test_a_negative_seed_is_refused(tmp_path, model):
    data = tmp_path / "data.jsonl"
    data.write_text(json.dumps({"instruction": "Name a colour.", "output": "Blue."}) + "\n")
    result = run("compare", model, model, data, "--sample", 1, "--seed", -1)
    assert usage_error(result) == "Error: --seed must be at least 0, got -1"


@pytest.mark.parametrize("uri", ["hf://datasets/", "hf://datasets/org", "hf://datasets/org/", "hf://datasets/org/a/b",
                                 "hf://datasets/org/na--me", "hf://datasets/org/name@", "hf://models/org/name",
                                 "hf://org/name"])
@pytest.mark.parametrize("command", ["score", "embed", "select"])
def test_a_hub_uri_that_names_no_dataset_is_one_line_before_any_model_loads(tmp_path, uri, command):
    missing = tmp_path / "never-loaded.gguf"  # were the model loaded first, this would be the error
    extra = {"score": [], "embed": ["-o", tmp_path / "e.npy"], "select": ["-k", 1]}[command]
    result = run(command, uri, "-m", missing, *extra)
    assert result.exit_code == 1
    assert result.output == (f"Error: {uri} names no hub dataset; give hf://datasets/ORG/NAME or "
                             "hf://datasets/ORG/NAME@REVISION\n")


def _localscore(*args: str, env: dict, input: str = "") -> subprocess.CompletedProcess:
    """A real process: environment read at start-up (huggingface_hub reads HF_HUB_* once, on import)."""
    return subprocess.run([sys.executable, "-m", "localscore", *map(str, args)], input=input, env={**os.environ, **env},
                          capture_output=True, text=True, timeout=600)


def test_default_model_is_converted_once_from_the_hub_cache(tmp_path, tiny_checkpoint):
    hub = tmp_path / "hub"
    populate_hub_cache(hub, "hkust-nlp/deita-quality-scorer", tiny_checkpoint)
    env = {"HF_HUB_CACHE": str(hub), "HF_HUB_OFFLINE": "1", "LOCALSCORE_CACHE": str(tmp_path / "cache"),
           "LOCALSCORE_MODEL": ""}
    src = write_jsonl(tmp_path / "in.jsonl", [{"instruction": "Hi?", "output": "Hello."}])
    first = _localscore("score", src, env=env)
    assert first.returncode == 0, first.stderr
    assert "first use: converting hkust-nlp/deita-quality-scorer" in first.stderr
    assert (tmp_path / "cache" / "deita-quality-scorer.q4_k_m.gguf").is_file()
    # In this process: from the cache only (the session's own hub cache, tests/conftest.py, has no such repo).
    second = run("score", src, env={"LOCALSCORE_CACHE": str(tmp_path / "cache"), "LOCALSCORE_MODEL": None})
    assert second.exit_code == 0 and "converting" not in second.stderr
    assert lines(second.stdout) == lines(first.stdout)


def test_default_model_offline_without_cache_says_what_to_do(tmp_path):
    # In this process: the session reads an offline hub cache of its own that has no such repo (tests/conftest.py).
    result = run("score", "-", input="", env={"LOCALSCORE_CACHE": str(tmp_path / "cache"), "LOCALSCORE_MODEL": None})
    assert result.exit_code == 1
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith("Error: no model given (--model)") and "Traceback" not in result.stderr
    assert "localscore convert hkust-nlp/deita-quality-scorer" in message


def test_convert_command(tmp_path, tiny_checkpoint):
    out = tmp_path / "m.gguf"
    result = run("convert", tiny_checkpoint, "-o", out, "--quant", "q8_0")
    assert result.exit_code == 0, result.output
    assert out.is_file() and f"wrote {out}" in result.stderr
    with Scorer.from_path(out) as scorer:
        assert scorer.engine.info.file_type == "q8_0"
    bad = CliRunner().invoke(cli, ["convert", str(tmp_path / "nowhere"), "-o", str(tmp_path / "x.gguf")])
    assert bad.exit_code == 1 and bad.output.startswith("Error: ") and "nowhere" in bad.output
    assert not (tmp_path / "x.gguf").exists()


def test_model_from_environment_variable(tmp_path, model, monkeypatch):
    shutil.copyfile(model, tmp_path / "env.gguf")
    monkeypatch.setenv("LOCALSCORE_MODEL", str(tmp_path / "env.gguf"))
    result = run("score", "-", "-q", input='{"instruction": "a", "output": "b"}\n')
    assert result.exit_code == 0 and "quality_score" in result.stdout


def test_hostile_checkpoint_and_broken_model_end_in_one_line(tmp_path, tiny_checkpoint, model):
    import collections

    from tests.support.hostile_pickles import payloads, tensor, torch_zip

    folder = tmp_path / "hostile"
    shutil.copytree(tiny_checkpoint, folder)
    marker = tmp_path / "pwned"
    shard = folder / "pytorch_model-00001-of-00002.bin"
    torch_zip(shard, collections.OrderedDict(ok=tensor(), evil=payloads(marker)["builtins.exec"]))
    result = CliRunner().invoke(cli, ["convert", str(folder), "-o", str(tmp_path / "out.gguf"), "--quant", "f16"])
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: {shard} is unsafe: its pickle calls builtins.exec")
    assert result.output.count("\n") == 1 and not marker.exists() and not (tmp_path / "out.gguf").exists()

    broken = tmp_path / "broken.gguf"
    broken.write_bytes(model.read_bytes()[:100_000])
    result = CliRunner().invoke(cli, ["score", "-", "-m", str(broken)], input='{"instruction": "a", "output": "b"}\n')
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: cannot load {broken}") and result.output.count("\n") == 1


def test_running_out_of_memory_is_one_line(monkeypatch, tmp_path):
    # The process's limit, wherever the last allocation happened to be: one line, not that place's traceback.
    import localscore.api

    def exhausted(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(localscore.api, "merge", exhausted)
    result = CliRunner().invoke(cli, ["merge", str(tmp_path / "a.jsonl"), "-o", str(tmp_path / "b.jsonl")])
    assert result.exit_code == 1
    assert result.output == ("Error: this process ran out of memory: free some, raise its limit, or use a smaller "
                             "quantization or context\n")
