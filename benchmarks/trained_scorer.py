"""Train a small Deita-prompt quality scorer, so that quantization is measured on trained weights rather than
random ones (random weights are chaotic under quantization and say little about a real scorer).

The model is Llama-shaped with the real Llama SentencePiece vocabulary (so the real score-token ids), every
matrix dimension a multiple of 256 (so every K-quant applies as it does to the 7B scorer), and trained from
scratch with torch on the Deita quality prompt filled with real pairs from tests/data. Its labels are ones a small
model can learn in minutes: a response to *this* instruction scores higher than a response to another one, and a
longer response higher than a shorter one. Each label t in [1, 6] becomes a soft target over the six score tokens
(a Gaussian around t), so the model's expected score is graded the way the real scorer's is, not pinned to
integers. Training is seeded (160 steps): about a minute on 2 idle CPU cores, 15 on the shared VM, ~1.2 GB RSS.

    python benchmarks/trained_scorer.py WORK     # writes WORK/deita-trained/ (bf16 safetensors) and WORK/eval.jsonl
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path

import numpy as np

from localscore.deita.templates import QUALITY
from tests.support.checkpoints import SCORE_TOKEN_IDS, TOKENIZER_MODEL, Shape, config, write_checkpoint
from tests.support.data import DATA, alpaca_pairs

SHAPE = Shape(hidden=256, layers=4, heads=4, kv_heads=4, intermediate=768)
CHECKPOINT = "deita-trained"
# Responses are cut to this many characters and prompts over MAX_TOKENS dropped, to keep training within minutes.
MAX_RESPONSE_CHARS = 1200
MAX_TOKENS = 320
HELD_OUT = 0.3
SIGMA = 0.8  # width of the soft target around the label, in score units
STEPS = 160


def real_pairs() -> list[tuple[str, str]]:
    """Every distinct (instruction, response) pair in tests/data: self-instruct's two sets, MT-Bench's first turns
    with GPT-4's reference answers, and FastChat's dummy conversations' first turns."""
    pairs = list(alpaca_pairs())
    with open(DATA / "self_instruct_seed_tasks.jsonl", encoding="utf-8") as f:
        for line in f:
            task = json.loads(line)
            instance = task["instances"][0]
            instruction = task["instruction"] + ("\n" + instance["input"] if instance["input"] else "")
            pairs.append((instruction, instance["output"]))
    questions = {}
    with open(DATA / "mt_bench_question.jsonl", encoding="utf-8") as f:
        for line in f:
            q = json.loads(line)
            questions[q["question_id"]] = q["turns"][0]
    with open(DATA / "mt_bench_gpt4_reference.jsonl", encoding="utf-8") as f:
        for line in f:
            a = json.loads(line)
            pairs.append((questions[a["question_id"]], a["choices"][0]["turns"][0]))
    for conversation in json.loads((DATA / "fastchat_dummy_conversation.json").read_text(encoding="utf-8")):
        turns = conversation["conversations"]
        pairs.append((turns[0]["value"], turns[1]["value"]))
    seen, unique = set(), []
    for instruction, response in pairs:
        response = response[:MAX_RESPONSE_CHARS]
        if instruction.strip() and response.strip() and (instruction, response) not in seen:
            seen.add((instruction, response))
            unique.append((instruction, response))
    return unique


def labelled(pairs: list[tuple[str, str]], rng: random.Random, mismatched: int) -> list[tuple[str, str, float]]:
    """Each pair as it is (label 3-6 by response length) and with `mismatched` responses of other pairs
    (label 1-2.5 by length); the length grade is the response's rank among all responses, in [0, 1]."""
    lengths = sorted(len(response) for _, response in pairs)

    def grade(response: str) -> float:
        return np.searchsorted(lengths, len(response)) / max(1, len(lengths) - 1)

    out = []
    for i, (instruction, response) in enumerate(pairs):
        out.append((instruction, response, 3.0 + 3.0 * grade(response)))
        for j in rng.sample([j for j in range(len(pairs)) if j != i], mismatched):
            other = pairs[j][1]
            out.append((instruction, other, 1.0 + 1.5 * grade(other)))
    return out


