"""Reading records: every format from real data, every bad-record case, and a property test over random input."""

from __future__ import annotations

import io
import json
import os
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from localscore.errors import InputError
from localscore.forms.reader import read_records
from localscore.forms.records import Record
from localscore.forms.results import result
from localscore.forms.turns import MAX_FIELD_CHARS, Turn
from localscore.deita.templates import COMPLEXITY, QUALITY
from tests.support.data import sharegpt_conversations

DATA = Path(__file__).parents[1] / "data"


def alpaca_from_self_instruct() -> list[dict]:
    records = []
    for name in ("self_instruct_seed_tasks.jsonl", "self_instruct_user_oriented.jsonl"):
        for line in (DATA / name).read_text(encoding="utf-8").splitlines():
            task = json.loads(line)
            for instance in task["instances"]:
                records.append({"id": task["id"], "instruction": task["instruction"], **instance})
    return records


def messages_from_mt_bench(answered: bool = True) -> list[dict]:
    questions = {}
    for line in (DATA / "mt_bench_question.jsonl").read_text(encoding="utf-8").splitlines():
        question = json.loads(line)
        questions[question["question_id"]] = question
    records = []
    for line in (DATA / "mt_bench_gpt4_reference.jsonl").read_text(encoding="utf-8").splitlines():
        reference = json.loads(line)
        question = questions[reference["question_id"]]
        messages = [{"role": "system", "content": "You are a helpful assistant."}]
        for asked, answer in zip(question["turns"], reference["choices"][0]["turns"]):
            messages.append({"role": "user", "content": asked})
            if answered:
                messages.append({"role": "assistant", "content": answer})
        records.append({"question_id": question["question_id"], "category": question["category"],
                        "messages": messages})
    return records


def jsonl(records: list) -> bytes:
    return b"".join(json.dumps(record, ensure_ascii=False).encode("utf-8") + b"\n" for record in records)


def read_bytes(data: bytes, template=QUALITY) -> list[Record]:
    """The records of `data` as `template`'s prompt reads them."""
    return [record.reading(template) for record in read_records(io.BytesIO(data))]


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


# --- real data, every format -------------------------------------------------------------------------------------


@pytest.mark.parametrize("as_array", [False, True], ids=["jsonl", "array"])
def test_alpaca_from_self_instruct(tmp_path, as_array):
    data = alpaca_from_self_instruct()
    path = write(tmp_path, "alpaca.json", json.dumps(data).encode() if as_array else jsonl(data))
    records = list(read_records(path))
    assert len(records) == len(data) == 427
    for number, (record, source) in enumerate(zip(records, data), 1):
        assert (record.number, record.kind, record.error, record.data) == (number, "alpaca", None, source)
        instruction = source["instruction"] + ("\n" + source["input"] if source["input"].strip() else "")
        assert record.turns == (Turn(instruction, source["output"]),)


def test_sharegpt_from_fastchat():
    data = sharegpt_conversations()
    records = list(read_records(DATA / "fastchat_dummy_conversation.json"))
    assert len(records) == 500
    for number, (record, source) in enumerate(zip(records, data), 1):
        assert (record.number, record.kind, record.error) == (number, "sharegpt", None)
        values = [turn["value"] for turn in source["conversations"]]
        assert record.turns == tuple(Turn(a, b) for a, b in zip(values[::2], values[1::2]))


def test_sharegpt_as_jsonl_through_a_pipe():
    data = jsonl(sharegpt_conversations())
    read_fd, write_fd = os.pipe()
    # A real pipe, like `cat data.jsonl | localscore score -`: not seekable, arrives in pieces.
    writer = threading.Thread(target=lambda: (os.write(write_fd, data), os.close(write_fd)))
    writer.start()
    with open(read_fd, "rb") as stream:
        records = list(read_records(stream))
    writer.join()
    assert [r.number for r in records] == list(range(1, 501))
    assert sum(len(r.turns) for r in records) == 1000
    assert all(r.error is None for r in records)


def test_messages_from_mt_bench():
    records = read_bytes(jsonl(messages_from_mt_bench()))
    assert len(records) == 30
    for record in records:
        assert (record.kind, record.error, len(record.turns)) == ("messages", None, 2)
        user = [m["content"] for m in record.data["messages"] if m["role"] == "user"]
        assistant = [m["content"] for m in record.data["messages"] if m["role"] == "assistant"]
        assert record.turns == (Turn(user[0], assistant[0]), Turn(user[1], assistant[1]))


