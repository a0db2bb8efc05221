"""The engine's limit: llama.cpp's low-level API with nothing around it. Load the model with the Engine's
settings, tokenize every prompt first, then per prompt: clear the KV cache, one llama_decode of the whole
prompt with logits for its last token only, read the six score logits. No shared head, no records, no output
file.

    python benchmarks/bare_loop.py MODEL PAIRS.jsonl [--warmup 2] [--kernels auto|repacked|direct]

The first --warmup prompts are decoded once untimed and excluded from the decode-only rate; every prompt is
still decoded exactly once, so the process does the same work as `localscore score`. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import llama_cpp
import numpy as np

# Importing localscore.llama.engine also routes llama.cpp's log away from stderr.
from localscore.llama.engine import physical_cores
from localscore.llama.kernels import choose
from localscore.options import KERNELS
from localscore.llama.log import LlamaLog
from localscore.llama.model import read_header
from localscore.deita.templates import LABELS, QUALITY


def load(path: str, n_threads: int, kernels: str):
    llama_cpp.llama_backend_init()
    file_type = read_header(Path(path), LlamaLog()).file_type
    choice = choose(kernels, file_type)  # as the Engine chooses
    mparams = llama_cpp.llama_model_default_params()
    mparams.use_extra_bufts = choice.use_extra_bufts
    model = llama_cpp.llama_model_load_from_file(path.encode(), mparams)
    if not model:
        raise SystemExit(f"cannot load {path}")
    n_ctx = llama_cpp.llama_model_n_ctx_train(model)
    cparams = llama_cpp.llama_context_default_params()  # f16 KV cache, flash attention auto
    cparams.n_ctx = cparams.n_batch = n_ctx
    cparams.n_seq_max = 1
    cparams.n_threads = cparams.n_threads_batch = n_threads
    cparams.no_perf = True
    ctx = llama_cpp.llama_init_from_model(model, cparams)
    if not ctx:
        raise SystemExit(f"cannot create a context for {path}")
    return model, ctx, n_ctx, choice, choose("auto", file_type).kernels


def tokenize(vocab, text: str) -> list[int]:
    data = text.encode("utf-8")
    buf = (llama_cpp.llama_token * (len(data) + 8))()
    n = llama_cpp.llama_tokenize(vocab, data, len(data), buf, len(buf), True, False)  # BOS added
    return buf[:n]


def label_ids(vocab) -> list[int]:
    by_text = {}
    for token in range(llama_cpp.llama_vocab_n_tokens(vocab)):
        by_text.setdefault(llama_cpp.llama_vocab_get_text(vocab, token), token)
    return [by_text[label.encode()] for label in LABELS]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("pairs")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=physical_cores())
    parser.add_argument("--kernels", choices=KERNELS, default="auto")
    args = parser.parse_args()

    model, ctx, n_ctx, choice, auto = load(args.model, args.threads, args.kernels)
    vocab = llama_cpp.llama_model_get_vocab(model)
    mem = llama_cpp.llama_get_memory(ctx)
    targets = label_ids(vocab)
    with open(args.pairs, encoding="utf-8") as f:
        records = [json.loads(line) for line in f if line.strip()]
    prompts = [tokenize(vocab, QUALITY.format(r["instruction"], r["output"])) for r in records]
    if max(map(len, prompts)) > n_ctx:
        raise SystemExit("a prompt exceeds the context; the bare loop does not truncate")
    arrays = [(llama_cpp.llama_token * len(p))(*p) for p in prompts]

    logits = []

    def decode(i: int) -> None:
        llama_cpp.llama_memory_clear(mem, True)
        # llama_batch_get_one asks for the last token's logits only.
        if llama_cpp.llama_decode(ctx, llama_cpp.llama_batch_get_one(arrays[i], len(prompts[i]))) != 0:
            raise SystemExit(f"llama_decode failed on prompt {i}")
        row = llama_cpp.llama_get_logits_ith(ctx, -1)
        logits.append([row[t] for t in targets])

    warm = min(args.warmup, len(prompts) - 1)
    for i in range(warm):
        decode(i)
    start = time.perf_counter()
    for i in range(warm, len(prompts)):
        decode(i)
    seconds = time.perf_counter() - start

    x = np.array(logits, dtype=np.float64)
    p = np.exp(x - x.max(axis=1, keepdims=True))
    scores = (p / p.sum(axis=1, keepdims=True)) @ np.arange(1, 7)
    llama_cpp.llama_free(ctx)
    llama_cpp.llama_model_free(model)
    print(json.dumps({"tokens": sum(map(len, prompts)), "timed_tokens": sum(map(len, prompts[warm:])),
                      "timed_samples": len(prompts) - warm, "seconds": seconds, "threads": args.threads,
                      "kernels": choice.kernels, "auto": auto, "cpu": choice.cpu,
                      "scores": scores.tolist()}))


if __name__ == "__main__":
    main()
