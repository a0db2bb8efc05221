"""data-juicer benchmark: the throughput of `deita_quality_score_filter` under `dj-process` against `localscore score`
on the same data and threads, and the memory of each worker process.

    python benchmarks/dj_bench.py                        # --pairs 192 --repeat 2

The same N real pairs and the BENCH model at q4_k_m (built by prepare.py under benchmarks/work/, as bench.py does)
are scored by
  (a) `localscore score --threads 1`  against  dj-process, np 1, the filter with 1 thread;
  (b) `localscore score --threads 2`  against  dj-process, np 2, the filter with 1 thread per worker process;
repetitions interleaved, medians reported. The filter's time is data-juicer's own for the operator ("OP [...] Done
in X s": the stats column, each worker's model load, scoring, the keep pass, and data-juicer's model cleanup); it
leaves out what any recipe pays whatever its operators (dj-process's start, reading and writing the data), against
the CLI's whole process (Python start and model load included). The scoring rates compare the filter's scoring pass
(tqdm's time for it, whole seconds, each worker's model load included) with the CLI's own summary time (after its
model load). Memory is
the peak RSS of every process of the dj-process tree, sampled every 0.1 s: the worker processes are forked from
the main one and share its pages, so their RSS counts those shared pages too.
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
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORK = HERE / "work"
ENV = os.environ | {"PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}

_DONE = re.compile(r"OP \[deita_quality_score_filter\] Done in ([\d.]+)s\. Left (\d+) samples")
# tqdm's last report of the scoring pass: "... 100%|...| 48/48 [01:02<00:00, ...]".
_SCORING = re.compile(r"deita_quality_score_filter_compute_stats \(num_proc=\d+\): 100%\|[^|]*\| (\d+)/\d+ "
                      r"\[(\d+):(\d+)<")
_SUMMARY = re.compile(r"localscore: [\d,]+ records \(.*?\) in ([\d.]+) s")
_RECIPE = """project_name: dj-bench
dataset_path: {pairs}
export_path: {out}
text_keys: instruction
np: {np}
process:
  - deita_quality_score_filter:
      model: {model}
      threads: 1
"""


def cli_seconds(model: Path, pairs: Path, threads: int, folder: Path) -> tuple[float, float]:
    """(the whole process's seconds, the scoring seconds of its summary line: after the model load)."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "localscore", "score", str(pairs), "-m", str(model), "-t",
                           str(threads), "-o", str(folder / "cli.jsonl")], check=True, env=ENV, capture_output=True,
                          text=True)
    return time.perf_counter() - start, float(_SUMMARY.search(done.stderr)[1])


def dj_run(model: Path, pairs: Path, np: int, folder: Path) -> tuple[float, float, float, list[float]]:
    """(the operator's seconds, its scoring pass's seconds (each worker's model load included), the main process's
    peak RSS MB, each worker's peak RSS MB)."""
    recipe = folder / f"np{np}.yaml"
    recipe.write_text(_RECIPE.format(pairs=pairs, out=folder / f"np{np}" / "out.jsonl", np=np, model=model))
    log_path = folder / f"np{np}.log"
    with open(log_path, "wb") as log_file:
        process = psutil.Popen([str(Path(sys.executable).with_name("dj-process")), "--config", str(recipe)],
                               stdout=log_file, stderr=subprocess.STDOUT, cwd=folder, env=ENV)
    peaks: dict[int, float] = {}
    while process.poll() is None:
        for proc in [process, *process.children(recursive=True)]:
            try:
                peaks[proc.pid] = max(peaks.get(proc.pid, 0.0), proc.memory_info().rss / 2**20)
            except psutil.NoSuchProcess:
                pass
        time.sleep(0.1)
    log = log_path.read_text(errors="replace")
    done, scoring = _DONE.search(log), _SCORING.findall(log)
    if process.returncode != 0 or done is None or not scoring:
        raise SystemExit(f"dj-process failed:\n{log[-3000:]}")
    main_rss = peaks.pop(process.pid)
    # The workers: the children that loaded a model (a scorer's weights make them stand out from helpers).
    workers = sorted(peaks.values(), reverse=True)[:np] if np > 1 else []
    minutes, seconds = scoring[-1][1:]
    return float(done[1]), 60 * int(minutes) + int(seconds), main_rss, workers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=192)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    prepared = subprocess.run([sys.executable, str(HERE / "prepare.py"), str(WORK), "--pairs", str(args.pairs),
                               "--quants", "q4_k_m"], check=True, env=ENV, capture_output=True, text=True)
    inputs = json.loads(prepared.stdout.splitlines()[-1])
    model, pairs = Path(inputs["models"]["q4_k_m"]), Path(inputs["pairs"])
    results: dict[str, list] = {"cli1": [], "cli2": [], "dj1": [], "dj2": []}
    with tempfile.TemporaryDirectory(prefix="dj-bench-") as tmp:
        folder = Path(tmp)
        for repetition in range(args.repeat):
            order = ["cli1", "dj1", "cli2", "dj2"]
            for name in order if repetition % 2 == 0 else order[::-1]:
                if name.startswith("cli"):
                    results[name].append(cli_seconds(model, pairs, int(name[-1]), folder))
                else:
                    results[name].append(dj_run(model, pairs, int(name[-1]), folder))
    print(f"{args.pairs} pairs, BENCH model q4_k_m, {args.repeat} repetitions (medians)")
    for cli, dj, label in (("cli1", "dj1", "1 thread: np 1 x 1 thread"), ("cli2", "dj2", "2 threads: np 2 x 1 thread")):
        cli_run = args.pairs / statistics.median(whole for whole, _ in results[cli])
        cli_scoring = args.pairs / statistics.median(scoring for _, scoring in results[cli])
        dj_run_rate = args.pairs / statistics.median(op for op, *_ in results[dj])
        dj_scoring = args.pairs / statistics.median(scoring for _, scoring, *_ in results[dj])
        main_rss = max(rss for _, _, rss, _ in results[dj])
        workers = [f"{rss:,.0f}" for rss in max((w for *_, w in results[dj]), key=sum)]
        memory = f"main process peak RSS {main_rss:,.0f} MB" + (f", workers {', '.join(workers)} MB" if workers else "")
        print(f"{label}: whole run {dj_run_rate:.2f} vs {cli_run:.2f} records/s = {dj_run_rate / cli_run:.2f}x; "
              f"scoring {dj_scoring:.2f} vs {cli_scoring:.2f} records/s = {dj_scoring / cli_scoring:.2f}x; {memory}")


if __name__ == "__main__":
    main()
