"""Compare two scorers on the same records: is a quantization (or localscore itself) good enough for my data?

Each side is a scorer GGUF, scored here, or a file already scored from the data file: localscore's output
(JSONL with `quality_score` / `quality_scores`) or Deita's pipeline output (a JSON array of ShareGPT records with
`quality_scores` lists). Records are matched by position in the data file; a scored file must hold one record per
data record, in order, with the same instruction/response text.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ...deita.templates import TEMPLATES, Template
from ...errors import InputError, OutputError
from ...forms.durable import write_file
from ...forms.provenance import read_provenance, scored_by
from ...forms.reader import read_records
from ...forms.records import Record
from ...options import CompareOptions, RunOptions, ScorerOptions
from .score_agreement import agreement
from .scorer_report import Comparison, Excluded
from ..progress import Progress, silent

GGUF_MAGIC = b"GGUF"
NPY_MAGIC = b"\x93NUMPY"


def compare(a: str | os.PathLike, b: str | os.PathLike, data: str | os.PathLike, options: CompareOptions,
            run: RunOptions, *, log: Callable[[str], None] | None = None,
            progress: Progress | None = None) -> Comparison:
    """Compare scorer A with scorer B on the records of `data` (all of them, or `options.sample` records drawn with
    `options.seed`). A and B are each a scorer GGUF (scored here as `run` says, one prompt per decode, so the
    result is reproducible) or a file scored from `data`. Writes the figures as JSON to `options.json_path` and a
    scatter + histogram PNG to `options.plot` when given. Records that cannot be scored on either side are
    excluded and listed."""
    scorer, sample, seed, json_path, plot = options.scorer, options.sample, options.seed, options.json_path, \
        options.plot
    if plot is not None:
        from .plot import require_matplotlib

        require_matplotlib()  # before minutes of scoring, not after
    inputs = {Path(p).resolve() for p in (a, b, data)}
    for output in (json_path, plot):
        if output is not None and Path(output).resolve() in inputs:
            raise OutputError(f"{output} is one of the inputs; write the JSON and the plot to new files")
    template = TEMPLATES[scorer]
    records = [record.reading(template) for record in read_records(data)]
    positions = sample_positions(len(records), sample, seed)
    chosen = [records[i] for i in positions]
    say = log or (lambda line: None)
    # Each side: per chosen record, its turn scores or why it has none.
    sides = []
    for label, path in (("A", a), ("B", b)):
        if is_gguf(path):
            say(f"scoring {len(positions):,} records of {os.fspath(data)} with {label} ({os.fspath(path)})")
            sides.append(_model_scores(path, label, chosen, template, run, progress))
        else:
            sides.append(_file_scores(path, label, positions, records, data, template))

    excluded: list[Excluded] = []
    pairs: list[tuple[list[float], list[float]]] = []
    for record, a_scores, b_scores in zip(chosen, *sides):
        reason = (f"data: {record.error}" if record.error else a_scores if isinstance(a_scores, str)
                  else b_scores if isinstance(b_scores, str) else None)
        if reason is None:
            pairs.append((a_scores, b_scores))
        else:
            excluded.append(Excluded(record.number, reason))
    if not pairs:
        first = f" (record {excluded[0].record}: {excluded[0].reason})" if excluded else ""
        raise InputError(f"no record of {data} could be compared{first}")
    a_turns = np.array([s for a_scores, _ in pairs for s in a_scores])
    b_turns = np.array([s for _, b_scores in pairs for s in b_scores])
    result = Comparison(
        a=os.fspath(a), b=os.fspath(b), data=os.fspath(data), scorer=scorer, sample=sample, seed=seed,
        records=len(records), sampled=len(chosen), excluded=tuple(excluded),
        per_turn=agreement(a_turns, b_turns),
        per_record=agreement(np.array([sum(s) for s, _ in pairs]), np.array([sum(s) for _, s in pairs])),
        a_scores=a_turns, b_scores=b_turns, a_scored_by=_scored_by(a, template), b_scored_by=_scored_by(b, template),
    )
    if json_path is not None:
        write_file(json_path, (result.to_json() + "\n").encode("utf-8"))
    if plot is not None:
        from .plot import write_plot

        write_plot(result, Path(plot))
    return result


def _scored_by(path: str | os.PathLike, template: Template) -> str | None:
    """What scored the file `path`, as it records it; None for a scorer GGUF (scored here)."""
    return None if is_gguf(path) else scored_by(read_provenance(path), (template.name,))


def sample_positions(n: int, sample: int | None, seed: int) -> np.ndarray:
    """Positions of the records to compare, in file order: all n, or `sample` of them drawn without replacement
    by numpy's default_rng(seed), so the same data, sample and seed always give the same records."""
    if sample is None or sample >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=sample, replace=False))


