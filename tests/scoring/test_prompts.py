"""Prompts that do not fit the context: cut the middle of the response (then the instruction), keep the
template's head and its final cue, mark the record; or report an error."""

from __future__ import annotations

import pytest

from localscore.llama.engine import Engine
from localscore.deita.prompts import CUT_MARKER, MIN_FIELD_TOKENS, PromptTooLong, build
from localscore.deita.templates import COMPLEXITY, QUALITY

LONG = " ".join(f"Sentence number {i} of a very long answer." for i in range(400))  # ~4,000 tokens


@pytest.fixture(scope="module")
def engine(gguf_file):
    with Engine(gguf_file("f32")) as e:
        yield e


def _tail_ids(engine, template):
    return engine.tokenize(template.format("x", "y"))[-6:]


def test_prompt_that_fits_is_untouched(engine):
    prompt = build(QUALITY, "Say hi.", "Hi!", engine, 256)
    assert not prompt.truncated
    assert prompt.ids == engine.tokenize(QUALITY.format("Say hi.", "Hi!"))


@pytest.mark.parametrize("n_ctx", [256, 1000, 2048])
def test_long_response_loses_its_middle(engine, n_ctx):
    instruction = "Summarize the text below."
    response = "BEGINNING " + LONG + " THE END"
    prompt = build(QUALITY, instruction, response, engine, n_ctx)
    assert prompt.truncated
    assert n_ctx - 16 <= len(prompt.ids) <= n_ctx  # uses the context, not far less
    text = engine.detokenize(prompt.ids[1:])
    assert text.startswith(QUALITY.format(instruction, "BEGINNING")[: len(QUALITY.head) + len(instruction)])
    assert "BEGINNING" in text and "THE END" in text and CUT_MARKER.strip() in text
    assert prompt.ids[-6:] == _tail_ids(engine, QUALITY)  # "##Quality: " survives


def test_long_instruction_is_cut_after_the_response_is_at_its_minimum(engine):
    prompt = build(QUALITY, "QSTART " + LONG + " QEND", "RSTART " + LONG + " REND", engine, 512)
    assert prompt.truncated and len(prompt.ids) <= 512
    text = engine.detokenize(prompt.ids[1:])
    assert all(marker in text for marker in ("QSTART", "QEND", "RSTART", "REND"))
    response_part = text.split("#Response#:\n", 1)[1]
    assert len(engine.tokenize(response_part, bos=False)) <= MIN_FIELD_TOKENS + 16


def test_complexity_cuts_the_instruction(engine):
    prompt = build(COMPLEXITY, "START " + LONG + " END", None, engine, 300)
    assert prompt.truncated and len(prompt.ids) <= 300
    assert prompt.ids[-6:] == _tail_ids(engine, COMPLEXITY)


def test_error_policy_reports_the_length(engine):
    with pytest.raises(PromptTooLong, match=r"prompt is \d+ tokens, longer than the 256-token context"):
        build(QUALITY, "Summarize.", LONG, engine, 256, too_long="error")


def test_context_too_small_for_the_template_is_an_error(engine):
    with pytest.raises(PromptTooLong, match="context is too small"):
        build(QUALITY, "a " * 300, "b " * 300, engine, 100)


def test_braces_and_placeholders_in_user_text_are_kept_literally(engine):
    text = QUALITY.format("Fill {output} and {instruction} in {0}", "x")
    assert "Fill {output} and {instruction} in {0}\n#Response#:\nx \n##Quality: " in text
