"""Deita's scorers and selection as data-juicer operators: `deita_quality_score_filter`,
`deita_complexity_score_filter` and `deita_diversity_selector`. data-juicer imports this module through the
`data_juicer.ops` entry point when it loads its operators; nothing in localscore imports it.

The filters score with localscore's own scoring step (api.score_rows), so a sample's per-turn scores are exactly
`localscore score`'s for the same record. Each worker process (local executor) or Ray actor loads its model once,
on its first batch. The process that builds the recipe checks every option and that the model file is a GGUF, so
a mistake in the recipe is one line, raised where dj-process builds its operators, before any sample is
processed."""

import math
import os
from contextlib import contextmanager
from typing import Optional

from data_juicer.ops.base_op import OP, OPERATORS, Filter, Pipeline, Selector
from data_juicer.utils.constant import Fields
from data_juicer.utils.ray_utils import is_ray_mode
from loguru import logger

from .api import score_rows
from .deita.selection import EVOL_FIELD, SIMILARITY_FIELD
from .deita.templates import COMPLEXITY, QUALITY, TEMPLATES
from .errors import InputError, LocalscoreError, ModelError, UsageError
from .forms.records import make_record
from .forms.samples import SampleKeys
from .options import (DEFAULT_KERNELS, DEFAULT_THRESHOLD, DEFAULT_TOO_LONG, KERNELS, TOO_LONG_POLICIES, RayOptions,
                      RunOptions, SelectOptions, check_choice)

# What a filter does with a sample it cannot score (it never gets a score): keep it, flagged, or drop it.
UNSCORED_POLICIES = ("keep", "drop")
PREFIX = "deita_"


def stats_key(scorer: str, kind: str) -> str:
    """The stats key of one of a scorer's results: "score" (the mean over turns: what min/max_score bound),
    "scores" (one per turn), "error" (why the sample has no score; "" when it has one), "truncated"."""
    return f"{PREFIX}{scorer}_{kind}"


EVOL_KEY = PREFIX + EVOL_FIELD
SIMILARITY_KEY = PREFIX + SIMILARITY_FIELD


