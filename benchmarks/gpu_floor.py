"""How far an F32 GGUF's scores move on a GPU backend, and which setting moves them: each candidate cause switched
on or off on its own, against the same model with no GPU at all (the CPU build's scores, within 1e-5 of the
reference method). Run with the GPU build's Python (for lavapipe: GGML_VK_VISIBLE_DEVICES=0):

    .venv-vulkan/bin/python benchmarks/gpu_floor.py MODEL.f32.gguf PAIRS.jsonl [--layers 2]

Every setting runs in a process of its own, since llama.cpp reads the Vulkan switch GGML_VK_DISABLE_F16 once per
process. Prints one line per setting: max and mean |delta score| over the pairs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

# name: (environment, context parameters to set, n_gpu_layers or None for all)
SETTINGS = {
    "CPU only (the baseline)": ({}, {}, 0),
    "all layers, localscore's F32 defaults": ({}, {}, None),
    "all layers, fp16 arithmetic off (GGML_VK_DISABLE_F16=1)": ({"GGML_VK_DISABLE_F16": "1"}, {}, None),
    "all layers, flash attention on": ({}, {"flash_attn_type": "LLAMA_FLASH_ATTN_TYPE_ENABLED"}, None),
    "all layers, f16 KV cache": ({}, {"type_k": "GGML_TYPE_F16", "type_v": "GGML_TYPE_F16"}, None),
    "some layers (--layers), localscore's F32 defaults": ({}, {}, "layers"),
    "some layers (--layers), op offload on": ({}, {"op_offload": True}, "layers"),
}


def scores(model: str, pairs: str, overrides: dict, n_gpu_layers: int | None) -> list[float]:
    import llama_cpp

    from localscore.llama.engine import Engine
    from localscore.llama.scorer import Scorer
    from localscore.options import RunOptions

    class Probe(Engine):
        def _context_params(self, n_cells):
            cparams = super()._context_params(n_cells)
            for name, value in overrides.items():
                setattr(cparams, name, getattr(llama_cpp, value) if isinstance(value, str) else value)
            return cparams

    with open(pairs, encoding="utf-8") as f:
        records = [json.loads(line) for line in f if line.strip()]
    with Scorer(Probe(model, RunOptions(n_gpu_layers=n_gpu_layers))) as scorer:
        return scorer.score_many((r["instruction"], r["output"]) for r in records)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--setting":
        _, _, model, pairs, overrides, layers = sys.argv
        print(json.dumps(scores(model, pairs, json.loads(overrides), json.loads(layers))))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("pairs")
    parser.add_argument("--layers", type=int, default=2, help="layers on the GPU for the 'some layers' settings")
    args = parser.parse_args()
    results = {}
    for name, (environment, overrides, layers) in SETTINGS.items():
        layers = args.layers if layers == "layers" else layers
        out = subprocess.run([sys.executable, __file__, "--setting", args.model, args.pairs, json.dumps(overrides),
                              json.dumps(layers)], env=os.environ | environment, check=True, capture_output=True,
                             text=True)
        results[name] = json.loads(out.stdout.splitlines()[-1])
        base = results["CPU only (the baseline)"]
        delta = [abs(a - b) for a, b in zip(results[name], base)]
        print(f"{name}: max {max(delta):.1e}, mean {sum(delta) / len(delta):.1e}", flush=True)


if __name__ == "__main__":
    main()
