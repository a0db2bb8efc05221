"""Benchmark localscore against the bare llama.cpp loop (the engine's limit) and the reference method
(transformers fp32, one sample at a time) on a Deita-shaped random checkpoint and real pairs.

    .venv/bin/python benchmarks/bench.py [--pairs 48] [--repeat 3] [--quants f16,q8_0,q4_k_m]

Every measurement is its own subprocess (peak RSS from wait4), and the methods of one repetition run back to
back, in alternating order, so that ratios compare runs made under the same load. This parent stays small on
purpose: a child's peak RSS starts from its parent's, so it imports nothing heavy. Inputs are built once
under benchmarks/work/ (git-ignored). See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORK = HERE / "work"
# The workers import tests/ (checkpoint builder, reference method), which is not an installed package.
ENV = os.environ | {"PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
PYTHON = sys.executable
TARGET_QUANT = "q4_k_m"

# Method keys, in the order of the table.
# The bare loop runs with both of llama.cpp's kernel settings (localscore/llama/kernels.py); localscore is measured
# against the faster of the two, whatever its own table picks.
BARE_KERNELS = ("direct", "repacked")
AMX = "x86 AMX"  # localscore.llama.kernels.AMX (not imported: this parent loads no llama.cpp); repacked crashes there


def bare(kernels: str, process: bool = False) -> str:
    return f"bare loop, {kernels} ({'whole process' if process else 'decode only'})"


LS, LS_PACK, LS_LOOP = "localscore (whole process)", "localscore --pack 4 (whole process)", "localscore (decode only)"
REF, REF_PROCESS = "reference (decode only)", "reference (whole process)"


@dataclass
class Run:
    seconds: float  # wall time of the whole process
    rss_mb: float  # its peak resident memory
    report: dict  # the worker's JSON line; {} for `localscore score`


@dataclass
class Rate:
    tokens: int
    samples: int
    seconds: float

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.seconds


@dataclass
class Results:
    rates: dict[tuple[str, str], list[Rate]] = field(default_factory=dict)  # (quant, method) -> per repetition
    rss: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    scores: dict[tuple[str, str], list[list[float]]] = field(default_factory=dict)

    def add(self, quant: str, method: str, rate: Rate, rss_mb: float, scores: list[float] | None = None) -> None:
        self.rates.setdefault((quant, method), []).append(rate)
        self.rss.setdefault((quant, method), []).append(rss_mb)
        if scores is not None:
            self.scores.setdefault((quant, method), []).append(scores)


def run(cmd: list[str]) -> Run:
    """Run one measurement; wall time and peak RSS (ru_maxrss of this child alone, via wait4)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=ENV, cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if proc.returncode != 0:
        sys.exit(f"bench: {' '.join(cmd)} failed with {proc.returncode}:\n{stderr[-3000:]}")
    lines = stdout.strip().splitlines()
    report = json.loads(lines[-1]) if lines and lines[-1].startswith("{") else {}
    return Run(seconds, usage.ru_maxrss / 1024, report)


def worker(script: str, *args: str) -> list[str]:
    return [PYTHON, str(HERE / script), *args]


def localscore_command() -> list[str]:
    script = Path(PYTHON).parent / "localscore"
    return [str(script)] if script.is_file() else [PYTHON, "-m", "localscore"]


def read_scores(path: Path) -> list[float]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line)["quality_score"] for line in f if line.strip()]


def prepare(pairs: int, quants: list[str]) -> dict:
    print(f"bench: preparing inputs under {WORK} (cached)", file=sys.stderr, flush=True)
    return run(worker("prepare.py", str(WORK), "--pairs", str(pairs), "--quants", ",".join(quants))).report


