"""The whole pipeline under random input: one output line per input record, in order, a score or an error in
each, never a crash and never an invented score."""

from __future__ import annotations

import io
import json
import math

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from localscore import Scorer
from localscore.runs.score import score_file
from localscore.options import InputOptions, OutputOptions, ScorerOptions

text = st.text(st.characters(codec="utf-8"), max_size=40)
json_value = st.recursive(st.none() | st.booleans() | st.integers() | text, lambda v: st.lists(v, max_size=3),
                          max_leaves=5)
turn = st.fixed_dictionaries({"from": st.sampled_from(["human", "gpt", "system", "robot"]), "value": text | json_value})
message = st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "system", "tool"]),
                                 "content": text | json_value})
record = st.one_of(
    st.fixed_dictionaries({"instruction": text, "output": text}, optional={"input": text, "id": st.integers()}),
    st.fixed_dictionaries({"instruction": text | json_value}, optional={"output": text | json_value}),
    st.fixed_dictionaries({"conversations": st.lists(turn, max_size=5)}),
    st.fixed_dictionaries({"messages": st.lists(message, max_size=5)}),
    st.dictionaries(text, json_value, max_size=3),
)
line = st.one_of(record.map(lambda r: json.dumps(r).encode()), st.binary(max_size=30).filter(lambda b: b"\n" not in b))


@pytest.fixture(scope="module")
def scorer(gguf_file):
    with Scorer.from_path(gguf_file("q8_0"), ScorerOptions(ctx=256)) as s:
        yield s


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(line, min_size=1, max_size=6))
def test_every_record_gets_exactly_one_line_with_a_score_or_a_reason(scorer, lines, tmp_path_factory):
    data = b"\n".join(lines) + b"\n"
    first = next((ln.strip(b" \t\r\n") for ln in lines if ln.strip(b" \t\r\n")), b"")
    assume(not first.startswith(b"[") and first != b"{")  # one JSON document: covered by the records tests
    out = tmp_path_factory.mktemp("fuzz") / "out.jsonl"
    summary = score_file(InputOptions(io.BytesIO(data)), OutputOptions(out), scorer)
    expected = sum(1 for ln in lines if ln.strip(b" \t\r\n"))
    got = [json.loads(ln) for ln in out.read_text(encoding="utf-8").splitlines()]
    assert len(got) == expected == summary.records
    assert summary.scored + summary.errored == summary.records
    for obj in got:
        has_score = "quality_score" in obj or "quality_scores" in obj
        assert has_score != ("quality_error" in obj)
        if has_score:
            values = obj.get("quality_scores", [obj.get("quality_score")])
            assert values and all(isinstance(v, float) and math.isfinite(v) and 1 <= v <= 6 for v in values)


def test_pack_spans_records_and_keeps_order(gguf_file, pairs, tmp_path, monkeypatch):
    data = "".join(json.dumps({"instruction": a, "output": b}) + "\n" for a, b in pairs[:10])
    with Scorer.from_path(gguf_file("q8_0")) as scorer:
        single = score_file(InputOptions(io.BytesIO(data.encode())), OutputOptions(tmp_path / "single.jsonl"), scorer)
    with Scorer.from_path(gguf_file("q8_0"), ScorerOptions(pack=4)) as scorer:
        calls = []
        decode = scorer.engine.logits_many
        monkeypatch.setattr(scorer.engine, "logits_many", lambda prompts, targets: calls.append(len(prompts))
                            or decode(prompts, targets))
        packed = score_file(InputOptions(io.BytesIO(data.encode())), OutputOptions(tmp_path / "packed.jsonl"), scorer)
    assert calls == [4, 4, 2]
    assert packed.scored == single.scored == 10
    single_lines, packed_lines = ([json.loads(x) for x in (tmp_path / name).read_text().splitlines()]
                                  for name in ("single.jsonl", "packed.jsonl"))
    for a, b in zip(single_lines, packed_lines):
        assert a["instruction"] == b["instruction"]
        assert abs(a["quality_score"] - b["quality_score"]) <= 0.15
