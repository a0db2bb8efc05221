"""Outputs that never harm a file: devices and FIFOs written in place, never replaced; the input never taken as the
output; a full disk ends in one line and a `.partial` that resumes to the uninterrupted run's file."""

from __future__ import annotations

import errno
import json
import os
import re
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

from localscore.cli import cli
from localscore.errors import OutputError
from localscore.forms.writers import open_writer
from tests.support.writing import partial, result_of, sample_records, score

ROOT = Path(__file__).parents[2]
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="making device nodes and mounting need root")


def jsonl_bytes(records) -> bytes:
    return b"".join(json.dumps(result_of(r), ensure_ascii=False).encode("utf-8") + b"\n" for r in records)


@pytest.fixture(scope="module")
def model(gguf_file) -> Path:
    return gguf_file("q8_0")


@needs_root
def test_a_device_is_written_in_place_and_never_replaced(tmp_path):
    null = tmp_path / "null"
    os.mknod(null, stat.S_IFCHR | 0o666, os.makedev(1, 3))  # a /dev/null twin
    records = sample_records()
    assert score(null, records) == 0
    assert stat.S_ISCHR(null.lstat().st_mode) and null.lstat().st_rdev == os.makedev(1, 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["null"]  # no .partial ever made
    with pytest.raises(OutputError, match=r"^'resume' cannot continue .*null: it is not a regular file, so it is "
                                          r"written in place and keeps nothing to continue; drop 'resume'$"):
        open_writer(null, resume=True)
    with pytest.raises(OutputError, match=r"^cannot write Parquet to .*null\.parquet: it is not a regular file"):
        os.mknod(tmp_path / "null.parquet", stat.S_IFCHR | 0o666, os.makedev(1, 3))
        open_writer(tmp_path / "null.parquet")
    assert stat.S_ISCHR(null.lstat().st_mode)


def test_a_fifo_gets_the_lines_and_stays_a_fifo(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    received = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()))
    reader.start()
    records = sample_records()
    score(fifo, records)
    reader.join(timeout=60)
    assert received == [jsonl_bytes(records)]
    assert stat.S_ISFIFO(fifo.lstat().st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo"]


def test_dev_stdout_is_written_in_place(tmp_path, model):
    src = tmp_path / "in.jsonl"
    src.write_text('{"instruction": "a", "output": "b"}\n')
    result = subprocess.run([sys.executable, "-m", "localscore", "score", str(src), "-o", "/dev/stdout", "-m",
                             str(model), "-q"], cwd=ROOT, capture_output=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "quality_score" in json.loads(result.stdout)
    assert os.path.islink("/dev/stdout") and not os.path.exists("/dev/stdout.partial")


def test_a_symlinked_output_stays_a_link_and_its_target_gets_the_result(tmp_path):
    target = tmp_path / "real.jsonl"
    target.write_text("old\n")
    link = tmp_path / "link.jsonl"
    link.symlink_to(target)
    records = sample_records()
    score(link, records)
    assert link.is_symlink() and target.read_bytes() == jsonl_bytes(records)


@pytest.mark.parametrize("how", ["same path", "symlink", "hard link", "other spelling"])
def test_the_input_is_never_the_output(tmp_path, model, how):
    src = tmp_path / "in.jsonl"
    src.write_text('{"instruction": "a", "output": "b"}\n')
    out = {"same path": lambda: src, "symlink": lambda: tmp_path / "link.jsonl",
           "hard link": lambda: tmp_path / "hard.jsonl", "other spelling": lambda: tmp_path / "." / "in.jsonl"}[how]()
    if how == "symlink":
        out.symlink_to(src)
    elif how == "hard link":
        os.link(src, out)
    before = sorted(p.name for p in tmp_path.iterdir())
    result = CliRunner().invoke(cli, ["score", str(src), "-o", str(out), "-m", str(model)], catch_exceptions=False)
    assert result.exit_code == 1
    assert result.stderr.splitlines()[-1] == (f"Error: output {out} is the input {src}; give another output file, "
                                              "the input is never overwritten")
    assert src.read_text() == '{"instruction": "a", "output": "b"}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_an_output_inside_an_input_folder_is_refused(tmp_path, model):
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path / "shards"
    folder.mkdir()
    pq.write_table(pa.table({"instruction": ["a"], "output": ["b"]}), folder / "0.parquet")
    result = CliRunner().invoke(cli, ["score", str(folder), "-o", str(folder / "scored.parquet"), "-m", str(model)])
    assert result.exit_code == 1
    assert result.output.splitlines()[-1] == (f"Error: output {folder / 'scored.parquet'} is inside the input folder "
                                              f"{folder}, where it would be read as input; write it elsewhere")


def _disk_fills_after(monkeypatch, room: int, files: tuple[str, ...] = (".partial", ".tmp")) -> None:
    """Writes to files whose names end in `files` fail with ENOSPC once `room` bytes went in, as on a full disk
    (a short write first, then the error)."""
    real_write = os.write
    left = [room]

    def write(fd, data):
        if not os.readlink(f"/proc/self/fd/{fd}").endswith(files):
            return real_write(fd, data)
        if left[0] <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        written = real_write(fd, bytes(data[:left[0]]))
        left[0] -= written
        return written

    monkeypatch.setattr(os, "write", write)


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_a_full_disk_is_one_line_and_resumes_to_the_same_file(tmp_path, monkeypatch, suffix):
    from localscore.forms import parquet_output

    monkeypatch.setattr(parquet_output, "PART_ROWS", 3)
    records = sample_records()
    reference = tmp_path / f"reference{suffix}"
    score(reference, records)
    out = tmp_path / f"out{suffix}"
    with monkeypatch.context() as patch:
        # Parquet parts carry a footer each: the parts of a whole run take more room than the file made from them.
        _disk_fills_after(patch, reference.stat().st_size // (1 if suffix == ".parquet" else 2))
        with pytest.raises(OutputError) as error:
            score(out, records)
    # A Parquet part is written under a temporary name next to it (durable.write_file).
    part = r"/\.part-\d{6}\.parquet\.\d+\.[0-9a-f]{8}\.tmp"
    written = re.escape(str(partial(out))) + (part if suffix == ".parquet" else "")
    assert re.fullmatch(f"disk full writing {written}; free some space, then rerun with 'resume' to continue",
                        str(error.value))
    assert not out.exists() and partial(out).exists()
    assert 0 < score(out, records, resume=True) < len(records)
    assert out.read_bytes() == reference.read_bytes()


def test_a_full_disk_while_joining_the_parquet_parts_resumes(tmp_path, monkeypatch):
    records = sample_records()
    reference = tmp_path / "reference.parquet"
    score(reference, records)
    out = tmp_path / "out.parquet"
    with monkeypatch.context() as patch:
        _disk_fills_after(patch, 1000, files=("final.tmp",))
        with pytest.raises(OutputError, match=r"^disk full writing .*out\.parquet\.partial/final\.tmp; free some "
                                              r"space, then rerun with 'resume' to continue$"):
            score(out, records)
    assert not out.exists()
    assert score(out, records, resume=True) == len(records)  # every result was in a part: only the join is redone
    assert out.read_bytes() == reference.read_bytes()


@needs_root
def test_a_real_full_file_system(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        records = sample_records(40) * 12  # ~180 KB of results
        reference = tmp_path / "reference.jsonl"
        score(reference, records)
        out = disk / "out.jsonl"
        with pytest.raises(OutputError, match=r"^disk full writing .*out\.jsonl\.partial; free some space, then "
                                              r"rerun with 'resume' to continue$"):
            score(out, records)
        subprocess.run(["mount", "-o", "remount,size=1m", str(disk)], check=True)
        assert 0 < score(out, records, resume=True) < len(records)
        assert out.read_bytes() == reference.read_bytes()
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def test_a_reader_that_goes_away_ends_the_command_quietly(tmp_path, model, pairs):
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"instruction": a, "output": b}) + "\n" for a, b in pairs * 4))
    # Like `localscore score in.jsonl | head -1`: the reader takes one line and goes away.
    process = subprocess.Popen([sys.executable, "-m", "localscore", "score", str(src), "-m", str(model), "-q"],
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert "quality_score" in json.loads(process.stdout.readline())
    process.stdout.close()
    assert process.wait(timeout=120) == 141
    assert process.stderr.read() == b""
