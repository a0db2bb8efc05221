"""A SentencePiece Llama tokenizer (tokenizer.model + added tokens) as a GGUF vocabulary.

Tokens, scores and types are built the way llama.cpp's convert_hf_to_gguf builds them for Llama, so that
llama.cpp tokenizes exactly as the Hugging Face tokenizer the scorers were trained with.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import gguf
from sentencepiece import SentencePieceProcessor

from localscore.errors import ConversionError

TOKENIZER_MODEL = "tokenizer.model"
ADDED_TOKENS = "added_tokens.json"
SPECIAL_TOKENS_MAP = "special_tokens_map.json"
TOKENIZER_CONFIG = "tokenizer_config.json"
SPECIAL_KINDS = ("bos", "eos", "unk", "pad")
# What llama.cpp gives rows beyond the tokenizer's pieces and the tokens added by the fine-tune.
PAD_SCORE = -10000.0
ADDED_SCORE = -1000.0
# convert_hf_to_gguf marks tokenizer_config.json's added tokens like these as control tokens even when the
# file does not call them special.
LOOKS_SPECIAL = ("<pad>", "<mask>", "<2mass>", "[@BOS@]")
LOOKS_SPECIAL_BRACKETS = (("<|", "|>"), ("<\uff5c", "\uff5c>"), ("<unused", ">"))


@dataclass(frozen=True)
class Vocab:
    """A tokenizer as GGUF stores it: one token, score and type per embedding row, and the special ids."""

    tokens: tuple[bytes, ...]
    scores: tuple[float, ...]
    types: tuple[int, ...]
    special_ids: dict[str, int]  # kind (bos/eos/unk/pad) -> token id
    add_bos: bool
    add_eos: bool

    def add_to(self, writer: gguf.GGUFWriter) -> None:
        """Write the vocabulary as GGUF metadata."""
        writer.add_tokenizer_model("llama")
        writer.add_tokenizer_pre("default")
        writer.add_token_list(list(self.tokens))
        writer.add_token_scores(list(self.scores))
        writer.add_token_types(list(self.types))
        setters = {"bos": writer.add_bos_token_id, "eos": writer.add_eos_token_id,
                   "unk": writer.add_unk_token_id, "pad": writer.add_pad_token_id}
        for kind, token_id in self.special_ids.items():
            setters[kind](token_id)
        writer.add_add_bos_token(self.add_bos)
        writer.add_add_eos_token(self.add_eos)


def load_vocab(folder: Path, config: dict, n_rows: int) -> Vocab:
    """The vocabulary of the tokenizer in `folder`, padded to the model's `n_rows` embedding rows."""
    model_path = folder / TOKENIZER_MODEL
    if not model_path.is_file():
        found = "only tokenizer.json (a BPE or fast tokenizer)" if (folder / "tokenizer.json").is_file() else "none"
        raise ConversionError(
            f"unsupported tokenizer in {folder}: localscore converts SentencePiece Llama tokenizers "
            f"(tokenizer.model), found {found}"
        )
    processor = SentencePieceProcessor()
    try:
        processor.LoadFromFile(str(model_path))
    except (OSError, RuntimeError) as error:
        raise ConversionError(f"{model_path} is not a SentencePiece model ({error}); download it again") from None
    if processor.vocab_size() > n_rows:
        raise ConversionError(
            f"{model_path} has {processor.vocab_size()} pieces but the model has {n_rows} embedding rows; "
            "the tokenizer does not belong to this checkpoint"
        )

    tokens = [f"[PAD{i}]".encode() for i in range(n_rows)]
    scores = [PAD_SCORE] * n_rows
    types = [gguf.TokenType.UNUSED] * n_rows
    for i in range(processor.vocab_size()):
        tokens[i] = processor.IdToPiece(i).encode()
        scores[i] = processor.GetScore(i)
        types[i] = _piece_type(processor, i)
    tokenizer_config = _read_json(folder / TOKENIZER_CONFIG)
    named = tokenizer_config | _read_json(folder / SPECIAL_TOKENS_MAP)
    for token_id, content, token_type in _added_tokens(folder, tokenizer_config, _named_tokens(named)):
        if token_id >= n_rows:
            raise ConversionError(
                f"{folder}: added token {content!r} has id {token_id}, beyond the model's {n_rows} embedding rows"
            )
        tokens[token_id] = content.encode()
        scores[token_id] = ADDED_SCORE
        types[token_id] = token_type

    add_bos, add_eos = tokenizer_config.get("add_bos_token"), tokenizer_config.get("add_eos_token")
    return Vocab(
        tokens=tuple(tokens),
        scores=tuple(scores),
        types=tuple(int(t) for t in types),
        special_ids=_special_ids(named, config, processor, tokens),
        add_bos=add_bos if isinstance(add_bos, bool) else True,  # Llama's tokenizer adds <s>, never </s>
        add_eos=add_eos if isinstance(add_eos, bool) else False,
    )