def test_complexity_scores_unanswered_instructions():
    questions = messages_from_mt_bench(answered=False)  # [system, user, user]: not alternating
    single = [{"messages": q["messages"][:2]} for q in questions]
    records = read_bytes(jsonl(single), COMPLEXITY)
    assert all(r.error is None and r.turns == (Turn(r.data["messages"][1]["content"], None),) for r in records)
    assert read_bytes(jsonl(single))[0].error == "turn 2 is from 'user' and has no answer; the quality scorer needs one"

    alpaca = [{"instruction": "Name three rivers.", "input": "", "id": 7}]
    assert read_bytes(jsonl(alpaca), COMPLEXITY)[0].turns == (Turn("Name three rivers.", None),)
    assert read_bytes(jsonl(alpaca))[0].error == "'output' is missing"
    # Complexity ignores responses entirely: an empty or non-string one does not stop it.
    odd = [{"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": None}]}]
    assert read_bytes(jsonl(odd), COMPLEXITY)[0].turns == (Turn("Hi", None),)


def test_format_is_detected_by_content_with_bom_blank_lines_and_crlf(tmp_path):
    data = alpaca_from_self_instruct()[:3]
    body = b"\xef\xbb\xbf\r\n" + jsonl(data[:2]).replace(b"\n", b"\r\n") + b"  \n\n" + jsonl(data[2:])
    records = list(read_records(write(tmp_path, "looks_like_array.json", body)))
    assert [(r.number, r.error) for r in records] == [(2, None), (3, None), (6, None)]
    array = b"\xef\xbb\xbf \n" + json.dumps(data, indent=2).encode()
    assert [r.number for r in read_records(write(tmp_path, "array.jsonl", array))] == [1, 2, 3]
    assert read_bytes(b"") == read_bytes(b"\n \n") == read_bytes(b"[]") == []


def test_result_keeps_every_field_in_order():
    for record in read_bytes(jsonl(alpaca_from_self_instruct()[:50] + messages_from_mt_bench())):
        scores = [4.5] * len(record.turns)
        out = result(record, QUALITY, scores)
        added = "quality_score" if record.kind == "alpaca" else "quality_scores"
        assert list(out) == list(record.data) + [added]
        assert {k: out[k] for k in record.data} == record.data
        assert out[added] == (4.5 if record.kind == "alpaca" else scores)


def test_result_replaces_fields_of_an_earlier_run():
    record = read_bytes(b'{"instruction": "a", "output": "b", "quality_score": 1.0, "quality_error": "x", '
                        b'"quality_truncated": true, "complexity_score": 2.0, "z": 0}\n')[0]
    assert result(record, QUALITY, [3]) == {"instruction": "a", "output": "b", "complexity_score": 2.0, "z": 0,
                                            "quality_score": 3.0}
    assert list(result(record, QUALITY, [3], truncated=True))[-2:] == ["quality_score", "quality_truncated"]
    assert result(record, QUALITY, error="too long")["quality_error"] == "too long"
    assert "quality_score" not in result(record, QUALITY, error="too long")


def test_result_of_a_bad_record():
    good, garbage, shapeless = read_bytes(b'{"conversations": [{"from": "human", "value": "hi"}, '
                                          b'{"from": "gpt", "value": "yo"}]}\nnot json\n{"text": 1}\n',
                                          COMPLEXITY)
    assert result(good, COMPLEXITY, [2.25])["complexity_scores"] == [2.25]
    assert result(garbage, COMPLEXITY) == {"line": 2, "raw": "not json",
                                           "complexity_error": "not valid JSON: Expecting value at column 1"}
    assert result(shapeless, COMPLEXITY)["complexity_error"].startswith("no known record shape")
    with pytest.raises(ValueError):
        result(good, COMPLEXITY, [1.0, 2.0])  # one score per turn, or it is a bug


# --- bad records -------------------------------------------------------------------------------------------------

