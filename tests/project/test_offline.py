"""The air-gapped install of docs/offline.md, run as written: the wheelhouse built by its command, installed by its command
into a fresh virtual environment, then a conversion and a scoring run, all inside a network namespace with nothing
but its loopback, down (`unshare -n`), so that whatever reaches for the network fails the test."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
EXAMPLE = ROOT / "examples" / "alpaca.jsonl"
DOC = ROOT / "docs" / "offline.md"
# What a wheel of localscore is built from (pyproject.toml's packages, and the readme its metadata names).
SOURCES = ("pyproject.toml", "README.md", "localscore", "convert")


def doc_block(marker: str) -> str:
    """The shell block that follows `<!-- marker -->` in docs/offline.md."""
    text = DOC.read_text(encoding="utf-8")
    after = text.split(f"<!-- {marker} -->\n", 1)
    assert len(after) == 2, f"docs/offline.md has no '<!-- {marker} -->'"
    fence, body = after[1].split("\n", 1)
    assert fence.startswith("```"), f"no code block after '<!-- {marker} -->'"
    return body.split("```", 1)[0]


def offline_shell(folder: Path, venv: Path, script: str) -> subprocess.CompletedProcess:
    """`script` run by bash in `folder`, in a new network namespace (only a loopback, down), with `venv`
    activated and none of this session's settings: no pip configuration or cache, no hub cache or offline flag,
    no PYTHONPATH onto the source tree."""
    home = folder / "home"
    home.mkdir(exist_ok=True)
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "VIRTUAL_ENV": str(venv), "HOME": str(home),
           "LANG": "C.UTF-8", "PIP_CONFIG_FILE": os.devnull, "PIP_NO_CACHE_DIR": "1",
           "LOCALSCORE_CACHE": str(home / "localscore")}
    return subprocess.run(["unshare", "--net", "bash", "-euo", "pipefail", "-c", script], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory) -> Path:
    """wheels/ as the documented build command makes it, in a copy of the sources (a connected machine)."""
    if sys.platform != "linux" or os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("a network namespace needs Linux, root and unshare")
    clone = tmp_path_factory.mktemp("clone")
    for name in SOURCES:
        copy = shutil.copytree if (ROOT / name).is_dir() else shutil.copy
        copy(ROOT / name, clone / name)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env.pop("PYTHONPATH", None)
    built = subprocess.run(["bash", "-euo", "pipefail", "-c", doc_block("offline: build the wheelhouse")],
                           cwd=clone, env=env, capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    return clone / "wheels"


def test_the_documented_wheelhouse_installs_converts_and_scores_with_no_network(tmp_path, wheelhouse, tiny_checkpoint):
    machine = tmp_path / "airgapped"  # what was carried over: the wheels, a checkpoint, some data
    shutil.copytree(wheelhouse, machine / "wheels")
    shutil.copytree(tiny_checkpoint, machine / "checkpoint")
    shutil.copy(EXAMPLE, machine / "data.jsonl")
    venv = machine / "venv"
    subprocess.run([sys.executable, "-m", "venv", venv], check=True, timeout=120)

    script = "\n".join([
        # The namespace holds nothing but its loopback, which is down.
        """python -c 'import socket, sys; sys.exit(socket.if_nameindex() != [(1, "lo")])'""",
        doc_block("offline: install from the wheelhouse"),
        "localscore convert checkpoint -o model.gguf --quant q8_0",
        "localscore score data.jsonl -m model.gguf -o scored.jsonl",
    ])
    result = offline_shell(machine, venv, script)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Successfully installed" in result.stdout and "localscore-" in result.stdout
    records = [json.loads(line) for line in (machine / "scored.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(records) == 24 and all(1 <= r["quality_score"] <= 6 for r in records)
