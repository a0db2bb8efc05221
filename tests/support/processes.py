"""localscore as a child process: its command line, a signal sent at the right moment, and a Ray actor of its run
killed as a lost node would be."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).parents[2]


def localscore(*args: object) -> list[str]:
    return [sys.executable, "-m", "localscore", *map(str, args)]


def stop_when(process: subprocess.Popen, ready, sig: int) -> None:
    """Send `sig` once `ready()` holds; stop waiting as soon as the child exits on its own."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None and not ready():
        time.sleep(0.02)
    process.send_signal(sig)
    process.communicate(timeout=60)


def kill_an_actor(kind: str) -> int:
    """SIGKILL one of this session's `kind` actors (a child of the raylet this process started) that has loaded its
    model, as a preempted node or the OOM killer would; its pid."""
    # The titles Ray gives an actor past its constructor (which loads the model): idle, or running a method.
    loaded = {f"ray::{kind}{method}".encode() for method in ("", ".name", ".work")}
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        for pid in (int(name) for name in os.listdir("/proc") if name.isdigit()):
            try:
                title = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0")
                if title in loaded and _parent(_parent(pid)) == os.getpid():
                    os.kill(pid, signal.SIGKILL)
                    return pid
            except (FileNotFoundError, ProcessLookupError):
                continue
        time.sleep(0.01)
    raise AssertionError(f"no {kind} actor came up")


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def run_feeding(args: list[str], first: bytes, rest: bytes, kind: str, env: dict) -> subprocess.CompletedProcess:
    """`localscore ARGS` reading `first` then `rest` from stdin, with one of its `kind` actors killed in between:
    the run cannot end before the kill (tests/scale/test_ray.py: FEED)."""
    driver = subprocess.Popen(localscore(*args), cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)
    driver.stdin.write(first)
    driver.stdin.flush()
    kill_an_actor(kind)
    stdout, stderr = driver.communicate(rest, timeout=300)
    return subprocess.CompletedProcess(driver.args, driver.returncode, stdout.decode(), stderr.decode())