def measure(inputs: dict, quants: list[str], repeat: int, reference_repeat: int,
            threads: int | None) -> tuple[Results, dict]:
    """Run every method `repeat` times; also returns what the runs report about themselves (tokens, threads)."""
    results = Results()
    info: dict = {}
    pairs = inputs["pairs"]
    out_dir = WORK / "out"
    out_dir.mkdir(exist_ok=True)
    thread_args = ["--threads", str(threads)] if threads else []

    def step(quant: str, method: str, rep: int) -> None:
        tokens = info.get("tokens", 0)
        model = inputs["models"].get(quant)
        if method in BARE_STEPS:
            kernels = BARE_STEPS[method]
            if kernels == "repacked" and info.get("cpu") == AMX:
                return
            r = run(worker("bare_loop.py", model, pairs, "--kernels", kernels, *thread_args))
            tokens, samples = r.report["tokens"], len(r.report["scores"])
            info.update(tokens=tokens, samples=samples, threads=r.report["threads"], cpu=r.report["cpu"])
            info.setdefault("auto", {})[quant] = r.report["auto"]
            results.add(quant, method, timed(r.report), r.rss_mb, r.report["scores"])
            results.add(quant, bare(kernels, process=True), Rate(tokens, samples, r.seconds), r.rss_mb)
        elif method in (LS, LS_PACK):
            out = out_dir / f"{quant}-{'pack4' if method == LS_PACK else 'pack1'}-{rep}.jsonl"
            pack = ["--pack", "4"] if method == LS_PACK else []
            r = run([*localscore_command(), "score", pairs, "-o", str(out), "-m", model, "-q", *pack, *thread_args])
            scores = read_scores(out)
            results.add(quant, method, Rate(tokens, len(scores), r.seconds), r.rss_mb, scores)
        elif method == LS_LOOP:
            r = run(worker("localscore_loop.py", model, pairs, *thread_args))
            check_tokens(method, r.report["tokens"], tokens)
            results.add(quant, LS_LOOP, timed(r.report), r.rss_mb, r.report["scores"])
        elif method == REF:
            r = run(worker("reference_loop.py", inputs["checkpoint"], pairs, *thread_args))
            check_tokens(method, r.report["tokens"], tokens)
            info["torch_threads"] = r.report["threads"]
            results.add(quant, REF, timed(r.report), r.rss_mb, r.report["scores"])
            results.add(quant, REF_PROCESS, Rate(tokens, len(r.report["scores"]), r.seconds), r.rss_mb)
        name = {REF: "reference"}.get(method, method)
        print(f"bench: rep {rep + 1}/{repeat} {quant:7} {name:36} {r.seconds:6.1f} s {r.rss_mb:6.0f} MB",
              file=sys.stderr, flush=True)

    # The first run is a bare loop: it counts the tokens every method is rated on and names the CPU class. Odd
    # repetitions run the plan backwards, so no method always follows the same neighbour.
    plan = [(q, m) for q in quants for m in (*BARE_STEPS, LS, LS_PACK, LS_LOOP)]
    for rep in range(repeat):
        steps = plan + [("fp32", REF)] if rep < reference_repeat else plan
        for quant, method in steps if rep % 2 == 0 else steps[::-1]:
            step(quant, method, rep)
    return results, info


BARE_STEPS = {bare(kernels): kernels for kernels in BARE_KERNELS}


def timed(report: dict) -> Rate:
    return Rate(report["timed_tokens"], report["timed_samples"], report["seconds"])


def check_tokens(method: str, counted: int, expected: int) -> None:
    if counted != expected:
        print(f"bench: warning: {method} counts {counted} prompt tokens, the bare loop {expected}", file=sys.stderr)


# -- report ---------------------------------------------------------------------------------------------------
def median_rate(results: Results, key: tuple[str, str], per: str) -> float:
    return statistics.median(getattr(r, per) for r in results.rates[key])


def best_rate(results: Results, key: tuple[str, str]) -> float:
    return max(r.tokens_per_s for r in results.rates[key])


def fastest_bare_ratio(results: Results, key: tuple[str, str], quant: str, process: bool = False) -> float:
    """Median over repetitions of key's tokens/s over the faster bare loop's of the same repetition."""
    keys = [(quant, bare(k, process)) for k in BARE_KERNELS]
    bares = [results.rates[k] for k in keys if k in results.rates]
    return statistics.median(x.tokens_per_s / max(b.tokens_per_s for b in rep)
                             for x, *rep in zip(results.rates[key], *bares))