def _piece_type(processor: SentencePieceProcessor, i: int) -> gguf.TokenType:
    if processor.IsUnknown(i):
        return gguf.TokenType.UNKNOWN
    if processor.IsControl(i):
        return gguf.TokenType.CONTROL
    if processor.IsUnused(i):
        return gguf.TokenType.UNUSED
    if processor.IsByte(i):
        return gguf.TokenType.BYTE
    return gguf.TokenType.NORMAL


def _added_tokens(folder: Path, tokenizer_config: dict, special: set[str]) -> list[tuple[int, str, gguf.TokenType]]:
    """(id, content, type) of the tokens added on top of tokenizer.model: control when the tokenizer files name
    them as bos/eos/unk/pad (`special`) or they look special, else user-defined; tokenizer_config.json's
    added_tokens_decoder, read last so it wins, marks special ones as control.

    Unlike llama.cpp's converter, added_tokens.json's "<pad>" becomes a control token: llama.cpp matches
    user-defined tokens inside user text even when special tokens are not parsed, and the scorers were trained
    on SentencePiece ids, where a literal "<pad>" in a response is plain text."""
    added = [(token_id, content,
              gguf.TokenType.CONTROL if content in special or _looks_special(content) else gguf.TokenType.USER_DEFINED)
             for content, token_id in _read_json(folder / ADDED_TOKENS).items()]
    decoder = tokenizer_config.get("added_tokens_decoder", {})
    if not isinstance(decoder, dict):
        raise ConversionError(f"{folder / TOKENIZER_CONFIG}: added_tokens_decoder should be a JSON object")
    for token_id, data in decoder.items():
        content = data.get("content") if isinstance(data, dict) else None
        if not str(token_id).isdigit() or not isinstance(content, str):
            raise ConversionError(f"{folder / TOKENIZER_CONFIG}: malformed added_tokens_decoder entry {token_id!r}")
        if data.get("special") or _looks_special(content):
            added.append((int(token_id), content, gguf.TokenType.CONTROL))
        else:  # llama.cpp pre-normalizes the SentencePiece space in user-defined tokens
            added.append((int(token_id), content.replace("\u2581", " "), gguf.TokenType.USER_DEFINED))
    for token_id, content, _ in added:
        if not isinstance(token_id, int) or isinstance(token_id, bool) or token_id < 0:
            raise ConversionError(f"{folder}: added token {content!r} has the invalid id {token_id!r}")
    return added


def _named_tokens(named: dict) -> set[str]:
    tokens = (named.get(f"{kind}_token") for kind in SPECIAL_KINDS)
    return {t.get("content") if isinstance(t, dict) else t for t in tokens} - {None}


def _looks_special(content: str) -> bool:
    brackets = any(content.startswith(a) and content.endswith(b) for a, b in LOOKS_SPECIAL_BRACKETS)
    return content in LOOKS_SPECIAL or brackets


def _special_ids(named: dict, config: dict, processor: SentencePieceProcessor, tokens: list[bytes]) -> dict[str, int]:
    """bos/eos/unk/pad ids, looked up as gguf's SpecialVocab does: the token the tokenizer files name (`named`:
    tokenizer_config.json updated by special_tokens_map.json) first, then config.json's <kind>_token_id, then
    (bos/eos/unk) the SentencePiece model's own ids."""
    by_text = {}
    for token_id, token in enumerate(tokens):
        by_text.setdefault(token, token_id)
    piece_ids = {"bos": processor.bos_id(), "eos": processor.eos_id(), "unk": processor.unk_id()}
    ids = {}
    for kind in SPECIAL_KINDS:
        token = named.get(f"{kind}_token")
        content = token.get("content") if isinstance(token, dict) else token
        from_config = config.get(f"{kind}_token_id")
        if isinstance(from_config, list) and from_config:
            from_config = from_config[0]
        candidates = [by_text.get(content.encode()) if isinstance(content, str) else None,
                      from_config, piece_ids.get(kind)]
        token_id = next((c for c in candidates if isinstance(c, int) and 0 <= c < len(tokens)), None)
        if token_id is not None:
            ids[kind] = token_id
    return ids


def _read_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ConversionError(f"{path} is not valid JSON ({error}); download it again") from None
    if not isinstance(data, dict):
        raise ConversionError(f"{path} should hold a JSON object")
    return data
