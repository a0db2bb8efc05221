"""The default-model cache: processes that start at once convert the model once and all get the whole file."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

# Stands in for the converter in each process: it records every call, and it holds the conversion open until the
# other process says it waits (both logs go to one shared file too), so that both processes find the cache empty.
STARTER = textwrap.dedent("""
    import sys, time
    from pathlib import Path

    import localscore.convert as convert
    from localscore.runs.default_model import default_model

    calls, shared_log = sys.argv[1:]

    def log(message):
        print(message, file=sys.stderr)
        with open(shared_log, "a") as f:
            f.write(message + "\\n")

    def held_convert(repo, path, quant, log=None):
        with open(calls, "a") as f:
            f.write(f"{repo} {quant}\\n")
        partial = Path(str(path) + ".partial")
        partial.write_bytes(b"GGUF" + bytes(1000))
        deadline = time.monotonic() + 60
        while "waiting for another process" not in Path(shared_log).read_text() and time.monotonic() < deadline:
            time.sleep(0.01)
        partial.replace(path)
        return path

    convert.convert = held_convert
    path = default_model("quality", log=log)
    print(path, len(path.read_bytes()))
""")


def test_processes_starting_at_once_convert_the_default_model_once(tmp_path):
    calls, shared_log = tmp_path / "calls.txt", tmp_path / "log.txt"
    shared_log.touch()
    env = {**os.environ, "LOCALSCORE_CACHE": str(tmp_path / "cache"),
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[2]), os.environ.get("PYTHONPATH", "")])}
    processes = [subprocess.Popen([sys.executable, "-c", STARTER, str(calls), str(shared_log)], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [process.communicate(timeout=120) for process in processes]
    assert [process.returncode for process in processes] == [0, 0], outputs
    expected = f"{tmp_path / 'cache' / 'deita-quality-scorer.q4_k_m.gguf'} 1004\n"
    assert [stdout for stdout, _ in outputs] == [expected, expected]
    assert calls.read_text() == "hkust-nlp/deita-quality-scorer q4_k_m\n"
    logs = sorted(stderr for _, stderr in outputs)
    assert logs[0].startswith("first use: converting hkust-nlp/deita-quality-scorer")
    assert logs[1].startswith("waiting for another process converting hkust-nlp/deita-quality-scorer")
