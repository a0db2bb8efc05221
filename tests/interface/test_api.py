"""The API is the CLI: `localscore.score`, `embed`, `select`, `compare` and `merge` write the command's files byte for
byte, take its options under the same names, and library code never names a CLI flag."""

from __future__ import annotations

import ast
import inspect
import json
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import click
import pytest
from click.testing import CliRunner

import localscore
from localscore.cli import cli
from localscore.errors import InputError, OutputError, UsageError

ROOT = Path(__file__).parents[2]
# A long flag (--resume) or a short one (-m) standing alone in a string: what a message of the CLI would say.
FLAG = re.compile(r"(?<![\w-])(--[a-z][a-z-]*|-[a-zA-Z])(?![\w-])")


def run(*args: object, input: str | None = None):
    result = CliRunner().invoke(cli, [str(a) for a in args], input=input, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def model(gguf_file) -> Path:
    return gguf_file("q8_0")


@pytest.fixture(scope="module")
def source(tmp_path_factory, pairs) -> Path:
    records = [{"id": i, "instruction": a, "output": b} for i, (a, b) in enumerate(pairs[:9])]
    records[4]["output"] = ""  # a bad record: marked in both outputs alike
    return write_jsonl(tmp_path_factory.mktemp("api") / "in.jsonl", records)


def _strings(tree: ast.AST) -> list[tuple[int, str]]:
    """Every string a module's code holds (f-strings' literal parts too), but docstrings and the command lines of
    other programs (`subprocess.run(["sysctl", "-n", ...])`)."""
    skipped = {id(node.body[0].value) for node in ast.walk(tree)
               if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
               and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name) and node.func.value.id == "subprocess"):
            skipped |= {id(inner) for arg in node.args for inner in ast.walk(arg)}
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skipped]


def test_library_code_names_no_cli_flag():
    files = [p for p in sorted((ROOT / "localscore").rglob("*.py")) if p.name != "cli.py"]
    files += sorted((ROOT / "convert").glob("*.py"))
    assert len(files) > 20
    found = [f"{path.relative_to(ROOT)}:{line}: {text!r}"
             for path in files for line, text in _strings(ast.parse(path.read_text(encoding="utf-8")))
             if FLAG.search(text)]
    assert found == []


def test_the_flag_check_sees_flags_in_messages():
    tree = ast.parse('def f(x):\n    """--doc is fine"""\n    subprocess.run(["ls", "-l"])\n'
                     '    raise E(f"{x} needs -o; drop --resume")\n')
    assert [text for _, text in _strings(tree) if FLAG.search(text)] == [" needs -o; drop --resume"]


@pytest.mark.parametrize("command", ["score", "embed", "select", "compare", "merge", "info"])
def test_the_command_options_are_the_function_parameters(command):
    """Every option and argument of the command is a parameter of the function, under the same name."""
    parameters = inspect.signature(getattr(localscore, command)).parameters
    cli_only = {"quiet"}  # how the terminal shows a run; `progress` and `log` are its API side
    names = {param.name for param in cli.commands[command].params} - cli_only
    assert names <= set(parameters), names - set(parameters)
    defaults = cli.commands[command].make_context(command, [], resilient_parsing=True).params  # nothing given
    # Where giving an option matters (compare refuses --scorer and --threshold with the other kind of comparison),
    # the function's default is None, "not given", which it resolves to the command's default.
    not_given = {"compare": {"scorer", "threshold"}}.get(command, set())
    for param in cli.commands[command].params:
        if param.name in parameters and isinstance(param, click.Option) and not param.required and not param.envvar:
            expected = None if param.name in not_given else defaults[param.name]
            assert parameters[param.name].default == expected, param.name


