"""A real scoring process killed mid-run (kill -9, Ctrl-C) and resumed gives the file an uninterrupted run gives."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from localscore.cli import cli

N_RECORDS = 240  # the kill lands after 50 records: most of the run is still ahead


@pytest.fixture(scope="module")
def big_input(tmp_path_factory, pairs) -> Path:
    path = tmp_path_factory.mktemp("interrupt") / "in.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        for i in range(N_RECORDS):
            instruction, output = pairs[i % len(pairs)]
            f.write(json.dumps({"id": i, "instruction": instruction, "output": output}) + "\n")
    return path


@pytest.fixture(scope="module")
def uninterrupted(big_input, gguf_file) -> bytes:
    """What an uninterrupted run writes, run in this process: only the runs that are stopped must be processes."""
    out = big_input.with_name("full.jsonl")
    done = CliRunner().invoke(cli, _args(big_input, out, gguf_file("q8_0")), catch_exceptions=False)
    assert done.exit_code == 0, done.output
    return out.read_bytes()


def _args(src: Path, out: Path, model: Path, *extra: str) -> list[str]:
    return ["score", str(src), "-o", str(out), "-m", str(model), *extra]


def _command(src: Path, out: Path, model: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "localscore", *_args(src, out, model, *extra)]


def _start_and_stop(src: Path, out: Path, model: Path, sig: int) -> subprocess.CompletedProcess:
    partial = out.with_name(out.name + ".partial")
    proc = subprocess.Popen(_command(src, out, model), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:  # a child that exits early ends the wait
        if partial.exists() and partial.read_bytes().count(b"\n") >= 50:
            break
        time.sleep(0.05)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout.decode(), stderr.decode())


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["kill-9", "ctrl-c"])
def test_killed_run_resumes_to_the_same_file(tmp_path, big_input, gguf_file, uninterrupted, sig):
    model = gguf_file("q8_0")
    out = tmp_path / "out.jsonl"
    out.write_text("an older output that must survive until the new one is complete\n")
    stopped = _start_and_stop(big_input, out, model, sig)
    partial = out.with_name("out.jsonl.partial")
    done = partial.read_bytes().count(b"\n")
    assert stopped.returncode != 0
    assert 50 <= done < N_RECORDS, "the run finished before it could be interrupted"
    assert out.read_text().startswith("an older output")
    if sig == signal.SIGINT:
        assert stopped.returncode == 130
        assert "rerun with --resume" in stopped.stderr.splitlines()[-1]
        assert "Traceback" not in stopped.stderr

    resumed = CliRunner().invoke(cli, _args(big_input, out, model, "--resume"), catch_exceptions=False)  # in-process
    assert resumed.exit_code == 0, resumed.output
    assert out.read_bytes() == uninterrupted
    assert not partial.exists()
    assert f"{N_RECORDS - done:,} scored, 0 errored, 0 truncated, {done:,} resumed" in resumed.stderr


def test_resume_of_a_finished_run_does_nothing(tmp_path, big_input, gguf_file, uninterrupted):
    out = tmp_path / "out.jsonl"
    out.write_bytes(uninterrupted)
    result = CliRunner().invoke(cli, _args(big_input, out, gguf_file("q8_0"), "--resume"), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert out.read_bytes() == uninterrupted
    assert "0 records (0 turns, 0 tokens)" in result.stderr and f"{N_RECORDS:,} resumed" in result.stderr

