"""Deita's selection: evol score, then the diversity filter (selection/filter/base.py, IterativeFilter with batch
size 1), reimplemented in torch the way Deita runs it (tests/support/reference.py); localscore must pick exactly
the same records."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from click.testing import CliRunner

from localscore.deita import selection
from localscore.cli import cli
from localscore.llama.embedder import Embedder
from localscore.errors import InputError
from localscore.runs.select import select_file
from localscore.deita.selection import diversity_filter, evol_scores, select
from localscore.options import InputOptions, RunOptions, SelectOptions
from tests.support.data import scored, sharegpt_conversations, sharegpt_turns as turns
from tests.support.reference import deita_filter, deita_final_scores


@pytest.fixture(scope="module")
def pool() -> list[dict]:
    records = sharegpt_conversations()
    return scored(records[:40] + records[167:200] + records[333:360])  # 100 records, 1 to 3 turns


@pytest.fixture(scope="module")
def pool_embeddings(embedder_gguf, pool) -> np.ndarray:
    with Embedder.from_path(embedder_gguf, RunOptions(threads=1)) as embedder:
        return embedder.embed([turns(r) for r in pool])


def test_evol_score_is_the_sum_of_products_over_turns():
    records = [{"quality_score": 2.0, "complexity_score": 3.0},
               {"quality_scores": [1.0, 2.0], "complexity_scores": [3.0, 4.0]}]
    np.testing.assert_array_equal(evol_scores(records), [6.0, 11.0])
    with pytest.raises(InputError, match="record 1 has 2 complexity but 1 quality scores"):
        evol_scores([{"quality_scores": [1.0], "complexity_scores": [1.0, 2.0]}])


@pytest.mark.parametrize("budget", [1, 5, 20, 100, 500])
@pytest.mark.parametrize("threshold", [0.8, 0.9, 0.95, 0.99])
def test_same_selection_as_deita(pool, pool_embeddings, budget, threshold):
    ours = select(pool, pool_embeddings, budget, threshold)
    assert (ours.indices, ours.examined) == deita_filter(pool, pool_embeddings, budget, threshold)
    assert ours.rejected == ours.examined - len(ours.indices)


def test_the_walk_keeps_real_near_duplicates_apart(pool, pool_embeddings):
    # The thresholds above are not trivial on this pool: some reject most records, some few.
    kept = [len(select(pool, pool_embeddings, 100, t).indices) for t in (0.8, 0.9, 0.95, 0.99)]
    assert kept[0] < 10 and kept[-1] > 60 and kept == sorted(kept)


def test_blocks_check_candidates_against_acceptances_in_the_same_block(monkeypatch):
    rng = np.random.default_rng(0)
    base = rng.standard_normal((40, 64)).astype(np.float32)
    # Every record has a near-duplicate 20 places later in the walk: inside one block of 256.
    vectors = np.concatenate([base, base + 0.01 * rng.standard_normal(base.shape).astype(np.float32)])
    order = np.arange(len(vectors))
    blocked = diversity_filter(order, vectors, 1000, 0.9)
    monkeypatch.setattr(selection, "BLOCK", 1)
    one_at_a_time = diversity_filter(order, vectors, 1000, 0.9)
    assert (blocked.indices, blocked.examined, blocked.rejected) == (
        one_at_a_time.indices, one_at_a_time.examined, one_at_a_time.rejected)
    assert blocked.similarities[1:] == pytest.approx(one_at_a_time.similarities[1:], abs=1e-6)
    assert blocked.indices == list(range(40)) and blocked.rejected == 40


def test_ties_keep_input_order():
    records = [{"quality_score": 2.0, "complexity_score": 2.0}] * 3 + [{"quality_score": 3.0, "complexity_score": 3.0}]
    vectors = np.eye(4, dtype=np.float32)
    assert select(records, vectors, 4).indices == [3, 0, 1, 2]


def test_similarity_is_to_the_nearest_record_kept_before(pool, pool_embeddings):
    result = select(pool, pool_embeddings, 10, 0.97)
    unit = pool_embeddings / np.linalg.norm(pool_embeddings, axis=1, keepdims=True)
    assert result.similarities[0] is None
    for n in range(1, 10):
        before = unit[result.indices[:n]]
        expected = float((before @ unit[result.indices[n]]).max())
        assert result.similarities[n] == pytest.approx(expected, abs=1e-6)
        assert result.similarities[n] <= 0.97


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_lazy_selection_embeds_only_what_the_walk_reaches(tmp_path, embedder_gguf, pool, pool_embeddings):
    source = write_jsonl(tmp_path / "scored.jsonl", pool)
    eager_file = tmp_path / "emb.npy"
    np.save(eager_file, pool_embeddings)
    for budget, threshold in [(10, 0.97), (25, 0.99)]:
        eager = select_file(InputOptions(source), tmp_path / "eager.jsonl",
                            SelectOptions(budget=budget, threshold=threshold, embeddings=eager_file), RunOptions())
        lazy = select_file(InputOptions(source), tmp_path / "lazy.jsonl",
                           SelectOptions(budget=budget, threshold=threshold, model=embedder_gguf), RunOptions(threads=1),
                           cache_path=tmp_path / f"cache-{budget}.sqlite")
        lazy_out, eager_out = (read_jsonl(tmp_path / f"{name}.jsonl") for name in ("lazy", "eager"))
        expected, examined = deita_filter(pool, pool_embeddings, budget, threshold)
        assert [r["id"] for r in eager_out] == [pool[i]["id"] for i in expected] and eager.examined == examined
        assert [r["id"] for r in lazy_out] == [r["id"] for r in eager_out]
        for a, b in zip(lazy_out, eager_out):  # the similarity only to float32 rounding (other block shapes)
            assert a == {**b, "nearest_similarity": a["nearest_similarity"]}
            assert a["nearest_similarity"] == pytest.approx(b["nearest_similarity"], abs=1e-6)
        # Only the records the walk examined were embedded: fewer than the pool (Deita embeds all 100).
        assert lazy.computed == lazy.examined == eager.examined < len(pool)
        print(f"budget {budget}, threshold {threshold}: {lazy.computed} of {len(pool)} records embedded")
    again = select_file(InputOptions(source), tmp_path / "again.jsonl",
                        SelectOptions(budget=25, threshold=0.97, model=embedder_gguf), RunOptions(threads=1),
                        cache_path=tmp_path / "cache-25.sqlite")
    assert again.reused > 0 and again.computed == again.examined - again.reused


def test_select_command(tmp_path, monkeypatch, pool, pool_embeddings):
    monkeypatch.setenv("LOCALSCORE_CACHE", str(tmp_path / "cache"))
    records = pool[:30] + [{"instruction": "x", "output": "y", "quality_error": "prompt is too long"}]
    source = write_jsonl(tmp_path / "scored.jsonl", records)
    embeddings = tmp_path / "emb.npy"
    np.save(embeddings, np.concatenate([pool_embeddings[:30], np.full((1, pool_embeddings.shape[1]), np.nan)]))
    result = CliRunner().invoke(cli, ["select", str(source), "--budget", "5", "--threshold", "0.95",
                                      "--embeddings", str(embeddings)], catch_exceptions=False)
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    scored_by, summary = result.stderr.splitlines()
    assert scored_by == ("localscore: input scored by the quality scorer (model not recorded) and the complexity "
                         "scorer (model not recorded)")  # a file written by another tool
    expected, examined = deita_filter(pool[:30], pool_embeddings[:30], 5, 0.95)
    chosen = [json.loads(line) for line in lines]
    assert [c["id"] for c in chosen] == [pool[i]["id"] for i in expected]
    assert chosen[0] == {**pool[expected[0]], "evol_score": pytest.approx(deita_final_scores([pool[expected[0]]])[0]),
                         "nearest_similarity": None}
    assert re.fullmatch(rf"localscore: 5 selected from 31 records \(1 without scores skipped\) in [\d.]+ s: "
                        rf"{examined} examined, {examined - 5} rejected as near-duplicates; "
                        r"0 embedded, 0 from the cache", summary)


@pytest.mark.parametrize("args, message", [
    ([], "Error: give the embedder (--model) or precomputed embeddings (--embeddings), one of the two"),
    (["--embeddings", "{emb}", "-m", "{emb}"],
     "Error: give the embedder (--model) or precomputed embeddings (--embeddings), one of the two"),
])
def test_select_needs_one_source_of_embeddings(tmp_path, pool, args, message):
    source = write_jsonl(tmp_path / "scored.jsonl", pool[:3])
    np.save(tmp_path / "emb.npy", np.zeros((3, 4), dtype=np.float32))
    args = [a.format(emb=tmp_path / "emb.npy") for a in args]
    result = CliRunner().invoke(cli, ["select", str(source), "-k", "2", *args], catch_exceptions=False)
    assert (result.exit_code, result.output) == (1, message + "\n")


def test_select_names_the_command_that_adds_missing_scores(tmp_path, pool):
    records = [{k: v for k, v in r.items() if k != "complexity_scores"} for r in pool[:3]]
    source = write_jsonl(tmp_path / "quality-only.jsonl", records)
    np.save(tmp_path / "emb.npy", np.zeros((3, 4), dtype=np.float32))
    result = CliRunner().invoke(cli, ["select", str(source), "-k", "2", "--embeddings", str(tmp_path / "emb.npy")],
                                catch_exceptions=False)
    assert (result.exit_code, result.output) == (1, (
        "Error: record 1 has no complexity_score(s); score the data with both scorers first: localscore score "
        "INPUT -m QUALITY.gguf | localscore score - --scorer complexity -m COMPLEXITY.gguf -o scored.jsonl\n"))


def test_select_refuses_embeddings_of_another_input(tmp_path, pool):
    source = write_jsonl(tmp_path / "scored.jsonl", pool[:3])
    np.save(tmp_path / "emb.npy", np.zeros((4, 8), dtype=np.float32))
    result = CliRunner().invoke(cli, ["select", str(source), "-k", "2", "--embeddings", str(tmp_path / "emb.npy")],
                                catch_exceptions=False)
    assert (result.exit_code, result.output) == (1, (
        f"Error: embeddings {tmp_path / 'emb.npy'} have 4 rows but the input has 3 records; make them from this "
        "input with `localscore embed`\n"))


@pytest.mark.parametrize("lazy", [False, True], ids=["eager", "lazy"])
def test_unusable_embeddings_are_skipped_with_their_reason(pool, pool_embeddings, lazy):
    budget, threshold = 12, 0.97
    reference = select(pool, pool_embeddings, budget, threshold)
    # Spoil three records the walk would keep, and one it would never reach.
    spoiled = np.array(pool_embeddings, dtype=np.float32)
    nan, infinite, zero = reference.indices[0], reference.indices[3], reference.indices[5]
    spoiled[nan, 7] = np.nan
    spoiled[infinite, 0] = -np.inf
    spoiled[zero] = 0.0
    order = selection.rank(evol_scores(pool))
    embeddings = (lambda rows: spoiled[rows]) if lazy else spoiled
    got = diversity_filter(order, embeddings, budget, threshold)
    assert got.skipped == [(nan, "NaN embedding"), (infinite, "infinite embedding"), (zero, "all-zero embedding")]
    assert not {nan, infinite, zero} & set(got.indices) and len(got.indices) == budget
    # Exactly the walk over the records whose embeddings are usable.
    usable = np.array([i for i in order if i not in (nan, infinite, zero)])
    expected = diversity_filter(usable, pool_embeddings, budget, threshold)
    assert (got.indices, got.examined, got.rejected) == (expected.indices, expected.examined, expected.rejected)
    np.testing.assert_allclose(np.array(got.similarities[1:], dtype=float),
                               np.array(expected.similarities[1:], dtype=float), atol=1e-6)


def test_select_counts_records_skipped_for_their_embedding(tmp_path, embedder_gguf, pool, pool_embeddings):
    records = pool[:30]
    source = write_jsonl(tmp_path / "scored.jsonl", records)
    best = int(selection.rank(evol_scores(records))[0])
    spoiled = np.array(pool_embeddings[:30], dtype=np.float32)
    spoiled[best] = np.nan  # what `embed` writes for a record it cannot embed
    np.save(tmp_path / "emb.npy", spoiled)
    summary = select_file(InputOptions(source), tmp_path / "out.jsonl",
                          SelectOptions(budget=30, threshold=1.0, embeddings=tmp_path / "emb.npy"), RunOptions())
    assert summary.unusable == {"NaN embedding": 1} and summary.selected == 29
    assert pool[best]["id"] not in [r["id"] for r in read_jsonl(tmp_path / "out.jsonl")]
    assert re.fullmatch(r"29 selected from 30 records \(1 with NaN embeddings skipped\) in [\d.]+ s: 29 examined, "
                        r"0 rejected as near-duplicates; 0 embedded, 0 from the cache", summary.line())

    # Lazily: a record with scores that cannot be embedded (no answer to embed) is skipped the same way.
    broken = {"conversations": [{"from": "human", "value": "Hi"}], "quality_scores": [6.0],
              "complexity_scores": [6.0], "id": "unanswered"}
    source = write_jsonl(tmp_path / "lazy.jsonl", [broken, *records[:5]])
    lazy = select_file(InputOptions(source), tmp_path / "lazy-out.jsonl",
                       SelectOptions(budget=6, threshold=1.0, model=embedder_gguf), RunOptions(threads=1),
                       cache_path=tmp_path / "cache.sqlite")
    assert lazy.unusable == {"NaN embedding": 1} and lazy.selected == 5
    assert "unanswered" not in [r["id"] for r in read_jsonl(tmp_path / "lazy-out.jsonl")]
