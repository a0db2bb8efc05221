"""The Python API: a loaded scorer that turns (instruction, response) pairs into Deita scores."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence

from ..deita.prompts import MIN_FIELD_TOKENS, Prompt, build, shared_head, smallest_context
from ..deita.scoring import expected_score
from ..deita.templates import LABELS, TEMPLATES
from ..errors import check_range
from ..options import RunOptions, ScorerOptions
from ..forms.provenance import Step, scoring_step
from .engine import Engine
from .fingerprint import fingerprint
from .log import LlamaLog
from .model import model_file, read_header


class Scorer:
    """A Deita scorer loaded once from a GGUF file.

    >>> with Scorer.from_path("deita-quality.q4_k_m.gguf") as scorer:
    ...     scorer.score("What is 2+2?", "4")
    """

    def __init__(self, engine: Engine, options: ScorerOptions = ScorerOptions()):
        self.engine = engine
        self.options = options
        self.template = TEMPLATES[options.scorer]
        self.too_long = options.too_long
        self.pack = options.pack
        # One sequence holds the shared head; each prompt of a decode call needs one more.
        check_range("pack", options.pack, 1, engine.n_seq_max - 1, why="the sequences of this engine")
        self.label_ids = engine.single_token_ids(LABELS)
        # Below this, the head alone may not fit the engine's batch, and no long record could be scored. (After the
        # labels: a vocabulary without them is refused before anything tokenizes with it.)
        check_range("ctx", engine.n_ctx, smallest_context(self.template, engine), why=f"a {self.template.name} "
                    f"prompt cut to fit: its fixed text and {MIN_FIELD_TOKENS} tokens of each field")
        engine.set_head(shared_head(self.template, engine))

    @classmethod
    def from_path(cls, path: str | os.PathLike, options: ScorerOptions = ScorerOptions(),
                  run: RunOptions = RunOptions()) -> "Scorer":
        """Load a scorer GGUF with the Deita prompt, context, too-long policy and packing of `options` (see
        options.ScorerOptions: `pack` > 1 evaluates that many prompts per decode, faster on GPUs, not
        bit-reproducible), run as `run` says (threads, GPU layers, kernels: options.RunOptions)."""
        engine = Engine(path, run, n_ctx=options.ctx, n_seq_max=options.pack + 1)
        try:
            return cls(engine, options)
        except BaseException:
            engine.close()
            raise

    def made(self) -> Step:
        """What this scorer's results record of it (forms/provenance.py)."""
        engine = self.engine
        return scoring_step(engine.fingerprint, engine.path.name, scorer=self.template.name, weights=engine.file_type,
                            ctx=engine.n_ctx, pack=self.pack, too_long=self.too_long, ran=(engine.setup(),))

    def prompt(self, instruction: str, response: str | None = None) -> Prompt:
        return build(self.template, instruction, response, self.engine, self.engine.n_ctx, self.too_long)

    def score_prompts(self, prompts: Sequence[Prompt]) -> list[float]:
        """Scores of prompts built by prompt(); the engine packs up to `pack` of them per decode call."""
        return [expected_score(logits) for logits in self.engine.logits_many([p.ids for p in prompts], self.label_ids)]

    def score(self, instruction: str, response: str | None = None) -> float:
        """The score of one pair (the response is ignored by the complexity scorer)."""
        return self.score_prompts([self.prompt(instruction, response)])[0]

    def score_many(self, pairs: Iterable[tuple[str, str | None]]) -> list[float]:
        """Scores of many (instruction, response) pairs, in order; all prompts are tokenized first."""
        return self.score_prompts([self.prompt(instruction, response) for instruction, response in pairs])

    def close(self) -> None:
        self.engine.close()

    def __enter__(self) -> "Scorer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def file_step(path: str | os.PathLike, options: ScorerOptions = ScorerOptions()) -> Step:
    """What a Scorer.from_path(path, options) run records of its model, from the file alone (no weights load): for
    a process that leaves the scoring to others (a Ray driver). The record of what ran is empty."""
    header = read_header(model_file(path), LlamaLog(False))
    return scoring_step(fingerprint(path), Path(path).name, scorer=options.scorer, weights=header.file_type,
                        ctx=options.ctx or header.n_ctx_train, pack=options.pack, too_long=options.too_long)
