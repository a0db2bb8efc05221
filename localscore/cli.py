"""The command line: parses options and calls the Python API. The only module that imports click."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from convert import QUANT_TYPES

from . import __version__
from .errors import LocalscoreError
from .prompts import TOO_LONG_POLICIES
from .templates import TEMPLATES


class _Group(click.Group):
    def invoke(self, ctx: click.Context):
        # The one place where a user's mistake becomes a one-line error; anything else is a bug and keeps
        # its traceback.
        from .runner import Interrupted

        try:
            return super().invoke(ctx)
        except Interrupted as e:
            click.echo(f"localscore: {e.summary.line()}", err=True)
            click.echo(f"Error: {e}", err=True)
            ctx.exit(130)
        except LocalscoreError as e:
            raise click.ClickException(str(e)) from None


def _log(message: str) -> None:
    click.echo(f"localscore: {message}", err=True)


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


@cli.command()
@click.argument("input_path", metavar="INPUT", type=click.Path(exists=True, dir_okay=False, allow_dash=True, path_type=str))
@click.option("output", "-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="JSONL file to write (default: stdout).")
@click.option("model_path", "-m", "--model", type=click.Path(dir_okay=False, path_type=Path),
              envvar="LOCALSCORE_MODEL",
              help="Scorer GGUF (default: the official Deita scorer, converted once into the cache).")
@click.option("scorer", "-s", "--scorer", type=click.Choice(list(TEMPLATES)), default="quality", show_default=True,
              help="Which Deita prompt to score with.")
@click.option("threads", "-t", "--threads", type=click.IntRange(min=1), help="CPU threads (default: physical cores).")
@click.option("n_gpu_layers", "--n-gpu-layers", type=int,
              help="Layers to offload to Metal/CUDA (default: all when built with GPU support).")
@click.option("ctx", "-c", "--ctx", type=click.IntRange(min=16), help="Context in tokens (default: the model's, 2048).")
@click.option("too_long", "--too-long", type=click.Choice(TOO_LONG_POLICIES), default="truncate", show_default=True,
              help="Prompts over the context: cut the response's middle, or report an error.")
@click.option("pack", "--pack", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Prompts per decode call, for GPUs; scores may then vary slightly with batch-mates.")
@click.option("resume", "--resume", is_flag=True, help="Continue an interrupted run into the same -o file.")
@click.option("strict", "--strict", is_flag=True, help="Stop at the first bad record instead of marking it.")
@click.option("quiet", "-q", "--quiet", is_flag=True, help="No progress bar and no summary.")
@click.option("verbose", "-v", "--verbose", is_flag=True, help="Show llama.cpp's log.")
def score(input_path: str, output: Path | None, model_path: Path | None, scorer: str, threads: int | None,
          n_gpu_layers: int | None, ctx: int | None, too_long: str, pack: int, resume: bool, strict: bool,
          quiet: bool, verbose: bool) -> None:
    """Score instruction data (JSONL or a JSON array; Alpaca, ShareGPT or chat messages; - for stdin).

    Each output line is the input record plus quality_score (quality_scores for conversations).

    Example: localscore score data.jsonl -o scored.jsonl -m deita-quality.q4_k_m.gguf
    """
    from .models import default_model
    from .runner import score_file
    from .scorer import Scorer

    if resume and output is None:
        raise click.UsageError("--resume needs an output file (-o)")
    model = model_path or default_model(scorer, log=None if quiet else _log)
    source = sys.stdin.buffer if input_path == "-" else input_path
    with Scorer.from_path(model, scorer, ctx=ctx, threads=threads, n_gpu_layers=n_gpu_layers, too_long=too_long,
                          pack=pack, verbose=verbose) as model_scorer:
        if not quiet:
            info = model_scorer.engine.info
            _log(f"{info.path.name}: {scorer} scorer, {info.file_type}, context {info.n_ctx}, "
                 f"{info.n_threads} threads")
        summary = score_file(source, output, model_scorer, resume=resume, strict=strict,
                             progress=not quiet and sys.stderr.isatty())
    if not quiet:
        _log(summary.line())


@cli.command()
@click.argument("a", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("b", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("data", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("scorer", "-s", "--scorer", type=click.Choice(list(TEMPLATES)), default="quality", show_default=True,
              help="Which Deita prompt, and which score fields of scored files.")
@click.option("sample", "-n", "--sample", type=click.IntRange(min=1),
              help="Compare N records drawn at random with --seed (default: all).")
@click.option("seed", "--seed", type=int, default=0, show_default=True, help="Seed of the --sample draw.")
@click.option("threads", "-t", "--threads", type=click.IntRange(min=1), help="CPU threads (default: physical cores).")
@click.option("json_path", "--json", type=click.Path(dir_okay=False, allow_dash=True, path_type=str),
              help="Write the figures as JSON to this file (- for stdout).")
@click.option("plot", "--plot", type=click.Path(dir_okay=False, path_type=Path),
              help="Write a PNG: A vs B scatter and the histogram of B - A (needs localscore[plot]).")
def compare(a: Path, b: Path, data: Path, scorer: str, sample: int | None, seed: int, threads: int | None,
            json_path: str | None, plot: Path | None) -> None:
    """Compare two scorers on the same records: A and B are each a scorer GGUF or a file scored from DATA
    (localscore's output, or Deita's JSON with quality_scores lists).

    Prints Spearman, Kendall and Pearson correlations, mean and max |B - A|, and the overlap of the top 5/10/25 %
    per turn and per record.

    Example: localscore compare deita.q4_k_m.gguf deita.f16.gguf data.jsonl --sample 500 --plot compare.png
    """
    from .compare import compare as compare_scorers

    to_stdout = json_path == "-"
    result = compare_scorers(a, b, data, scorer=scorer, sample=sample, seed=seed, threads=threads,
                             json_path=None if to_stdout else json_path, plot=plot, log=_log,
                             progress=sys.stderr.isatty())
    if to_stdout:
        click.echo(result.to_json())
    else:
        click.echo("\n".join(result.table()))
