"""The suite's own layout: what tests share lives in tests/support/, so that a test module can be moved, renamed or
deleted without breaking another."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).parents[1]


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_no_test_module_imports_another():
    offenders = {f"{path.relative_to(TESTS.parent)}: {name}"
                 for path in TESTS.rglob("*.py") if "support" not in path.relative_to(TESTS).parts
                 for name in imported_modules(path)
                 if name.startswith("tests.") and not name.startswith("tests.support")}
    assert not offenders, "import it from tests/support/ instead:\n" + "\n".join(sorted(offenders))


def test_the_check_sees_a_cross_import(tmp_path):
    module = tmp_path / "test_x.py"
    module.write_text("from tests.selection.test_select import scored\nimport tests.support.data\n")
    assert imported_modules(module) == {"tests.selection.test_select", "tests.support.data"}