class _DeitaScoreFilter(Filter):
    """Keeps samples whose Deita score (the mean of its turns' scores) lies within [min_score, max_score]."""

    _batched_op = True
    _scorer = ""

    def __init__(self, model: Optional[str] = None, min_score: Optional[float] = None,
                 max_score: Optional[float] = None, unscored: str = "keep", threads: Optional[int] = None,
                 n_gpu_layers: Optional[int] = None, kernels: str = DEFAULT_KERNELS,
                 too_long: str = DEFAULT_TOO_LONG, *args, **kwargs):
        """
        Initialization method.

        :param model: the scorer GGUF; None: the official Deita scorer, converted once into localscore's cache.
        :param min_score: the lowest score kept (None: no lower bound).
        :param max_score: the highest score kept (None: no upper bound).
        :param unscored: what to do with a sample that cannot be scored ("keep": keep it, its stats saying why;
            "drop"). It never gets a score.
        :param threads: llama.cpp threads per worker process or Ray actor (default: `num_cpus` rounded up, else
            1); `num_cpus`, the CPUs each one reserves, defaults to it.
        :param n_gpu_layers: layers on the GPU (on Ray only with `num_gpus`: an actor without a GPU has none).
        :param kernels: llama.cpp's matrix kernels: auto, repacked or direct (on Ray: auto, chosen per node).
        :param too_long: a prompt longer than the model's context: truncate (its middle) or error (unscored).
        :param args: extra args
        :param kwargs: extra args
        """
        # One model per Ray actor, loaded once; data-juicer's default for a CPU operator is a task per batch.
        if kwargs.get("ray_execution_mode") is None:
            kwargs["ray_execution_mode"] = "actor"
        super().__init__(*args, **kwargs)
        with _named(self._name):
            self.min_score, self.max_score = _number("min_score", min_score), _number("max_score", max_score)
            check_choice("unscored", unscored, UNSCORED_POLICIES, "unscored policy")
            check_choice("kernels", kernels, KERNELS, "kernels")
            check_choice("too_long", too_long, TOO_LONG_POLICIES, "too-long policy")
            self.unscored, self.kernels, self.too_long = unscored, kernels, too_long
            self.threads = _threads(threads, self.num_cpus)
            self.n_gpu_layers = _number("n_gpu_layers", n_gpu_layers, whole=True)
            if self.num_cpus is None:  # what Ray reserves per actor (and data-juicer counts per worker process)
                self.num_cpus = self.threads
            if is_ray_mode():
                _check_ray_placement(kernels, self.n_gpu_layers, self.num_gpus)
            self.model = _checked_model(model, self._scorer)
        self.sample_keys = SampleKeys(self.query_key, self.response_key, self.history_key, self.instruction_key,
                                      self.text_key)
        self.keys = {kind: stats_key(self._scorer, kind) for kind in ("score", "scores", "error", "truncated")}

    def run(self, dataset, *, exporter=None, tracer=None, reduce=True):
        from datasets import Dataset

        if isinstance(dataset, Dataset) and Fields.stats not in dataset.features:
            # data-juicer starts the stats column with {} in every row, which datasets (>= 5) stores as Json: that
            # keeps floats to 10 digits (pandas' ujson). Started with this filter's keys, it is typed, and exact.
            dataset = dataset.add_column(Fields.stats, [dict.fromkeys(self.keys.values())] * len(dataset))
        return super().run(dataset, exporter=exporter, tracer=tracer, reduce=reduce)

    def compute_stats_batched(self, samples, rank=None, context=False):
        all_stats = samples[Fields.stats]
        rows, positions = [], []
        for i, stats in enumerate(all_stats):
            if stats.get(self.keys["score"]) is not None:  # computed already: an earlier run's stats are reused
                continue
            data, problem = self.sample_keys.record_data({key: samples[key][i] for key in samples})
            if problem is not None:
                stats.update(self._stats([], problem))
                continue
            rows.append(data)
            positions.append(i)
        if rows:
            template = TEMPLATES[self._scorer]
            outputs = score_rows(rows, model=self.model, scorer=self._scorer, threads=self.threads,
                                 n_gpu_layers=self.n_gpu_layers, kernels=self.kernels, too_long=self.too_long)
            for i, output in zip(positions, outputs):
                error = output.get(template.error_field)
                scores = output.get(template.scores_field, [output.get(template.score_field)])
                all_stats[i].update(self._stats([] if error else scores, error,
                                                output.get(template.truncated_field, False)))
        return samples

    def _stats(self, scores: list, error: Optional[str], truncated: bool = False) -> dict:
        # Every sample gets every key, with one type each, so that the stats column keeps one Arrow schema.
        return {self.keys["score"]: math.fsum(scores) / len(scores) if scores else math.nan,
                self.keys["scores"]: [float(score) for score in scores], self.keys["error"]: error or "",
                self.keys["truncated"]: truncated}

    def process_batched(self, samples):
        return map(self._keep, samples[Fields.stats])

    def _keep(self, stats: dict) -> bool:
        if stats[self.keys["error"]]:
            return self.unscored == "keep"
        return self.get_keep_boolean(stats[self.keys["score"]], self.min_score, self.max_score)


@OPERATORS.register_module("deita_quality_score_filter")
class DeitaQualityScoreFilter(_DeitaScoreFilter):
    """Filter to keep samples whose Deita quality score (of the response to the instruction, 1 to 6) lies in a
    range. Computed with localscore from the scorer's logits on the CPU (or GPU), into the stats
    'deita_quality_score' (mean over turns), 'deita_quality_scores' (one per turn), 'deita_quality_error' (why a
    sample has no score) and 'deita_quality_truncated'; stats already there are reused."""

    _scorer = QUALITY.name