def is_gguf(path: str | os.PathLike) -> bool:
    return _starts_with(path, GGUF_MAGIC)


def is_npy(path: str | os.PathLike) -> bool:
    """Whether `path` is a numpy .npy file (as `localscore embed` writes embeddings)."""
    return _starts_with(path, NPY_MAGIC)


def _starts_with(path: str | os.PathLike, magic: bytes) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(len(magic)) == magic
    except OSError as e:
        raise InputError(f"cannot read {os.fspath(path)}: {e.strerror}") from None


def _model_scores(path: str | os.PathLike, label: str, chosen: Sequence[Record], template: Template,
                  run: RunOptions, progress: Progress | None) -> list[list[float] | str]:
    from ...llama.scorer import Scorer  # loads llama.cpp, which comparing two scored files does not need
    from ..score_step import score_records

    out: list[list[float] | str] = []
    report, tokens = progress or silent, 0
    with Scorer.from_path(path, ScorerOptions(template.name), run) as scorer:
        report(0, len(chosen), 0)
        for scored in score_records(scorer, chosen):
            if scored.error is None:
                out.append(scored.scores)
            else:  # a bad data record, or a prompt over this model's context
                out.append(f"{'data' if scored.record.error else label}: {scored.error}")
            tokens += scored.tokens
            report(len(out), len(chosen), tokens)
    return out


def _file_scores(path: str | os.PathLike, label: str, positions: np.ndarray, records: Sequence[Record],
                 data: str | os.PathLike, template: Template) -> list[list[float] | str]:
    name, data_name = os.fspath(path), os.fspath(data)
    scored = [record.reading(template) for record in read_records(path)]
    if len(scored) != len(records):
        raise InputError(f"{name} has {len(scored):,} records but {data_name} has {len(records):,}: "
                         f"compare a file scored from {data_name} (one result per record, in order)")
    out: list[list[float] | str] = []
    for position in positions:
        record, mine = records[position], scored[position]
        if record.error:
            out.append(f"data: {record.error}")
            continue
        if mine.turns != record.turns:
            raise InputError(f"{name} record {mine.number} does not match {data_name} record {record.number}: "
                             f"{'its text differs' if mine.turns else mine.error}; "
                             f"compare a file scored from {data_name}")
        out.append(_recorded_scores(mine, label, name, template))
    return out


def _recorded_scores(record: Record, label: str, name: str, template: Template) -> list[float] | str:
    data = record.data
    one, many, error = template.score_field, template.scores_field, template.error_field
    if error in data:
        return f"{label}: {data[error]}"
    if one in data:
        values = [data[one]]
    elif many in data:
        values = data[many]
    else:
        other = [f"'{field}'" for t in TEMPLATES.values() if t is not template
                 for field in (t.score_field, t.scores_field) if field in data]
        hint = f"; it has {' and '.join(other)}: was it scored by another scorer?" if other else ""
        raise InputError(f"{name} record {record.number} has no '{one}' or '{many}'{hint}")
    if not isinstance(values, list) or not all(_is_score(v) for v in values):
        field = one if one in data else many
        raise InputError(f"{name} record {record.number}: '{field}' must be a number (a list of numbers for "
                         f"conversations), got {json.dumps(data[field])[:80]}")
    if len(values) != len(record.turns):
        return f"{label}: {len(values)} scores for {len(record.turns)} turns"
    return [float(v) for v in values]


def _is_score(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