def train(examples: list[tuple[list[int], float]], *, seed: int, steps: int, batch: int = 8,
          lr: float = 2e-3) -> dict[str, np.ndarray]:
    """Train a fresh SHAPE model on (token ids, label) examples for `steps` batches; float32 weights in Hugging
    Face names."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig.from_dict(config(SHAPE) | {"torch_dtype": "float32"}))
    model.train()
    score_ids = torch.tensor(SCORE_TOKEN_IDS)
    values = torch.arange(1, 7, dtype=torch.float32)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    rng = random.Random(seed)
    # Batches of similar length waste little on padding; their order is shuffled every epoch.
    order = sorted(range(len(examples)), key=lambda i: len(examples[i][0]))
    batches = [order[i:i + batch] for i in range(0, len(order), batch)]
    start, step = time.perf_counter(), 0
    while step < steps:
        rng.shuffle(batches)
        for indices in batches[:steps - step]:
            ids = [examples[i][0] for i in indices]
            width = max(map(len, ids))
            input_ids = torch.full((len(ids), width), SHAPE.vocab - 1)  # <pad>, masked out
            mask = torch.zeros((len(ids), width), dtype=torch.long)
            for row, seq in enumerate(ids):
                input_ids[row, :len(seq)] = torch.tensor(seq)
                mask[row, :len(seq)] = 1
            hidden = model.model(input_ids=input_ids, attention_mask=mask).last_hidden_state
            last = hidden[torch.arange(len(ids)), torch.tensor([len(s) - 1 for s in ids])]
            logits = last @ model.lm_head.weight[score_ids].T
            labels = torch.tensor([examples[i][1] for i in indices])
            target = torch.softmax(-((values[None, :] - labels[:, None]) ** 2) / (2 * SIGMA**2), dim=-1)
            loss = -(target * torch.log_softmax(logits, dim=-1)).sum(-1).mean()
            for group in optimizer.param_groups:  # warm-up, then cosine decay
                group["lr"] = lr * min(1.0, (step + 1) / 20) * 0.5 * (1 + math.cos(math.pi * step / steps))
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            step += 1
            if step % 25 == 0:
                print(f"train: step {step}/{steps}, {time.perf_counter() - start:.0f} s, loss {loss.item():.3f}",
                      flush=True)
    return {name: tensor.detach().numpy().copy() for name, tensor in model.state_dict().items()}


def build(work: Path, *, seed: int = 0, steps: int = STEPS) -> tuple[Path, Path]:
    """The trained checkpoint and the held-out evaluation records (Alpaca JSONL with a `label` field), built once
    under `work`; a `.done` marker makes an interrupted build start over."""
    import sentencepiece

    folder, data = work / CHECKPOINT, work / "eval.jsonl"
    done = folder / ".done"
    if done.is_file() and data.is_file():
        return folder, data
    sp = sentencepiece.SentencePieceProcessor(model_file=str(TOKENIZER_MODEL))
    rng = random.Random(seed)
    pairs = real_pairs()
    rng.shuffle(pairs)
    cut = int(len(pairs) * (1 - HELD_OUT))
    train_set, eval_set = labelled(pairs[:cut], rng, 1), labelled(pairs[cut:], rng, 1)

    def ids(instruction: str, response: str) -> list[int]:
        return [sp.bos_id(), *sp.encode(QUALITY.format(instruction, response))]

    examples = [(seq, label) for a, b, label in train_set if len(seq := ids(a, b)) <= MAX_TOKENS]
    print(f"train: {len(examples)} examples from {cut} pairs, {len(eval_set)} held-out records", flush=True)
    with open(data, "w", encoding="utf-8") as f:
        for instruction, response, label in eval_set:
            f.write(json.dumps({"instruction": instruction, "output": response, "label": round(label, 3)},
                               ensure_ascii=False) + "\n")
    write_checkpoint(folder, SHAPE, fmt="safetensors", shards=1, dtype="bfloat16",
                     trained=train(examples, seed=seed, steps=steps))
    done.write_text(json.dumps({"shape": SHAPE.__dict__, "seed": seed, "steps": steps}))
    return folder, data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("work", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=STEPS, help="training batches")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    folder, data = build(args.work, seed=args.seed, steps=args.steps)
    print(json.dumps({"checkpoint": str(folder), "data": str(data)}))


if __name__ == "__main__":
    main()