@OPERATORS.register_module("deita_complexity_score_filter")
class DeitaComplexityScoreFilter(_DeitaScoreFilter):
    """Filter to keep samples whose Deita complexity score (of the instruction, 1 to 6) lies in a range.
    Computed with localscore from the scorer's logits on the CPU (or GPU), into the stats
    'deita_complexity_score' (mean over turns), 'deita_complexity_scores' (one per turn), 'deita_complexity_error'
    (why a sample has no score) and 'deita_complexity_truncated'; stats already there are reused."""

    _scorer = COMPLEXITY.name


@OPERATORS.register_module("deita_diversity_selector")
class DeitaDiversitySelector(Selector, Pipeline):
    """Selector of Deita's best and most diverse samples, as `localscore select` picks them: samples ranked by evol
    score (the sum over turns of complexity x quality, from the two Deita filters' stats), then walked best first,
    each kept unless its embedding's cosine similarity to one already kept exceeds `threshold`, until `budget` are
    kept. Embeddings are computed only for the samples the walk reaches. The selected samples come best first, with
    'deita_evol_score' and 'deita_nearest_similarity' in their stats; unscored samples are never selected."""

    # data-juicer's Ray executor runs a whole-dataset step only as a Pipeline; the local one runs a Selector.
    _supported_exec_modes = ("default", "ray")

    def __init__(self, model: str = "", budget: int = 1000, threshold: float = DEFAULT_THRESHOLD,
                 threads: Optional[int] = None, n_gpu_layers: Optional[int] = None, kernels: str = DEFAULT_KERNELS,
                 *args, **kwargs):
        """
        Initialization method.

        :param model: the embedder GGUF (Deita's is Mistral-7B based).
        :param budget: how many samples to select at most.
        :param threshold: the cosine similarity above which a sample is a near-duplicate of one kept.
        :param threads: llama.cpp threads (on Ray: per embedding actor, `num_proc` actors).
        :param n_gpu_layers: layers on the GPU (not on Ray).
        :param kernels: llama.cpp's matrix kernels: auto, repacked or direct (on Ray: auto, chosen per node).
        :param args: extra args
        :param kwargs: extra args
        """
        super().__init__(*args, **kwargs)
        with _named(self._name):
            self.budget = _number("budget", budget, whole=True, optional=False)
            self.threshold = _number("threshold", threshold, optional=False)
            check_choice("kernels", kernels, KERNELS, "kernels")
            self.kernels = kernels
            self.threads = _threads(threads, self.num_cpus)
            self.n_gpu_layers = _number("n_gpu_layers", n_gpu_layers, whole=True)
            if is_ray_mode():
                _check_ray_placement(kernels, self.n_gpu_layers, None)
            if not model:
                raise ModelError("give the embedder GGUF as 'model'")
            self.model = _checked_model(model, None)
            # Checks budget and threshold as `localscore select` does.
            self.select_options = SelectOptions(self.budget, self.threshold, self.model)
        self.sample_keys = SampleKeys(self.query_key, self.response_key, self.history_key, self.instruction_key,
                                      self.text_key)

    def run(self, dataset, *, exporter=None, tracer=None):
        from datasets import Dataset

        if isinstance(dataset, Dataset):
            # OP.run only readies the dataset; Selector.run would go on to Pipeline.run, which only refuses.
            return self.process(OP.run(self, dataset))
        return self._select_ray(dataset)

    def process(self, dataset):
        picks = self._pick(dataset.to_list())
        selected = dataset.select([index for index, _, _ in picks])
        added = [{EVOL_KEY: evol, SIMILARITY_KEY: similarity} for _, evol, similarity in picks]
        return selected.map(lambda sample, i: {Fields.stats: {**sample[Fields.stats], **added[i]}},
                            with_indices=True, desc=self._name + "_stats")

    def _select_ray(self, dataset):
        import pyarrow as pa
        import ray

        rows = pa.concat_tables(ray.get(dataset.to_arrow_refs())).to_pylist()
        picks = self._pick(rows)
        selected = [{**rows[index], Fields.stats: {**rows[index][Fields.stats], EVOL_KEY: evol,
                                                   SIMILARITY_KEY: similarity}} for index, evol, similarity in picks]
        return ray.data.from_arrow(pa.Table.from_pylist(selected))

    def _pick(self, rows: list) -> list:
        """(row index, evol score, nearest similarity) of each selected row, best first."""
        from .runs.select import select_records

        records = [make_record(number, self._record_data(number, row)) for number, row in enumerate(rows, 1)]
        ray_mode = is_ray_mode()
        actors = self.num_proc if ray_mode and isinstance(self.num_proc, int) and self.num_proc > 0 else 1
        selection, scores, summary = select_records(
            records, self.select_options,
            RunOptions(self.threads, self.n_gpu_layers, self.kernels), RayOptions(actors) if ray_mode else None)
        logger.info(f"{self._name}: {summary.line()}")
        return [(index, float(scores[index]), similarity)
                for index, similarity in zip(selection.indices, selection.similarities)]

    def _record_data(self, number: int, row: dict) -> dict:
        """The record select reads for `row`: its turns and both scorers' per-turn scores (or error)."""
        data, _ = self.sample_keys.record_data(row)
        stats = row.get(Fields.stats) or {}
        fields = {}
        for template in (QUALITY, COMPLEXITY):
            key = stats_key(template.name, "scores")
            if key not in stats:
                raise UsageError(f"{self._name}: sample {number} has no '{key}' in its stats: put "
                                 "deita_quality_score_filter and deita_complexity_score_filter before it")
            error = stats[stats_key(template.name, "error")]
            fields.update({template.error_field: error} if error else {template.scores_field: list(stats[key])})
        return {**(data or {}), **fields}


