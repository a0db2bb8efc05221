"""Every option in one place: the option table is what the CLI offers, each default is written once (in
localscore/options.py), the option groups refuse bad values with the one-line messages, and no function below the
API takes a long list of loose options."""

from __future__ import annotations

import ast
from pathlib import Path

import click
import pytest

from localscore import options
from localscore.cli import SHORT_FLAGS, cli
from localscore.deita.templates import TEMPLATES
from localscore.errors import InputError, UsageError
from localscore.llama.kernels import choose
from localscore.options import (COMMANDS, CompareOptions, OutputOptions, RayOptions, RunOptions, ScorerOptions,
                                SelectOptions)

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "localscore"
# Where a function's parameters are another's to decide: the API and the CLI are the options' flat faces, and
# data-juicer builds its operators from their keyword arguments.
FLAT = {PACKAGE / "api.py", PACKAGE / "cli.py", PACKAGE / "datajuicer.py"}
MAX_PARAMETERS = 8
# The defaults of options that are strings or fractions: where one of these stands as a literal default in a
# signature, the default is written a second time.
OPTION_DEFAULTS = {value for name, value in vars(options).items()
                   if name.startswith("DEFAULT_") and isinstance(value, (str, float))}


def _functions(path: Path):
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node


def _parameter_count(function: ast.FunctionDef) -> int:
    arguments = function.args
    names = [a.arg for a in arguments.posonlyargs + arguments.args + arguments.kwonlyargs]
    if names and names[0] in ("self", "cls"):
        names = names[1:]
    return len(names) + (arguments.vararg is not None) + (arguments.kwarg is not None)


def _sources():
    return sorted([*PACKAGE.rglob("*.py"), *(ROOT / "convert").rglob("*.py")])


def test_no_function_below_the_api_takes_more_than_eight_parameters():
    crowded = [f"{path.relative_to(ROOT)}:{function.lineno} {function.name} ({_parameter_count(function)})"
               for path in _sources() if path not in FLAT for function in _functions(path)
               if _parameter_count(function) > MAX_PARAMETERS]
    assert not crowded, "group the options (localscore/options.py) instead:\n" + "\n".join(crowded)


def test_the_check_counts_self_varargs_and_keywords():
    tree = ast.parse("class A:\n    def f(self, a, b, *c, d, **e): pass\ndef g(a, /, b, *, c): pass")
    counts = {function.name: _parameter_count(function) for function in ast.walk(tree)
              if isinstance(function, ast.FunctionDef)}
    assert counts == {"f": 5, "g": 3}


def test_no_signature_writes_an_option_default_as_a_literal():
    assert {"auto", "train", "quality", "truncate", 0.9, "q4_k_m"} <= OPTION_DEFAULTS
    literal = []
    for path in _sources():
        if path == PACKAGE / "options.py":
            continue
        for function in _functions(path):
            defaults = [*function.args.defaults, *(d for d in function.args.kw_defaults if d is not None)]
            literal += [f"{path.relative_to(ROOT)}:{function.lineno} {function.name}: {d.value!r}" for d in defaults
                        if isinstance(d, ast.Constant) and not isinstance(d.value, bool)
                        and d.value in OPTION_DEFAULTS]
    assert not literal, "use the named default of localscore/options.py:\n" + "\n".join(literal)


def test_the_cli_offers_exactly_the_option_table():
    for name, table in COMMANDS.items():
        command = cli.commands[name]
        offered = [param for param in command.params if isinstance(param, click.Option)]
        assert [param.name for param in offered] == [option.name for option in table], name
        for param, option in zip(offered, table):
            assert max(param.opts, key=len) == "--" + option.name.replace("_", "-")
            if option.default is not None:
                assert param.default == option.default and param.show_default, (name, option.name)
            assert "{" not in (param.help or ""), (name, option.name)  # every placeholder spelled as a flag


def test_a_short_flag_means_one_option_in_every_command():
    meanings: dict[str, set[str]] = {}
    for command in cli.commands.values():
        for param in command.params:
            for opt in param.opts if isinstance(param, click.Option) else ():
                if not opt.startswith("--"):
                    meanings.setdefault(opt, set()).add(param.name)
    assert all(len(names) == 1 for names in meanings.values()), meanings
    assert {flag: names.pop() for flag, names in meanings.items()} == {v: k for k, v in SHORT_FLAGS.items()}


def test_the_choices_are_what_the_code_takes():
    assert options.SCORERS == tuple(TEMPLATES)
    assert options.DEFAULT_SCORER in TEMPLATES
    for kernels in options.KERNELS:
        choose(kernels, "f32")


def test_the_groups_refuse_bad_values_in_one_line():
    cases = [
        (lambda: ScorerOptions("fluency"), InputError, "unknown scorer 'fluency'; choose quality or complexity"),
        (lambda: ScorerOptions(too_long="drop"), InputError,
         "unknown too-long policy 'drop'; choose truncate or error"),
        (lambda: ScorerOptions(pack=0), UsageError, "'pack' must be between 1 and 64, got 0"),
        (lambda: RunOptions(threads=0), UsageError, "'threads' must be at least 1, got 0"),
        (lambda: RayOptions(0), UsageError, "'actors' must be at least 1, got 0"),
        (lambda: OutputOptions(None, resume=True), UsageError, "'resume' needs an output file ('output')"),
        (lambda: SelectOptions(5), InputError, "give the embedder ('model') or precomputed embeddings"),
        (lambda: SelectOptions(5, 1.5, model="m.gguf"), UsageError, "'threshold' must be between 0 and 1, got 1.5"),
        (lambda: CompareOptions(seed=-1), UsageError, "'seed' must be at least 0, got -1"),
        (lambda: CompareOptions(sample=0), UsageError, "'sample' must be at least 1, got 0"),
    ]
    for make, error, message in cases:
        with pytest.raises(error) as raised:
            make()
        assert str(raised.value).startswith(message) and "\n" not in str(raised.value), message


def test_groups_are_frozen_values():
    run = RunOptions(threads=2)
    assert run == RunOptions(2) and hash(run) == hash(RunOptions(2))  # a cache key (runs/rows.py)
    with pytest.raises(AttributeError):
        run.threads = 3  # type: ignore[misc]
