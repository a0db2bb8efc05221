"""The commands as Python functions. Each call does all that `localscore <command>` does, with the command's options
as keyword arguments of the same names (`localscore score --n-gpu-layers 0` is `score(..., n_gpu_layers=0)`), and
returns the command's summary; the CLI only parses, calls one of these, and prints what comes back.

`progress` is a callback (see progress.py) and `log` receives the one-line notes a run makes on the way (the model
it loaded, a first-use conversion); both default to silence. Models and readers load inside the call, only when
it needs them: importing this module loads neither llama.cpp nor pyarrow."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Sequence

from .errors import InputError, UsageError
from .forms.reader import existing, user_source
from .options import (DEFAULT_KERNELS, DEFAULT_PACK, DEFAULT_SCORER, DEFAULT_SEED, DEFAULT_SPLIT, DEFAULT_THRESHOLD,
                      DEFAULT_TOO_LONG, CompareOptions, InputOptions, OutputOptions, PathLike, RayOptions,
                      RunOptions, ScorerOptions, SelectOptions)
from .runs.progress import Progress

if TYPE_CHECKING:
    from .forms.provenance import Provenance
    from .runs.compare.embedders import EmbedderComparison
    from .runs.compare.scorer_report import Comparison
    from .runs.embed import EmbedSummary
    from .runs.rows import Rows
    from .runs.score import Summary
    from .runs.select import SelectSummary

Log = Callable[[str], None]


def score(input: PathLike, output: PathLike | None = None, *, model: PathLike | None = None,
          scorer: str = DEFAULT_SCORER, split: str = DEFAULT_SPLIT, config: str | None = None,
          threads: int | None = None, n_gpu_layers: int | None = None, kernels: str = DEFAULT_KERNELS,
          ctx: int | None = None, too_long: str = DEFAULT_TOO_LONG, pack: int = DEFAULT_PACK, shard: str | None = None,
          resume: bool = False, strict: bool = False, ray: bool = False, actors: int | None = None,
          verbose: bool = False, progress: Progress | None = None, log: Log | None = None) -> Summary:
    """Score every record of `input` with the Deita `scorer` ("quality" or "complexity") into `output` (None:
    JSON Lines on stdout; a `.parquet` name: Parquet). `input` is a JSONL or JSON file ("-": stdin), a Parquet file
    or folder, a datasets save_to_disk folder, or `hf://datasets/ORG/NAME` (`split`, `config`). `model` defaults to
    the official scorer, converted once into the cache. `shard` "I/N" scores one slice for `merge`; `resume`
    continues an interrupted run into the same `output`; `strict` stops at the first bad record instead of marking
    it. `ray` scores on a Ray cluster with `actors` actors of `threads` threads each (default 1 and 1)."""
    on_ray = _ray(ray, actors, n_gpu_layers, kernels)
    out = OutputOptions(output, resume, shard)
    scoring = ScorerOptions(scorer, ctx, too_long, pack)
    run = RunOptions(threads, n_gpu_layers, kernels, verbose)
    from .runs.shards import Shard

    # Checked before the model loads (or is converted on first use): a typo costs nothing.
    source = InputOptions(user_source(input), split, config)
    if shard is not None:
        Shard.parse(shard)
    if on_ray is not None:
        from .runs.ray import score_on_ray

        return score_on_ray(source, out, model, scoring, run, on_ray, strict=strict, progress=progress)
    from .llama.scorer import Scorer
    from .runs.default_model import default_model
    from .runs.score import score_file

    with Scorer.from_path(model or default_model(scorer, log=log), scoring, run) as loaded:
        if log:
            info = loaded.engine.info
            log(f"{info.path.name}: {scorer} scorer, {info.file_type}, context {info.n_ctx}, {info.n_threads} threads, "
                f"{info.kernels}, {info.offload}")
        return score_file(source, out, loaded, strict=strict, progress=progress)


def score_rows(rows: Rows, *, model: PathLike | None = None, scorer: str = DEFAULT_SCORER,
               threads: int | None = None, n_gpu_layers: int | None = None, kernels: str = DEFAULT_KERNELS,
               ctx: int | None = None, too_long: str = DEFAULT_TOO_LONG, pack: int = DEFAULT_PACK,
               verbose: bool = False, log: Log | None = None) -> list[dict] | dict[str, list]:
    """Score records held in memory as `score` scores a file's: the same output objects, fields, errors and scores
    (bit for bit at `pack` 1). `rows` is a list of objects, read as a JSON array file is, or a batch of columns (a
    dict of equal-length lists, as `datasets.Dataset.map(..., batched=True)` passes), returned as columns: its own,
    then the scorer's result fields, None where a row has no such field. The model (default: the official scorer,
    converted once into the cache) loads on the first call and stays loaded for the next calls in this process.

    >>> dataset.map(functools.partial(localscore.score_rows, model="deita-quality.q4_k_m.gguf"), batched=True)
    """
    from .runs.default_model import default_model
    from .runs.rows import loaded_scorer
    from .runs.rows import score_rows as score_loaded

    scoring = ScorerOptions(scorer, ctx, too_long, pack)
    run = RunOptions(threads, n_gpu_layers, kernels, verbose)
    return score_loaded(rows, loaded_scorer(model or default_model(scorer, log=log), scoring, run))


def embed(input: PathLike, output: PathLike, *, model: PathLike, split: str = DEFAULT_SPLIT,
          config: str | None = None, threads: int | None = None, n_gpu_layers: int | None = None,
          kernels: str = DEFAULT_KERNELS, shard: str | None = None, ray: bool = False, actors: int | None = None,
          verbose: bool = False, progress: Progress | None = None) -> EmbedSummary:
    """Write the embedding of every record of `input` (any form `score` reads) to `output`, a float32 `.npy` with
    one row per record, computed with the embedder GGUF `model` as Deita's embedder does; a record that cannot be
    embedded gets a row of NaN. Computed embeddings are cached, so calling again after an interruption only
    computes the rest. `shard` "I/N" embeds one slice for `merge`; `ray` embeds on a Ray cluster with `actors`
    actors of `threads` threads each (default 1 and 1), the rows written here, in input order."""
    on_ray = _ray(ray, actors, n_gpu_layers, kernels)
    run = RunOptions(threads, n_gpu_layers, kernels, verbose)
    from .runs.embed import embed_file, open_embedding
    from .runs.shards import Shard

    source = InputOptions(user_source(input), split, config)
    if shard is not None:
        Shard.parse(shard)
    with open_embedding(model, run, on_ray) as embedding:
        return embed_file(source, OutputOptions(output, shard=shard), embedding, progress=progress)


def select(input: PathLike, output: PathLike | None = None, *, budget: int, threshold: float = DEFAULT_THRESHOLD,
           model: PathLike | None = None, embeddings: PathLike | None = None, split: str = DEFAULT_SPLIT,
           config: str | None = None, threads: int | None = None, n_gpu_layers: int | None = None,
           kernels: str = DEFAULT_KERNELS, ray: bool = False, actors: int | None = None, verbose: bool = False,
           progress: Progress | None = None) -> SelectSummary:
    """Write the `budget` best and most diverse records of `input` (scored by both Deita scorers) to `output`
    (None: stdout), best first, each with its evol score and its similarity to the nearest record kept before it.
    Embeddings come from `embeddings` (a `.npy` written by `embed` from the same input) or are computed with the
    embedder GGUF `model` for the records the selection reaches; give one of the two. With `ray`, `actors` Ray
    actors (of `threads` threads each, default 1 and 1) embed the next candidates ahead of the walk, which picks
    exactly what it picks here."""
    on_ray = _ray(ray, actors, n_gpu_layers, kernels)
    if ray and embeddings is not None:
        raise UsageError("{ray} embeds with {model}; precomputed {embeddings} need no actors",
                         options=["ray", "model", "embeddings"])
    choice = SelectOptions(budget, threshold, model, embeddings)
    run = RunOptions(threads, n_gpu_layers, kernels, verbose)
    from .runs.select import select_file

    return select_file(InputOptions(user_source(input), split, config), output, choice,
                       run, on_ray, progress=progress)


def compare(a: PathLike, b: PathLike, data: PathLike, *, scorer: str | None = None, sample: int | None = None,
            seed: int = DEFAULT_SEED, threads: int | None = None, kernels: str = DEFAULT_KERNELS,
            json: PathLike | None = None, plot: PathLike | None = None, embedder: bool = False,
            budget: int | None = None, threshold: float | None = None, progress: Progress | None = None,
            log: Log | None = None) -> Comparison | EmbedderComparison:
    """Compare scorer `a` with scorer `b` on the records of `data` (all, or `sample` drawn with `seed`): each is a
    scorer GGUF, scored here, or a file scored from `data`, with the prompt of `scorer` (default "quality"). Writes
    the figures as JSON to `json` and a PNG to `plot` when given; returns them. With `embedder`, `a` and `b` are
    embedders instead (GGUFs, or `.npy` files from `embed` of `data`), and when `data` is scored, Deita's selection
    of `budget` records at `threshold` (default 0.9) runs with each (see runs/compare/embedders.py)."""
    for path in (a, b, data):
        existing(path)
    run = RunOptions(threads, kernels=kernels)
    if embedder:
        for name, value in (("scorer", scorer), ("plot", plot)):
            if value is not None:
                raise UsageError(f"{{{name}}} compares scorers; drop it or drop {{embedder}}",
                                 options=[name, "embedder"])
        from .runs.compare.embedders import compare_embedders

        options = CompareOptions(sample=sample, seed=seed, budget=budget, json_path=json,
                                 threshold=DEFAULT_THRESHOLD if threshold is None else threshold)
        return compare_embedders(a, b, data, options, run, log=log, progress=progress)
    for name, value in (("budget", budget), ("threshold", threshold)):
        if value is not None:
            raise UsageError(f"{{{name}}} compares embedders' selections: add {{embedder}}", options=[name, "embedder"])
    from .runs.compare.scorers import compare as compare_scorers
    from .runs.compare.scorers import is_npy

    for label, path in (("A", a), ("B", b)):
        if is_npy(path):
            raise UsageError(f"{label} ({os.fspath(path)}) holds embeddings: add {{embedder}} to compare embedders",
                             options=["embedder"])
    options = CompareOptions(scorer or DEFAULT_SCORER, sample, seed, json_path=json, plot=plot)
    return compare_scorers(a, b, data, options, run, log=log, progress=progress)


@dataclass(frozen=True)
class MergeSummary:
    shards: int
    records: int
    output: str

    def line(self) -> str:
        return f"merged {self.shards} shards, {self.records:,} records, into {self.output}"


def merge(inputs: Sequence[PathLike], output: PathLike) -> MergeSummary:
    """Join the outputs of `score(..., shard="I/N")` runs, or of `embed(..., shard="I/N")` runs, in any order, into
    `output`, exactly the single run's output; refuses a missing or repeated shard, or shards of another input,
    scorer or embedder, before writing anything."""
    from .runs.shards import merge_shards

    for path in inputs:
        existing(path)
    return MergeSummary(len(inputs), merge_shards(list(inputs), output), os.fspath(output))


def info(path: PathLike) -> Provenance:
    """What made the output `path` (scores, embeddings, a selection, a shard, a partial output): each step's
    identity (model fingerprint, settings) and record (versions, kernels, backend), as the output records it."""
    from .forms.provenance import SIDECAR_SUFFIX, read_provenance

    provenance = read_provenance(existing(path))
    if provenance is None:
        raise InputError(f"{os.fspath(path)} records nothing of what made it (a Parquet output keeps it in its "
                         f"metadata, any other beside it in {os.path.basename(path)}{SIDECAR_SUFFIX}): it was "
                         "written by another tool, or to a stream")
    return provenance


def _ray(ray: bool, actors: int | None, n_gpu_layers: int | None, kernels: str) -> RayOptions | None:
    """The Ray run asked for (None: this process), refusing what does not go with it."""
    if actors is not None and not ray:
        raise UsageError("{actors} needs {ray}", options=["actors", "ray"])
    if not ray:
        return None
    if n_gpu_layers is not None:
        raise UsageError("{n_gpu_layers} does not work with {ray}", options=["n_gpu_layers", "ray"])
    if kernels != DEFAULT_KERNELS:
        # Each node chooses for its own CPU: one setting named on the driver may not fit (or may crash) there.
        raise UsageError("{kernels} does not work with {ray}: each node chooses its own", options=["kernels", "ray"])
    return RayOptions() if actors is None else RayOptions(actors)

