"""Records' text -> prompt token ids: fill the template, tokenize, and keep the prompt inside the context."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

from ..errors import InputError
from ..options import DEFAULT_TOO_LONG
from .templates import Template

# Marks where the middle of a field was cut; visible to the scorer, which is the honest thing to show it.
CUT_MARKER = " [...] "
# Below this many tokens a field says too little to be worth scoring; shorten the other field instead.
MIN_FIELD_TOKENS = 64


class Tokenizer(Protocol):
    def tokenize(self, text: str, *, bos: bool = True) -> list[int]: ...

    def detokenize(self, ids: Sequence[int]) -> str: ...


class PromptTooLong(InputError):
    """A prompt that does not fit the context under the chosen policy."""


@dataclass(frozen=True)
class Prompt:
    ids: list[int]
    truncated: bool = False


def shared_head(template: Template, tokenizer: Tokenizer) -> list[int]:
    """The token ids every prompt of this template starts with.

    The fixed text before the first placeholder is not always a token boundary (SentencePiece merges a
    trailing space into the next word), so the head is the part whose tokens stay the same whatever follows.
    The engine still checks each prompt against it.
    """
    probes = ("a", " a", "A", "\n", "1", "#", "é", "{", " ", "\t")
    runs = [tokenizer.tokenize(template.head + probe) for probe in probes]
    n = 0
    while all(len(run) > n and run[n] == runs[0][n] for run in runs):
        n += 1
    return runs[0][:n]


def build(template: Template, instruction: str, response: str | None, tokenizer: Tokenizer, n_ctx: int,
          too_long: str = DEFAULT_TOO_LONG) -> Prompt:
    """Token ids of the filled template, at most n_ctx long.

    Too long with too_long="truncate": the middle of the response is cut (then the instruction's), so the
    template's head and its final "##Quality: " cue always survive; with "error": PromptTooLong.
    """
    values = {"instruction": instruction, "output": response or ""}
    ids = tokenizer.tokenize(template.format(**values))
    if len(ids) <= n_ctx:
        return Prompt(ids)
    if too_long == "error":
        raise PromptTooLong(f"prompt is {len(ids)} tokens, longer than the {n_ctx}-token context "
                            "(score with a larger context, or truncate prompts that are too long)")
    for field in ("output", "instruction") if template.uses_response else ("instruction",):
        while len(ids) > n_ctx:
            field_ids = tokenizer.tokenize(values[field], bos=False)
            keep = max(len(field_ids) - (len(ids) - n_ctx) - len(CUT_MARKER), MIN_FIELD_TOKENS)
            if keep >= len(field_ids):
                break
            candidate = {**values, field: _cut(field_ids, keep, tokenizer)}
            candidate_ids = tokenizer.tokenize(template.format(**candidate))
            if len(candidate_ids) >= len(ids):  # the marker outweighs what is left to cut
                break
            values, ids = candidate, candidate_ids
    if len(ids) > n_ctx:
        raise PromptTooLong(f"prompt is {len(ids)} tokens even with its fields shortened to "
                            f"{MIN_FIELD_TOKENS} tokens; the {n_ctx}-token context is too small (score with a larger "
                            "one)")
    return Prompt(ids, truncated=True)


def smallest_context(template: Template, tokenizer: Tokenizer) -> int:
    """The context in which a long prompt still fits once cut: the template's fixed text and each field it fills
    cut to MIN_FIELD_TOKENS tokens around the marker, measured on a probe, plus a token on each side of each marker
    (where the text of a real field and the marker join, they tokenize a token longer or shorter than the probe)."""
    probe = _cut(tokenizer.tokenize(" ".join(["text"] * 2 * MIN_FIELD_TOKENS), bos=False), MIN_FIELD_TOKENS,
                 tokenizer)
    fields = 2 if template.uses_response else 1
    return len(tokenizer.tokenize(template.format(probe, probe if fields == 2 else ""))) + 2 * fields


def _cut(field_ids: list[int], keep: int, tokenizer: Tokenizer) -> str:
    """The field's text with all but its first and last `keep` / 2 tokens replaced by the marker."""
    left = keep - keep // 2
    return (tokenizer.detokenize(field_ids[:left]) + CUT_MARKER
            + tokenizer.detokenize(field_ids[len(field_ids) - keep // 2:]))
