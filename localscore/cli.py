"""The command line: parses options and calls the Python API. The only module that imports click."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from convert import QUANT_TYPES

from . import __version__
from .errors import LocalscoreError, OutputClosed
from .prompts import TOO_LONG_POLICIES
from .tables import HUB_PREFIX
from .templates import TEMPLATES


# What a shell reports for a process killed by SIGPIPE: `localscore ... | head` ends like any other Unix tool.
_BROKEN_PIPE_STATUS = 141


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
        except OutputClosed:
            # The reader went away (`| head`): stop quietly, as a Unix tool killed by SIGPIPE does; stdout now points
            # at /dev/null so that Python's last flush cannot fail with a second traceback.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            ctx.exit(_BROKEN_PIPE_STATUS)
        except LocalscoreError as e:
            raise click.ClickException(e.render(lambda name: _flag(ctx, name))) from None


def _flag(ctx: click.Context, name: str) -> str:
    """The running command's own spelling of the API parameter `name` (its longest flag)."""
    command = ctx.command.get_command(ctx, ctx.invoked_subcommand) if ctx.invoked_subcommand else ctx.command
    for param in getattr(command, "params", ()):
        if param.name == name and param.opts:
            return max(param.opts, key=len) if param.param_type_name == "option" else param.human_readable_name
    return f"{name}="


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
@click.argument("input_path", metavar="INPUT")
@click.option("output", "-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="File to write: Parquet for a .parquet name, else JSONL (default: JSONL to stdout).")
@click.option("split", "--split", default="train", show_default=True,
              help="Split of a hub dataset or saved DatasetDict.")
@click.option("config", "--config", help="Configuration (subset) of a hub dataset.")
@click.option("model_path", "-m", "--model", type=click.Path(dir_okay=False, path_type=Path),
              envvar="LOCALSCORE_MODEL",
              help="Scorer GGUF (default: the official Deita scorer, converted once into the cache).")
@click.option("scorer", "-s", "--scorer", type=click.Choice(list(TEMPLATES)), default="quality", show_default=True,
              help="Which Deita prompt to score with.")
@click.option("threads", "-t", "--threads", type=click.IntRange(min=1),
              help="CPU threads (default: physical cores; with --ray: per actor, default 1).")
@click.option("n_gpu_layers", "--n-gpu-layers", type=int,
              help="Layers to offload to Metal/CUDA (default: all when built with GPU support).")
@click.option("ctx", "-c", "--ctx", type=click.IntRange(min=16), help="Context in tokens (default: the model's, 2048).")
@click.option("too_long", "--too-long", type=click.Choice(TOO_LONG_POLICIES), default="truncate", show_default=True,
              help="Prompts over the context: cut the response's middle, or report an error.")
@click.option("pack", "--pack", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Prompts per decode call, for GPUs; scores may then vary slightly with batch-mates.")
@click.option("shard", "--shard", metavar="I/N", help="Score only the I-th (0-based) of N slices; see `merge`.")
@click.option("resume", "--resume", is_flag=True, help="Continue an interrupted run into the same -o file.")
@click.option("strict", "--strict", is_flag=True, help="Stop at the first bad record instead of marking it.")
@click.option("quiet", "-q", "--quiet", is_flag=True, help="No progress bar and no summary.")
@click.option("verbose", "-v", "--verbose", is_flag=True, help="Show llama.cpp's log.")
@click.option("ray", "--ray", is_flag=True,
              help="Score on a Ray cluster ($RAY_ADDRESS, else a local one).")
@click.option("actors", "--actors", type=click.IntRange(min=1), help="With --ray: scoring actors, one model each.")
def score(input_path: str, output: Path | None, split: str, config: str | None, model_path: Path | None, scorer: str,
          threads: int | None, n_gpu_layers: int | None, ctx: int | None, too_long: str, pack: int, shard: str | None,
          resume: bool, strict: bool, quiet: bool, verbose: bool, ray: bool, actors: int | None) -> None:
    """Score instruction data: JSONL or a JSON array (- for stdin), a Parquet file or folder of Parquet files, a
    datasets save_to_disk folder, or a hub dataset hf://datasets/ORG/NAME; Alpaca, ShareGPT or chat messages.

    Each output record is the input record plus quality_score (quality_scores for conversations).

    Example: localscore score data.jsonl -o scored.jsonl -m deita-quality.q4_k_m.gguf
    """
    if ray:
        return _score_on_ray(input_path, output, model_path=model_path, scorer=scorer, actors=actors or 1,
                             threads=threads or 1, ctx=ctx, too_long=too_long, pack=pack, strict=strict, quiet=quiet,
                             verbose=verbose, not_with_ray={"--resume": resume, "--n-gpu-layers": n_gpu_layers,
                                                            "--shard": shard, "--config": config})
    if actors is not None:
        raise click.UsageError("--actors needs --ray")
    from .models import default_model
    from .runner import score_file
    from .scorer import Scorer
    from .shards import Shard

    if resume and output is None:
        raise click.UsageError("--resume needs an output file (-o)")
    if input_path != "-" and not input_path.startswith(HUB_PREFIX) and not os.path.exists(input_path):
        # Checked before the model loads (or is converted on first use): a typo should cost nothing.
        raise click.BadParameter(f"{input_path!r} does not exist.", param_hint="'INPUT'")
    if shard is not None:
        Shard.parse(shard)  # a bad I/N, too
    model = model_path or default_model(scorer, log=None if quiet else _log)
    source = sys.stdin.buffer if input_path == "-" else input_path
    with Scorer.from_path(model, scorer, ctx=ctx, threads=threads, n_gpu_layers=n_gpu_layers, too_long=too_long,
                          pack=pack, verbose=verbose) as model_scorer:
        if not quiet:
            info = model_scorer.engine.info
            _log(f"{info.path.name}: {scorer} scorer, {info.file_type}, context {info.n_ctx}, "
                 f"{info.n_threads} threads")
        summary = score_file(source, output, model_scorer, resume=resume, strict=strict,
                             progress=not quiet and sys.stderr.isatty(), split=split, config=config,
                             shard=shard)
    if not quiet:
        _log(summary.line())


@cli.command()
@click.argument("shard_outputs", metavar="SHARD_OUTPUT...", nargs=-1, required=True)
@click.option("output", "-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="File to write: Parquet for a .parquet name, else JSONL.")
def merge(shard_outputs: tuple[str, ...], output: Path) -> None:
    """Join the outputs of `score --shard I/N` runs into the single run's output, checking that every shard is
    there once and all come from one input and scorer.

    Example: localscore merge scored-*-of-4.jsonl -o scored.jsonl
    """
    from .shards import merge_shards

    count = merge_shards(list(shard_outputs), output)
    _log(f"merged {len(shard_outputs)} shards, {count:,} records, into {output}")


def _model_run_options(command):
    """-t, --n-gpu-layers, -q, -v: how a command that runs a model runs it."""
    for option in reversed([
        click.option("threads", "-t", "--threads", type=click.IntRange(min=1),
                     help="CPU threads (default: physical cores)."),
        click.option("n_gpu_layers", "--n-gpu-layers", type=int,
                     help="Layers to offload to Metal/CUDA (default: all when built with GPU support)."),
        click.option("quiet", "-q", "--quiet", is_flag=True, help="No progress and no summary."),
        click.option("verbose", "-v", "--verbose", is_flag=True, help="Show llama.cpp's log."),
    ]):
        command = option(command)
    return command


@cli.command()
@click.argument("input_path", metavar="INPUT", type=click.Path(exists=True, dir_okay=False, allow_dash=True, path_type=str))
@click.option("model_path", "-m", "--model", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Embedder GGUF (Deita uses Mistral-7B-v0.1).")
@click.option("output", "-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help=".npy file to write: float32, one row per input record.")
@_model_run_options
def embed(input_path: str, model_path: Path, output: Path, threads: int | None, n_gpu_layers: int | None,
          quiet: bool, verbose: bool) -> None:
    """Embed every record's conversation as Deita's embedder does (last token, final hidden state).

    Computed embeddings are also cached, so rerunning an interrupted run only computes the rest.

    Example: localscore embed scored.jsonl -m mistral-7b.q8_0.gguf -o embeddings.npy
    """
    from .embed_run import embed_file
    from .embedding import Embedder

    source = sys.stdin.buffer if input_path == "-" else input_path
    with Embedder.from_path(model_path, threads=threads, n_gpu_layers=n_gpu_layers, verbose=verbose) as embedder:
        summary = embed_file(source, output, embedder, progress=not quiet and sys.stderr.isatty())
    if not quiet:
        _log(summary.line())


@cli.command()
@click.argument("input_path", metavar="INPUT", type=click.Path(exists=True, dir_okay=False, allow_dash=True, path_type=str))
@click.option("budget", "-k", "--budget", type=click.IntRange(min=1), required=True,
              help="How many records to select (Deita: 6000 or 10000).")
@click.option("threshold", "--threshold", type=click.FloatRange(0, 1), default=0.9, show_default=True,
              help="Reject a record whose cosine similarity to a kept one is above this.")
@click.option("model_path", "-m", "--model", type=click.Path(dir_okay=False, path_type=Path),
              help="Embedder GGUF: embed only the records the selection reaches.")
@click.option("embeddings_path", "--embeddings", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Embeddings made by `localscore embed` from the same INPUT.")
@click.option("output", "-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="JSONL file to write (default: stdout).")
@_model_run_options
def select(input_path: str, budget: int, threshold: float, model_path: Path | None, embeddings_path: Path | None,
           output: Path | None, threads: int | None, n_gpu_layers: int | None, quiet: bool, verbose: bool) -> None:
    """Select the best and most diverse records of a file scored by both Deita scorers (Deita's method).

    Records are ranked by evol score (sum over turns of complexity x quality) and kept unless too similar to
    one kept before; output is the kept records, best first, with evol_score and nearest_similarity.

    Example: localscore select scored.jsonl --budget 6000 -m mistral-7b.q8_0.gguf -o selected.jsonl
    """
    from .select_run import select_file

    source = sys.stdin.buffer if input_path == "-" else input_path
    summary = select_file(source, output, budget=budget, threshold=threshold, model_path=model_path,
                          embeddings_path=embeddings_path, threads=threads, n_gpu_layers=n_gpu_layers,
                          verbose=verbose, progress=not quiet and sys.stderr.isatty())
    if not quiet:
        _log(summary.line())


def _score_on_ray(input_path: str, output: Path | None, *, quiet: bool, not_with_ray: dict[str, object],
                  **options: object) -> None:
    from .distributed import score_on_ray

    for flag, value in not_with_ray.items():
        if value:
            raise click.UsageError(f"{flag} does not work with --ray")
    if output is None or input_path == "-":
        raise click.UsageError("--ray reads INPUT as a file and needs an output file (-o): give both")
    summary = score_on_ray(input_path, output, progress=not quiet and sys.stderr.isatty(), **options)
    if not quiet:
        for name, actor in summary.actors.items():
            _log(actor.line(name))
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
@click.option("embedder", "--embedder", is_flag=True,
              help="A and B are embedders: GGUFs or .npy files from `localscore embed DATA`.")
@click.option("budget", "-k", "--budget", type=click.IntRange(min=1),
              help="With --embedder: records to select (default: a fifth of those compared).")
@click.option("threshold", "--threshold", type=click.FloatRange(0, 1), default=0.9, show_default=True,
              help="With --embedder: the selection's similarity threshold.")
@click.pass_context
def compare(ctx: click.Context, a: Path, b: Path, data: Path, scorer: str, sample: int | None, seed: int,
            threads: int | None, json_path: str | None, plot: Path | None, embedder: bool, budget: int | None,
            threshold: float) -> None:
    """Compare two scorers on the same records: A and B are each a scorer GGUF or a file scored from DATA
    (localscore's output, or Deita's JSON with quality_scores lists).

    Prints Spearman, Kendall and Pearson correlations, mean and max |B - A|, and the overlap of the top 5/10/25 %
    per turn and per record.

    With --embedder, A and B are two embedders instead: prints the cosine of each record's two embeddings, how
    pairwise similarities move around --threshold, and, when DATA is scored by both scorers, how many of the
    records Deita's selection keeps change.

    Example: localscore compare deita.q4_k_m.gguf deita.f16.gguf data.jsonl --sample 500 --plot compare.png
    """
    given = {name for name in ("scorer", "plot", "budget", "threshold")
             if ctx.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT}
    to_stdout = json_path == "-"
    if embedder:
        for name in sorted(given & {"scorer", "plot"}):
            raise click.UsageError(f"--{name} compares scorers; drop it or drop --embedder")
        from .embedding_compare import compare_embedders

        result = compare_embedders(a, b, data, budget=budget, threshold=threshold, sample=sample, seed=seed,
                                   threads=threads, json_path=None if to_stdout else json_path, log=_log,
                                   progress=sys.stderr.isatty())
    else:
        for name in sorted(given & {"budget", "threshold"}):
            raise click.UsageError(f"--{name} compares embedders' selections: add --embedder")
        from .compare import compare as compare_scorers, is_npy

        for label, path in (("A", a), ("B", b)):
            if is_npy(path):
                raise click.UsageError(f"{label} ({path}) holds embeddings: add --embedder to compare embedders")

        result = compare_scorers(a, b, data, scorer=scorer, sample=sample, seed=seed, threads=threads,
                                 json_path=None if to_stdout else json_path, plot=plot, log=_log,
                                 progress=sys.stderr.isatty())
    if to_stdout:
        click.echo(result.to_json())
    else:
        click.echo("\n".join(result.table()))
