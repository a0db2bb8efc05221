"""A record's whole conversation as Deita's embedder reads it: FastChat's `vicuna_v1.1` template, then token ids.

    <s>A chat between ... questions. USER: {q1} ASSISTANT: {a1}</s>USER: {q2} ASSISTANT: {a2}</s>

Deita renders that string and tokenizes it with the SentencePiece (slow) Llama tokenizer, which reads each
`</s>` as the EOS token and starts every piece of text after it afresh (with SentencePiece's leading space).
Here each turn's text is tokenized on its own and EOS ids are put between, which gives the same ids without
ever parsing the user's text for special tokens: a literal "</s>" or "<s>" inside a message stays text (Deita
would read it as a control token; that is the one place where the ids differ, on purpose).
"""

from __future__ import annotations

from typing import Protocol, Sequence

SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. "
          "The assistant gives helpful, detailed, and polite answers to the user's questions.")
USER, ASSISTANT = "USER", "ASSISTANT"
# Deita's embedder truncates the rendered conversation (BOS included) to this many tokens, keeping the start.
MAX_TOKENS = 2048


class Vocabulary(Protocol):
    bos: int
    eos: int

    def tokenize(self, text: str, *, bos: bool = True) -> list[int]: ...


def render(turns: Sequence[tuple[str, str]]) -> list[str]:
    """The template's text, cut at each `</s>` (which is not part of the pieces): one piece per answered turn."""
    pieces = []
    text = SYSTEM + " "
    for instruction, response in turns:
        pieces.append(f"{text}{USER}: {instruction} {ASSISTANT}: {response}")
        text = ""
    return pieces


def conversation_ids(turns: Sequence[tuple[str, str]], vocab: Vocabulary, max_tokens: int = MAX_TOKENS) -> list[int]:
    """BOS, then each turn's tokens followed by EOS; the first `max_tokens` of them."""
    ids = [vocab.bos]
    for piece in render(turns):
        ids += vocab.tokenize(piece, bos=False)
        ids.append(vocab.eos)
        if len(ids) >= max_tokens:
            break
    return ids[:max_tokens]
