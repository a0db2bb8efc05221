"""The reference method (tests/support/reference.py: transformers + torch fp32, one sample at a time) over the pairs
file. Run with the repository root on PYTHONPATH.

    python benchmarks/reference_loop.py CHECKPOINT PAIRS.jsonl [--warmup 2] [--threads N]

The first --warmup prompts are scored untimed and excluded from the timed rate. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import time

from localscore.deita.templates import QUALITY
from tests.support.reference import ReferenceScorer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("pairs")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    args = parser.parse_args()

    reference = ReferenceScorer(args.checkpoint, threads=args.threads, dtype=args.dtype)
    with open(args.pairs, encoding="utf-8") as f:
        records = [json.loads(line) for line in f if line.strip()]
    prompts = [QUALITY.format(r["instruction"], r["output"]) for r in records]
    tokens = [len(reference.ids(p)) for p in prompts]

    warm = min(args.warmup, len(prompts) - 1)
    scores = [reference.score(p) for p in prompts[:warm]]
    start = time.perf_counter()
    scores += [reference.score(p) for p in prompts[warm:]]  # tokenizing included, as Deita's loop does
    seconds = time.perf_counter() - start
    print(json.dumps({"tokens": sum(tokens), "timed_tokens": sum(tokens[warm:]), "timed_samples": len(prompts) - warm,
                      "seconds": seconds, "threads": reference.torch.get_num_threads(), "scores": scores}))


if __name__ == "__main__":
    main()
