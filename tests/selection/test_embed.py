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
from localscore.llama.embedder import Embedder
from localscore.runs.embedding_cache import CachedEmbeddings, EmbeddingCache
from localscore.runs.embed_step import Embedding, LocalStep
from localscore.options import RunOptions
from tests.support.data import sharegpt_conversations
from tests.support.data import sharegpt_turns as turns

# FastChat's vicuna_v1.1 (Deita vendors it in selection/embedder/conversation.py): ADD_COLON_TWO, sep " ", sep2 "</s>".
VICUNA_SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. "
                 "The assistant gives helpful, detailed, and polite answers to the user's questions.")
DEITA_MAX_LENGTH = 2048
# F32 GGUF vs transformers fp32, measured on these conversations: worst |delta| 3.2e-5 (the 2,048-token one;
# components reach 3.8), relative L2 error at most 1.1e-5. rtol=1e-4 alone fails only on components near zero
# (|x| < 0.01, relative error up to 1.8e-3), hence an absolute floor of 3x the worst delta.
VECTOR_RTOL = 1e-4
VECTOR_ATOL = 1e-4


def vicuna_prompt(conversation: list[dict]) -> str:
    """Deita's preprocess (selection/embedder/utils.py): only human/gpt turns, a first turn that is not the human's
    dropped, then strict alternation."""
    roles = {"human": "USER", "gpt": "ASSISTANT"}
    if roles[conversation[0]["from"]] != "USER":
        conversation = conversation[1:]
    seps = [" ", "</s>"]
    text = VICUNA_SYSTEM + seps[0]
    for i, turn in enumerate(conversation):
        assert roles[turn["from"]] == ("USER", "ASSISTANT")[i % 2]
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
    with Embedder.from_path(embedder_gguf, RunOptions(threads=1)) as embedder:
        yield embedder


@pytest.fixture(scope="module")
def deita(embedder_checkpoint) -> DeitaEmbedder:
    return DeitaEmbedder(embedder_checkpoint)


def assert_same_vector(ours: np.ndarray, reference: np.ndarray) -> None:
    """Direction and magnitude: cosine, the relative L2 error, and every component within VECTOR_RTOL (plus
    VECTOR_ATOL near zero)."""
    cosine = float(ours @ reference / np.linalg.norm(ours) / np.linalg.norm(reference))
    assert cosine >= 0.9999, cosine
    assert np.linalg.norm(ours - reference) <= VECTOR_RTOL * np.linalg.norm(reference)
    np.testing.assert_allclose(ours, reference, rtol=VECTOR_RTOL, atol=VECTOR_ATOL)


def test_ids_and_vectors_match_deita(embedder, deita, conversations):
    for record in conversations:
        ids = embedder.ids(turns(record))
        assert ids == deita.ids(record["conversations"])
        assert_same_vector(embedder.embed_ids(ids), deita.embed(ids))
    assert len(embedder.ids(turns(conversations[-1]))) == DEITA_MAX_LENGTH  # the long one was cut


