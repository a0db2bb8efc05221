"""The real instruction data the tests and benchmarks read, from tests/data (sources and licences:
tests/data/README.md)."""

from __future__ import annotations

import json
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
