"""Writing results: atomic replacement, resume after any cut, the resume check, and stdout."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from localscore.errors import InputError, OutputError
from localscore.forms.writers import open_writer
from localscore.forms.reader import read_records
from localscore.deita.templates import COMPLEXITY, QUALITY
from tests.support.writing import partial, result_of, sample_records, score

DATA = Path(__file__).parents[1] / "data"


def test_write_and_finish(tmp_path):
    records = sample_records()
    out = tmp_path / "out.jsonl"
    assert score(out, records) == 0
    lines = out.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == [result_of(r) for r in records]
    assert json.loads(lines[6]) == {"line": 7, "raw": "{not json",
                                    "quality_error": "not valid JSON: Expecting property name enclosed in double "
                                                     "quotes at column 2"}
    assert not partial(out).exists()


def test_existing_output_is_untouched_until_finish(tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_text("old\n")
    with open_writer(out) as writer:
        writer.write({"a": 1})
        assert out.read_text() == "old\n"
        assert partial(out).read_text() == '{"a": 1}\n'  # flushed at once
        writer.finish()
    assert out.read_text() == '{"a": 1}\n'
    assert not partial(out).exists()


def test_an_error_keeps_the_old_output_and_the_partial(tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_text("old\n")
    with pytest.raises(KeyboardInterrupt):
        with open_writer(out) as writer:
            writer.write({"a": 1})
            raise KeyboardInterrupt
    assert out.read_text() == "old\n"
    assert partial(out).read_text() == '{"a": 1}\n'


def test_a_fresh_run_discards_an_old_partial(tmp_path):
    out = tmp_path / "out.jsonl"
    partial(out).write_text('{"stale": true}\n')
    with open_writer(out) as writer:
        assert writer.done == 0
        writer.finish()
    assert out.read_bytes() == b""


def test_resume_after_a_cut_anywhere_matches_an_uninterrupted_run(tmp_path):
    records = sample_records()
    reference = tmp_path / "reference.jsonl"
    score(reference, records)
    whole = reference.read_bytes()
    ends = [i + 1 for i, byte in enumerate(whole) if byte == ord("\n")]
    cuts = sorted({0, 1, len(whole) - 1, len(whole)} | set(ends) | {end - 1 for end in ends} | {end + 7 for end in ends}
                  | set(range(0, len(whole), 997)))
    for cut in cuts:
        for tail in (b"", b"\0" * 4096, b'{"half": "li', b"\n\n", b"\0\0\0\n" + whole[:200]):
            out = tmp_path / f"out-{cut}.jsonl"
            left = whole[:cut] + tail
            partial(out).write_bytes(left)
            # Every whole line left is kept (a tail "\n" can complete a line cut just before its newline).
            kept = sum(1 for end in ends if left.startswith(whole[:end]))
            assert score(out, records, resume=True) == kept
            assert out.read_bytes() == whole, (cut, tail)
            assert not partial(out).exists()


def test_resume_a_finished_output_with_a_longer_input(tmp_path):
    records = sample_records()
    reference = tmp_path / "reference.jsonl"
    score(reference, records)
    out = tmp_path / "out.jsonl"
    score(out, records[:5])
    assert score(out, records, resume=True) == 5
    assert out.read_bytes() == reference.read_bytes()
    assert score(out, records, resume=True) == len(records)  # nothing left to do: the same file again
    assert out.read_bytes() == reference.read_bytes()


def test_resume_without_anything_starts_fresh(tmp_path):
    out = tmp_path / "out.jsonl"
    assert score(out, sample_records(), resume=True) == 0
    assert len(out.read_bytes().splitlines()) == 12


def test_resume_refuses_another_input(tmp_path):
    records = sample_records()
    out = tmp_path / "out.jsonl"
    score(out, records[:4])
    other = list(read_records(io.BytesIO(b'{"instruction": "a", "output": "b"}\n' * 12)))
    with pytest.raises(InputError, match=r"out\.jsonl\.partial line 4 does not match input record 4: it was made "
                                         r"from a different input; remove it or drop 'resume'"):
        score(out, other, resume=True)
    assert len(out.read_bytes().splitlines()) == 4  # the finished output is still there, untouched


def test_resume_refuses_another_scorer(tmp_path):
    out = tmp_path / "out.jsonl"
    score(out, sample_records()[:3])
    with open_writer(out, resume=True) as writer:
        with pytest.raises(InputError, match=r"out\.jsonl\.partial was not written by the complexity scorer"):
            writer.check_resumed(sample_records()[2], COMPLEXITY)


def test_resume_refuses_a_shorter_input(tmp_path):
    records = sample_records()
    out = tmp_path / "out.jsonl"
    score(out, records)
    with pytest.raises(InputError, match=r"has 12 results, more than the input has records"):
        score(out, records[:10], resume=True)


def test_resume_a_line_that_was_not_json(tmp_path):
    records = sample_records()
    out = tmp_path / "out.jsonl"
    score(out, records[:7])  # ends with the {not json line
    assert score(out, records, resume=True) == 7
    garbage = list(read_records(io.BytesIO(b"\n".join([b"{}"] * 6 + [b"{not jsn"]))))
    with open_writer(out, resume=True) as writer, pytest.raises(InputError, match="does not match input record 7"):
        writer.check_resumed(garbage[6], QUALITY)


def test_resume_needs_a_file():
    with pytest.raises(OutputError, match=r"^'resume' needs an output file \('output'\)$"):
        open_writer(None, resume=True)


def test_unwritable_output_is_an_output_error(tmp_path):
    with pytest.raises(OutputError, match=r"cannot write .*missing.*out\.jsonl(\.partial)?: No such file"):
        open_writer(tmp_path / "missing" / "out.jsonl")
    with pytest.raises(OutputError, match="is a folder"):
        open_writer(tmp_path)


def test_lone_surrogates_are_written_as_escapes(tmp_path):
    out = tmp_path / "out.jsonl"
    with open_writer(out) as writer:
        writer.write({"id": "a\ud800b", "text": "caf\u00e9 \U0001f600"})
        writer.finish()
    data = out.read_bytes()
    assert data == '{"id": "a\\ud800b", "text": "café 😀"}\n'.encode("utf-8")
    assert json.loads(data) == {"id": "a\ud800b", "text": "caf\u00e9 \U0001f600"}


def test_unicode_line_separators_are_escaped_so_every_reader_sees_one_line(tmp_path):
    out = tmp_path / "out.jsonl"
    value = {"text": "a\x85b\u2028c\u2029d"}
    with open_writer(out) as writer:
        writer.write(value)
        writer.finish()
    text = out.read_text(encoding="utf-8")
    assert text == '{"text": "a\\u0085b\\u2028c\\u2029d"}\n'
    assert len(text.splitlines()) == 1 and json.loads(text) == value


_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(
    st.characters(codec=None, exclude_categories=())), lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
    st.text(st.characters(codec=None, exclude_categories=()), max_size=5), inner, max_size=3), max_leaves=10)


@settings(max_examples=200, deadline=None)
@given(objects=st.lists(st.dictionaries(st.text(max_size=5), _json, max_size=4), max_size=5))
def test_any_object_reads_back_the_same(tmp_path_factory, objects):
    out = tmp_path_factory.mktemp("w") / "out.jsonl"
    with open_writer(out) as writer:
        for obj in objects:
            writer.write(obj)
        writer.finish()
    lines = out.read_bytes().split(b"\n")
    assert lines.pop() == b""
    assert [json.loads(line.decode("utf-8")) for line in lines] == objects
    with open_writer(out, resume=True) as writer:
        assert writer.done == len(objects)


def test_stdout(capsysbinary):
    with open_writer(None) as writer:
        assert writer.done == 0
        writer.write({"a": "é"})
        writer.write({"b": 2})
        writer.finish()
    assert capsysbinary.readouterr().out == '{"a": "é"}\n{"b": 2}\n'.encode("utf-8")
