"""Embedding beyond one process: embeddings/s of `localscore embed` in one process and on Ray with 1 and 2 actors,
and the wall time of `select`'s lazy walk done sequentially vs with Ray actors embedding ahead of it, all in one
run on this machine. Also the same model's scoring rate, so that a measured 7B scoring rate can stand in for a 7B
embedding rate in the README's extrapolation.

    python benchmarks/embed_scale.py                     # --conversations 48 --repeat 3 --budget 12
    python benchmarks/embed_scale.py --repeat 5 --json benchmarks/work/embed_scale.json

The model is the BENCH checkpoint at q4_k_m (benchmarks/prepare.py, as bench.py builds it), used as the embedder:
any Llama-shaped GGUF embeds, and speed depends on the shape only. The conversations are real: the 30 two-turn
MT-Bench questions with GPT-4's reference answers (long) and the first ShareGPT conversations of
tests/data/fastchat_dummy_conversation.json (short), with seeded random quality and complexity scores for `select`.

Every measurement is one `localscore` process, as a user runs it, with a cache of its own (nothing is reused), on a
local Ray cluster that the process starts (2 CPUs) where it uses Ray. Repetitions are interleaved (odd ones in
reverse order) and medians reported. Rates are given as the run's (the command's own summary time: reading, actor
start, model loads on Ray, embedding, writing; not interpreter start or ray.init) and the whole process's; for Ray
also the steady rate, embeddings over the slowest actor's time in its work calls.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench import WORK, localscore_command, prepare
from ray_bench import run

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"
QUANT = "q4_k_m"
# (name, command, actors, threads); actors None: one process.
EMBED = [("one process, 1 thread", "embed", None, 1), ("one process, 2 threads", "embed", None, 2),
         ("Ray, 1 actor x 1 thread", "embed", 1, 1), ("Ray, 2 actors x 1 thread", "embed", 2, 1)]
# The walk's baseline is the sequential walk on one core; 2 actors of one core each embed ahead of it in parallel.
WALK = [("walk: one process, 1 thread", "select", None, 1), ("walk: one process, 2 threads", "select", None, 2),
        ("walk: Ray, 1 actor x 1 thread, 2 ahead", "select", 1, 1),
        ("walk: Ray, 2 actors x 1 thread, 4 ahead", "select", 2, 1)]
SCORE = [("score: one process, 2 threads", "score", None, 2)]
_EMBED = re.compile(r"localscore: ([\d,]+) records in ([\d.]+) s: ([\d,]+) embedded \([\d.,]+/s, ([\d,]+) tokens\)")
_SELECT = re.compile(r"localscore: ([\d,]+) selected from [\d,]+ records.* in ([\d.]+) s: ([\d,]+) examined, "
                     r"([\d,]+) rejected as near-duplicates; ([\d,]+) embedded(?: \(([\d,]+) of them ahead)?")
_SCORE = re.compile(r"localscore: ([\d,]+) records \([\d,]+ turns, ([\d,]+) tokens\) in ([\d.]+) s")
_ACTOR = re.compile(r"localscore: actor \S+: ([\d,]+) records, ([\d,]+) tokens in ([\d.]+) s of work")


def _int(text: str | None) -> int:
    return int(text.replace(",", "")) if text else 0


def conversations(n: int) -> list[dict]:
    """MT-Bench's two-turn questions with GPT-4's answers, then ShareGPT conversations, to `n` records."""
    questions = {q["question_id"]: q["turns"] for q in map(json.loads, open(DATA / "mt_bench_question.jsonl"))}
    records = []
    for answer in map(json.loads, open(DATA / "mt_bench_gpt4_reference.jsonl")):
        turns = zip(questions[answer["question_id"]], answer["choices"][0]["turns"])
        records.append({"id": f"mt-bench-{answer['question_id']}", "conversations": [
            {"from": side, "value": text} for pair in turns for side, text in zip(("human", "gpt"), pair)]})
    records += json.loads((DATA / "fastchat_dummy_conversation.json").read_text())
    rng = random.Random(0)
    out = []
    for record in records[:n]:
        turns = len(record["conversations"]) // 2
        out.append({**record, "quality_scores": [rng.uniform(1, 6) for _ in range(turns)],
                    "complexity_scores": [rng.uniform(1, 6) for _ in range(turns)]})
    return out


def measure(model: str, data: Path, budget: int, command: str, actors: int | None, threads: int, out: Path) -> dict:
    args = ["-m", model, "-t", str(threads), "-o", str(out)]
    if command == "select":
        args += ["--budget", str(budget)]
    if actors is not None:
        args += ["--ray", "--actors", str(actors)]
    with tempfile.TemporaryDirectory() as cache:
        seconds, _, rss, _, stderr = run([*localscore_command(), command, str(data), *args],
                                         env={"LOCALSCORE_CACHE": cache})
    actor_lines = [tuple(map(float, (_int(a), _int(b), c))) for a, b, c in _ACTOR.findall(stderr)]
    result = {"process_s": seconds, "rss_mb": rss, "actors": actor_lines}
    if command == "embed":
        records, run_s, embedded, tokens = _EMBED.search(stderr).groups()
        result.update(run_s=float(run_s), items=_int(embedded), tokens=_int(tokens))
    elif command == "select":
        _, run_s, examined, rejected, embedded, ahead = _SELECT.search(stderr).groups()
        result.update(run_s=float(run_s), items=_int(embedded), examined=_int(examined), rejected=_int(rejected),
                      ahead=_int(ahead), tokens=sum(a[1] for a in actor_lines) or None)
    else:
        records, tokens, run_s = _SCORE.search(stderr).groups()
        result.update(run_s=float(run_s), items=_int(records), tokens=_int(tokens))
    result["steady_s"] = max(a[2] for a in actor_lines) if actor_lines else result["run_s"]
    result["output"] = out.read_bytes()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conversations", type=int, default=48, help="records to embed (default 48)")
    parser.add_argument("--budget", type=int, default=12, help="select's budget (default 12)")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions; medians are reported (default 3)")
    parser.add_argument("--json", type=Path, help="also write the raw per-repetition numbers here")
    args = parser.parse_args()

    started = time.perf_counter()
    model = prepare(48, [QUANT])["models"][QUANT]
    (WORK / "out").mkdir(parents=True, exist_ok=True)
    data = WORK / f"conversations-{args.conversations}.jsonl"
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in conversations(args.conversations)))
    plan = EMBED + WALK + SCORE
    results: dict[str, list[dict]] = {name: [] for name, *_ in plan}
    for rep in range(args.repeat):
        for name, command, actors, threads in plan if rep % 2 == 0 else plan[::-1]:
            suffix = ".npy" if command == "embed" else ".jsonl"
            out = WORK / "out" / f"{command}-{actors}x{threads}-{rep}{suffix}"
            r = measure(model, data, args.budget, command, actors, threads, out)
            results[name].append(r)
            print(f"embed_scale: rep {rep + 1}/{args.repeat} {name:40} {r['items']} in run {r['run_s']:6.1f} s, "
                  f"steady {r['steady_s']:6.1f} s, process {r['process_s']:6.1f} s", file=sys.stderr, flush=True)

    def median(name: str, f) -> float:
        return statistics.median(f(r) for r in results[name])

    base = results[EMBED[0][0]]
    first = base[0]
    print(f"\n{first['items']} conversations ({first['tokens']:,} tokens, "
          f"{first['tokens'] / first['items']:,.0f} per conversation), BENCH model {QUANT} as the embedder, "
          f"median of {args.repeat}, {time.perf_counter() - started:.0f} s in all, {os.cpu_count()} CPUs.\n")
    print("| embed | embeddings/s run | embeddings/s steady | embeddings/s whole process | tokens/s steady "
          "| ÷ one process, 1 thread (run) | same .npy bytes |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for name, *_ in EMBED:
        ratio = statistics.median(r["run_s"] and b["run_s"] / r["run_s"] for r, b in zip(results[name], base))
        same = all(r["output"] == b["output"] for r, b in zip(results[name], base))
        print(f"| {name} | {median(name, lambda r: r['items'] / r['run_s']):.2f} "
              f"| {median(name, lambda r: r['items'] / r['steady_s']):.2f} "
              f"| {median(name, lambda r: r['items'] / r['process_s']):.2f} "
              f"| {median(name, lambda r: r['tokens'] / r['steady_s']):,.0f} | {ratio:.2f}× "
              f"| {'yes' if same else 'NO'} |")
    walk = results[WALK[0][0]]
    w = walk[0]
    print(f"\nLazy walk: budget {args.budget} of {args.conversations}, threshold 0.9: {w['examined']} examined, "
          f"{w['rejected']} rejected.\n")
    print("| select | run s | whole process s | embedded | ahead, never examined | speed ÷ sequential 1 thread (run) "
          "| same picks |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for name, *_ in WALK:
        ratio = statistics.median(s["run_s"] / r["run_s"] for r, s in zip(results[name], walk))
        same = all(r["output"] == s["output"] for r, s in zip(results[name], walk))
        print(f"| {name} | {median(name, lambda r: r['run_s']):.1f} | {median(name, lambda r: r['process_s']):.1f} "
              f"| {median(name, lambda r: r['items']):.0f} | {median(name, lambda r: r['ahead']):.0f} "
              f"| {ratio:.2f}× | {'yes' if same else 'NO'} |")
    name = SCORE[0][0]
    score_tps = median(name, lambda r: r["tokens"] / r["run_s"])
    embed_tps = median(EMBED[1][0], lambda r: r["tokens"] / r["run_s"])
    print(f"\nSame model, same threads: scoring {score_tps:,.0f} tokens/s, embedding {embed_tps:,.0f} tokens/s "
          f"(embedding ÷ scoring {embed_tps / score_tps:.2f}).")
    if args.json:
        args.json.write_text(json.dumps({name: [{k: v for k, v in r.items() if k != "output"} for r in rs]
                                         for name, rs in results.items()}, indent=1))


if __name__ == "__main__":
    main()
