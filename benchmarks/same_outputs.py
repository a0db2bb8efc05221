"""Outputs unchanged: run every command of a localscore checkout on the same small models and data, and record a
sha256 of every file they write (provenance sidecars included) and of the stdout of `info` and `compare`.

    python benchmarks/same_outputs.py --tree /path/to/checkout --work /tmp/golden --out before.json
    python benchmarks/same_outputs.py --tree . --work /tmp/golden --out after.json --against before.json

The models (the tests' tiny scorer as f32, q8_0 and q4_k_m, the tiny embedder as f32 and q8_0) and the data (the
24 Alpaca records and 12 ShareGPT conversations of examples/) are built once into --work by this file's own
checkout, in a child process, and reused. The runs are `PY -m localscore ...` with PYTHONPATH=--tree, from
--work with relative paths, so no absolute path can reach an output.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCORER_QUANTS = ("f32", "q8_0", "q4_k_m")
EMBEDDER_QUANTS = ("f32", "q8_0")
THREADS = "2"


def build(work: Path) -> None:
    """The inputs, once. Runs in a child with this checkout on PYTHONPATH (and localscore installed from it, for
    localscore.convert): the only place that imports the tests' builders."""
    from localscore.convert import convert
    from tests.support.checkpoints import TINY, write_checkpoint

    models, data = work / "models", work / "data"
    models.mkdir(parents=True, exist_ok=True)
    data.mkdir(parents=True, exist_ok=True)
    scorer = work / "checkpoints" / "deita-tiny"
    if not (scorer / "config.json").is_file():
        write_checkpoint(scorer, TINY)
    embedder = work / "checkpoints" / "mistral-tiny"
    if not (embedder / "config.json").is_file():  # as tests/conftest.py's embedder_checkpoint
        shutil.copytree(scorer, embedder, dirs_exist_ok=True)
        cfg = json.loads((embedder / "config.json").read_text())
        cfg |= {"architectures": ["MistralForCausalLM"], "model_type": "mistral", "sliding_window": None}
        (embedder / "config.json").write_text(json.dumps(cfg, indent=2))
    for name, folder, quants in (("deita-tiny", scorer, SCORER_QUANTS), ("mistral-tiny", embedder, EMBEDDER_QUANTS)):
        for quant in quants:
            out = models / f"{name}.{quant}.gguf"
            if not out.is_file():
                partial = models / f"{name}.{quant}.partial.gguf"
                convert(folder, partial, quant)
                partial.rename(out)
    for name in ("alpaca.jsonl", "sharegpt.json"):
        if not (data / name).is_file():
            shutil.copyfile(ROOT / "examples" / name, data / name)


def commands() -> list[list[str]]:
    """Every run, in order (later ones read earlier outputs); paths are relative to --work."""
    f32, q8, q4 = (f"models/deita-tiny.{q}.gguf" for q in SCORER_QUANTS)
    emb, emb8 = (f"models/mistral-tiny.{q}.gguf" for q in EMBEDDER_QUANTS)
    score = ["score", "-q", "-t", THREADS]
    runs = []
    for name, data in (("alpaca", "data/alpaca.jsonl"), ("sharegpt", "data/sharegpt.json")):
        runs += [
            score + [data, "-m", f32, "-o", f"out/{name}.quality.jsonl"],
            score + [data, "-m", q4, "-o", f"out/{name}.quality.parquet"],
            score + [f"out/{name}.quality.jsonl", "-m", q8, "-s", "complexity", "-o", f"out/{name}.both.jsonl"],
            score + [f"out/{name}.quality.parquet", "-m", q8, "-s", "complexity", "-o", f"out/{name}.both.parquet"],
        ]
        for ext in ("jsonl", "parquet"):
            shards = [f"out/{name}.shard-{i}.{ext}" for i in range(2)]
            runs += [score + [data, "-m", f32, "--shard", f"{i}/2", "-o", s] for i, s in enumerate(shards)]
            runs.append(["merge", *shards, "-o", f"out/{name}.merged.{ext}"])
        both = f"out/{name}.both.jsonl"
        runs.append(["embed", "-q", "-t", THREADS, both, "-m", emb, "-o", f"out/{name}.emb.npy"])
        shards = [f"out/{name}.emb-{i}.npy" for i in range(2)]
        runs += [["embed", "-q", "-t", THREADS, both, "-m", emb, "--shard", f"{i}/2", "-o", s]
                 for i, s in enumerate(shards)]
        runs.append(["merge", *shards, "-o", f"out/{name}.emb.merged.npy"])
        select = ["select", "-q", "-t", THREADS, both, "--budget", "6", "--threshold", "0.8"]  # 0.9 rejects none here
        runs += [select + ["--embeddings", f"out/{name}.emb.npy", "-o", f"out/{name}.selected.jsonl"],
                 select + ["-m", emb, "-o", f"out/{name}.selected-lazy.jsonl"]]
        runs += [["compare", "-t", THREADS, f32, q4, data, "--json", f"out/{name}.compare.json"],
                 ["compare", "--embedder", "-t", THREADS, emb, emb8, both, "--json",
                  f"out/{name}.compare-embedder.json"]]
        runs += [["info", f"out/{name}.{o}"] for o in ("both.jsonl", "both.parquet", "merged.jsonl", "emb.npy",
                                                      "selected.jsonl")]
    return runs


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def run_all(python: str, tree: Path, work: Path) -> dict[str, str]:
    """{output name: sha256} of every file under out/ and of the stdout of info and compare."""
    shutil.rmtree(work / "out", ignore_errors=True)
    shutil.rmtree(work / "cache", ignore_errors=True)
    (work / "out").mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCALSCORE_")}
    env |= {"PYTHONPATH": str(tree), "LOCALSCORE_CACHE": "cache", "HF_HUB_OFFLINE": "1"}
    hashes = {}
    for args in commands():
        done = subprocess.run([python, "-m", "localscore", *args], cwd=work, env=env, capture_output=True)
        if done.returncode != 0:
            raise SystemExit(f"same_outputs: `localscore {' '.join(args)}` exited {done.returncode}:\n"
                             f"{done.stderr.decode(errors='replace')}")
        if args[0] in ("info", "compare"):
            hashes[f"stdout: {' '.join(args)}"] = hashlib.sha256(done.stdout).hexdigest()
    for path in sorted((work / "out").rglob("*")):
        if path.is_file():
            hashes[path.relative_to(work).as_posix()] = sha256(path)
    return hashes


def differences(before: dict[str, str], after: dict[str, str]) -> list[str]:
    """One line per output that is missing, new or changed."""
    lines = [f"missing: {k}" for k in sorted(before.keys() - after.keys())]
    lines += [f"new: {k}" for k in sorted(after.keys() - before.keys())]
    lines += [f"changed: {k}" for k in sorted(before.keys() & after.keys()) if before[k] != after[k]]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--tree", type=Path, default=ROOT)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--against", type=Path)
    parser.add_argument("--build-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    work = args.work.resolve()
    if args.build_only:
        return build(work)
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, __file__, "--work", str(work), "--out", "-", "--build-only"], env=env, check=True)
    hashes = run_all(args.python, args.tree.resolve(), work)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(hashes, indent=1, sort_keys=True) + "\n")
    print(f"same_outputs: {len(hashes)} outputs hashed into {args.out}")
    if args.against:
        lines = differences(json.loads(args.against.read_text()), hashes)
        if lines:
            raise SystemExit("same_outputs: outputs differ from " + str(args.against) + ":\n" + "\n".join(lines))
        print(f"same_outputs: all {len(hashes)} outputs equal {args.against}")


if __name__ == "__main__":
    main()
