"""The command line: parses options and calls the Python API. The only module that imports click."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path
from typing import Iterator

import click

from convert import QUANT_TYPES

from . import __version__
from .deita.prompts import TOO_LONG_POLICIES
from .deita.templates import TEMPLATES
from .errors import LocalscoreError, OutputClosed, UsageError
from .llama.kernels import KERNELS

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


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="localscore")
def cli() -> None:
    """Deita quality and complexity scores, computed locally with llama.cpp."""


@cli.command()
@click.argument("source")
@click.option("output", "-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="GGUF file to write.")
@click.option("quant", "-q", "--quant", type=click.Choice(QUANT_TYPES), default="q4_k_m", show_default=True,
              help="Weight type of the output.")
def convert(source: str, output: Path, quant: str) -> None:
    """Convert a Deita scorer checkpoint (a local folder or a hub repo id) into a GGUF model.

    Example: localscore convert hkust-nlp/deita-quality-scorer -o deita-quality.q4_k_m.gguf
    """
    from convert import convert as convert_checkpoint

    convert_checkpoint(source, output, quant, log=_log)


def _input_options(command):
    """INPUT and which part of it: what every command that reads records takes."""
    for option in reversed([
        click.argument("input", metavar="INPUT"),
        click.option("split", "--split", default="train", show_default=True,
                     help="Split of a hub dataset or saved DatasetDict."),
        click.option("config", "--config", help="Configuration (subset) of a hub dataset."),
    ]):
        command = option(command)
    return command


_kernels_option = click.option(
    "kernels", "--kernels", type=click.Choice(KERNELS), default="auto", show_default=True,
    help="llama.cpp's matrix kernels: repacked (a rearranged copy of some weights, more memory) or direct (the "
         "weights as the file stores them); auto picks what measured faster for this CPU and weight type.")


def _model_run_options(command):
    """-t, --n-gpu-layers, --kernels, -q, -v: how a command that runs a model runs it."""
    for option in reversed([
        click.option("threads", "-t", "--threads", type=click.IntRange(min=1),
                     help="CPU threads (default: physical cores; with --ray: 1 per actor)."),
        click.option("n_gpu_layers", "--n-gpu-layers", type=int,
                     help="Layers to offload to Metal/CUDA (default: all when built with GPU support)."),
        _kernels_option,
        click.option("quiet", "-q", "--quiet", is_flag=True, help="No progress and no summary."),
        click.option("verbose", "-v", "--verbose", is_flag=True, help="Show llama.cpp's log (and Ray's, with --ray)."),
    ]):
        command = option(command)
    return command


def _shard_option(verb: str):
    return click.option("shard", "--shard", metavar="I/N",
                        help=f"{verb} only the I-th (0-based) of N slices; see `merge`.")


def _ray_options(verb: str, work: str):
    """--ray and --actors."""
    def add(command):
        command = click.option("actors", "--actors", type=click.IntRange(min=1),
                               help=f"With --ray: {work} actors, one model each.")(command)
        return click.option("ray", "--ray", is_flag=True,
                            help=f"{verb} on a Ray cluster ($RAY_ADDRESS, else a local one).")(command)
    return add


@cli.command()
@_input_options
@click.option("output", "-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="File to write: Parquet for a .parquet name, else JSONL (default: JSONL to stdout).")
@click.option("model", "-m", "--model", type=click.Path(dir_okay=False, path_type=Path), envvar="LOCALSCORE_MODEL",
              help="Scorer GGUF (default: the official Deita scorer, converted once into the cache).")
@click.option("scorer", "-s", "--scorer", type=click.Choice(list(TEMPLATES)), default="quality", show_default=True,
              help="Which Deita prompt to score with.")
@click.option("ctx", "-c", "--ctx", type=click.IntRange(min=16), help="Context in tokens (default: the model's, 2048).")
@click.option("too_long", "--too-long", type=click.Choice(TOO_LONG_POLICIES), default="truncate", show_default=True,
              help="Prompts over the context: cut the response's middle, or report an error.")
@click.option("pack", "--pack", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Prompts per decode call, for GPUs; scores may then vary slightly with batch-mates.")
@_shard_option("Score")
@click.option("resume", "--resume", is_flag=True, help="Continue an interrupted run into the same -o file.")
@click.option("strict", "--strict", is_flag=True, help="Stop at the first bad record instead of marking it.")
@_ray_options("Score", "scoring")
@_model_run_options
def score(quiet: bool, **options) -> None:
    """Score instruction data: JSONL or a JSON array (- for stdin), a Parquet file or folder of Parquet files, a
    datasets save_to_disk folder, or a hub dataset hf://datasets/ORG/NAME; Alpaca, ShareGPT or chat messages.

    Each output record is the input record plus quality_score (quality_scores for conversations).

    Example: localscore score data.jsonl -o scored.jsonl -m deita-quality.q4_k_m.gguf
    """
    from .api import score

    with _progress(quiet) as progress:
        summary = score(**options, progress=progress, log=None if quiet else _log)
    if not quiet:
        for line in summary.lines():
            _log(line)


@cli.command()
@click.argument("inputs", metavar="SHARD_OUTPUT...", nargs=-1, required=True)
@click.option("output", "-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="File to write: Parquet for a .parquet name, else JSONL; .npy for embedding shards.")
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
@_input_options
@click.option("model", "-m", "--model", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Embedder GGUF (Deita uses Mistral-7B-v0.1).")
@click.option("output", "-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help=".npy file to write: float32, one row per input record.")
@_shard_option("Embed")
@_ray_options("Embed", "embedding")
@_model_run_options
def embed(quiet: bool, **options) -> None:
    """Embed every record's conversation as Deita's embedder does (last token, final hidden state).

    Computed embeddings are also cached, so rerunning an interrupted run only computes the rest.

    Example: localscore embed scored.jsonl -m mistral-7b.q8_0.gguf -o embeddings.npy
    """
    from .api import embed

    with _progress(quiet) as progress:
        summary = embed(**options, progress=progress)
    if not quiet:
        for line in summary.lines():
            _log(line)


# What adds the scores `select` needs, for a file that lacks them.
_SCORE_BOTH = ("localscore score INPUT -m QUALITY.gguf | localscore score - --scorer complexity -m COMPLEXITY.gguf "
               "-o scored.jsonl")


@cli.command()
@_input_options
@click.option("budget", "-k", "--budget", type=click.IntRange(min=1), required=True,
              help="How many records to select (Deita: 6000 or 10000).")
@click.option("threshold", "--threshold", type=click.FloatRange(0, 1), default=0.9, show_default=True,
              help="Reject a record whose cosine similarity to a kept one is above this.")
@click.option("model", "-m", "--model", type=click.Path(dir_okay=False, path_type=Path),
              help="Embedder GGUF: embed only the records the selection reaches.")
@click.option("embeddings", "--embeddings", type=click.Path(dir_okay=False, path_type=Path),
              help="Embeddings made by `localscore embed` from the same INPUT.")
@click.option("output", "-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="JSONL file to write (default: stdout).")
@_ray_options("Embed the walk's next candidates ahead of it", "embedding")
@_model_run_options
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
            summary = select(**options, progress=progress)
    except MissingScores as e:
        raise click.ClickException(f"{e}: {_SCORE_BOTH}") from None
    if not quiet:
        for line in summary.lines():
            _log(line)


@cli.command()
@click.argument("a", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("b", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("data", type=click.Path(dir_okay=False, path_type=Path))
@click.option("scorer", "-s", "--scorer", type=click.Choice(list(TEMPLATES)), default="quality", show_default=True,
              help="Which Deita prompt, and which score fields of scored files.")
@click.option("sample", "-n", "--sample", type=click.IntRange(min=1),
              help="Compare N records drawn at random with --seed (default: all).")
@click.option("seed", "--seed", type=int, default=0, show_default=True, help="Seed of the --sample draw.")
@click.option("threads", "-t", "--threads", type=click.IntRange(min=1), help="CPU threads (default: physical cores).")
@_kernels_option
@click.option("json", "--json", type=click.Path(dir_okay=False, allow_dash=True, path_type=str),
              help="Write the figures as JSON to this file (- for stdout).")
@click.option("plot", "--plot", type=click.Path(dir_okay=False, path_type=Path),
              help="Write a PNG: A vs B scatter and the histogram of B - A (needs localscore[plot]).")
@click.option("embedder", "--embedder", is_flag=True,
              help="A and B are embedders: GGUFs or .npy files from `localscore embed DATA`.")
@click.option("budget", "-k", "--budget", type=click.IntRange(min=1),
              help="With --embedder: records to select (default: a fifth of those compared).")
@click.option("threshold", "--threshold", type=click.FloatRange(0, 1), default=0.9, show_default=True,
              help="With --embedder: the selection's similarity threshold.")
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
        result = compare(**options, json=None if to_stdout else json, progress=progress, log=_log)
    click.echo(result.to_json() if to_stdout else "\n".join(result.table()))
