"""Build the benchmark's inputs once under benchmarks/work/: the BENCH checkpoint, its GGUF conversions and the
pairs file. Run by bench.py in a subprocess (with the repository root on PYTHONPATH), so that the parent,
whose memory every child inherits in its peak-RSS figure, never imports torch.

    python benchmarks/prepare.py WORK --pairs 64 --quants f16,q8_0,q4_k_m
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from tests.checkpoints import BENCH, write_checkpoint
from tests.conftest import alpaca_pairs

CHECKPOINT = "deita-bench"


def checkpoint(work: Path) -> Path:
    """The BENCH checkpoint (safetensors, one shard); a `.done` marker makes an interrupted build start over."""
    folder = work / CHECKPOINT
    done = folder / ".done"
    if not done.is_file():
        shutil.rmtree(folder, ignore_errors=True)
        print(f"prepare: writing the {BENCH} checkpoint to {folder}", flush=True)
        write_checkpoint(folder, BENCH, fmt="safetensors", shards=1)
        done.write_text(json.dumps(BENCH.__dict__))
    return folder


def gguf(work: Path, folder: Path, quant: str) -> Path:
    out = work / f"{CHECKPOINT}.{quant}.gguf"
    if not out.is_file():
        from convert import convert

        print(f"prepare: converting to {out.name}", flush=True)
        partial = out.with_suffix(".partial.gguf")
        convert(folder, partial, quant)
        partial.rename(out)
    return out


def pairs_file(work: Path, n: int) -> Path:
    """The first n real pairs as Alpaca JSONL (the input field is already joined into the instruction)."""
    pairs = alpaca_pairs()
    if n > len(pairs):
        raise SystemExit(f"--pairs {n}: tests/data has only {len(pairs)} pairs")
    path = work / f"pairs-{n}.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        for instruction, output in pairs[:n]:
            f.write(json.dumps({"instruction": instruction, "input": "", "output": output}, ensure_ascii=False) + "\n")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("work", type=Path)
    parser.add_argument("--pairs", type=int, required=True)
    parser.add_argument("--quants", required=True)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    folder = checkpoint(args.work)
    models = {quant: str(gguf(args.work, folder, quant)) for quant in args.quants.split(",")}
    # The last line is what bench.py reads.
    print(json.dumps({"checkpoint": str(folder), "models": models, "pairs": str(pairs_file(args.work, args.pairs))}))


if __name__ == "__main__":
    main()
