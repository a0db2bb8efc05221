"""Embeddings as Deita's embedder computes them (selection/embedder/clm_embedder.py): the conversation rendered with
FastChat's vicuna_v1.1 template, tokenized by the SentencePiece Llama tokenizer (`</s>` read as EOS), BOS, first
2048 tokens, final hidden state of the last token. Plus the `embed` command and the embedding cache."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from click.testing import CliRunner

from localscore.cli import cli
from localscore.embedding import Embedder
from localscore.embedding_cache import CachedEmbedder, EmbeddingCache
from tests.conftest import sharegpt_conversations, sharegpt_turns as turns

# FastChat's vicuna_v1.1 (Deita vendors it in selection/embedder/conversation.py): ADD_COLON_TWO, sep " ", sep2 "</s>".
VICUNA_SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. "
                 "The assistant gives helpful, detailed, and polite answers to the user's questions.")
DEITA_MAX_LENGTH = 2048


def vicuna_prompt(conversation: list[dict]) -> str:
    roles = {"human": "USER", "gpt": "ASSISTANT"}
    seps = [" ", "</s>"]
    text = VICUNA_SYSTEM + seps[0]
    for i, turn in enumerate(conversation):
        text += roles[turn["from"]] + ": " + turn["value"] + seps[i % 2]
    return text


class DeitaEmbedder:
    """Deita's CLM_Embedder, one sample at a time in fp32: the slow Llama tokenizer (legacy) splits the text at
    special tokens and SentencePiece-encodes each piece on its own; BOS; truncation to max_length on the right."""

    def __init__(self, checkpoint):
        import sentencepiece
        import torch
        from transformers import AutoModelForCausalLM

        self.torch = torch
        self.sp = sentencepiece.SentencePieceProcessor(model_file=str(checkpoint / "tokenizer.model"))
        self.model = AutoModelForCausalLM.from_pretrained(str(checkpoint), dtype=torch.float32).eval()

    def ids(self, conversation: list[dict]) -> list[int]:
        ids = [self.sp.bos_id()]
        for piece in re.split("(</s>)", vicuna_prompt(conversation)):
            if piece == "</s>":
                ids.append(self.sp.eos_id())
            elif piece:
                ids += self.sp.encode(piece)
        return ids[:DEITA_MAX_LENGTH]

    def embed(self, ids: list[int]) -> np.ndarray:
        with self.torch.no_grad():
            out = self.model(self.torch.tensor([ids]), output_hidden_states=True)
        return out.hidden_states[-1][:, -1][0].numpy()


@pytest.fixture(scope="module")
def conversations() -> list[dict]:
    records = sharegpt_conversations()
    # 24 records: 1-, 2- and 3-turn conversations, and one long enough to be cut at 2048 tokens.
    picked = records[:8] + records[167:175] + records[333:341]
    long_turns = [{"from": side, "value": f"{side} paragraph {i}: " + records[i]["conversations"][0]["value"] * 6}
                  for i in range(24) for side in ("human", "gpt")]
    return picked + [{"id": "long", "conversations": long_turns}]


@pytest.fixture(scope="module")
def embedder(embedder_gguf):
    with Embedder.from_path(embedder_gguf, threads=1) as embedder:
        yield embedder


def test_ids_and_vectors_match_deita(embedder, embedder_checkpoint, conversations):
    deita = DeitaEmbedder(embedder_checkpoint)
    cosines = []
    for record in conversations:
        ids = embedder.ids(turns(record))
        assert ids == deita.ids(record["conversations"])
        ours, reference = embedder.embed_ids(ids), deita.embed(ids)
        cosines.append(float(ours @ reference / np.linalg.norm(ours) / np.linalg.norm(reference)))
    assert len(embedder.ids(turns(conversations[-1]))) == DEITA_MAX_LENGTH  # the long one was cut
    assert min(cosines) >= 0.9999, cosines


def test_eos_inside_user_text_stays_text(embedder):
    ids = embedder.ids([("Say </s> please", "ok </s>")])
    assert ids.count(embedder.eos) == 1 and ids[-1] == embedder.eos
    assert embedder.ids([("a", "b"), ("c", "d")]).count(embedder.eos) == 2


def test_vector_depends_on_the_conversation_only(embedder, conversations):
    short, long = turns(conversations[0]), turns(conversations[-1])
    alone = embedder.embed([short])[0]
    with Embedder.from_path(embedder.path, threads=1) as fresh:
        after_long = fresh.embed([long, short])[1]  # the context grew for the long one first
    np.testing.assert_array_equal(after_long, alone)


def test_cache_returns_what_was_computed(tmp_path, embedder, conversations):
    with EmbeddingCache(embedder.fingerprint, tmp_path / "cache.sqlite") as cache:
        cached = CachedEmbedder(embedder, cache)
        first = [cached.vector(turns(r)) for r in conversations[:3]]
    with EmbeddingCache(embedder.fingerprint, tmp_path / "cache.sqlite") as cache:
        again = CachedEmbedder(embedder, cache)
        second = [again.vector(turns(r)) for r in conversations[:3]]
    with EmbeddingCache("another model", tmp_path / "cache.sqlite") as cache:
        other = CachedEmbedder(embedder, cache)
        other.vector(turns(conversations[0]))
    assert (cached.computed, again.computed, again.reused, other.computed) == (3, 0, 3, 1)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)


def test_embed_command_writes_rows_aligned_with_the_input(tmp_path, monkeypatch, embedder, embedder_gguf,
                                                          conversations):
    monkeypatch.setenv("LOCALSCORE_CACHE", str(tmp_path / "cache"))
    records = conversations[:4] + [{"conversations": [{"from": "gpt", "value": "no question"}]}] + conversations[4:6]
    source = tmp_path / "data.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in records) + "not json\n")
    out = tmp_path / "emb.npy"
    args = ["embed", str(source), "-m", str(embedder_gguf), "-o", str(out), "-t", "1"]

    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert re.fullmatch(r"localscore: 8 records in [\d.]+ s: 6 embedded \([\d.,]+/s, [\d,]+ tokens\), "
                        r"0 from the cache, 2 errored \(NaN rows\)\n", result.output)
    rows = np.load(out)
    assert rows.shape == (8, embedder.n_embd) and rows.dtype == np.float32
    assert np.isnan(rows[4]).all() and np.isnan(rows[7]).all()
    expected = embedder.embed([turns(r) for r in records[:4] + records[5:7]])
    np.testing.assert_array_equal(np.delete(rows, [4, 7], axis=0), expected)
    assert not (tmp_path / "emb.npy.partial").exists()

    again = CliRunner().invoke(cli, args, catch_exceptions=False)  # what an interrupted run's rerun does
    assert " 0 embedded " in again.output and "6 from the cache" in again.output
    np.testing.assert_array_equal(np.load(out), rows, strict=True)


def test_embed_refuses_a_missing_model(tmp_path):
    source = tmp_path / "data.jsonl"
    source.write_text('{"instruction": "a", "output": "b"}\n')
    result = CliRunner().invoke(cli, ["embed", str(source), "-m", str(tmp_path / "no.gguf"), "-o", str(tmp_path / "e.npy")],
                                catch_exceptions=False)
    assert result.exit_code == 1
    assert result.output == f"Error: model file {tmp_path / 'no.gguf'} does not exist; convert one with `localscore convert`\n"
