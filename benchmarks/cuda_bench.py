"""localscore on a CUDA GPU against the reference method on the same GPU: tokens/s and scores for each --pack and
flash attention on/off, and transformers one sample at a time (as Deita runs it) and batched.

    python benchmarks/cuda_bench.py WORK [--shape 7b-width] [--pairs 64] [--quants f32,f16,q4_k_m]
        [--packs 1,4,16,64] [--batch 16] [--device cuda] [--json WORK/cuda.json]

benchmarks/cuda_bench.sh builds llama-cpp-python for the GPU first and runs this. The 7b-width shape has the 7B
scorer's layers (hidden 4096, ff 11008, 32 heads, the real vocabulary), 4 of its 32: a layer costs what a 7B
layer costs. The reference methods run in one subprocess, localscore in another (llama.cpp's CUDA context and
torch's never share a process); each method times every pair after --warmup untimed ones. Scores are compared
with the reference in fp32, one sample at a time, on the same device: max and mean |delta| and Spearman's rho.
`--device cpu` runs the same steps on the CPU (tests/gpu/test_cuda_bench.py runs the workers so, on the tiny shape).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
ENV = os.environ | {"PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), str(HERE), os.environ.get("PYTHONPATH")]))}
REFERENCE_METHODS = {  # name: (dtype, batched)
    "reference fp32": ("float32", False),
    "reference bf16": ("bfloat16", False),
    "reference bf16 batched": ("bfloat16", True),
}
TRUTH = "reference fp32"


def localscore_worker(models: dict[str, str], pairs: str, packs: list[int], warmup: int) -> dict:
    """In the llama.cpp process: every model, flash attention off and on (an F32 model keeps it off: localscore's
    exact mode), every pack size."""
    import llama_cpp

    from localscore.llama.engine import Engine
    from localscore.llama.scorer import Scorer
    from localscore.options import ScorerOptions

    class FlashEngine(Engine):
        flash_attn = False

        def _context_params(self, n_cells):
            cparams = super()._context_params(n_cells)
            if not self.full_precision:
                cparams.flash_attn_type = (llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED if self.flash_attn
                                           else llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED)
            return cparams

    records = _records(pairs)
    runs = {}
    for quant, model in models.items():
        for flash_attn in (False, True) if quant != "f32" else (False,):
            FlashEngine.flash_attn = flash_attn
            for pack in packs:
                print(f"cuda_bench: localscore {quant} --pack {pack}, flash attention {'on' if flash_attn else 'off'}",
                      file=sys.stderr, flush=True)
                with Scorer(FlashEngine(model, n_seq_max=pack + 1), ScorerOptions(pack=pack)) as scorer:
                    prompts = [scorer.prompt(r["instruction"], r["output"]) for r in records]
                    scores = scorer.score_prompts(prompts[:warmup])
                    start = time.perf_counter()
                    scores += scorer.score_prompts(prompts[warmup:])
                    seconds = time.perf_counter() - start
                    offload = str(scorer.engine.info.offload)
                name = f"localscore {quant} --pack {pack}, flash attention {'on' if flash_attn else 'off'}"
                runs[name] = {"scores": scores, "seconds": seconds, "offload": offload,
                              "timed_tokens": sum(len(p.ids) for p in prompts[warmup:])}
    return runs


def reference_worker(checkpoint: str, pairs: str, batch: int, device: str, warmup: int) -> dict:
    """In the torch process: Deita's prompts through transformers on `device`, each of REFERENCE_METHODS: one at a
    time, or `batch` at once (left-padded, positions from the attention mask)."""
    import sentencepiece
    import torch
    from transformers import LlamaForCausalLM

    from tests.support.reference import SCORE_TOKEN_IDS, deita_prompt

    sp = sentencepiece.SentencePieceProcessor(model_file=str(Path(checkpoint) / "tokenizer.model"))
    ids = [[sp.bos_id(), *sp.encode(deita_prompt("quality", r["instruction"], r["output"]))] for r in _records(pairs)]
    runs = {}
    for method, (dtype, batched) in REFERENCE_METHODS.items():
        print(f"cuda_bench: {method}", file=sys.stderr, flush=True)
        model = LlamaForCausalLM.from_pretrained(checkpoint, dtype=getattr(torch, dtype)).to(device).eval()

        def logits(group: list[list[int]]) -> np.ndarray:
            width = max(map(len, group))
            tokens = torch.tensor([[0] * (width - len(x)) + x for x in group], device=device)
            mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in group], device=device)
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            with torch.no_grad():
                out = model(input_ids=tokens, attention_mask=mask, position_ids=positions)
            return out.logits[:, -1, SCORE_TOKEN_IDS].float().cpu().numpy()

        size = batch if batched else 1
        first = -(-warmup // size) * size  # the warm-up, in whole batches
        if first >= len(ids):
            raise SystemExit(f"cuda_bench: {len(ids)} pairs leave none to time after {first} warm-up pairs")
        rows = [logits(ids[i:i + size]) for i in range(0, first, size)]
        _synchronize(torch, device)
        start = time.perf_counter()
        rows += [logits(ids[i:i + size]) for i in range(first, len(ids), size)]
        _synchronize(torch, device)
        seconds = time.perf_counter() - start
        six = np.concatenate(rows).astype(np.float64)
        p = np.exp(six - six.max(axis=1, keepdims=True))
        scores = (p / p.sum(axis=1, keepdims=True)) @ np.arange(1, 7)
        runs[method] = {"scores": scores.tolist(), "seconds": seconds, "timed_tokens": sum(map(len, ids[first:]))}
        del model
    return runs


def _synchronize(torch, device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _records(pairs: str) -> list[dict]:
    with open(pairs, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def compare(runs: dict[str, dict]) -> list[dict]:
    """One row per method: tokens/s and how far its scores are from the fp32 reference (max and mean |delta|,
    Spearman's rho), the reference first."""
    from scipy.stats import spearmanr

    truth = np.array(runs[TRUTH]["scores"])
    rows = []
    for method, run in runs.items():
        scores = np.array(run["scores"])
        delta = np.abs(scores - truth)
        rho = 1.0 if method == TRUTH else float(spearmanr(scores, truth).statistic)
        rows.append({"method": method, "tokens_per_s": run["timed_tokens"] / run["seconds"],
                     "max_delta": float(delta.max()), "mean_delta": float(delta.mean()), "spearman": rho})
    return rows


def table(rows: list[dict]) -> list[str]:
    lines = ["| method | tokens/s | max abs delta vs fp32 reference | mean abs delta | Spearman |",
             "|---|---:|---:|---:|---:|"]
    lines += [f"| {r['method']} | {r['tokens_per_s']:,.0f} | {r['max_delta']:.1e} | {r['mean_delta']:.1e} | "
              f"{r['spearman']:.4f} |" for r in rows]
    return lines


def _child(script: Path, *args: str) -> dict:
    """Run a step in its own process; its last line of output is its JSON report."""
    out = subprocess.run([sys.executable, str(script), *args], env=ENV, check=True, stdout=subprocess.PIPE, text=True)
    return json.loads(out.stdout.splitlines()[-1])


def measure(args: argparse.Namespace) -> dict:
    inputs = _child(HERE / "prepare.py", str(args.work), "--pairs", str(args.pairs), "--quants", args.quants,
                    "--shape", args.shape)
    common = [inputs["pairs"], "--device", args.device, "--warmup", str(args.warmup)]
    runs = _child(Path(__file__), "reference", inputs["checkpoint"], *common, "--batch", str(args.batch))
    runs |= _child(Path(__file__), "localscore", json.dumps(inputs["models"]), *common, "--packs", args.packs)
    return {"shape": args.shape, "pairs": args.pairs, "device": args.device, "runs": runs, "rows": compare(runs)}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] in ("localscore", "reference"):
        worker = argparse.ArgumentParser()
        worker.add_argument("kind")
        worker.add_argument("model", help="the checkpoint (reference), or a JSON object quant: GGUF (localscore)")
        worker.add_argument("pairs")
        worker.add_argument("--packs", default="1")
        worker.add_argument("--batch", type=int, default=16)
        worker.add_argument("--device", default="cuda")
        worker.add_argument("--warmup", type=int, default=2)
        w = worker.parse_args()
        if w.kind == "localscore":
            report = localscore_worker(json.loads(w.model), w.pairs, [int(p) for p in w.packs.split(",")], w.warmup)
        else:
            report = reference_worker(w.model, w.pairs, w.batch, w.device, w.warmup)
        print(json.dumps(report))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("work", type=Path)
    parser.add_argument("--shape", default="7b-width")
    parser.add_argument("--pairs", type=int, default=64)
    parser.add_argument("--quants", default="f32,f16,q4_k_m")
    parser.add_argument("--packs", default="1,4,16,64")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results = measure(args)
    (args.json or args.work / "cuda.json").write_text(json.dumps(results, indent=1))
    print("\n".join(table(results["rows"])))


if __name__ == "__main__":
    main()
