"""The real scorer's shape, measured on this machine: a Llama-7B-shaped checkpoint with seeded random weights,
written as the Deita scorers ship (bf16 `pytorch_model-0000N-of-00003.bin` shards, ~13.5 GB), then

1. `localscore convert ... --quant Q` for each of --quants (time, peak RSS),
2. `localscore score` of N real pairs with each (whole process: seconds, peak RSS) and its steady decode rate
   (localscore_loop.py, after 2 warm-up pairs), the types interleaved,
3. unless --no-bare, the bare loop with llama.cpp's direct and repacked kernels (localscore/llama/kernels.py),
4. the reference method (transformers + torch, one sample at a time) in bf16, and in fp32 when the machine has
   the memory for it (~27 GB of weights), at its steady rate over the first --reference-pairs pairs after one
   warm-up pair (torch bf16 is slow on CPUs without AVX512_BF16: a few pairs give its rate).

    .venv/bin/python benchmarks/bench_7b.py [--pairs 16] [--reference-pairs 4] [--quants q4_k_m,q5_k_s]
                                            [--json benchmarks/work/7b/results.json]

Needs ~32 GB of free disk under benchmarks/work/7b (checkpoint, the converter's bf16 intermediate, the GGUF; 4-5 GB
more per further type) and
~15 GB of RAM for the bf16 reference. Every step is its own subprocess (peak RSS from wait4); built files are
reused by later runs. Takes 15-30 minutes on a 2-core VM. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from bench import PYTHON, WORK, localscore_command, read_scores, run, worker

SHARDS = 3


def build_checkpoint(folder: Path, seed: int = 0) -> None:
    """Write the 7B checkpoint shard by shard, so that at most one shard (~4.5 GB of bf16) is in memory."""
    import torch

    from tests.support.checkpoints import Shape, config, tensor_plan, write_tokenizer_files

    # Llama-7B, as the Deita scorers are: 32 layers of 4096, MHA, ff 11008, the Llama vocabulary + <pad>.
    shape = Shape(hidden=4096, layers=32, heads=32, kv_heads=32, intermediate=11008)

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config(shape), indent=2))
    write_tokenizer_files(folder)
    plan = tensor_plan(shape)
    per_shard = -(-len(plan) // SHARDS)
    generator = torch.Generator().manual_seed(seed)
    weight_map, total = {}, 0
    for n in range(SHARDS):
        name = f"pytorch_model-{n + 1:05d}-of-{SHARDS:05d}.bin"
        part = {}
        for tensor_name, dims, kind, gain in plan[n * per_shard:(n + 1) * per_shard]:
            x = torch.randn(dims, generator=generator)
            if kind == "linear":
                x.mul_(gain / dims[1] ** 0.5)
            elif kind == "norm":
                x.mul_(0.1).add_(1.0)
            part[tensor_name] = x.to(torch.bfloat16)
            weight_map[tensor_name] = name
            total += part[tensor_name].numel() * 2
        torch.save(part, folder / name)
        print(f"bench_7b: wrote {name}", file=sys.stderr, flush=True)
        del part
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / "pytorch_model.bin.index.json").write_text(json.dumps(index, indent=2))


def checkpoint(work: Path) -> Path:
    folder = work / "deita-7b-random"
    done = folder / ".done"
    if not done.is_file():
        print(f"bench_7b: writing the 7B checkpoint to {folder}", file=sys.stderr, flush=True)
        r = run([PYTHON, __file__, "--build-checkpoint", str(folder)])  # torch stays out of this process
        done.write_text(json.dumps({"seconds": r.seconds, "rss_mb": r.rss_mb}))
    return folder


def memory_bound_mb(model: Path, kv_cells: int) -> float:
    """The memory target: the GGUF, the f16 KV cache of the cells the run used (32 layers x K and V x
    4096 x 2 bytes per cell), and 0.6 GB for everything else."""
    return (model.stat().st_size + kv_cells * 32 * 2 * 4096 * 2 + 0.6e9) / 2**20


def free_memory_gb() -> float:
    with open("/proc/meminfo") as f:
        fields = dict(line.split(":", 1) for line in f)
    return int(fields["MemAvailable"].split()[0]) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=16)
    parser.add_argument("--reference-pairs", type=int, default=4)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--quants", default="q4_k_m", help="comma-separated --quant types; ratios are to the first")
    parser.add_argument("--no-reference", action="store_true", help="skip the transformers runs")
    parser.add_argument("--no-bare", action="store_true", help="skip the bare llama.cpp loops")
    parser.add_argument("--build-checkpoint", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--write-pairs", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.build_checkpoint:
        build_checkpoint(args.build_checkpoint)
        return
    if args.write_pairs:
        from prepare import pairs_file

        print(json.dumps({"pairs": str(pairs_file(args.write_pairs, args.pairs))}))
        return

    work = WORK / "7b"
    work.mkdir(parents=True, exist_ok=True)
    folder = checkpoint(work)
    results: dict = {"pairs": args.pairs, "checkpoint_build": json.loads((folder / ".done").read_text()),
                      "load_average_at_start": os.getloadavg()}
    size = sum(p.stat().st_size for p in folder.glob("*.bin"))
    results["checkpoint_gb"] = size / 1e9

    pairs = run([PYTHON, __file__, "--write-pairs", str(work), "--pairs", str(args.pairs)]).report["pairs"]
    threads = ["--threads", str(args.threads)] if args.threads else []
    quants = args.quants.split(",")
    models = {quant: work / f"deita-7b-random.{quant}.gguf" for quant in quants}
    for quant, model in models.items():
        if not model.is_file():
            print(f"bench_7b: converting to {model.name}", file=sys.stderr, flush=True)
            r = run([*localscore_command(), "convert", str(folder), "-o", str(model), "--quant", quant])
            results[f"convert_{quant}"] = {"seconds": r.seconds, "rss_mb": r.rss_mb}
        results[f"gguf_gb_{quant}"] = model.stat().st_size / 1e9
    # The types interleaved, so that each pair of runs of one step shares the machine's load.
    for step in ("score", "loop", *(() if args.no_bare else ("direct", "repacked"))):
        for quant, model in models.items():
            print(f"bench_7b: {quant}: {step}", file=sys.stderr, flush=True)
            if step == "score":
                out = work / f"scored.{quant}.jsonl"
                r = run([*localscore_command(), "score", pairs, "-m", str(model), "-o", str(out), "-q", *threads])
                results[f"localscore_{quant}"] = {"seconds": r.seconds, "rss_mb": r.rss_mb,
                                                  "samples": len(read_scores(out))}
            elif step == "loop":
                # Token counts as llama.cpp tokenizes; the reference counts the same ids.
                loop = run(worker("localscore_loop.py", str(model), pairs, *threads)).report
                ls = results[f"localscore_{quant}"]
                ls |= {"tokens": loop["tokens"], "decode_tokens_per_s": loop["timed_tokens"] / loop["seconds"],
                       "process_tokens_per_s": loop["tokens"] / ls["seconds"], "kv_cells": loop["kv_cells"],
                       "kernels": loop["kernels"], "memory_bound_mb": memory_bound_mb(model, loop["kv_cells"])}
            else:
                b = run(worker("bare_loop.py", str(model), pairs, "--kernels", step, *threads))
                results[f"bare_{step}_{quant}"] = {"seconds": b.seconds, "rss_mb": b.rss_mb,
                                                   "tokens_per_s": b.report["timed_tokens"] / b.report["seconds"]}

    reference_pairs = run([PYTHON, __file__, "--write-pairs", str(work), "--pairs", str(args.reference_pairs)])

    for dtype, bytes_per_weight in () if args.no_reference else (("bfloat16", 2), ("float32", 4)):
        need_gb = size / 2 * bytes_per_weight / 2**30 * 1.05
        if free_memory_gb() < need_gb:
            results[f"reference_{dtype}"] = {"skipped": f"needs ~{need_gb:.0f} GiB, {free_memory_gb():.0f} free"}
            continue
        print(f"bench_7b: reference method in {dtype}", file=sys.stderr, flush=True)
        r = run(worker("reference_loop.py", str(folder), reference_pairs.report["pairs"], "--dtype", dtype,
                       "--warmup", "1", *threads))
        results[f"reference_{dtype}"] = {"seconds": r.seconds, "rss_mb": r.rss_mb,
                                         "tokens_per_s": r.report["timed_tokens"] / r.report["seconds"]}

    torch_bf16 = results.get("reference_bfloat16", {})
    first = results[f"localscore_{quants[0]}"]
    for quant in quants:
        ls = results[f"localscore_{quant}"]
        targets = {"rss_within_bound": ls["rss_mb"] <= ls["memory_bound_mb"],
                   "speed_vs_first": ls["decode_tokens_per_s"] / first["decode_tokens_per_s"]}
        if "tokens_per_s" in torch_bf16:
            # >= 1.25x torch bf16's steady tokens/s in <= 0.4x its peak memory.
            targets |= {"speed_vs_torch_bf16": ls["decode_tokens_per_s"] / torch_bf16["tokens_per_s"],
                        "rss_vs_torch_bf16": ls["rss_mb"] / torch_bf16["rss_mb"]}
        results[f"targets_{quant}"] = targets
    results["load_average_at_end"] = os.getloadavg()  # the host is shared: read the rates with it
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
