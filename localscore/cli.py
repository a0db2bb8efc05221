"""The command line: parses options and calls the Python API. The only module that imports click."""

from __future__ import annotations

import contextlib
import os
import re
import sys
import time
from pathlib import Path
from typing import Iterator

import click
from click.core import ParameterSource

from .version import __version__
from .errors import LocalscoreError, OutputClosed, UsageError
from .options import COMMANDS, Option

# The short flags: each means one option, in every command that has it (the long flags are the options' names).
SHORT_FLAGS = {"output": "-o", "model": "-m", "scorer": "-s", "ctx": "-c", "threads": "-t", "quiet": "-q",
               "verbose": "-v", "budget": "-k", "sample": "-n"}

# What a shell reports for a process killed by SIGPIPE: `localscore ... | head` ends like any other Unix tool.
_BROKEN_PIPE_STATUS = 141


class _Group(click.Group):
    def invoke(self, ctx: click.Context):
        # The one place where a user's mistake becomes a one-line error; anything else is a bug and keeps
        # its traceback.
        from .runs.score import Interrupted

        try:
            return super().invoke(ctx)
        except Interrupted as e:
            _log(e.summary.line())
            click.echo(f"Error: {e.render(lambda name: _flag(ctx, name))}", err=True)
            ctx.exit(130)
        except OutputClosed:
            # The reader went away (`| head`): stop quietly, as a Unix tool killed by SIGPIPE does; stdout now points
            # at /dev/null so that Python's last flush cannot fail with a second traceback.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            ctx.exit(_BROKEN_PIPE_STATUS)
        except UsageError as e:
            raise click.UsageError(e.render(lambda name: _flag(ctx, name))) from None
        except LocalscoreError as e:
            raise click.ClickException(e.render(lambda name: _flag(ctx, name))) from None
        except MemoryError:
            # The machine's (or the process's) limit, not a bug: a traceback from wherever the last allocation
            # happened to be would only hide that.
            raise click.ClickException("this process ran out of memory: free some, raise its limit, or use a "
                                       "smaller quantization or context") from None


def _flag(ctx: click.Context, name: str) -> str:
    """The running command's own spelling of the API parameter `name` (its longest flag), else the spelling of the
    command that has it (`merge` tells of `score`'s --shard)."""
    running = ctx.command.get_command(ctx, ctx.invoked_subcommand) if ctx.invoked_subcommand else ctx.command
    others = [cli.get_command(ctx, command) for command in cli.list_commands(ctx)]
    for command in [running, *others]:
        for param in getattr(command, "params", ()):
            if param.name == name and param.opts:
                return max(param.opts, key=len) if param.param_type_name == "option" else param.human_readable_name
    return f"{name}="


def _log(message: str) -> None:
    click.echo(f"localscore: {message}", err=True)


class _ProgressLine:
    """Draws a run's progress reports (see progress.py) on one stderr line: records/s, tokens/s and ETA, at most a
    few times a second, and clears it when the run ends."""

    def __init__(self) -> None:
        self._start = 0.0
        self._start_done = 0
        self._last_done = -1
        self._drawn = 0.0

    def __call__(self, done: int, total: int | None, tokens: int) -> None:
        now = time.perf_counter()
        if done < self._last_done or self._last_done < 0:  # a run (or compare's second side) starts
            self._start, self._start_done = now, done
        self._last_done = done
        if now - self._drawn < 0.2:
            return
        self._drawn = now
        elapsed = now - self._start
        rate = (done - self._start_done) / elapsed if elapsed > 0 else 0.0
        tps = tokens / elapsed if elapsed > 0 else 0.0
        count = f"{done:,}/{total:,}" if total else f"{done:,}"
        eta = f"  ETA {_clock((total - done) / rate)}" if total and rate > 0 else ""
        click.echo(f"\r{count} records  {rate:.1f} rec/s  {tps:,.0f} tok/s{eta}\033[K", err=True, nl=False,
                   color=True)  # escapes kept: drawn on terminals only

    def close(self) -> None:
        if self._drawn:
            click.echo("\r\033[K", err=True, nl=False, color=True)


def _clock(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


@contextlib.contextmanager
def _progress(quiet: bool) -> Iterator[_ProgressLine | None]:
    """The progress line for a run, drawn only on a terminal and not with --quiet."""
    if quiet or not sys.stderr.isatty():
        yield None
        return
    line = _ProgressLine()
    try:
        yield line
    finally:
        line.close()


def _long_flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _spell_help(text: str) -> str:
    """Help as the table writes it, with each `{name}` of another option spelled as its flag."""
    return re.sub(r"\{([a-z_]+)\}", lambda m: _long_flag(m.group(1)), text)


def _click_type(option: Option):
    if option.kind == "choice":
        return click.Choice(option.choices)
    if option.kind == "path":
        return click.Path(dir_okay=False, allow_dash=True, path_type=str) if option.dash else \
            click.Path(dir_okay=False, path_type=Path)
    bounded = option.low is not None or option.high is not None
    if option.kind == "int":
        return click.IntRange(option.low, option.high) if bounded else int
    if option.kind == "float":
        return click.FloatRange(option.low, option.high) if bounded else float
    return None


def _click_option(option: Option):
    flags = [SHORT_FLAGS[option.name]] if option.name in SHORT_FLAGS else []
    settings = dict(help=_spell_help(option.help), required=option.required, envvar=option.envvar,
                    metavar=option.metavar)
    if option.kind == "flag":
        settings["is_flag"] = True
    else:
        settings["type"] = _click_type(option)
        if option.default is not None:
            settings.update(default=option.default, show_default=True)
    return click.option(option.name, *flags, _long_flag(option.name), **settings)


def _options(command_name: str):
    """The options of `command_name` as the option table (options.py) declares them, in its order."""
    def add(command):
        for option in reversed(COMMANDS[command_name]):
            command = _click_option(option)(command)
        return command
    return add


def _given(options: dict) -> dict:
    """The options the user gave (on the command line or in the environment): the API's own defaults apply to
    the rest, so that "did the user give it?" is the API's question, answered without comparing with a default."""
    ctx = click.get_current_context()
    return {name: value for name, value in options.items() if ctx.get_parameter_source(name) != ParameterSource.DEFAULT}


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="localscore")
def cli() -> None:
    """Deita quality and complexity scores, computed locally with llama.cpp."""