BIG = "x" * (MAX_FIELD_CHARS + 1)
BAD = [
    (b'{"instruction": "a" "output": "b"}', "not valid JSON: Expecting ',' delimiter at column 21"),
    (b'{"instruction": "caf\xe9", "output": "b"}', "not valid UTF-8 at byte 21"),
    (b"\x00\x00\x00\x00", "not valid JSON: Expecting value at column 1"),
    (b"[" * 100_000, "not valid JSON: nested too deeply"),
    (b"[1, 2]", "expected a JSON object, got array"),
    (b'"text"', "expected a JSON object, got string"),
    (b"null", "expected a JSON object, got null"),
    (b'{"text": "a"}', "no known record shape: expected 'instruction'/'output', 'conversations' or 'messages'"),
    (b'{"instruction": "a", "messages": []}', "has both 'instruction' and 'messages'; a record must have one shape"),
    (b'{"output": "b"}', "'instruction' is missing"),
    (b'{"instruction": "a"}', "'output' is missing"),
    (b'{"instruction": "a", "output": 3}', "'output' must be a string, got number"),
    (b'{"instruction": null, "output": "b"}', "'instruction' must be a string, got null"),
    (b'{"instruction": "a", "input": ["x"], "output": "b"}', "'input' must be a string, got array"),
    (b'{"instruction": "", "output": "b"}', "'instruction' is empty"),
    (b'{"instruction": " \\n\\t\\u3000", "output": "b"}', "'instruction' is empty"),
    (b'{"instruction": "a", "output": "b\\u0000c"}', "'output' contains a NUL byte"),
    (b'{"instruction": "a", "input": "\\u0000", "output": "b"}', "'input' contains a NUL byte"),
    (b'{"instruction": "a\\ud800", "output": "b"}',
     "'instruction' is not valid UTF-8: it has a lone surrogate \\ud800"),
    (json.dumps({"instruction": "a", "output": BIG}).encode(),
     "'output' has 1,000,001 characters; the limit is 1,000,000 per field"),
    (b'{"conversations": []}', "'conversations' is empty"),
    (b'{"conversations": {"from": "human"}}', "'conversations' must be an array, got object"),
    (b'{"conversations": [{"from": "system", "value": "be nice"}]}', "'conversations' has only system turns"),
    (b'{"conversations": [{"from": "gpt", "value": "a"}, {"from": "human", "value": "b"}]}',
     "turn 1 is from 'gpt' but 'human' was expected"),
    (b'{"conversations": [{"from": "human", "value": "a"}, {"from": "gpt", "value": "b"}, '
     b'{"from": "human", "value": "c"}, {"from": "human", "value": "d"}]}',
     "turn 4 is from 'human' but 'gpt' was expected"),
    (b'{"conversations": [{"from": "human", "value": "a"}, {"from": "gpt", "value": "b"}, '
     b'{"from": "human", "value": "c"}]}', "turn 3 is from 'human' and has no answer; the quality scorer needs one"),
    (b'{"conversations": [{"from": "human", "value": "a"}, {"from": "robot", "value": "b"}]}',
     "turn 2 is from 'robot'; expected one of human, user, gpt, assistant, chatgpt, bing, bard, system"),
    (b'{"conversations": [{"value": "a"}]}', "turn 1 has no 'from'"),
    (b'{"conversations": [{"from": 1, "value": "a"}]}', "turn 1 'from' must be a string, got number"),
    (b'{"conversations": ["hello"]}', "turn 1 must be an object, got string"),
    (b'{"conversations": [{"from": "human"}]}', "turn 1 'value' is missing"),
    (b'{"conversations": [{"from": "human", "value": "a"}, {"from": "gpt", "value": ""}]}',
     "turn 2 'value' is empty"),
    (b'{"messages": [{"role": "system", "content": "s"}, {"role": "assistant", "content": "a"}]}',
     "turn 2 is from 'assistant' but 'user' was expected"),
    (b'{"messages": [{"role": "user", "content": [{"type": "text", "text": "a"}]}]}',
     "turn 1 'content' must be a string, got array"),
    (b'{"messages": [{"role": "user", "content": "a"}, {"role": "gpt", "content": "b"}]}',
     "turn 2 is from 'gpt'; expected one of user, assistant, system"),
]


