"""`localscore compare --embedder`: two embedders (GGUFs or `.npy` files from `embed`) on the same records. The
figures are checked against an independent computation here (scipy's cosine distance, every pair in a loop, a
plain diversity filter), never against localscore's own helpers."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
from click.testing import CliRunner
from scipy.spatial.distance import cdist

from localscore.cli import cli
from localscore.llama.embedder import Embedder
from localscore.runs.compare.embedding_agreement import NEAR, pair_indices, pair_shift
from localscore.runs.compare.embedders import compare_embedders
from localscore.errors import InputError
from localscore.options import CompareOptions, RunOptions
from tests.support.data import sharegpt_conversations, sharegpt_turns as turns

N = 60


def scored(records: list[dict], seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    return [{**r, **{f"{name}_scores": [rng.uniform(1, 6) for _ in range(len(r["conversations"]) // 2)]
                     for name in ("quality", "complexity")}} for r in records]


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def records() -> list[dict]:
    conversations = sharegpt_conversations()
    return scored(conversations[:20] + conversations[167:187] + conversations[333:353])  # 1 to 3 turns


@pytest.fixture(scope="module")
def vectors_a(embedder_gguf, records) -> np.ndarray:
    with Embedder.from_path(embedder_gguf, RunOptions(threads=1)) as embedder:
        return embedder.embed([turns(r) for r in records])


@pytest.fixture(scope="module")
def vectors_b(vectors_a) -> np.ndarray:
    """A with seeded noise: what a lossy quantization does, large enough to move pairs across the threshold."""
    rng = np.random.default_rng(1)
    scale = 0.1 * np.linalg.norm(vectors_a, axis=1, keepdims=True) / np.sqrt(vectors_a.shape[1])
    return (vectors_a + rng.standard_normal(vectors_a.shape) * scale).astype(np.float32)


@pytest.fixture
def files(tmp_path, monkeypatch, records, vectors_a, vectors_b):
    monkeypatch.setenv("LOCALSCORE_CACHE", str(tmp_path / "cache"))
    np.save(tmp_path / "a.npy", vectors_a)
    np.save(tmp_path / "b.npy", vectors_b)
    return write_jsonl(tmp_path / "scored.jsonl", records), tmp_path / "a.npy", tmp_path / "b.npy"


def pair_cosines(vectors: np.ndarray) -> dict[tuple[int, int], float]:
    unit = [v / np.linalg.norm(v) for v in vectors.astype(np.float64)]
    return {(i, j): float(unit[i] @ unit[j]) for i in range(len(unit)) for j in range(i + 1, len(unit))}


def reference_selection(records: list[dict], vectors: np.ndarray, budget: int, threshold: float) -> list[int]:
    """Deita's walk written out: evol score = Σ complexity × quality, best first; keep a record unless its
    cosine to a kept one is above the threshold."""
    evol = [sum(c * q for c, q in zip(r["complexity_scores"], r["quality_scores"])) for r in records]
    kept: list[int] = []
    for i in sorted(range(len(records)), key=lambda i: -evol[i]):
        if all(1 - cdist(vectors[i:i + 1], vectors[k:k + 1], "cosine")[0, 0] <= threshold for k in kept):
            kept.append(i)
        if len(kept) == budget:
            break
    return kept


def threshold_with_near_duplicates(vectors: np.ndarray) -> float:
    """A threshold that 5 % of the pairs are above, so the walk rejects some records."""
    return round(float(np.quantile(list(pair_cosines(vectors).values()), 0.95)), 3)


def test_figures_match_an_independent_computation(files, records, vectors_a, vectors_b):
    data, a, b = files
    threshold = threshold_with_near_duplicates(vectors_a)
    result = compare_embedders(a, b, data, CompareOptions(budget=12, threshold=threshold), RunOptions())

    cosines = 1 - np.diag(cdist(vectors_a.astype(np.float64), vectors_b.astype(np.float64), "cosine"))
    v = result.vectors
    assert (v.n, result.compared, result.excluded) == (N, N, ())
    assert v.mean == pytest.approx(cosines.mean(), abs=1e-12) and v.min == pytest.approx(cosines.min(), abs=1e-12)
    assert v.percentiles == pytest.approx({p: np.percentile(cosines, p) for p in (1, 5, 50)}, abs=1e-12)
    assert v.min < 0.9999  # the noise is there

    pa, pb = pair_cosines(vectors_a), pair_cosines(vectors_b)
    near = [abs(pb[k] - pa[k]) for k in pa if abs(pa[k] - threshold) <= NEAR]
    p = result.pairs
    assert (p.pairs, p.sampled, p.threshold) == (N * (N - 1) // 2, False, threshold)
    assert p.above_a == sum(c > threshold for c in pa.values()) and p.above_b == sum(c > threshold for c in pb.values())
    assert p.only_a == sum(pa[k] > threshold >= pb[k] for k in pa)
    assert p.only_b == sum(pb[k] > threshold >= pa[k] for k in pa)
    assert p.only_a + p.only_b > 0 and p.near == len(near) > 0
    assert p.near_mean_abs_delta == pytest.approx(np.mean(near), abs=1e-12)
    assert p.near_max_abs_delta == pytest.approx(max(near), abs=1e-12)
    assert p.mean_abs_delta == pytest.approx(np.mean([abs(pb[k] - pa[k]) for k in pa]), abs=1e-12)

    picks_a = reference_selection(records, vectors_a, 12, threshold)
    picks_b = reference_selection(records, vectors_b, 12, threshold)
    s = result.selection
    assert (s.selected_a, s.selected_b) == (picks_a, picks_b)
    assert s.changed == len(set(picks_a) - set(picks_b)) > 0
    assert result.to_dict()["selection"] == {"budget": 12, "threshold": threshold, "selected_a": 12,
                                             "selected_b": 12, "common": 12 - s.changed, "changed": s.changed}


def test_budget_defaults_to_a_fifth_of_the_compared_records(files):
    data, a, b = files
    result = compare_embedders(a, b, data, CompareOptions(sample=40, seed=3), RunOptions())
    assert (result.sampled, result.compared, result.selection.budget) == (40, 40, 8)


def test_gguf_and_npy_sides_give_the_same_figures(files, embedder_gguf):
    data, a, b = files
    from_file = compare_embedders(a, b, data, CompareOptions(budget=12), RunOptions()).to_dict()
    from_model = compare_embedders(embedder_gguf, b, data, CompareOptions(budget=12), RunOptions(threads=1)).to_dict()
    assert from_model | {"a": str(a)} == from_file
    same = compare_embedders(embedder_gguf, a, data, CompareOptions(budget=12), RunOptions(threads=1))
    assert same.vectors.min == pytest.approx(1.0, abs=1e-6)
    assert (same.pairs.only_a, same.pairs.only_b, same.selection.changed) == (0, 0, 0)


def test_sampled_pairs_are_distinct_pairs_of_the_upper_triangle():
    i_all, j_all = np.triu_indices(50, k=1)
    i, j, sampled = pair_indices(50, seed=0, max_pairs=300)
    assert sampled and len(set(zip(i.tolist(), j.tolist()))) == 300
    position = {pair: k for k, pair in enumerate(zip(i_all.tolist(), j_all.tolist()))}
    assert all((x, y) in position for x, y in zip(i.tolist(), j.tolist()))  # i < j < n

    vectors = np.random.default_rng(0).standard_normal((50, 8))
    other = vectors + 0.3 * np.random.default_rng(1).standard_normal((50, 8))
    shift = pair_shift(vectors, other, 0.2, seed=0, max_pairs=300)
    pa, pb = pair_cosines(vectors), pair_cosines(other)
    chosen = list(zip(i.tolist(), j.tolist()))
    assert (shift.pairs, shift.sampled) == (300, True)
    assert shift.only_a == sum(pa[k] > 0.2 >= pb[k] for k in chosen)
    assert shift.mean_abs_delta == pytest.approx(np.mean([abs(pb[k] - pa[k]) for k in chosen]), abs=1e-12)


def test_records_without_an_embedding_are_excluded(files, vectors_a, vectors_b):
    data, a, b = files
    broken = vectors_b.copy()
    broken[4] = np.nan  # what `embed` writes for a record it cannot embed
    np.save(b, broken)
    result = compare_embedders(a, b, data, CompareOptions(budget=5), RunOptions())
    assert result.compared == N - 1
    assert [(e.record, e.reason) for e in result.excluded] == [(5, "B: no embedding (NaN row)")]


def test_unscored_data_compares_embeddings_but_no_selection(tmp_path, files, records):
    _, a, b = files
    plain = write_jsonl(tmp_path / "plain.jsonl", [{"conversations": r["conversations"]} for r in records])
    result = compare_embedders(a, b, plain, CompareOptions(), RunOptions())
    assert result.selection is None and result.unscored == f"{plain} has no quality and complexity scores"
    assert result.table()[-2] == f"selection: not compared ({plain} has no quality and complexity scores)"
    with pytest.raises(InputError, match=r"^'budget' needs a data file scored by both scorers, and .* has no "):
        compare_embedders(a, b, plain, CompareOptions(budget=5), RunOptions())
    result = CliRunner().invoke(cli, ["compare", str(a), str(b), str(plain), "--embedder", "-k", "5"],
                                catch_exceptions=False)
    assert (result.exit_code, result.output) == (1, (
        f"Error: --budget needs a data file scored by both scorers, and {plain} has no quality and complexity "
        "scores\n"))


def test_cli_prints_the_table_and_the_json(files):
    data, a, b = files
    runner = CliRunner()
    as_json = runner.invoke(cli, ["compare", str(a), str(b), str(data), "--embedder", "-k", "12",
                                  "--threshold", "0.95", "--json", "-"], catch_exceptions=False)
    assert as_json.exit_code == 0
    expected = compare_embedders(a, b, data, CompareOptions(budget=12, threshold=0.95), RunOptions())
    assert json.loads(as_json.output) == json.loads(expected.to_json())

    table = runner.invoke(cli, ["compare", str(a), str(b), str(data), "--embedder", "-k", "12",
                                "--threshold", "0.95"], catch_exceptions=False)
    assert table.exit_code == 0
    assert table.output == "\n".join(expected.table()) + "\n"
    s = expected.selection
    assert (f"selection (budget 12, threshold 0.95): A selects 12, B 12; {s.common} in both, "
            f"{s.changed} of A's changed") in table.output


def test_cli_row_count_mismatch_is_one_line(files, vectors_a):
    data, a, _ = files
    np.save(a, vectors_a[:-1])
    result = CliRunner().invoke(cli, ["compare", str(a), str(a), str(data), "--embedder"], catch_exceptions=False)
    assert (result.exit_code, result.output) == (1, (
        f"Error: embeddings {a} have {N - 1} rows but the input has {N} records; make them from this input "
        "with `localscore embed`\n"))


@pytest.mark.parametrize("args, message", [
    (["--embedder", "--plot", "p.png"], "--plot compares scorers; drop it or drop --embedder"),
    (["--embedder", "-s", "complexity"], "--scorer compares scorers; drop it or drop --embedder"),
    (["--budget", "5"], "--budget compares embedders' selections: add --embedder"),
    (["--threshold", "0.8"], "--threshold compares embedders' selections: add --embedder"),
    ([], "A ({a}) holds embeddings: add --embedder to compare embedders"),
])
def test_cli_keeps_scorer_and_embedder_options_apart(files, args, message):
    data, a, b = files
    result = CliRunner().invoke(cli, ["compare", str(a), str(b), str(data), *args], catch_exceptions=False)
    assert result.exit_code == 2
    assert result.output.splitlines()[-1] == "Error: " + message.format(a=a)


def test_a_scored_file_is_not_an_embedder(files):
    data, a, _ = files
    result = CliRunner().invoke(cli, ["compare", str(data), str(a), str(data), "--embedder"], catch_exceptions=False)
    assert (result.exit_code, result.output) == (1, (
        f"Error: A ({data}) is neither an embedder GGUF nor a .npy file from `localscore embed`; to compare "
        "scorers or scored files, compare them as scorers\n"))
