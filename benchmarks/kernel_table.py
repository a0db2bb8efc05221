"""Which GGUF should I make for this machine? Every weight type `localscore convert` offers, in one table: its
speed and peak RSS here, and how faithfully it keeps f32's scores.

    .venv/bin/python benchmarks/kernel_table.py [--shape 7b-width] [--types f32,...,q4_k_s] [--pairs 16]
                                                [--repeat 2] [--kernels auto] [--threads N] [--json FILE]

Speed and memory: the bare scoring loop (benchmarks/bare_loop.py) on the first --pairs real pairs, one process
per run, the types interleaved (every repetition runs each type once, odd repetitions in reverse order), so that
the "÷ q4_k_m" ratios, taken within a repetition, hold on a loaded machine. --shape 7b-width (default) has the
7B scorer's layer shape (hidden 4096, ff 11008, 32 heads, the real vocabulary) and 4 layers: a layer costs what a
7B layer costs, tokens/s at 7B is about 1/8 of the figure, and memory grows by the weights of 28 more layers;
--shape bench is the 170M benchmark model (hidden 1024, 8 layers; quick). --kernels lists llama.cpp's settings
to measure (auto: what localscore picks on this CPU; direct; repacked).

Fidelity against f32: on the trained test scorer (quant_fidelity.py: held-out records through
`localscore.runs.compare`, --sample of them) and on the --shape model (its random weights; the scores of the
speed runs against f32's, so --pairs records). The last lines name the fastest type and the most faithful type
within 5 % of it (fidelity on the trained scorer: top-10 % overlap, then mean |Δ|).

Inputs are built once under benchmarks/work/kernels-SHAPE/ (7b-width: ~18 GB of disk for every type) and
benchmarks/work/fidelity/ (the trained scorer: minutes to train). See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench import WORK, machine, run, worker
from localscore.convert import QUANT_TYPES

# q4_0 is not a --quant type; llama.cpp repacks it differently (localscore/llama/kernels.py), so it can be asked for.
TYPES = (*QUANT_TYPES, "q4_0")
SETTINGS = ("auto", "direct", "repacked")
REFERENCE, BASELINE = "f32", "q4_k_m"
NEAR_FASTEST = 0.95  # "within 5 % of the fastest"


def fidelity_on_trained(types: list[str], sample: int) -> dict[str, dict]:
    """quant_fidelity.py's per-turn figures of each type on the trained scorer, in its own process."""
    measured = [t for t in types if t != REFERENCE]
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "fidelity.json"
        run(worker("quant_fidelity.py", "--models", "trained", "--types", ",".join(measured), "--sample",
                   str(sample), "--json", str(out)))
        results = json.loads(out.read_text())["trained"]
    return {name: results[name]["per_turn"] for name in measured}


def fidelity_on_shape(scores: dict[str, list[float]]) -> dict[str, dict]:
    """Each type's scores of the speed runs against f32's, as `localscore compare` figures them."""
    import numpy as np  # here: the speed runs' parent stays small (a child's peak RSS starts from it)

    from localscore.runs.compare.score_agreement import agreement

    reference = np.array(scores[REFERENCE])
    return {quant: agreement(reference, np.array(s)).to_dict() for quant, s in scores.items() if quant != REFERENCE}


def pick(rows: list[dict]) -> tuple[dict, list[dict], dict]:
    """The fastest row, the rows within NEAR_FASTEST of it, and the most faithful of those on the trained
    scorer (top-10 % overlap, then mean |Δ|; f32 is exact)."""
    fastest = max(rows, key=lambda r: r["ratio"])
    near = [r for r in rows if r["ratio"] >= NEAR_FASTEST * fastest["ratio"]]

    def faithfulness(row: dict) -> tuple[float, float]:
        if row["quant"] == REFERENCE:
            return (1.0, 0.0)
        trained = row["trained"]
        return (trained["top_overlap"]["10%"], -trained["mean_abs_delta"])

    return fastest, near, max(near, key=faithfulness)


