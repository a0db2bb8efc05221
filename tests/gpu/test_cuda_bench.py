"""benchmarks/cuda_bench.py's steps that do not need a GPU, run on the CPU with the tiny shape: building the
checkpoint and its GGUFs (benchmarks/prepare.py), the localscore and reference workers, and the comparison of
their scores."""

from __future__ import annotations

import pytest

from benchmarks.cuda_bench import REFERENCE_METHODS, TRUTH, compare, localscore_worker, reference_worker, table
from benchmarks.prepare import checkpoint, gguf, pairs_file

N_PAIRS = 5


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, dict]:
    work = tmp_path_factory.mktemp("cuda-bench")
    folder = checkpoint(work, "tiny")
    models = {quant: str(gguf(work, folder, quant)) for quant in ("f32", "q8_0")}
    pairs = str(pairs_file(work, N_PAIRS))
    return reference_worker(str(folder), pairs, batch=2, device="cpu", warmup=1) | localscore_worker(
        models, pairs, [1, 2], warmup=1)


def test_every_method_is_measured(runs):
    assert list(runs) == [*REFERENCE_METHODS] + [
        f"localscore {quant} --pack {pack}, flash attention {flash}"
        for quant, flash in (("f32", "off"), ("q8_0", "off"), ("q8_0", "on")) for pack in (1, 2)]
    for method, run in runs.items():
        assert len(run["scores"]) == N_PAIRS and run["seconds"] > 0 and run["timed_tokens"] > 0, method
        assert run.get("offload", "CPU only") == "CPU only"


def test_scores_are_compared_with_the_fp32_reference(runs):
    rows = {row["method"]: row for row in compare(runs)}
    assert rows[TRUTH]["max_delta"] == 0 and rows[TRUTH]["spearman"] == 1
    # The exact mode on CPU, as tests/scoring/test_parity.py asserts it: scores paired with the wrong pairs, or batched
    # positions shifted by the padding, are far off.
    assert rows["localscore f32 --pack 1, flash attention off"]["max_delta"] < 1e-4
    assert 0 < rows["reference bf16 batched"]["max_delta"] < 0.1
    assert 0 < rows["localscore q8_0 --pack 1, flash attention on"]["max_delta"] < 0.3


def test_the_table_has_a_row_per_method(runs):
    lines = table(compare(runs))
    assert lines[0].startswith("| method | tokens/s |")
    assert [line.split(" | ")[0].removeprefix("| ") for line in lines[2:]] == list(runs)
