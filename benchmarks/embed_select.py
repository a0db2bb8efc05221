"""Benchmark the selection steps on the benchmark checkpoint (benchmarks/prepare.py: Llama-shaped, hidden 1024,
8 layers, the real vocabulary) and real conversations (tests/data/fastchat_dummy_conversation.json):

1. embeddings/s: localscore's Embedder (llama.cpp; f32, q8_0, q4_k_m) vs Deita's way (transformers, fp32 and
   bf16, one conversation at a time, final hidden state of the last token), same token ids;
2. the diversity filter on a synthetic pool of 300k x 4096 (float16 memory map, ~2.5 GB on disk under
   benchmarks/work/) against a 10k budget: once where the budget fills, once where it never does (every
   candidate is compared with up to ~9.5k kept vectors: the worst case);
3. memory that follows the data: peak RSS of scoring real pairs at q4_k_m with the KV cache sized to the data
   vs the full context (the scores must be identical).

    .venv/bin/python benchmarks/embed_select.py [--conversations 64] [--pool 300000] [--dim 4096] [--budget 10000]

Every measurement is its own subprocess (peak RSS from wait4); the parent imports nothing heavy.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from bench import PYTHON, WORK, run

HERE = Path(__file__).resolve().parent
QUANTS = ("f32", "q8_0", "q4_k_m")


def me(*args: str) -> list[str]:
    return [PYTHON, str(HERE / "embed_select.py"), "--worker", *args]


# -- workers (each in its own process) ------------------------------------------------------------------------

def _conversations(n: int) -> list[list[tuple[str, str]]]:
    from tests.support.data import sharegpt_conversations, sharegpt_turns

    records = sharegpt_conversations()
    # A third each of 1-, 2- and 3-turn conversations, as the file holds them.
    picked = [records[i * len(records) // n] for i in range(n)]
    return [sharegpt_turns(r) for r in picked]


def work_llama(model: str, n: str, out: str) -> dict:
    import numpy as np

    from localscore.llama.embedder import Embedder

    with Embedder.from_path(model) as embedder:
        ids = [embedder.ids(turns) for turns in _conversations(int(n))]
        embedder.embed_ids(ids[0])  # warm-up
        start = time.perf_counter()
        vectors = np.stack([embedder.embed_ids(i) for i in ids])
        seconds = time.perf_counter() - start
    np.save(out, vectors)
    (Path(out).with_suffix(".ids.json")).write_text(json.dumps(ids))
    return {"seconds": seconds, "embeddings": len(ids), "tokens": sum(map(len, ids))}


def work_torch(checkpoint: str, dtype: str, ids_file: str, out: str) -> dict:
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM

    ids = json.loads(Path(ids_file).read_text())
    model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=getattr(torch, dtype)).eval()

    def embed(one: list[int]) -> np.ndarray:
        with torch.no_grad():
            return model(torch.tensor([one]), output_hidden_states=True).hidden_states[-1][0, -1].float().numpy()

    embed(ids[0])
    start = time.perf_counter()
    vectors = np.stack([embed(i) for i in ids])
    seconds = time.perf_counter() - start
    np.save(out, vectors)
    return {"seconds": seconds, "embeddings": len(ids), "tokens": sum(map(len, ids))}


def work_compare(reference: str, *others: str) -> dict:
    import numpy as np

    ref = np.load(reference)
    ref = ref / np.linalg.norm(ref, axis=1, keepdims=True)
    cosines = {}
    for other in others:
        vectors = np.load(other)
        vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        cosines[Path(other).stem] = float((ref * vectors).sum(axis=1).min())
    return {"min_cosine": cosines}


def work_pool(path: str, n: str, dim: str, clusters: str) -> dict:
    """A float16 pool of n unit-ish vectors in `clusters` tight clusters (within-cluster cosine ~0.95, across ~0)."""
    import numpy as np

    n, dim, clusters = int(n), int(dim), int(clusters)
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((clusters, dim), dtype=np.float32)
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    pool = np.lib.format.open_memmap(path + ".partial", mode="w+", dtype=np.float16, shape=(n, dim))
    for start in range(0, n, 10_000):
        rows = min(10_000, n - start)
        noise = rng.standard_normal((rows, dim), dtype=np.float32) * (0.23 / np.sqrt(dim))
        pool[start:start + rows] = centers[rng.integers(0, clusters, rows)] + noise
    pool.flush()
    del pool
    Path(path + ".partial").rename(path)
    return {}


def work_select(path: str, budget: str) -> dict:
    # One BLAS thread: on a shared 2-core machine OpenBLAS's spinning threads made the products ~6x slower.
    os.environ["OPENBLAS_NUM_THREADS"] = "1"
    import numpy as np

    from localscore.deita.selection import diversity_filter

    pool = np.load(path, mmap_mode="r")
    order = np.random.default_rng(1).permutation(len(pool))  # the evol-score order of a random pool
    start = time.perf_counter()
    selection = diversity_filter(order, pool, int(budget), 0.9)  # float16 rows, converted block by block
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "examined": selection.examined, "kept": len(selection.indices),
            "rejected": selection.rejected}


def work_kv(model: str, pairs: str, full: str) -> dict:
    from localscore.llama import model as llama_model
    from localscore.llama.scorer import Scorer

    if full == "full":
        llama_model.CELL_STEP = 1 << 20  # every context is the full one, as before the cache followed the data
    rows = [json.loads(line) for line in Path(pairs).read_text().splitlines()]
    with Scorer.from_path(model) as scorer:
        scores = scorer.score_many([(r["instruction"], r["output"]) for r in rows])
        cells = scorer.engine.n_cells
    return {"scores": scores, "cells": cells}


WORKERS = {"llama": work_llama, "torch": work_torch, "compare": work_compare, "pool": work_pool,
           "select": work_select, "kv": work_kv}


# -- the parent -----------------------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conversations", type=int, default=64)
    parser.add_argument("--pool", type=int, default=300_000)
    parser.add_argument("--dim", type=int, default=4096)
    parser.add_argument("--budget", type=int, default=10_000)
    parser.add_argument("--pairs", type=int, default=48)
    args = parser.parse_args()
    out = WORK / "embed_select"
    out.mkdir(parents=True, exist_ok=True)
    print("embed_select: preparing the benchmark checkpoint and GGUFs (cached)", file=sys.stderr, flush=True)
    inputs = run([PYTHON, str(HERE / "prepare.py"), str(WORK), "--pairs", str(args.pairs),
                  "--quants", ",".join(QUANTS)]).report
    n = str(args.conversations)

    print(f"\n## Embeddings of {args.conversations} real conversations (benchmark checkpoint)\n")
    print("| method | embeddings/s | tokens/s | peak RSS |\n|---|---:|---:|---:|")
    rows = {}
    for quant in QUANTS:
        r = run(me("llama", inputs["models"][quant], n, str(out / f"llama-{quant}.npy")))
        rows[f"localscore (llama.cpp) {quant}"] = r
    ids_file = str(out / "llama-f32.ids.json")
    for dtype, name in (("float32", "fp32"), ("bfloat16", "bf16")):
        r = run(me("torch", inputs["checkpoint"], dtype, ids_file, str(out / f"torch-{name}.npy")))
        rows[f"Deita's way (transformers {name})"] = r
    for name, r in rows.items():
        rep = r.report
        print(f"| {name} | {rep['embeddings'] / rep['seconds']:,.1f} | {rep['tokens'] / rep['seconds']:,.0f} "
              f"| {r.rss_mb:,.0f} MB |")
    compare = run(me("compare", str(out / "torch-fp32.npy"), *(str(out / f"llama-{q}.npy") for q in QUANTS),
                     str(out / "torch-bf16.npy"))).report
    print("\nmin cosine to transformers fp32: "
          + ", ".join(f"{k} {v:.6f}" for k, v in compare["min_cosine"].items()))

    print(f"\n## Diversity filter: {args.pool:,} x {args.dim} (float16 memory map), budget {args.budget:,}, "
          "threshold 0.9\n")
    print("| pool | examined | kept | rejected | seconds | peak RSS |\n|---|---:|---:|---:|---:|---:|")
    for clusters, label in ((args.budget, "budget fills"), (args.budget * 19 // 20, "budget never fills")):
        pool = WORK / f"pool-{args.pool}x{args.dim}-{clusters}.npy"
        if not pool.is_file():
            print(f"embed_select: writing {pool}", file=sys.stderr, flush=True)
            run(me("pool", str(pool), str(args.pool), str(args.dim), str(clusters)))
        r = run(me("select", str(pool), str(args.budget)))
        rep = r.report
        print(f"| {clusters:,} clusters ({label}) | {rep['examined']:,} | {rep['kept']:,} | {rep['rejected']:,} "
              f"| {rep['seconds']:.1f} | {r.rss_mb:,.0f} MB |")

    print(f"\n## KV cache that follows the data: scoring {args.pairs} real pairs at q4_k_m\n")
    print("| KV cache | cells | peak RSS |\n|---|---:|---:|")
    results = {}
    for mode in ("data", "full"):
        r = run(me("kv", inputs["models"]["q4_k_m"], inputs["pairs"], mode))
        results[mode] = r
        print(f"| {'sized to the data' if mode == 'data' else 'full context (before)'} | {r.report['cells']:,} "
              f"| {r.rss_mb:,.0f} MB |")
    same = results["data"].report["scores"] == results["full"].report["scores"]
    print(f"\nscores identical: {same}")


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--worker":
        sys.path.insert(0, str(HERE.parent))
        print(json.dumps(WORKERS[sys.argv[2]](*sys.argv[3:])))
    else:
        main()
