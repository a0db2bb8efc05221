"""What the wheel installs and which Python it claims: one package, `localscore` (the repository's convert/ included,
as localscore.convert), and a requires-python floor that a version checker agrees with."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).parents[2]


def test_the_wheel_installs_only_the_localscore_package(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet",
                    "-w", str(tmp_path), str(ROOT)], check=True, capture_output=True, timeout=300)
    (wheel,) = tmp_path.glob("localscore-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {name.split("/")[0] for name in names} == {"localscore", wheel.name.split("-py")[0] + ".dist-info"}
    # Every module of the repository is in the wheel, convert/'s under localscore/convert/: the hand-written package
    # list in pyproject.toml has not missed a folder.
    sources = {path.relative_to(ROOT).as_posix() for path in (ROOT / "localscore").rglob("*.py")}
    sources |= {"localscore/" + path.relative_to(ROOT).as_posix() for path in (ROOT / "convert").rglob("*.py")}
    assert sources - names == set()
    assert "localscore/convert/pipeline.py" in names
    # `pip install localscore` pulls the four runtime dependencies and nothing more: data-juicer, Ray, pyarrow and
    # the converter's libraries come only with their extras. data-juicer finds the operators through the entry point.
    info = wheel.name.split("-py")[0] + ".dist-info"
    metadata = zipfile.ZipFile(wheel).read(f"{info}/METADATA").decode()
    required = [line.split(":", 1)[1].strip() for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    plain = {re.split(r"[<>=!~;\[ ]", requirement)[0] for requirement in required if "extra ==" not in requirement}
    assert plain == {"llama-cpp-python", "numpy", "huggingface-hub", "click"}
    assert any("py-data-juicer" in r and 'extra == "datajuicer"' in r for r in required)
    entry_points = zipfile.ZipFile(wheel).read(f"{info}/entry_points.txt").decode()
    assert "[data_juicer.ops]\nlocalscore = localscore.datajuicer" in entry_points


def test_requires_python_is_the_oldest_python_the_code_runs_on():
    floor = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["requires-python"]
    assert re.fullmatch(r">=3\.\d+", floor), floor
    # vermin reads the syntax and the standard library each file uses. `X | Y` unions evaluated at import
    # (forms/reader.py's Source alias) are what sets the floor: --feature union-types and --eval-annotations make
    # vermin count them. `--exclude file`: a TensorRef's `.file` is not Python 2's `file` builtin.
    report = subprocess.run(
        [str(Path(sys.executable).parent / "vermin"), "--no-tips", "--no-parse-comments", "--feature", "union-types",
         "--eval-annotations", "--exclude", "file", "--violations", f"--target={floor[2:]}-", "localscore", "convert"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    minimum = re.search(r"Minimum required versions: ([\d.]+)", report.stdout)
    assert minimum is not None, report.stdout + report.stderr
    assert minimum.group(1) == floor[2:], report.stdout
    assert "incompatible" not in report.stdout, report.stdout


def test_the_readme_asks_for_the_python_pyproject_requires():
    floor = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["requires-python"]
    asked = re.findall(r"Python ≥ (3\.\d+)", (ROOT / "README.md").read_text(encoding="utf-8"))
    assert asked == [floor[2:]], f"README.md asks for Python {asked}; pyproject.toml requires {floor}"
