"""The real instruction data the tests and benchmarks read, from tests/data (sources and licences:
tests/data/README.md)."""

from __future__ import annotations

import json
import random
from pathlib import Path

DATA = Path(__file__).parent.parent / "data"


def alpaca_pairs() -> list[tuple[str, str]]:
    """(instruction, output) pairs from self-instruct's user-oriented tasks, input joined as Alpaca does."""
    pairs = []
    with open(DATA / "self_instruct_user_oriented.jsonl", encoding="utf-8") as f:
        for line in f:
            task = json.loads(line)
            instance = task["instances"][0]
            instruction = task["instruction"]
            if instance["input"]:
                instruction += "\n" + instance["input"]
            pairs.append((instruction, instance["output"]))
    return pairs


def sharegpt_conversations() -> list[dict]:
    """FastChat's dummy conversations: ShareGPT records of 1 to 3 human/gpt turns."""
    return json.loads((DATA / "fastchat_dummy_conversation.json").read_text(encoding="utf-8"))


def sharegpt_turns(record: dict) -> list[tuple[str, str]]:
    """(human, gpt) pairs of a ShareGPT record that alternates from the human side."""
    c = record["conversations"]
    return [(c[i]["value"], c[i + 1]["value"]) for i in range(0, len(c), 2)]


def scored(records: list[dict], seed: int = 0) -> list[dict]:
    """Records with distinct random quality and complexity scores per turn (distinct evol scores: pandas'
    unstable sort and a stable one agree)."""
    rng = random.Random(seed)
    out = []
    for r in records:
        n = len(r["conversations"]) // 2
        out.append({**r, "quality_scores": [rng.uniform(1, 6) for _ in range(n)],
                    "complexity_scores": [rng.uniform(1, 6) for _ in range(n)]})
    return out
