"""The result writers driven as `localscore score` drives them, on real records with made-up scores."""

from __future__ import annotations

import io
import json
from pathlib import Path

from localscore.deita.templates import QUALITY
from localscore.forms.reader import read_records
from localscore.forms.records import Record
from localscore.forms.results import result
from localscore.forms.writers import open_writer
from tests.support.data import sharegpt_conversations


def sample_records(count: int = 12) -> list[Record]:
    """Real conversations (unicode, code, long answers) plus a line that is not JSON, as the reader gives them."""
    lines = [json.dumps(c, ensure_ascii=False).encode("utf-8") for c in sharegpt_conversations()[:count - 1]]
    lines.insert(count // 2, b"{not json")
    return list(read_records(io.BytesIO(b"\n".join(lines))))


def result_of(record: Record) -> dict:
    return result(record, QUALITY, [1.5 + turn for turn in range(len(record.turns))])


def score(path: Path, records: list[Record], *, resume: bool = False) -> int:
    """What the CLI does: skip and check the resumed records, write the rest, finish. Returns `done`."""
    with open_writer(path, resume=resume) as writer:
        for index, record in enumerate(records):
            if index < writer.done:
                if index == writer.done - 1:
                    writer.check_resumed(record, QUALITY)
                continue
            writer.write(result_of(record))
        writer.finish()
    return writer.done


def partial(path: Path) -> Path:
    return path.with_name(path.name + ".partial")
