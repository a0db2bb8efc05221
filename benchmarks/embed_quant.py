"""Which weight type for the embedder: embeddings/s per type and how much quantizing the embedder changes Deita's
selection, against the f32 GGUF of the same checkpoint, on real conversations (FastChat's dummy conversations,
which hold many real near-duplicates).

Two checkpoints, both converted with `localscore.convert.convert` to f32, f16, q8_0, q6_k, q5_k_m and q4_k_m:
- wide: Llama-shaped at the 7B width (hidden 4096, ff 11008, 32 heads, the real vocabulary) with 4 layers, so
  per-layer cost equals a 7B's; seeded random weights as in tests/support/checkpoints.py (random weights exaggerate
  quantization damage);
- trained: the small trained scorer of trained_scorer.py (hidden 256, 4 layers), used as an embedder: realistic
  weights, for the fidelity figures (its speed says nothing about a 7B's).

The conversations get seeded random quality and complexity scores: the evol-score ranking is then the same for
every type, so a change in the selection is the embedder's alone. Each type embeds in its own subprocess (peak
RSS from wait4); the figures come from `localscore.runs.compare.embedders.compare_embedders` (what `localscore compare
--embedder` prints), f32 as A.

    .venv/bin/python benchmarks/embed_quant.py [--conversations 16] [--trained-conversations 500]
        [--models wide,trained] [--types f16,q8_0,...] [--threads N] [--json FILE]

Built files are kept under benchmarks/work/embed_quant/ (the wide checkpoint and its GGUFs take ~17 GB of disk).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

from bench import PYTHON, WORK, run

HERE = Path(__file__).resolve().parent
OUT = WORK / "embed_quant"
TYPES = ("f32", "f16", "q8_0", "q6_k", "q5_k_m", "q4_k_m")
BUDGET_SHARE = 0.2
THRESHOLD = 0.9


def me(*args: str) -> list[str]:
    return [PYTHON, str(HERE / "embed_quant.py"), "--worker", *args]


# -- workers (each in its own process) ------------------------------------------------------------------------

def work_wide(folder: str) -> dict:
    from tests.support.checkpoints import Shape, write_checkpoint

    shape = Shape(hidden=4096, layers=4, heads=32, kv_heads=32, intermediate=11008)
    write_checkpoint(Path(folder), shape, fmt="safetensors", shards=1)
    return {}


def work_trained(work: str) -> dict:
    from benchmarks.trained_scorer import build

    folder, _ = build(Path(work))
    return {"checkpoint": str(folder)}


def work_convert(folder: str, out: str, quant: str) -> dict:
    from localscore.convert import convert

    partial = Path(out).with_suffix(".partial.gguf")
    convert(folder, partial, quant)
    partial.rename(out)
    return {}


def work_embed(model: str, data: str, out: str, threads: str) -> dict:
    import numpy as np

    from localscore.runs.embed import turns_of
    from localscore.llama.embedder import Embedder
    from localscore.forms.reader import read_records
    from localscore.options import RunOptions

    with Embedder.from_path(model, RunOptions(threads=int(threads) or None)) as embedder:
        ids = [embedder.ids(turns_of(record)) for record in read_records(data)]
        embedder.embed_ids(ids[0])  # warm-up
        start = time.perf_counter()
        vectors = np.stack([embedder.embed_ids(i) for i in ids])
        seconds = time.perf_counter() - start
        threads = embedder.n_threads
    np.save(out, vectors)
    return {"seconds": seconds, "embeddings": len(ids), "tokens": sum(map(len, ids)), "threads": threads}


WORKERS = {"wide": work_wide, "trained": work_trained, "convert": work_convert, "embed": work_embed}


# -- the parent -----------------------------------------------------------------------------------------------

def conversations_file(n: int) -> Path:
    """n of FastChat's conversations, evenly spread over the file (1 to 3 turns), as ShareGPT JSONL with seeded
    random scores per turn."""
    records = json.loads((HERE.parent / "tests" / "data" / "fastchat_dummy_conversation.json").read_text("utf-8"))
    n = min(n, len(records))
    rng = random.Random(0)
    path = OUT / f"conversations-{n}.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        for record in (records[i * len(records) // n] for i in range(n)):
            turns = len(record["conversations"]) // 2
            scores = {f"{name}_scores": [round(rng.uniform(1, 6), 3) for _ in range(turns)]
                      for name in ("quality", "complexity")}
            f.write(json.dumps(record | scores, ensure_ascii=False) + "\n")
    return path


def ggufs(name: str, folder: Path, types: list[str]) -> dict[str, Path]:
    out = {}
    for quant in types:
        path = OUT / f"{name}.{quant}.gguf"
        if not path.is_file():
            print(f"embed_quant: converting {name} to {quant}", file=sys.stderr, flush=True)
            run(me("convert", str(folder), str(path), quant))
        out[quant] = path
    return out


def checkpoint(name: str) -> Path:
    if name == "trained":
        return Path(run(me("trained", str(WORK / "fidelity"))).report["checkpoint"])
    folder = OUT / "wide-random"
    if not (folder / ".done").is_file():
        print(f"embed_quant: writing the 7B-width checkpoint to {folder}", file=sys.stderr, flush=True)
        run(me("wide", str(folder)))
        (folder / ".done").write_text("")
    return folder


def load() -> str:
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conversations", type=int, default=16, help="conversations for the wide model")
    parser.add_argument("--trained-conversations", type=int, default=500, help="conversations for the trained one")
    parser.add_argument("--types", default=",".join(TYPES), help="weight types to measure; f32 is always one")
    parser.add_argument("--threads", type=int, default=0,
                        help="threads per embedder (default: physical cores; 1 is faster on a crowded machine)")
    parser.add_argument("--models", default="wide,trained", help="which of wide,trained to measure")
    parser.add_argument("--json", type=Path, help="also write the raw figures here")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    types = ["f32"] + [t for t in TYPES if t != "f32" and t in args.types.split(",")]
    results = {}
    for name in args.models.split(","):
        models = ggufs(name, checkpoint(name), types)
        data = conversations_file(args.conversations if name == "wide" else args.trained_conversations)
        print(f"\nembed_quant: {name}: embedding {data.name} ({load()})", file=sys.stderr, flush=True)
        speed = {}
        for quant, path in models.items():
            r = run(me("embed", str(path), str(data), str(OUT / f"{name}.{quant}.npy"), str(args.threads)))
            speed[quant] = r.report | {"rss_mb": r.rss_mb, "bytes": path.stat().st_size}
            print(f"embed_quant: {name} {quant}: {r.report['embeddings'] / r.report['seconds']:.2f}/s "
                  f"({load()})", file=sys.stderr, flush=True)
        results[name] = {"data": str(data), "speed": speed, "load_after": os.getloadavg(), "figures": {}}
    from localscore.options import CompareOptions, RunOptions
    from localscore.runs.compare.embedders import compare_embedders  # after the runs: it loads llama.cpp

    for name, result in results.items():
        data, speed = result["data"], result["speed"]
        base = speed["f32"]["embeddings"] / speed["f32"]["seconds"]
        rows = []
        for quant in types:
            budget = max(1, round(BUDGET_SHARE * speed[quant]["embeddings"]))
            c = compare_embedders(OUT / f"{name}.f32.npy", OUT / f"{name}.{quant}.npy", data,
                                  CompareOptions(budget=budget, threshold=THRESHOLD), RunOptions())
            result["figures"][quant] = c.to_dict()
            s, p, v = c.selection, c.pairs, c.vectors
            rate = speed[quant]["embeddings"] / speed[quant]["seconds"]
            rows.append(f"| {quant} | {speed[quant]['bytes'] / 1e6:,.0f} | {rate:.2f} | "
                        f"{speed[quant]['tokens'] / speed[quant]['seconds']:,.0f} | {rate / base:.2f}× | "
                        f"{speed[quant]['rss_mb']:,.0f} | {v.mean:.5f} | {v.min:.5f} | "
                        f"{p.only_a + p.only_b:,} | {s.common}/{len(s.selected_a)} |")
        pairs = result["figures"]["f32"]["pairs"]
        print(f"\n{name}: {speed['f32']['embeddings']} conversations, {speed['f32']['tokens']:,} tokens, "
              f"{speed['f32']['threads']} threads; {pairs['above_a']:,} of {pairs['pairs']:,} pairs above "
              f"{THRESHOLD} under f32; load average after: {', '.join(f'{x:.2f}' for x in result['load_after'])}\n")
        print("| type | MB | embeddings/s | tokens/s | ÷ f32 | peak RSS MB | mean cosine | min cosine | "
              f"pairs crossing {THRESHOLD} | selection kept (budget 20 %) |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        print("\n".join(rows))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--worker":
        sys.path.insert(0, str(HERE.parent))
        print(json.dumps(WORKERS[sys.argv[2]](*sys.argv[3:])))
    else:
        main()