def test_embed_reads_conversations_not_opening_with_a_question_as_deita(tmp_path, monkeypatch, embedder_gguf, deita,
                                                                         conversations):
    """Deita's embedder drops a first turn that is not the human's. It knows no `system` role (a KeyError there);
    localscore skips system turns, as documented, so those records are compared with Deita on the rest."""
    monkeypatch.setenv("LOCALSCORE_CACHE", str(tmp_path / "cache"))
    greeting = {"from": "gpt", "value": "Hello! I am an AI assistant. How can I help you today?"}
    system = {"from": "system", "value": "You are a helpful assistant. Answer briefly."}
    records = []
    for record in conversations[8:11]:  # 2-turn conversations
        c = record["conversations"]
        records += [[greeting, *c], [system, *c], [system, greeting, *c], [c[0], system, *c[1:]]]
    source = tmp_path / "odd.jsonl"
    source.write_text("".join(json.dumps({"conversations": c}) + "\n" for c in records))
    out = tmp_path / "emb.npy"
    result = CliRunner().invoke(cli, ["embed", str(source), "-m", str(embedder_gguf), "-o", str(out), "-t", "1"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    # The four shapes of each conversation come down to the same token ids: one computed, three from the cache.
    assert " 12 records " in result.output and " 3 embedded " in result.output
    assert "9 from the cache, 0 errored" in result.output
    rows = np.load(out)
    for conversation, row in zip(records, rows):
        assert_same_vector(row, deita.embed(deita.ids([t for t in conversation if t["from"] != "system"])))


def test_eos_inside_user_text_stays_text(embedder):
    ids = embedder.ids([("Say </s> please", "ok </s>")])
    assert ids.count(embedder.eos) == 1 and ids[-1] == embedder.eos
    assert embedder.ids([("a", "b"), ("c", "d")]).count(embedder.eos) == 2


def test_vector_depends_on_the_conversation_only(embedder, conversations):
    short, long = turns(conversations[0]), turns(conversations[-1])
    alone = embedder.embed([short])[0]
    with Embedder.from_path(embedder.path, RunOptions(threads=1)) as fresh:
        after_long = fresh.embed([long, short])[1]  # the context grew for the long one first
    np.testing.assert_array_equal(after_long, alone)


def test_cache_returns_what_was_computed(tmp_path, embedder, conversations):
    with EmbeddingCache(embedder.fingerprint, tmp_path / "cache.sqlite") as cache:
        cached = CachedEmbeddings(Embedding(embedder, LocalStep(embedder)), cache)
        first = [cached.vector(turns(r)) for r in conversations[:3]]
    with EmbeddingCache(embedder.fingerprint, tmp_path / "cache.sqlite") as cache:
        again = CachedEmbeddings(Embedding(embedder, LocalStep(embedder)), cache)
        second = [again.vector(turns(r)) for r in conversations[:3]]
    with EmbeddingCache("another model", tmp_path / "cache.sqlite") as cache:
        other = CachedEmbeddings(Embedding(embedder, LocalStep(embedder)), cache)
        other.vector(turns(conversations[0]))
    assert (cached.computed, again.computed, again.reused, other.computed) == (3, 0, 3, 1)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)


def test_embed_command_writes_rows_aligned_with_the_input(tmp_path, monkeypatch, embedder, embedder_gguf,
                                                          conversations):
    monkeypatch.setenv("LOCALSCORE_CACHE", str(tmp_path / "cache"))
    # Record 5 opens with an answer (Deita's embedder drops it); record 8 has nothing left once it is dropped.
    opens_with_answer = {"conversations": [{"from": "gpt", "value": "Hi! Ask me anything."},
                                           *conversations[8]["conversations"]]}
    answer_only = {"conversations": [{"from": "gpt", "value": "no question"}]}
    records = conversations[:4] + [opens_with_answer] + conversations[4:6] + [answer_only]
    source = tmp_path / "data.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in records) + "not json\n")
    out = tmp_path / "emb.npy"
    args = ["embed", str(source), "-m", str(embedder_gguf), "-o", str(out), "-t", "1"]

    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert re.fullmatch(r"localscore: 9 records in [\d.]+ s: 7 embedded \([\d.,]+/s, [\d,]+ tokens\), "
                        r"0 from the cache, 2 errored \(NaN rows\)\n", result.output)
    rows = np.load(out)
    assert rows.shape == (9, embedder.n_embd) and rows.dtype == np.float32
    assert np.isnan(rows[7]).all() and np.isnan(rows[8]).all()
    expected = embedder.embed([turns(r) for r in conversations[:4] + [conversations[8]] + conversations[4:6]])
    np.testing.assert_array_equal(rows[:7], expected)
    assert not (tmp_path / "emb.npy.partial").exists()

    again = CliRunner().invoke(cli, args, catch_exceptions=False)  # what an interrupted run's rerun does
    assert " 0 embedded " in again.output and "7 from the cache" in again.output
    np.testing.assert_array_equal(np.load(out), rows, strict=True)


def test_embed_refuses_a_missing_model(tmp_path):
    source = tmp_path / "data.jsonl"
    source.write_text('{"instruction": "a", "output": "b"}\n')
    result = CliRunner().invoke(cli, ["embed", str(source), "-m", str(tmp_path / "no.gguf"), "-o", str(tmp_path / "e.npy")],
                                catch_exceptions=False)
    assert result.exit_code == 1
    assert result.output == f"Error: model file {tmp_path / 'no.gguf'} does not exist; convert one with `localscore convert`\n"