@pytest.mark.parametrize(("line", "error"), BAD, ids=[error[:50] for _, error in BAD])
def test_bad_record_is_reported_and_reading_goes_on(line, error):
    good = b'{"instruction": "Say hi.", "output": "Hi!"}\n'
    records = read_bytes(good + b"\n" + line + b"\n" + good)
    assert [r.number for r in records] == [1, 3, 4]
    assert [r.error for r in records] == [None, error, None]
    assert records[1].turns == ()
    assert (records[1].data is None) == (records[1].raw is not None)
    # Every bad record still becomes one output object naming why.
    assert result(records[1], QUALITY)["quality_error"] == error


def test_bad_elements_of_a_json_array():
    records = read_bytes(b'[{"instruction": "a", "output": "b"}, 5, "\\udc00", {"instruction": "\\udc00", '
                         b'"output": "b"}, {"instruction": "a", "output": "b", "id": "\\ud800"}]')
    assert [(r.number, r.error) for r in records] == [
        (1, None),
        (2, "expected a JSON object, got number"),
        (3, "expected a JSON object, got string"),
        (4, "'instruction' is not valid UTF-8: it has a lone surrogate \\udc00"),
        (5, None),  # a lone surrogate outside the scored text does no harm; the writer escapes it back
    ]
    assert records[1].raw == "5" and records[2].raw == '"\udc00"'  # the JSONL writer writes it back as the escape


def test_unreadable_inputs_raise_input_error_naming_the_file(tmp_path):
    with pytest.raises(InputError, match=r"cannot read .*missing\.jsonl: No such file"):
        read_records(tmp_path / "missing.jsonl")
    with pytest.raises(InputError, match=r"is a folder without \.parquet files or a datasets save_to_disk folder"):
        read_records(tmp_path)
    broken = write(tmp_path, "broken.json", b'[\n  {"instruction": "a"},\n  {"instruction": "b"\n]')
    with pytest.raises(InputError, match=r"broken\.json: not valid JSON at line 4 column 1: Expecting ',' delimiter"):
        read_records(broken)
    latin1 = write(tmp_path, "latin1.json", b'[\n{"instruction": "caf\xe9"}]')
    with pytest.raises(InputError, match=r"latin1\.json line 2: not valid UTF-8"):
        read_records(latin1)
    pretty = write(tmp_path, "object.json", b'{\n  "data": [{"instruction": "a", "output": "b"}]\n}\n')
    with pytest.raises(InputError, match=r"object\.json holds one JSON object, not records"):
        read_records(pretty)
    with pytest.raises(InputError, match=r"<input>: not valid JSON at line 2 column 1: Extra data"):
        read_records(io.BytesIO(b"[1, 2]\n[3]\n"))


def test_jsonl_is_streamed_record_by_record():
    lines = jsonl(alpaca_from_self_instruct())
    first_two = lines[:lines.index(b"\n", lines.index(b"\n") + 1) + 1]
    read_fd, write_fd = os.pipe()
    os.write(write_fd, first_two)  # the rest has not arrived yet, as when a slow producer pipes into stdin
    got = []
    with open(read_fd, "rb") as stream:
        records = read_records(stream)
        reader = threading.Thread(target=lambda: got.extend([next(records), next(records)]))
        reader.start()
        reader.join(timeout=10)
        alive = reader.is_alive()
        os.write(write_fd, lines[len(first_two):65536])  # unblocks a reader that wrongly waits for the end
        os.close(write_fd)
        reader.join()
        assert not alive, "the first records waited for the whole input"
        assert [r.number for r in got] == [1, 2]


# --- property: any input, one Record per non-blank line, never an exception ----------------------------------------

_ROLES = ["human", "user", "gpt", "assistant", "chatgpt", "bing", "bard", "system", "tool", "", "Human"]
_KEYS = ["instruction", "input", "output", "conversations", "messages", "id", "from", "value", "role", "content"]
# Mostly ordinary text, so that good records are common; sometimes any code point, NUL and lone surrogates included.
_text = st.one_of(*[st.text(max_size=12)] * 6, st.text(st.characters(codec=None, exclude_categories=()), max_size=12))
_scalar = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), _text)
_json = st.recursive(_scalar, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.sampled_from(_KEYS) | _text, inner,
                                                                       max_size=4)), max_leaves=12)
