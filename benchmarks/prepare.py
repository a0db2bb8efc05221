"""Build the benchmark's inputs once under benchmarks/work/: the BENCH checkpoint, its GGUF conversions and the
pairs file. Run by bench.py in a subprocess (with the repository root on PYTHONPATH), so that the parent,
whose memory every child inherits in its peak-RSS figure, never imports torch.

    python benchmarks/prepare.py WORK --pairs 64 --quants f16,q8_0,q4_k_m [--shape tiny|bench|7b-width]

The 7b-width shape is the 7B scorer's layers (hidden 4096, ff 11008, 32 heads, the real vocabulary) with 4 of
its 32: every matrix has the 7B's shape, so kernel speed per layer is the 7B's, at 1/8 of the weights.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from tests.support.checkpoints import BENCH, TINY, Shape, write_checkpoint
from tests.support.data import alpaca_pairs

SHAPES = {"tiny": TINY, "bench": BENCH,
          "7b-width": Shape(hidden=4096, layers=4, heads=32, kv_heads=32, intermediate=11008)}
# Types localscore does not make but llama.cpp repacks differently (made from the f16 file, for the kernel table).
EXTRA_QUANTS = ("q4_0",)


def checkpoint(work: Path, shape: str = "bench") -> Path:
    """The shape's checkpoint (safetensors, one shard); a `.done` marker makes an interrupted build start over."""
    folder = work / f"deita-{shape}"
    done = folder / ".done"
    if not done.is_file():
        shutil.rmtree(folder, ignore_errors=True)
        print(f"prepare: writing the {SHAPES[shape]} checkpoint to {folder}", flush=True)
        write_checkpoint(folder, SHAPES[shape], fmt="safetensors", shards=1)
        done.write_text(json.dumps(SHAPES[shape].__dict__))
    return folder


def gguf(work: Path, folder: Path, quant: str) -> Path:
    """Float types as `localscore convert` writes them; quantized types from the bf16 file with the converter's
    own quantize step (so the float file is written once for all of them)."""
    from localscore.convert import convert
    from localscore.convert.pipeline import FLOAT_TYPES
    from localscore.convert.quantize import quantize

    out = work / f"{folder.name}.{quant}.gguf"
    if not out.is_file():
        source = None if quant in FLOAT_TYPES else gguf(work, folder, "bf16")
        partial = out.with_suffix(".partial.gguf")
        print(f"prepare: converting to {out.name}", flush=True)
        if source is None:
            convert(folder, partial, quant)
        elif quant in EXTRA_QUANTS:
            _llama_quantize(source, partial, quant)
        else:
            quantize(source, partial, quant)
        partial.rename(out)
    return out


def _llama_quantize(source: Path, output: Path, quant: str) -> None:
    import ctypes
    import os

    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{quant.upper()}")
    params.nthread = os.cpu_count() or 1
    if llama_cpp.llama_model_quantize(os.fsencode(source), os.fsencode(output), ctypes.byref(params)) != 0:
        raise SystemExit(f"prepare: llama.cpp could not quantize {source} to {quant}")


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
    parser.add_argument("--shape", choices=SHAPES, default="bench")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    folder = checkpoint(args.work, args.shape)
    models = {quant: str(gguf(args.work, folder, quant)) for quant in args.quants.split(",")}
    # The last line is what bench.py reads.
    print(json.dumps({"checkpoint": str(folder), "models": models, "pairs": str(pairs_file(args.work, args.pairs))}))


if __name__ == "__main__":
    main()
