"""localscore's prompts are Deita's, token for token: golden ids from Deita's own tokenizer path (transformers'
slow, legacy Llama tokenizer; see tests/support/reference.py), for real prompts with braces, curly quotes and runs of
spaces, whose `" \\n "` / `"  \\n"` whitespace the templates carry."""

from __future__ import annotations

from pathlib import Path

import pytest

from localscore import Scorer
from localscore.options import ScorerOptions
from tests.support.reference import DEITA_PROMPT_IDS, deita_prompt

TOKENIZER = Path(__file__).parents[1] / "fixtures" / "llama-spm" / "tokenizer.model"


def _name(golden: dict) -> str:
    return f"{golden['template']}-{golden['pair']}"


@pytest.fixture(scope="module")
def scorers(gguf_file):
    with Scorer.from_path(gguf_file("f32"), ScorerOptions(scorer="quality")) as quality, \
            Scorer.from_path(gguf_file("f32"), ScorerOptions(scorer="complexity")) as complexity:
        yield {"quality": quality, "complexity": complexity}


@pytest.mark.parametrize("golden", DEITA_PROMPT_IDS, ids=_name)
def test_reference_ids_are_deitas(pairs, golden):
    """The sentencepiece path the parity tests use gives what Deita's tokenizer gives."""
    import sentencepiece

    sp = sentencepiece.SentencePieceProcessor(model_file=str(TOKENIZER))
    instruction, output = pairs[golden["pair"]]
    assert [sp.bos_id(), *sp.encode(deita_prompt(golden["template"], instruction, output))] == golden["ids"]


@pytest.mark.parametrize("golden", DEITA_PROMPT_IDS, ids=_name)
def test_localscore_prompt_ids_are_deitas(scorers, pairs, golden):
    instruction, output = pairs[golden["pair"]]
    prompt = scorers[golden["template"]].prompt(instruction, output)
    assert not prompt.truncated
    assert prompt.ids == golden["ids"]
