"""The Python API: a loaded scorer that turns (instruction, response) pairs into Deita scores."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence

from ..deita.prompts import MIN_FIELD_TOKENS, TOO_LONG_POLICIES, Prompt, build, shared_head, smallest_context
from ..deita.scoring import expected_score
from ..deita.templates import LABELS, TEMPLATES, Template
from ..errors import InputError, check_range
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

    def __init__(self, engine: Engine, template: Template, *, too_long: str = "truncate", pack: int = 1):
        if too_long not in TOO_LONG_POLICIES:
            raise InputError(f"too_long must be one of {', '.join(TOO_LONG_POLICIES)}, got {too_long!r}")
        if pack < 1 or pack > engine.n_seq_max - 1:
            raise InputError(f"pack must be between 1 and {engine.n_seq_max - 1}, got {pack}")
        self.engine = engine
        self.template = template
        self.too_long = too_long
        self.pack = pack
        self.label_ids = engine.single_token_ids(LABELS)
        # Below this, the head alone may not fit the engine's batch, and no long record could be scored. (After the
        # labels: a vocabulary without them is refused before anything tokenizes with it.)
        check_range("ctx", engine.n_ctx, smallest_context(template, engine), why=f"a {template.name} prompt cut to "
                    f"fit: its fixed text and {MIN_FIELD_TOKENS} tokens of each field")
        engine.set_head(shared_head(template, engine))

    @classmethod
    def from_path(cls, path: str | os.PathLike, scorer: str = "quality", *, ctx: int | None = None,
                  threads: int | None = None, n_gpu_layers: int | None = None, too_long: str = "truncate",
                  pack: int = 1, kernels: str = "auto", verbose: bool = False) -> "Scorer":
        """Load a scorer GGUF. `scorer` picks the prompt ("quality" or "complexity"); `ctx` defaults to the
        model's training context; `pack` > 1 evaluates that many prompts per decode (faster on GPUs, not
        bit-reproducible on CPU); `kernels` is "auto" (the fastest measured for this CPU and weight type),
        "repacked" or "direct" (see localscore.kernels)."""
        if scorer not in TEMPLATES:
            raise InputError(f"unknown scorer {scorer!r}; choose {' or '.join(TEMPLATES)}")
        engine = Engine(path, n_ctx=ctx, n_threads=threads, n_gpu_layers=n_gpu_layers, n_seq_max=pack + 1,
                        kernels=kernels, verbose=verbose)
        try:
            return cls(engine, TEMPLATES[scorer], too_long=too_long, pack=pack)
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


def file_step(path: str | os.PathLike, scorer: str = "quality", *, ctx: int | None = None, pack: int = 1,
              too_long: str = "truncate") -> Step:
    """What a Scorer.from_path(path, scorer, ...) run records of its model, from the file alone (no weights load):
    for a process that leaves the scoring to others (a Ray driver). The record of what ran is empty."""
    header = read_header(model_file(path), LlamaLog(False))
    return scoring_step(fingerprint(path), Path(path).name, scorer=scorer, weights=header.file_type,
                        ctx=ctx or header.n_ctx_train, pack=pack, too_long=too_long)
