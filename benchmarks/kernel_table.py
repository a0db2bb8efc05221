"""Which GGUF should I make for this machine? Speed and memory of every weight type, with llama.cpp's repacked
and direct kernels, measured here: the bare scoring loop (benchmarks/bare_loop.py) on real pairs, one process
per run, runs of one type back to back in alternating order.

    .venv/bin/python benchmarks/kernel_table.py [--shape 7b-width] [--types q4_k_m,q5_k_m,q6_k,q8_0]
                                                [--pairs 12] [--repeat 2]

--shape 7b-width (default) has the 7B scorer's layer shape (hidden 4096, ff 11008, 32 heads, the real
vocabulary) and 4 layers, so a layer costs what a 7B layer costs: tokens/s at 7B is about 1/8 of the figure, and
memory grows by the weights of 28 more layers. --shape bench is the 170M benchmark model (quick). Inputs are
built once under benchmarks/work/kernels-SHAPE/ (the 7b-width checkpoint takes ~4 GB of disk, each GGUF
0.6-4.3 GB). See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from bench import WORK, machine, run, worker

TYPES = ("f32", "f16", "bf16", "q8_0", "q6_k", "q5_k_m", "q4_k_m", "q4_0")
SETTINGS = ("direct", "repacked")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=("7b-width", "bench"), default="7b-width")
    parser.add_argument("--types", default="q4_k_m,q5_k_m,q6_k,q8_0",
                        help=f"comma-separated, of {','.join(TYPES)} (q4_0 is made for comparison only)")
    parser.add_argument("--pairs", type=int, default=12, help="real pairs per run; the first 2 are warm-up")
    parser.add_argument("--repeat", type=int, default=2, help="runs per type and setting; the median is shown")
    parser.add_argument("--threads", type=int, help="llama.cpp threads (default: physical cores)")
    args = parser.parse_args()
    types = args.types.split(",")
    if unknown := set(types) - set(TYPES):
        sys.exit(f"kernel_table: unknown types {', '.join(sorted(unknown))}; choose from {', '.join(TYPES)}")
    if args.pairs < 3 or args.repeat < 1:
        sys.exit("kernel_table: --pairs must be at least 3 (two are warm-up) and --repeat at least 1")

    started = time.perf_counter()
    work = WORK / f"kernels-{args.shape}"
    print(f"kernel_table: preparing the {args.shape} models under {work} (cached)", file=sys.stderr, flush=True)
    inputs = run(worker("prepare.py", str(work), "--pairs", str(args.pairs), "--quants", ",".join(types),
                        "--shape", args.shape)).report
    threads = ["--threads", str(args.threads)] if args.threads else []
    rates: dict[tuple[str, str], list[float]] = {}
    rss: dict[tuple[str, str], list[float]] = {}
    auto: dict[str, str] = {}
    report: dict = {}
    for rep in range(args.repeat):
        for quant in types:
            for setting in SETTINGS if rep % 2 == 0 else SETTINGS[::-1]:
                r = run(worker("bare_loop.py", inputs["models"][quant], inputs["pairs"], "--kernels", setting,
                               *threads))
                report = r.report
                rates.setdefault((quant, setting), []).append(report["timed_tokens"] / report["seconds"])
                rss.setdefault((quant, setting), []).append(r.rss_mb)
                print(f"kernel_table: rep {rep + 1}/{args.repeat} {quant:7} {setting:9} "
                      f"{rates[quant, setting][-1]:7.1f} tokens/s {r.rss_mb:6.0f} MB", file=sys.stderr, flush=True)
                auto[quant] = report["auto"]

    print(f"\n{args.shape} shape, {report['tokens']:,} prompt tokens ({args.pairs} pairs, 2 warm-up), median of "
          f"{args.repeat}, {time.perf_counter() - started:.0f} s in all; CPU class {report['cpu']}.\n"
          f"Machine: {machine(report['threads'])}\n")
    print("| type | tokens/s direct | tokens/s repacked | repacked ÷ direct | peak RSS direct | peak RSS repacked "
          "| localscore picks |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for quant in types:
        direct, repacked = (statistics.median(rates[quant, s]) for s in SETTINGS)
        # Each ratio within one repetition: the two ran back to back, under the same load.
        ratio = statistics.median(r / d for d, r in zip(rates[quant, "direct"], rates[quant, "repacked"]))
        memory = [f"{statistics.median(rss[quant, s]):,.0f} MB" for s in SETTINGS]
        print(f"| {quant} | {direct:,.1f} | {repacked:,.1f} | {ratio:.2f}× | {memory[0]} | {memory[1]} "
              f"| {auto[quant]} |")


if __name__ == "__main__":
    main()
