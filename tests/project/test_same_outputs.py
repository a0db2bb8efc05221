"""benchmarks/same_outputs.py's comparison of two hash tables (the runs themselves are not run here)."""

from benchmarks.same_outputs import differences


def test_equal_tables_have_no_differences():
    assert differences({"a": "1", "b": "2"}, {"b": "2", "a": "1"}) == []


def test_missing_new_and_changed_outputs_are_listed():
    before = {"out/a.jsonl": "1", "out/b.npy": "2", "out/c.json": "3"}
    after = {"out/a.jsonl": "1", "out/b.npy": "9", "out/d.json": "4"}
    assert differences(before, after) == ["missing: out/c.json", "new: out/d.json", "changed: out/b.npy"]