def cell(figures: dict | None) -> str:
    if figures is None:
        return "exact | 100% | 0 | 0"
    return (f"{figures['spearman']:.4f} | {figures['top_overlap']['10%']:.0%} | {figures['mean_abs_delta']:.4f} | "
            f"{figures['max_abs_delta']:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=("7b-width", "bench"), default="7b-width")
    parser.add_argument("--types", default=",".join(QUANT_TYPES), help=f"comma-separated, of {','.join(TYPES)}; "
                        f"{REFERENCE} (the fidelity reference) and {BASELINE} (the speed baseline) are always run")
    parser.add_argument("--pairs", type=int, default=16, help="real pairs per run; the first 2 are warm-up")
    parser.add_argument("--repeat", type=int, default=2, help="runs per type and setting; medians are shown")
    parser.add_argument("--kernels", default="auto", help=f"comma-separated, of {','.join(SETTINGS)}")
    parser.add_argument("--sample", type=int, default=160, help="held-out records of the trained scorer")
    parser.add_argument("--threads", type=int, help="llama.cpp threads (default: physical cores)")
    parser.add_argument("--json", type=Path, help="also write every run's figures here")
    args = parser.parse_args()
    types = list(dict.fromkeys([REFERENCE, *args.types.split(","), BASELINE]))
    settings = args.kernels.split(",")
    if unknown := set(types) - set(TYPES):
        parser.error(f"unknown types {', '.join(sorted(unknown))}; choose from {', '.join(TYPES)}")
    if unknown := set(settings) - set(SETTINGS):
        parser.error(f"unknown kernels {', '.join(sorted(unknown))}; choose from {', '.join(SETTINGS)}")
    if args.pairs < 3 or args.repeat < 1:
        parser.error("--pairs must be at least 3 (two are warm-up) and --repeat at least 1")

    started, load_at_start = time.perf_counter(), os.getloadavg()
    work = WORK / f"kernels-{args.shape}"
    print(f"kernel_table: preparing the models under {work} (cached)", file=sys.stderr, flush=True)
    inputs = run(worker("prepare.py", str(work), "--pairs", str(args.pairs), "--quants", ",".join(types),
                        "--shape", args.shape)).report

    threads = ["--threads", str(args.threads)] if args.threads else []
    runs: dict[tuple[str, str], list[dict]] = {}
    for rep in range(args.repeat):
        for quant in types if rep % 2 == 0 else types[::-1]:
            for setting in settings if rep % 2 == 0 else settings[::-1]:
                r = run(worker("bare_loop.py", inputs["models"][quant], inputs["pairs"], "--kernels", setting,
                               *threads))
                runs.setdefault((quant, setting), []).append(
                    r.report | {"tokens_per_s": r.report["timed_tokens"] / r.report["seconds"], "rss_mb": r.rss_mb})
                print(f"kernel_table: rep {rep + 1}/{args.repeat} {quant:7} {setting:8} "
                      f"{runs[quant, setting][-1]['tokens_per_s']:7.1f} tokens/s {r.rss_mb:6.0f} MB",
                      file=sys.stderr, flush=True)
    load_at_end = os.getloadavg()
    print("kernel_table: fidelity on the trained scorer", file=sys.stderr, flush=True)
    trained = fidelity_on_trained([t for t in types if t != "q4_0"], args.sample)

    first = settings[0]
    shaped = fidelity_on_shape({quant: runs[quant, first][0]["scores"] for quant in types})
    rows = []
    for quant in types:
        for setting in settings:
            measured = runs[quant, setting]
            # Each ratio within one repetition: the two ran minutes apart at most, under the same load.
            ratio = statistics.median(m["tokens_per_s"] / b["tokens_per_s"]
                                      for m, b in zip(measured, runs[BASELINE, first]))
            rows.append({"quant": quant, "setting": setting, "kernels": measured[0]["kernels"], "ratio": ratio,
                         "tokens_per_s": statistics.median(m["tokens_per_s"] for m in measured),
                         "ratios": [m["tokens_per_s"] / b["tokens_per_s"]
                                    for m, b in zip(measured, runs[BASELINE, first])],
                         "rss_mb": statistics.median(m["rss_mb"] for m in measured),
                         "file_mb": Path(inputs["models"][quant]).stat().st_size / 1e6,
                         "trained": trained.get(quant), "shape": shaped.get(quant)})
    report = runs[BASELINE, first][0]
    print(f"\n{args.shape} model, {report['tokens']:,} prompt tokens ({args.pairs} pairs, 2 warm-up), median of "
          f"{args.repeat}, {time.perf_counter() - started:.0f} s in all; CPU class {report['cpu']}; load average "
          f"{load_at_start[0]:.1f} at the start, {load_at_end[0]:.1f} at the end.\n"
          f"Machine: {machine(report['threads'])}\nFidelity vs f32: trained scorer, {args.sample} held-out records; "
          f"{args.shape} (random weights), the {args.pairs} pairs.\n")
    print("| type | file MB | kernels | tokens/s | ÷ q4_k_m (per rep) | peak RSS | trained: ρ | top 10 % "
          f"| mean \\|Δ\\| | max \\|Δ\\| | {args.shape}: ρ | top 10 % | mean \\|Δ\\| | max \\|Δ\\| |")
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        kernels = r["kernels"] + (" (auto)" if r["setting"] == "auto" else "")
        trained_cell = "n/a | | |" if r["trained"] is None and r["quant"] != REFERENCE else cell(r["trained"])
        print(f"| {r['quant']} | {r['file_mb']:,.0f} | {kernels} | {r['tokens_per_s']:,.1f} | {r['ratio']:.2f}× "
              f"({' / '.join(f'{x:.2f}' for x in r['ratios'])}) | {r['rss_mb']:,.0f} MB | {trained_cell} "
              f"| {cell(r['shape'])} |")
    candidates = [r for r in rows if r["quant"] != "q4_0"]  # what `localscore convert` can make
    fastest, near, best = pick(candidates)
    print(f"\nfastest: {fastest['quant']} ({fastest['kernels']}); within 5 %: "
          f"{', '.join(r['quant'] + ' ' + r['kernels'] for r in near)}; most faithful of those on the trained "
          f"scorer: {best['quant']} ({best['kernels']})")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "runs": {f"{q} {s}": v for (q, s), v in runs.items()},
                                         "load_average": [load_at_start, load_at_end]}, indent=2) + "\n")


if __name__ == "__main__":
    main()