def test_importing_localscore_loads_neither_llama_cpp_nor_click():
    code = ("import sys, localscore; import localscore.runs.compare.scorers; "
            "print(sorted(m for m in ('llama_cpp', 'click', 'pyarrow') if m in sys.modules), "
            "callable(localscore.compare))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out == "[] True\n"


def test_score_writes_the_command_output(tmp_path, source, model):
    run("score", source, "-m", model, "-o", tmp_path / "cli.jsonl", "-q")
    summary = localscore.score(source, tmp_path / "api.jsonl", model=model)
    assert (tmp_path / "api.jsonl").read_bytes() == (tmp_path / "cli.jsonl").read_bytes()
    assert (summary.records, summary.scored, summary.errored) == (9, 8, 1)
    run("score", source, "-m", model, "-s", "complexity", "--ctx", "256", "-o", tmp_path / "cli.parquet", "-q")
    localscore.score(source, tmp_path / "api.parquet", model=model, scorer="complexity", ctx=256)
    assert (tmp_path / "api.parquet").read_bytes() == (tmp_path / "cli.parquet").read_bytes()


def test_score_to_stdout_and_from_stdin(monkeypatch, capsysbinary, source, model):
    cli_out = run("score", "-", "-m", model, "-q", input=source.read_text(encoding="utf-8")).stdout_bytes
    with open(source, "rb") as stdin:
        monkeypatch.setattr(sys, "stdin", SimpleNamespace(buffer=stdin))
        localscore.score("-", model=model)
    assert capsysbinary.readouterr().out == cli_out


def test_shards_and_merge_write_the_command_output(tmp_path, source, model):
    for index in range(2):
        run("score", source, "-m", model, "--shard", f"{index}/2", "-o", tmp_path / f"cli-{index}.jsonl", "-q")
        localscore.score(source, tmp_path / f"api-{index}.jsonl", model=model, shard=f"{index}/2")
    run("merge", tmp_path / "cli-1.jsonl", tmp_path / "cli-0.jsonl", "-o", tmp_path / "cli.jsonl")
    summary = localscore.merge([tmp_path / "api-1.jsonl", tmp_path / "api-0.jsonl"], tmp_path / "api.jsonl")
    assert (tmp_path / "api.jsonl").read_bytes() == (tmp_path / "cli.jsonl").read_bytes()
    assert summary.line() == f"merged 2 shards, 9 records, into {tmp_path / 'api.jsonl'}"


def test_embed_and_select_write_the_command_output(tmp_path, monkeypatch, embedder_gguf):
    from tests.support.data import sharegpt_conversations
    from tests.support.data import scored

    monkeypatch.setenv("LOCALSCORE_CACHE", str(tmp_path / "cache"))
    src = write_jsonl(tmp_path / "scored.jsonl", scored(sharegpt_conversations()[:12]))
    run("embed", src, "-m", embedder_gguf, "-t", "1", "-o", tmp_path / "cli.npy", "-q")
    summary = localscore.embed(src, tmp_path / "api.npy", model=embedder_gguf, threads=1)
    assert (tmp_path / "api.npy").read_bytes() == (tmp_path / "cli.npy").read_bytes()
    assert summary.records == 12
    # Every input form score reads: the same records as Parquet give the same rows.
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist([json.loads(line) for line in src.read_text().splitlines()]),
                   tmp_path / "scored.parquet")
    run("embed", tmp_path / "scored.parquet", "-m", embedder_gguf, "-t", "1", "-o", tmp_path / "parquet.npy", "-q")
    assert (tmp_path / "parquet.npy").read_bytes() == (tmp_path / "cli.npy").read_bytes()
    (tmp_path / "folder.npy").mkdir()
    with pytest.raises(OutputError, match=r"folder\.npy is a folder; give a file name$"):  # a write, not the input
        localscore.embed(src, tmp_path / "folder.npy", model=embedder_gguf, threads=1)
    run("select", src, "-k", "5", "--embeddings", tmp_path / "cli.npy", "-o", tmp_path / "cli.jsonl", "-q")
    localscore.select(src, tmp_path / "api.jsonl", budget=5, embeddings=tmp_path / "api.npy")
    assert (tmp_path / "api.jsonl").read_bytes() == (tmp_path / "cli.jsonl").read_bytes()
    run("select", src, "-k", "5", "--threshold", "0.5", "-m", embedder_gguf, "-t", "1",
        "-o", tmp_path / "lazy-cli.jsonl", "-q")
    summary = localscore.select(src, tmp_path / "lazy-api.jsonl", budget=5, threshold=0.5, model=embedder_gguf,
                                threads=1)
    assert (tmp_path / "lazy-api.jsonl").read_bytes() == (tmp_path / "lazy-cli.jsonl").read_bytes()
    assert summary.selected == len((tmp_path / "lazy-api.jsonl").read_text().splitlines())


def test_compare_writes_the_command_output(tmp_path, source, model, gguf_file):
    run("compare", model, gguf_file("q4_k_m"), source, "-t", "1", "--json", tmp_path / "cli.json")
    result = localscore.compare(model, gguf_file("q4_k_m"), source, threads=1, json=tmp_path / "api.json")
    assert (tmp_path / "api.json").read_bytes() == (tmp_path / "cli.json").read_bytes()
    assert result.compared == 8


def test_progress_is_reported_to_the_callback(tmp_path, source, model):
    reports = []
    localscore.score(source, tmp_path / "out.jsonl", model=model, progress=lambda *report: reports.append(report))
    assert [done for done, _, _ in reports] == list(range(10))
    assert {total for _, total, _ in reports} == {9}
    tokens = [tokens for _, _, tokens in reports]
    assert tokens[0] == 0 and tokens == sorted(tokens) and tokens[-1] > 0


def test_errors_name_api_parameters_and_the_cli_its_flags(tmp_path, source, model):
    with pytest.raises(UsageError) as error:
        localscore.score(source, model=model, resume=True)
    assert str(error.value) == "'resume' needs an output file ('output')"
    result = CliRunner().invoke(cli, ["score", str(source), "-m", str(model), "--resume"])
    assert result.exit_code == 2 and result.output.splitlines()[-1] == "Error: --resume needs an output file (--output)"
    with pytest.raises(UsageError, match=r"^'actors' needs 'ray'$"):
        localscore.score(source, tmp_path / "out.jsonl", model=model, actors=2)
    with pytest.raises(InputError, match=r"^give the embedder \('model'\) or precomputed embeddings \('embeddings'\)"):
        localscore.select(source, budget=1)
    # Checked before any model loads.
    with pytest.raises(InputError, match=r"^cannot read .*missing\.jsonl: no such file or folder$"):
        localscore.score(tmp_path / "missing.jsonl", model=tmp_path / "no.gguf")


def test_the_cli_draws_the_progress_line(capsys):
    from localscore.cli import _ProgressLine

    line = _ProgressLine()
    line(3, 10, 0)
    line(4, 10, 50)  # within 0.2 s of the last drawing: not drawn
    line.close()
    assert capsys.readouterr().err == "\r3/10 records  0.0 rec/s  0 tok/s\033[K\r\033[K"