@contextmanager
def _named(op: str):
    """An operator's errors begin with its name: dj-process shows them among every other operator's."""
    try:
        yield
    except LocalscoreError as e:
        raise type(e)(f"{op}: {e}") from None


def _number(name: str, value: object, *, whole: bool = False, optional: bool = True):
    """A number from the recipe, as YAML gave it: data-juicer's preflight checks only options typed without
    Optional, so a quoted "3" would otherwise reach a comparison deep in a worker."""
    if value is None and optional:
        return None
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value)
            or (whole and not float(value).is_integer())):
        raise InputError(f"'{name}' must be {'a whole number' if whole else 'a number'}, got {value!r}")
    return int(value) if whole else value


def _threads(threads: Optional[int], num_cpus: Optional[float]) -> int:
    """llama.cpp's threads: as given, else the CPUs the operator reserves (`num_cpus`, rounded up), else 1."""
    count = _number("threads", threads, whole=True)
    if count is None:
        count = math.ceil(_number("num_cpus", num_cpus)) if num_cpus else 1
    RunOptions(threads=count)  # at least 1, as `localscore score` checks it
    return count


def _check_ray_placement(kernels: str, n_gpu_layers: Optional[int], num_gpus: Optional[float]) -> None:
    """The rules of `localscore score`'s Ray runs: each node chooses its kernels, and an actor has GPU layers only
    when it is given a GPU."""
    if kernels != DEFAULT_KERNELS:
        raise UsageError("'kernels' does not work on Ray: each node chooses its own")
    if n_gpu_layers is not None and not num_gpus:
        raise UsageError("'n_gpu_layers' on Ray needs 'num_gpus': an actor without a GPU has no GPU layers")


def _checked_model(model: object, scorer: Optional[str]) -> str:
    """The model's path, checked here, once: in a worker the error would surface deep in data-juicer's pool."""
    from .llama.model import check_model
    from .runs.default_model import default_model

    if model is not None and not isinstance(model, (str, os.PathLike)):
        raise InputError(f"'model' must be the path of a GGUF file, got {model!r}")
    return os.fspath(check_model(model if model is not None else default_model(scorer)))
