"""localscore's decode rate inside one process: Scorer.from_path, every prompt built and tokenized first, then
score_prompts timed (the engine's shared head and per-prompt sequence bookkeeping included, the file reading,
model load and output writing of `localscore score` excluded).

    python benchmarks/localscore_loop.py MODEL PAIRS.jsonl [--warmup 2] [--pack 1]

The first --warmup prompts are scored untimed and excluded from the timed rate. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import time

from localscore import Scorer
from localscore.options import RunOptions, ScorerOptions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("pairs")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--pack", type=int, default=1)
    parser.add_argument("--threads", type=int)
    args = parser.parse_args()

    with Scorer.from_path(args.model, ScorerOptions(pack=args.pack), RunOptions(threads=args.threads)) as scorer:
        with open(args.pairs, encoding="utf-8") as f:
            records = [json.loads(line) for line in f if line.strip()]
        prompts = [scorer.prompt(r["instruction"], r["output"]) for r in records]
        warm = min(args.warmup, len(prompts) - 1)
        scores = scorer.score_prompts(prompts[:warm])
        start = time.perf_counter()
        scores += scorer.score_prompts(prompts[warm:])
        seconds = time.perf_counter() - start
        info = scorer.engine.info
        kv_cells = scorer.engine.n_cells
    tokens = [len(p.ids) for p in prompts]
    print(json.dumps({"tokens": sum(tokens), "timed_tokens": sum(tokens[warm:]), "timed_samples": len(prompts) - warm,
                      "seconds": seconds, "threads": info.n_threads, "kernels": str(info.kernels), "kv_cells": kv_cells,
                      "scores": scores}))


if __name__ == "__main__":
    main()
