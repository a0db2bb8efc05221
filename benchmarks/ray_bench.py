"""Ray benchmark: a Ray actor's scoring throughput against the single-process CLI on the same threads, and each
actor's memory.

    python benchmarks/ray_bench.py                       # --pairs 96 --repeat 3
    python benchmarks/ray_bench.py --pairs 48 --repeat 5 --json benchmarks/work/ray.json

The same N real pairs and the BENCH model at q4_k_m (built by prepare.py under benchmarks/work/, as bench.py does)
are scored by
  (a) `localscore score --threads 1`, the single-process CLI;
  (b) score_on_ray with 1 actor x 1 thread;
  (c) score_on_ray with 2 actors x 1 thread;
  (d) score_on_ray with 1 actor x 2 threads;
each in its own process on a fresh local Ray cluster of 2 CPUs, repetitions interleaved (odd ones in reverse order),
medians reported. Rates are given three ways: scoring only (the CLI's own summary time, which leaves out its model
load; for Ray the slowest actor's time inside score_records), the run (score_on_ray's time: reading, actor start
and model load, scoring, writing; no cluster start), and the whole process (Python start, ray.init and all).

On a shared machine wall-clock rates say as much about the neighbours as about the code, so the CPU seconds that
scoring took are reported too: for the CLI, its process's CPU time less that of a 1-record run (start-up and model
load); for Ray, each actor's CPU time inside score_records.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORK = HERE / "work"
ENV = os.environ | {"PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
PYTHON = sys.executable
QUANT = "q4_k_m"
CPUS = 2
# (name, actors, threads); None actors: the CLI.
CONFIGS = [("(a) CLI, 1 thread", None, 1), ("(b) Ray, 1 actor x 1 thread", 1, 1),
           ("(c) Ray, 2 actors x 1 thread", 2, 1), ("(d) Ray, 1 actor x 2 threads", 1, 2)]
_SUMMARY = re.compile(r"localscore: (\d[\d,]*) records \(([\d,]+) turns, ([\d,]+) tokens\) in ([\d.]+) s")


@dataclass
class Result:
    records: int
    tokens: int
    scoring_s: float  # CLI: its summary time; Ray: the slowest actor's time in score_records
    run_s: float  # CLI: = scoring_s; Ray: score_on_ray's time (no cluster start)
    process_s: float  # the whole process
    cpu_s: float  # CPU seconds of scoring: CLI, its process less a 1-record run's; Ray, the actors' in score_records
    rss_mb: list[float]  # CLI: the process; Ray: each actor
    scores: list[float]


def worker(model: str, pairs: str, out: str, actors: int, threads: int) -> None:
    """One Ray configuration in this process; prints one JSON line."""
    import logging

    import pyarrow.parquet as pq
    import ray

    from localscore.options import InputOptions, OutputOptions, RayOptions, RunOptions, ScorerOptions
    from localscore.runs.ray import score_on_ray

    start = time.perf_counter()
    ray.init(num_cpus=CPUS, include_dashboard=False, object_store_memory=200 * 2**20, logging_level=logging.WARNING)
    init_s = time.perf_counter() - start
    summary = score_on_ray(InputOptions(pairs), OutputOptions(out), model, ScorerOptions(), RunOptions(threads=threads),
                           RayOptions(actors))
    scores = pq.read_table(out, columns=["quality_score"])["quality_score"].to_pylist()
    print(json.dumps({"init_s": init_s, "run_s": summary.seconds, "records": summary.records, "tokens": summary.tokens,
                      "actors": {name: vars(stats) for name, stats in summary.actors.items()}, "scores": scores}))


def run(cmd: list[str], env: dict | None = None) -> tuple[float, float, float, str, str]:
    """Wall seconds, CPU seconds, peak RSS in MB (this child alone, via wait4), stdout, stderr; `env` adds to the
    environment."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=ENV | (env or {}), cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"ray_bench: {' '.join(cmd)} failed:\n{stderr[-3000:]}")
    return seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, stdout, stderr