_role = st.sampled_from(_ROLES)
_turn = st.one_of(
    st.fixed_dictionaries({"from": _role, "value": _text}),
    st.fixed_dictionaries({"role": _role, "content": _text}),
    st.fixed_dictionaries({}, optional={"from": _role | _scalar, "value": _text | _json,
                                        "role": _role | _scalar, "content": _text | _json}),
)
@st.composite
def _conversation(draw, key: str, role_key: str, text_key: str, humans: list[str], gpts: list[str]) -> dict:
    """Mostly well-formed: alternating turns, maybe system turns and a final question; sometimes shuffled."""
    turns = []
    for _ in range(draw(st.integers(0, 3))):
        if draw(st.integers(0, 4)) == 0:
            turns.append({role_key: "system", text_key: draw(_text)})
        turns.append({role_key: draw(st.sampled_from(humans)), text_key: draw(_text)})
        turns.append({role_key: draw(st.sampled_from(gpts)), text_key: draw(_text)})
    if draw(st.booleans()):
        turns.append({role_key: humans[0], text_key: draw(_text)})
    if draw(st.integers(0, 3)) == 0:
        turns = draw(st.permutations(turns))
    return {key: turns, **draw(st.fixed_dictionaries({}, optional={"id": _json}))}


_record = st.one_of(
    st.fixed_dictionaries({"instruction": _text, "output": _text}, optional={"input": _text | st.none(), "id": _json}),
    st.fixed_dictionaries({}, optional={"instruction": _text | _json, "input": _text | _json,
                                        "output": _text | _json, "id": _json}),
    _conversation("conversations", "from", "value", ["human", "user"], ["gpt", "assistant", "chatgpt", "bing", "bard"]),
    _conversation("messages", "role", "content", ["user"], ["assistant"]),
    st.fixed_dictionaries({"conversations": st.lists(_turn, max_size=6)}, optional={"id": _json}),
    st.fixed_dictionaries({"messages": st.lists(_turn, max_size=6)}, optional={"id": _json}),
    _json,
)


def _encode(value, ensure_ascii: bool) -> bytes:
    # surrogatepass: lone surrogates written raw are invalid UTF-8 in the file, which the reader must report.
    return json.dumps(value, ensure_ascii=ensure_ascii).encode("utf-8", "surrogatepass")


_garbage = st.binary(max_size=30).map(lambda b: b.replace(b"\n", b""))
_line = st.one_of(*[st.builds(_encode, _record, st.booleans())] * 3, _garbage,
                  st.sampled_from([b"", b"   ", b"\r", b"\t \r"]))


def _check(records: list[Record], numbers: list[int]) -> None:
    assert [r.number for r in records] == numbers
    for record in records:
        assert (record.turns == ()) == (record.error is not None)
        assert (record.data is None) == (record.raw is not None)
        for turn in record.turns:
            for text in (turn.instruction, turn.response):
                if text is turn.response and text is None:
                    continue
                assert isinstance(text, str) and text.strip() and "\0" not in text
                text.encode("utf-8")  # valid Unicode: no lone surrogates
        for template in (QUALITY, COMPLEXITY):
            json.dumps(result(record, template, [3.0] * len(record.turns)), ensure_ascii=False)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(lines=st.lists(_line, max_size=8), template=st.sampled_from([QUALITY, COMPLEXITY]))
def test_any_jsonl_gives_one_record_per_line(lines, template):
    data = b"\n".join(lines)
    if lines and lines[0].startswith(b"\xef\xbb\xbf"):
        lines = [lines[0][3:], *lines[1:]]  # a UTF-8 byte order mark opening the file is not part of the first line
    first = next((line.strip(b" \t\r\n") for line in lines if line.strip(b" \t\r\n")), b"")
    # Those two first lines switch to reading one JSON document (array / pretty-printed object), which may raise.
    if first.startswith(b"[") or first == b"{":
        return
    records = read_bytes(data, template)
    _check(records, [n for n, line in enumerate(lines, 1) if line.strip(b" \t\r\n")])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(elements=st.lists(_record, max_size=8), template=st.sampled_from([QUALITY, COMPLEXITY]))
def test_any_json_array_gives_one_record_per_element(elements, template):
    records = read_bytes(json.dumps(elements).encode(), template)
    _check(records, list(range(1, len(elements) + 1)))