def reference_ratio(results: Results, key: tuple[str, str]) -> float:
    """Median samples/s over the reference's median samples/s (the reference runs in fewer repetitions)."""
    return median_rate(results, key, "samples_per_s") / median_rate(results, ("fp32", REF), "samples_per_s")


def table(results: Results, quants: list[str]) -> list[str]:
    ref = ("fp32", REF)
    ref_rss = statistics.median(results.rss[ref])
    lines = ["| quant | method | tokens/s | best tokens/s | samples/s | peak RSS MB | ÷ faster bare decode "
             "| ÷ faster bare process | samples/s ÷ reference | RSS ÷ reference |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    bares = [bare(k, process) for k in BARE_KERNELS for process in (False, True)]
    rows = [(q, m) for q in quants for m in (*bares, LS, LS_PACK, LS_LOOP)] + [ref, ("fp32", REF_PROCESS)]
    for quant, method in rows:
        key = (quant, method)
        if key not in results.rates:
            continue
        rss = statistics.median(results.rss[key])
        cells = [quant, method, f"{median_rate(results, key, 'tokens_per_s'):,.0f}", f"{best_rate(results, key):,.0f}",
                 f"{median_rate(results, key, 'samples_per_s'):.2f}", f"{rss:,.0f}"]
        if method in (LS, LS_PACK, LS_LOOP):
            cells += [f"{fastest_bare_ratio(results, key, quant):.2f}×",
                      f"{fastest_bare_ratio(results, key, quant, process=True):.2f}×",
                      f"{reference_ratio(results, key):.1f}×", f"{rss / ref_rss:.2f}"]
        elif method in bares:
            cells += ["", "", f"{reference_ratio(results, key):.1f}×", f"{rss / ref_rss:.2f}"]
        else:
            cells += ["", "", "", ""]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def drift(results: Results, quants: list[str], auto: dict[str, str]) -> list[str]:
    """Score differences; "bare loop" is the bare loop with the kernels localscore's table picks (`auto`)."""
    def delta(a: list[float], b: list[float]) -> tuple[float, float]:
        assert len(a) == len(b), "every method scores every pair"
        d = [abs(x - y) for x, y in zip(a, b)]
        return max(d), sum(d) / len(d)

    reference = results.scores[("fp32", REF)][0]
    lines = ["| quant | localscore vs reference: max / mean \\|Δ\\| | bare loop vs reference: max / mean \\|Δ\\| "
             "| --pack 4 vs deterministic: max \\|Δ\\| | bare loop vs localscore: max \\|Δ\\| "
             "| deterministic runs identical |",
             "|---|---:|---:|---:|---:|---|"]
    for quant in quants:
        det = results.scores[(quant, LS)]
        vs_ref = delta(det[0], reference)
        same_kernels = (quant, bare(auto[quant]))
        bare_ref = delta(results.scores[same_kernels][0], reference)
        pack = max(delta(p, d)[0] for p, d in zip(results.scores[(quant, LS_PACK)], det))
        bare_ls = max(delta(b, d)[0] for b, d in zip(results.scores[same_kernels], det))
        same = all(d == det[0] for d in det) and all(s == det[0] for s in results.scores[(quant, LS_LOOP)])
        lines.append(f"| {quant} | {vs_ref[0]:.3f} / {vs_ref[1]:.4f} | {bare_ref[0]:.3f} / {bare_ref[1]:.4f} "
                     f"| {pack:.1e} | {bare_ls:.1e} | "
                     f"{'yes' if same else 'NO'} ({len(det)} CLI + {len(results.scores[(quant, LS_LOOP)])} "
                     "in-process) |")
    ref_runs = results.scores[("fp32", REF)]
    spread = max(delta(r, reference)[0] for r in ref_runs)
    lines.append(f"\nReference scores: mean {statistics.mean(reference):.2f}, stdev {statistics.stdev(reference):.2f} "
                 f"(range {min(reference):.2f}–{max(reference):.2f}); max |Δ| between its own runs {spread:.1e}.")
    return lines


def targets(results: Results) -> list[str]:
    q = TARGET_QUANT
    ls, ref = (q, LS), ("fp32", REF)
    speed = fastest_bare_ratio(results, ls, q)
    speed_process = fastest_bare_ratio(results, ls, q, process=True)
    vs_ref = reference_ratio(results, ls)
    vs_ref_process = (median_rate(results, ls, "samples_per_s")
                      / median_rate(results, ("fp32", REF_PROCESS), "samples_per_s"))
    memory = statistics.median(results.rss[ls]) / statistics.median(results.rss[ref])

    def verdict(ok: bool) -> str:
        return "**met**" if ok else "**missed**"

    return [
        f"- localscore whole process (default kernels) ≥ the faster bare loop (direct or repacked kernels) at {q}: "
        f"{speed:.2f}× its decode-only rate {verdict(speed >= 1.0)}; {speed_process:.2f}× its whole process "
        f"{verdict(speed_process >= 1.0)}",
        f"- ≥ 3× the reference's samples/s at {q}: {vs_ref:.1f}× {verdict(vs_ref >= 3)} against the reference's "
        f"timed loop (its steady rate); {vs_ref_process:.1f}× against its whole process, whose torch start-up "
        "is spread over only the pairs of this run",
        f"- ≤ 1/5 of the reference's peak memory at {q}: {memory:.2f} {verdict(memory <= 0.2)}",
    ]


def machine(threads: int, torch_threads: int | None = None) -> str:
    cpu = "unknown CPU"
    flags = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and cpu == "unknown CPU":
                cpu = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not flags:
                flags = line
    except OSError:
        cpu = platform.processor() or cpu
    amx = ", AMX" if "amx_int8" in flags else ""
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    versions = ", ".join(f"{name} {metadata.version(name)}" for name in ("llama_cpp_python", "torch", "transformers"))
    torch = f", torch {torch_threads}" if torch_threads is not None else ""
    return (f"{cpu}{amx}, {os.cpu_count()} logical CPUs, {mem:.0f} GiB RAM, no GPU; llama.cpp {threads} threads"
            f"{torch}; Python {platform.python_version()}, {versions}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=48, help="real pairs to score (default 48)")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions; the median is reported (default 3)")
    parser.add_argument("--reference-repeat", type=int, default=3,
                        help="repetitions that also run the (slow) reference method (default 3)")
    parser.add_argument("--quants", default="f16,q8_0,q4_k_m", help="GGUF types (default f16,q8_0,q4_k_m)")
    parser.add_argument("--threads", type=int, help="threads for every method (default: physical cores)")
    parser.add_argument("--json", type=Path, help="also write the raw per-repetition numbers here")
    args = parser.parse_args()
    if args.repeat < 1 or args.pairs < 3:
        sys.exit("bench: --repeat must be at least 1 and --pairs at least 3 (two are warm-up)")
    quants = args.quants.split(",")
    if TARGET_QUANT not in quants:
        sys.exit(f"bench: --quants must include {TARGET_QUANT}, the quant the targets are set for")

    started = time.perf_counter()
    inputs = prepare(args.pairs, quants)
    results, info = measure(inputs, quants, args.repeat, max(1, min(args.reference_repeat, args.repeat)),
                            args.threads)
    print(f"\n{info['samples']} pairs, {info['tokens']:,} prompt tokens (BOS included), median of {args.repeat} "
          f"repetitions, {time.perf_counter() - started:.0f} s in all.\n"
          f"Machine: {machine(info['threads'], info['torch_threads'])}; CPU class {info['cpu']}, localscore's "
          f"kernels: {', '.join(f'{q} {k}' for q, k in info['auto'].items())}\n")
    print("\n".join(table(results, quants)))
    print("\nScore drift (quality scores, 1–6):\n")
    print("\n".join(drift(results, quants, info["auto"])))
    print("\nTargets:\n")
    print("\n".join(targets(results)))
    if args.json:
        raw = {f"{q} | {m}": {"rates": [r.__dict__ for r in rates], "rss_mb": results.rss[(q, m)]}
               for (q, m), rates in results.rates.items()}
        args.json.write_text(json.dumps(info | {"runs": raw}, indent=1))


if __name__ == "__main__":
    main()
