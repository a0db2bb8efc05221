"""The one durable-write path: whole files and streams land complete under their name, a full disk is one line,
two runs never write one output, and no file write in the package goes around the helper."""

from __future__ import annotations

import errno
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from localscore.cli import cli
from localscore.forms import durable
from localscore.forms.durable import OutputLock, copy_file, write_file
from localscore.errors import OutputError

ROOT = Path(__file__).parents[2]

# What writes a file, outside durable.py: the open modes that write, the writing calls of pathlib, numpy, shutil,
# os, pyarrow and matplotlib.
_WRITES = re.compile(
    r"""open\([^)]*["'](?:[wax]|r\+)b?\+?["']"""
    r"""|os\.open\([^)]*O_(?:WRONLY|RDWR|CREAT|APPEND|TRUNC)"""
    r"""|\.write_(?:text|bytes)\(|np\.save|\.tofile\(|os\.(?:replace|rename)\(|\.rename\(|\.replace\(\w*output\w*\)"""
    r"""|shutil\.(?:copy\w*|move)\(|write_table\(|\w+\.ParquetWriter\(|savefig\(|GGUFWriter\(|os\.truncate\("""
)
# Each remaining match, and why it is not a file write that bypasses the helper.
_ALLOWED = {
    ("localscore/cli.py", "os.dup2(os.open(os.devnull, os.O_WRONLY)"): "points stdout at /dev/null after a closed pipe",
    ("localscore/forms/parquet_output.py", "self._pq.write_table(table, buffer)"): "an in-memory buffer, then write_file",
    ("localscore/forms/parquet_output.py", "pq.ParquetWriter(sink, schema)"): "into a durable.Sink, committed after",
    ("localscore/forms/parquet_output.py", "writer.write_table(table.slice(0, rows)"): "the ParquetWriter on the Sink",
    ("localscore/runs/compare/plot.py", 'figure.savefig(png, format="png")'): "an in-memory PNG, then write_file",
    # convert/: gguf-py and llama.cpp's quantizer write GGUF files from a path; they write OUT.partial, which
    # durable.publish_written fsyncs and renames.
    ("convert/pipeline.py", "writer = gguf.GGUFWriter(path, ARCH_NAME)"): "OUT.partial, published by durable",
}