@cli.command()
@click.argument("source")
@_options("convert")
def convert(source: str, **options) -> None:
    """Convert a Deita scorer checkpoint (a local folder or a hub repo id) into a GGUF model.

    Example: localscore convert hkust-nlp/deita-quality-scorer -o deita-quality.q4_k_m.gguf
    """
    from .convert import convert as convert_checkpoint

    convert_checkpoint(source, **_given(options), log=_log)


@cli.command()
@click.argument("input", metavar="INPUT")
@_options("score")
def score(quiet: bool, **options) -> None:
    """Score instruction data: JSONL or a JSON array (- for stdin), a Parquet file or folder of Parquet files, a
    datasets save_to_disk folder, or a hub dataset hf://datasets/ORG/NAME; Alpaca, ShareGPT or chat messages.

    Each output record is the input record plus quality_score (quality_scores for conversations).

    Example: localscore score data.jsonl -o scored.jsonl -m deita-quality.q4_k_m.gguf
    """
    from .api import score

    with _progress(quiet) as progress:
        summary = score(**_given(options), progress=progress, log=None if quiet else _log)
    if not quiet:
        for line in summary.lines():
            _log(line)


@cli.command()
@click.argument("inputs", metavar="SHARD_OUTPUT...", nargs=-1, required=True)
@_options("merge")
def merge(**options) -> None:
    """Join the outputs of `score --shard I/N` (or `embed --shard I/N`) runs into the single run's output,
    checking that every shard is there once and all come from one input and scorer (or embedder).

    Example: localscore merge scored-*-of-4.jsonl -o scored.jsonl
    """
    from .api import merge

    _log(merge(**options).line())


@cli.command()
@click.argument("path", metavar="FILE")
def info(path: str) -> None:
    """Show what made an output of score, embed, select or merge (a partial or shard output too): the model's
    fingerprint and the settings, which resume and merge check, and the versions, kernels and backend that ran.

    Example: localscore info scored.jsonl
    """
    from .api import info

    click.echo("\n".join(info(path).lines()))


@cli.command()
@click.argument("input", metavar="INPUT")
@_options("embed")
def embed(quiet: bool, **options) -> None:
    """Embed every record's conversation as Deita's embedder does (last token, final hidden state).

    Computed embeddings are also cached, so rerunning an interrupted run only computes the rest.

    Example: localscore embed scored.jsonl -m mistral-7b.q8_0.gguf -o embeddings.npy
    """
    from .api import embed

    with _progress(quiet) as progress:
        summary = embed(**_given(options), progress=progress)
    if not quiet:
        for line in summary.lines():
            _log(line)


# What adds the scores `select` needs, for a file that lacks them.
_SCORE_BOTH = ("localscore score INPUT -m QUALITY.gguf | localscore score - --scorer complexity -m COMPLEXITY.gguf "
               "-o scored.jsonl")


@cli.command()
@click.argument("input", metavar="INPUT")
@_options("select")
def select(quiet: bool, **options) -> None:
    """Select the best and most diverse records of a file scored by both Deita scorers (Deita's method).

    Records are ranked by evol score (sum over turns of complexity x quality) and kept unless too similar to
    one kept before; output is the kept records, best first, with evol_score and nearest_similarity.

    Example: localscore select scored.jsonl --budget 6000 -m mistral-7b.q8_0.gguf -o selected.jsonl
    """
    from .api import select
    from .deita.selection import MissingScores

    try:
        with _progress(quiet) as progress:
            summary = select(**_given(options), progress=progress)
    except MissingScores as e:
        raise click.ClickException(f"{e}: {_SCORE_BOTH}") from None
    if not quiet:
        for line in summary.lines():
            _log(line)


@cli.command()
@click.argument("a", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("b", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("data", type=click.Path(dir_okay=False, path_type=Path))
@_options("compare")
def compare(json: str | None, **options) -> None:
    """Compare two scorers on the same records: A and B are each a scorer GGUF or a file scored from DATA
    (localscore's output, or Deita's JSON with quality_scores lists).

    Prints Spearman, Kendall and Pearson correlations, mean and max |B - A|, and the overlap of the top 5/10/25 %
    per turn and per record.

    With --embedder, A and B are two embedders instead: prints the cosine of each record's two embeddings, how
    pairwise similarities move around --threshold, and, when DATA is scored by both scorers, how many of the
    records Deita's selection keeps change.

    Example: localscore compare deita.q4_k_m.gguf deita.f16.gguf data.jsonl --sample 500 --plot compare.png
    """
    from .api import compare

    to_stdout = json == "-"
    with _progress(False) as progress:
        result = compare(**_given(options), json=None if to_stdout else json, progress=progress, log=_log)
    click.echo(result.to_json() if to_stdout else "\n".join(result.table()))