def measure(inputs: dict, actors: int | None, threads: int, rep: int) -> Result:
    model, pairs = inputs["models"][QUANT], inputs["pairs"]
    if actors is None:
        out = WORK / "out" / f"cli-{rep}.jsonl"
        script = Path(PYTHON).parent / "localscore"
        cli = [str(script)] if script.is_file() else [PYTHON, "-m", "localscore"]
        args = ["-m", model, "--threads", str(threads), "-o", str(out)]
        _, start_cpu, _, _, _ = run([*cli, "score", inputs["one"], *args])
        seconds, cpu, rss, _, stderr = run([*cli, "score", pairs, *args])
        records, _, tokens, scoring = _SUMMARY.search(stderr).groups()
        scores = [json.loads(line)["quality_score"] for line in out.read_text().splitlines()]
        return Result(int(records.replace(",", "")), int(tokens.replace(",", "")), float(scoring), float(scoring),
                      seconds, cpu - start_cpu, [rss], scores)
    out = WORK / "out" / f"ray-{actors}x{threads}-{rep}.parquet"
    seconds, _, _, stdout, _ = run([PYTHON, str(HERE / "ray_bench.py"), "--worker", model, pairs, str(out), str(actors),
                                 str(threads)])
    report = json.loads(stdout.strip().splitlines()[-1])
    stats = report["actors"].values()
    return Result(report["records"], report["tokens"], max(s["seconds"] for s in stats), report["run_s"], seconds,
                  sum(s["cpu_seconds"] for s in stats), [s["peak_rss_mb"] for s in stats], report["scores"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=96, help="real pairs to score (default 96)")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions; the median is reported (default 3)")
    parser.add_argument("--json", type=Path, help="also write the raw per-repetition numbers here")
    parser.add_argument("--worker", nargs=5, metavar=("MODEL", "PAIRS", "OUT", "ACTORS", "THREADS"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        model, pairs, out, actors, threads = args.worker
        return worker(model, pairs, out, int(actors), int(threads))

    started = time.perf_counter()
    print(f"ray_bench: preparing inputs under {WORK} (cached)", file=sys.stderr, flush=True)
    _, _, _, stdout, _ = run([PYTHON, str(HERE / "prepare.py"), str(WORK), "--pairs", str(args.pairs), "--quants",
                              QUANT])
    inputs = json.loads(stdout.strip().splitlines()[-1])
    inputs["one"] = str(WORK / "pairs-1.jsonl")
    Path(inputs["one"]).write_text(Path(inputs["pairs"]).read_text().splitlines()[0] + "\n")
    (WORK / "out").mkdir(exist_ok=True)
    results: dict[str, list[Result]] = {name: [] for name, _, _ in CONFIGS}
    for rep in range(args.repeat):
        for name, actors, threads in CONFIGS if rep % 2 == 0 else CONFIGS[::-1]:
            r = measure(inputs, actors, threads, rep)
            results[name].append(r)
            rss = ", ".join(f"{mb:.0f}" for mb in r.rss_mb)
            print(f"ray_bench: rep {rep + 1}/{args.repeat} {name:30} scoring {r.scoring_s:5.1f} s, "
                  f"run {r.run_s:5.1f} s, process {r.process_s:5.1f} s, CPU {r.cpu_s:5.1f} s, RSS {rss} MB",
                  file=sys.stderr, flush=True)

    cli = results[CONFIGS[0][0]]
    first = cli[0]
    print(f"\n{first.records} pairs, {first.tokens:,} prompt tokens, BENCH model {QUANT}, median of {args.repeat}, "
          f"{time.perf_counter() - started:.0f} s in all; {os.cpu_count()} CPUs shared with other work.\n")
    print("| config | records/s scoring | tokens/s scoring | tokens/s run | tokens/s whole process "
          "| tokens per CPU-second | ÷ (a) scoring | ÷ (a) whole process | ÷ (a) per CPU-second "
          "| peak RSS per actor MB | scores = (a) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for name, _, _ in CONFIGS:
        rs = results[name]

        def median(f) -> float:
            return statistics.median(f(r) for r in rs)

        ratio = statistics.median(r.tokens / r.scoring_s / (c.tokens / c.scoring_s) for r, c in zip(rs, cli))
        ratio_process = statistics.median(c.process_s / r.process_s for r, c in zip(rs, cli))
        ratio_cpu = statistics.median(c.cpu_s / r.cpu_s for r, c in zip(rs, cli))
        same = all(r.scores == c.scores for r, c in zip(rs, cli))
        print(f"| {name} | {median(lambda r: r.records / r.scoring_s):.2f} "
              f"| {median(lambda r: r.tokens / r.scoring_s):,.0f} "
              f"| {median(lambda r: r.tokens / r.run_s):,.0f} | {median(lambda r: r.tokens / r.process_s):,.0f} "
              f"| {median(lambda r: r.tokens / r.cpu_s):,.0f} | {ratio:.2f}× | {ratio_process:.2f}× "
              f"| {ratio_cpu:.2f}× | {median(lambda r: max(r.rss_mb)):,.0f} "
              f"| {'yes' if same else 'NO'} |")
    if args.json:
        args.json.write_text(json.dumps({name: [vars(r) for r in rs] for name, rs in results.items()}, indent=1))


if __name__ == "__main__":
    main()