def test_no_file_write_bypasses_the_durable_helper():
    found = []
    for folder in ("localscore", "convert"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            name = path.relative_to(ROOT).as_posix()
            if name == "localscore/forms/durable.py":
                continue
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if _WRITES.search(line) and not any(name == file and text in line for file, text in _ALLOWED):
                    found.append(f"{name}:{number}: {line.strip()}")
    assert found == []
    # The pattern does catch what it is for.
    for line in ['open(p, "wb")', "open(p, 'a')", 'open(p, "r+b")', "p.write_text(s)", "np.save(p, a)",
                 "os.replace(a, b)", "pq.write_table(t, p)", "pq.ParquetWriter(p, schema)", "partial_output.replace(output)",
                 "os.open(p, os.O_WRONLY | os.O_CREAT)"]:
        assert _WRITES.search(line), line
    for line in ['open(p, "rb")', "open(p)", "text.replace('a', 'b')"]:
        assert not _WRITES.search(line), line


def test_write_file_lands_whole_with_a_plain_files_permissions(tmp_path):
    target = tmp_path / "out.json"
    target.write_bytes(b"old")
    write_file(target, b'{"a": 1}\n')
    assert target.read_bytes() == b'{"a": 1}\n'
    assert list(tmp_path.iterdir()) == [target]  # no temporary file left
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "out.json"
    target.write_bytes(b"old")

    def full(fd, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(OutputError, match=r"^disk full writing .*\.out\.json\.\d+\.[0-9a-f]{8}\.tmp; free some space "
                                          r"and rerun$"):
        write_file(target, b"new")
    monkeypatch.undo()
    assert target.read_bytes() == b"old"
    assert list(tmp_path.iterdir()) == [target]


def test_copy_file_and_a_write_into_a_missing_folder(tmp_path):
    source = tmp_path / "a.bin"
    source.write_bytes(os.urandom(3 * 2**20 + 5))
    copy_file(source, tmp_path / "b.bin")
    assert (tmp_path / "b.bin").read_bytes() == source.read_bytes()
    with pytest.raises(OutputError, match=r"^cannot write .*missing.*: No such file or directory$"):
        write_file(tmp_path / "missing" / "c.json", b"x")


def test_the_lock_names_its_holder_and_is_gone_after_release(tmp_path):
    out = tmp_path / "out.jsonl"
    with OutputLock(out):
        holder = f"pid {os.getpid()} on {socket.gethostname()}"
        assert (tmp_path / "out.jsonl.lock").read_text().strip() == holder
        # flock belongs to an open file, so a second open in this process is refused like another process.
        with pytest.raises(OutputError) as error:
            OutputLock(out).acquire()
        assert str(error.value) == (f"{out} is being written by another run ({holder}); wait for it to finish, "
                                    "or give another output")
    assert not (tmp_path / "out.jsonl.lock").exists()
    with OutputLock(out):  # free again
        pass


def test_a_stale_lock_file_of_a_dead_run_does_not_block(tmp_path):
    out = tmp_path / "out.jsonl"
    (tmp_path / "out.jsonl.lock").write_text("pid 1 on elsewhere\n")  # killed: the file stays, its flock does not
    with OutputLock(out):
        assert (tmp_path / "out.jsonl.lock").read_text().startswith(f"pid {os.getpid()} ")


def _score(src: str, out: Path, model: Path, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "localscore", "score", src, "-o", str(out), "-m", str(model),
                             "-q"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_a_second_run_on_the_same_output_refuses_and_the_first_finishes(tmp_path, gguf_file, suffix):
    model = gguf_file("q8_0")
    lines = [json.dumps({"id": i, "instruction": f"Write {i} in words.", "output": f"{i} in words."}) + "\n"
             for i in range(30)]
    src = tmp_path / "in.jsonl"
    src.write_text("".join(lines), encoding="utf-8")
    reference = tmp_path / f"reference{suffix}"  # in this process: only the two runs below must be processes
    first = CliRunner().invoke(cli, ["score", str(src), "-o", str(reference), "-m", str(model), "-q"],
                               catch_exceptions=False)
    assert first.exit_code == 0, first.output

    out = tmp_path / f"out{suffix}"
    # The first run reads stdin, which stays open: it holds the output until its input ends.
    slow = _score("-", out, model, stdin=subprocess.PIPE)
    slow.stdin.write("".join(lines[:10]).encode())
    slow.stdin.flush()
    lock = tmp_path / f"out{suffix}.lock"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not (lock.exists() and lock.read_text()):
        time.sleep(0.05)
    second = subprocess.run([sys.executable, "-m", "localscore", "score", str(src), "-o", str(out), "-m",
                             str(model), "-q"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert second.returncode == 1
    assert second.stderr.splitlines() == [
        f"Error: {out} is being written by another run (pid {slow.pid} on {socket.gethostname()}); wait for it to "
        "finish, or give another output"]
    slow.stdin.write("".join(lines[10:]).encode())
    slow.stdin.close()
    assert slow.wait(timeout=300) == 0, slow.stderr.read()
    assert out.read_bytes() == reference.read_bytes()
    assert not lock.exists()
    made = [f"{name}.provenance.json" for name in (reference.name, out.name)] if suffix == ".jsonl" else []
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["in.jsonl", reference.name, out.name, *made])


def test_the_disk_full_line_is_made_in_one_place():
    # Every module that writes maps ENOSPC/EDQUOT through durable.write_error; none checks the errno itself.
    for path in (ROOT / "localscore").rglob("*.py"):
        if path.name != "durable.py":
            assert "DISK_FULL" not in path.read_text(encoding="utf-8") and "ENOSPC" not in path.read_text(
                encoding="utf-8"), path.name
    assert durable.DISK_FULL == (errno.ENOSPC, errno.EDQUOT)
