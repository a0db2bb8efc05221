"""Every option in one place: each default once, as a named constant; the groups of options that travel together
(where records come from, where results go, how a model runs, what a scorer does, Ray, a selection), each
validated once when it is made; and the table the CLI builds its options from, so that an option's default, what
it accepts and its help are written once.

The public API (api.py) takes the options as flat keywords and builds these groups; everything below it takes
the groups. Help text names other options as `{name}` placeholders, which the CLI spells as its flags (library
code never names a flag). A leaf module: it imports only the errors."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import BinaryIO, Union

from .errors import InputError, UsageError, check_range

PathLike = Union[str, os.PathLike]

SCORERS = ("quality", "complexity")
TOO_LONG_POLICIES = ("truncate", "error")
KERNELS = ("auto", "repacked", "direct")
# Float types first (written by localscore), then the llama.cpp quantizations made from them.
QUANT_TYPES = ("f32", "f16", "bf16", "q8_0", "q6_k", "q5_k_m", "q5_k_s", "q4_k_m", "q4_k_s")

DEFAULT_SCORER = "quality"
DEFAULT_SPLIT = "train"
DEFAULT_KERNELS = "auto"
DEFAULT_TOO_LONG = "truncate"
DEFAULT_PACK = 1
# One decode call holds at most this many prompts (and the shared head's sequence).
MAX_PACK = 64
# The shortest context a prompt can be cut to fit (the engine checks the exact floor per template).
MIN_CTX = 16
DEFAULT_THRESHOLD = 0.9
DEFAULT_SEED = 0
DEFAULT_QUANT = "q4_k_m"
DEFAULT_ACTORS = 1
# What each Ray actor reserves, and runs llama.cpp with, unless told otherwise: one CPU per actor.
DEFAULT_RAY_THREADS = 1


def check_choice(name: str, value: str, choices: tuple[str, ...], what: str) -> None:
    """Refuse `value` for the option `name` unless it is one of `choices`; `what` is the option as the message
    calls it ("scorer", "too-long policy")."""
    if value not in choices:
        listed = " or ".join(choices) if len(choices) == 2 else "one of " + ", ".join(choices)
        raise InputError(f"unknown {what} {value!r}; choose {listed}", options=[name])


@dataclass(frozen=True)
class InputOptions:
    """Where the records come from: a path, `-` or an open stream (forms/reader.py reads every form), and the
    split and configuration of a hub dataset or saved DatasetDict."""

    source: PathLike | BinaryIO
    split: str = DEFAULT_SPLIT
    config: str | None = None


@dataclass(frozen=True)
class OutputOptions:
    """Where results go: the output (None: stdout), whether to continue an interrupted one, and which shard
    ("I/N", see runs/shards.py) of the input it holds."""

    path: PathLike | None = None
    resume: bool = False
    shard: str | None = None

    def __post_init__(self) -> None:
        if self.resume and self.path is None:
            raise UsageError("{resume} needs an output file ({output})", options=["resume", "output"])


@dataclass(frozen=True)
class RunOptions:
    """How a model runs: llama.cpp's CPU threads (None: the physical cores), the layers offloaded to a GPU (None:
    llama.cpp's default, all of them in a GPU build; 0: none, and no device at all), the matrix kernels
    (llama/kernels.py, which refuses an unknown one when it reads the weight type) and whether llama.cpp's log is
    shown."""

    threads: int | None = None
    n_gpu_layers: int | None = None
    kernels: str = DEFAULT_KERNELS
    verbose: bool = False

    def __post_init__(self) -> None:
        # The upper bound is the CPUs of the machine that loads the model (a Ray node may have more): checked there.
        if self.threads is not None:
            check_range("threads", self.threads, 1)


@dataclass(frozen=True)
class ScorerOptions:
    """What a scorer does: which Deita prompt, the context (None: the model's training context), what happens to a
    prompt over it, and how many prompts share a decode call."""

    scorer: str = DEFAULT_SCORER
    ctx: int | None = None
    too_long: str = DEFAULT_TOO_LONG
    pack: int = DEFAULT_PACK

    def __post_init__(self) -> None:
        check_choice("scorer", self.scorer, SCORERS, "scorer")
        check_choice("too_long", self.too_long, TOO_LONG_POLICIES, "too-long policy")
        check_range("pack", self.pack, 1, MAX_PACK, why="prompts per decode call")


@dataclass(frozen=True)
class RayOptions:
    """A run on a Ray cluster: how many actors, each holding one model."""

    actors: int = DEFAULT_ACTORS

    def __post_init__(self) -> None:
        check_range("actors", self.actors, 1)


@dataclass(frozen=True)
class SelectOptions:
    """Deita's selection: how many records, the similarity above which a record is a near-duplicate, and where the
    embeddings come from: the embedder GGUF `model` (only the records the walk reaches are embedded) or a `.npy`
    of `embeddings` written by `embed` from the same input, one of the two."""

    budget: int
    threshold: float = DEFAULT_THRESHOLD
    model: PathLike | None = None
    embeddings: PathLike | None = None

    def __post_init__(self) -> None:
        if (self.model is None) == (self.embeddings is None):
            raise InputError("give the embedder ({model}) or precomputed embeddings ({embeddings}), one of the two",
                             options=["model", "embeddings"])
        check_range("budget", self.budget, 1)
        check_range("threshold", self.threshold, 0, 1)


@dataclass(frozen=True)
class CompareOptions:
    """A comparison of two scorers (or, with `budget` and `threshold`, two embedders' selections): the prompt and
    score fields of `scorer`, `sample` records drawn with `seed` (None: all), and where the figures go (`json_path`,
    a PNG `plot`)."""

    scorer: str = DEFAULT_SCORER
    sample: int | None = None
    seed: int = DEFAULT_SEED
    budget: int | None = None
    threshold: float = DEFAULT_THRESHOLD
    json_path: PathLike | None = None
    plot: PathLike | None = None

    def __post_init__(self) -> None:
        check_choice("scorer", self.scorer, SCORERS, "scorer")
        if self.sample is not None:
            check_range("sample", self.sample, 1)
        check_range("seed", self.seed, 0)  # numpy's default_rng takes no negative seed
        if self.budget is not None:
            check_range("budget", self.budget, 1)
        check_range("threshold", self.threshold, 0, 1)


# The command line's options. The long flag of each is its name with dashes (`n_gpu_layers`: --n-gpu-layers); the
# short flags are the CLI's own (cli.py), one meaning across commands.

@dataclass(frozen=True)
class Option:
    """One option of a command: its API parameter name, its help, its default (None: not given), and what it
    accepts: `kind` "text", "int", "float", "flag", "path" (a file; `dash` admits "-" for stdout) or "choice"
    (one of `choices`), within `low`..`high` for numbers."""

    name: str
    help: str
    default: object = None
    kind: str = "text"
    choices: tuple[str, ...] = ()
    low: float | None = None
    high: float | None = None
    required: bool = False
    metavar: str | None = None
    envvar: str | None = None
    dash: bool = False


SPLIT = Option("split", "Split of a hub dataset or saved DatasetDict.", DEFAULT_SPLIT)
CONFIG = Option("config", "Configuration (subset) of a hub dataset.")
THREADS = Option("threads", "CPU threads (default: physical cores; with {ray}: 1 per actor).", kind="int", low=1)
N_GPU_LAYERS = Option("n_gpu_layers", "Layers to offload to Metal/CUDA/Vulkan (default: all when built with GPU "
                      "support; 0: CPU only).", kind="int")
KERNELS_OPTION = Option("kernels", "llama.cpp's matrix kernels: repacked (a rearranged copy of some weights, more "
                        "memory) or direct (the weights as the file stores them); auto picks what measured faster "
                        "for this CPU and weight type.", DEFAULT_KERNELS, "choice", KERNELS)
QUIET = Option("quiet", "No progress and no summary.", kind="flag")
VERBOSE = Option("verbose", "Show llama.cpp's log (and Ray's, with {ray}).", kind="flag")
# How a command that runs a model runs it.
RUN = (THREADS, N_GPU_LAYERS, KERNELS_OPTION, QUIET, VERBOSE)

SCORER = Option("scorer", "Which Deita prompt to score with.", DEFAULT_SCORER, "choice", SCORERS)
CTX = Option("ctx", "Context in tokens (default: the model's, 2048).", kind="int", low=MIN_CTX)
TOO_LONG = Option("too_long", "Prompts over the context: cut the response's middle, or report an error.",
                  DEFAULT_TOO_LONG, "choice", TOO_LONG_POLICIES)
PACK = Option("pack", "Prompts per decode call, for GPUs; scores may then vary slightly with batch-mates.",
              DEFAULT_PACK, "int", low=1, high=MAX_PACK)
RESUME = Option("resume", "Continue an interrupted run into the same {output} file.", kind="flag")
STRICT = Option("strict", "Stop at the first bad record instead of marking it.", kind="flag")
THRESHOLD = Option("threshold", "Reject a record whose cosine similarity to a kept one is above this.",
                   DEFAULT_THRESHOLD, "float", low=0, high=1)


def _shard(verb: str) -> Option:
    return Option("shard", f"{verb} only the I-th (0-based) of N slices; see `merge`.", metavar="I/N")


def _ray(verb: str, work: str) -> tuple[Option, Option]:
    return (Option("ray", f"{verb} on a Ray cluster ($RAY_ADDRESS, else a local one).", kind="flag"),
            Option("actors", f"With {{ray}}: {work} actors, one model each.", kind="int", low=1))


COMMANDS: dict[str, tuple[Option, ...]] = {
    "convert": (
        Option("output", "GGUF file to write.", kind="path", required=True),
        Option("quant", "Weight type of the output.", DEFAULT_QUANT, "choice", QUANT_TYPES),
    ),
    "score": (
        SPLIT, CONFIG,
        Option("output", "File to write: Parquet for a .parquet name, else JSONL (default: JSONL to stdout).",
               kind="path"),
        Option("model", "Scorer GGUF (default: the official Deita scorer, converted once into the cache).",
               kind="path", envvar="LOCALSCORE_MODEL"),
        SCORER, CTX, TOO_LONG, PACK, _shard("Score"), RESUME, STRICT, *_ray("Score", "scoring"), *RUN,
    ),
    "merge": (
        Option("output", "File to write: Parquet for a .parquet name, else JSONL; .npy for embedding shards.",
               kind="path", required=True),
    ),
    "embed": (
        SPLIT, CONFIG,
        Option("model", "Embedder GGUF (Deita uses Mistral-7B-v0.1).", kind="path", required=True),
        Option("output", ".npy file to write: float32, one row per input record.", kind="path", required=True),
        _shard("Embed"), *_ray("Embed", "embedding"), *RUN,
    ),
    "select": (
        SPLIT, CONFIG,
        Option("budget", "How many records to select (Deita: 6000 or 10000).", kind="int", low=1, required=True),
        THRESHOLD,
        Option("model", "Embedder GGUF: embed only the records the selection reaches.", kind="path"),
        Option("embeddings", "Embeddings made by `localscore embed` from the same INPUT.", kind="path"),
        Option("output", "JSONL file to write (default: stdout).", kind="path"),
        *_ray("Embed the walk's next candidates ahead of it", "embedding"), *RUN,
    ),
    "compare": (
        Option("scorer", "Which Deita prompt, and which score fields of scored files.", DEFAULT_SCORER, "choice",
               SCORERS),
        Option("sample", "Compare N records drawn at random with {seed} (default: all).", kind="int", low=1),
        Option("seed", "Seed of the {sample} draw.", DEFAULT_SEED, "int"),
        Option("threads", "CPU threads (default: physical cores).", kind="int", low=1),
        KERNELS_OPTION,
        Option("json", "Write the figures as JSON to this file (- for stdout).", kind="path", dash=True),
        Option("plot", "Write a PNG: A vs B scatter and the histogram of B - A (needs localscore[plot]).",
               kind="path"),
        Option("embedder", "A and B are embedders: GGUFs or .npy files from `localscore embed DATA`.", kind="flag"),
        Option("budget", "With {embedder}: records to select (default: a fifth of those compared).", kind="int",
               low=1),
        Option("threshold", "With {embedder}: the selection's similarity threshold.", DEFAULT_THRESHOLD, "float",
               low=0, high=1),
    ),
}
