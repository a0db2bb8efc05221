"""The documentation: the generated references are fresh, README.md stays a front door, every relative link lands,
and no user document speaks of how it was written (sessions, this project's issue numbers)."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
README = ROOT / "README.md"
README_MAX_LINES = 250
USER_DOCS = sorted([README, *(ROOT / "docs").rglob("*.md"), ROOT / "benchmarks" / "README.md",
                    *(ROOT / "examples").rglob("README.md")])


def generator(name: str):
    """scripts/NAME.py as a module (scripts/ is no package)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(name, module)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name, page", [("cli_reference", "docs/cli.md"), ("api_reference", "docs/api.md")])
def test_generated_reference_is_fresh(name, page):
    fresh = generator(name).render()
    current = (ROOT / page).read_text(encoding="utf-8") if (ROOT / page).exists() else ""
    assert current == fresh, f"{page} is stale: run python scripts/{name}.py --write"


def test_cli_reference_names_every_command_and_option():
    import click

    from localscore.cli import cli

    text = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    ctx = click.Context(cli, info_name="localscore")
    for name in cli.list_commands(ctx):
        assert f"## localscore {name}\n" in text
        for param in cli.get_command(ctx, name).params:
            for flag in getattr(param, "opts", []):
                if flag.startswith("-"):
                    assert flag in text, f"docs/cli.md lacks {name}'s {flag}"


def test_readme_is_a_front_door():
    lines = README.read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; at most {README_MAX_LINES}: move detail into docs/"


def test_readme_keeps_the_ci_test_command():
    # .ci/run runs the shell block after this marker.
    text = README.read_text(encoding="utf-8")
    after = text.split("<!-- ci: test command -->\n", 1)
    assert len(after) == 2 and after[1].startswith("```sh\n"), "README.md lost its '<!-- ci: test command -->' block"


def code_free(text: str) -> str:
    """Markdown without its fenced blocks and inline code, where a link or a word is only an example."""
    text = re.sub(r"^(```|~~~).*?^\1[^\n]*$", "", text, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped (hyphens and underscores kept), spaces to
    hyphens."""
    text = re.sub(r"`([^`]*)`", r"\1", heading.strip().lower())
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found: set[str] = set()
    text = re.sub(r"^(```|~~~).*?^\1[^\n]*$", "", path.read_text(encoding="utf-8"), flags=re.S | re.M)
    for heading in re.findall(r"^#{1,6} +(.+?) *#*$", text, flags=re.M):
        base, n = slug(heading), 0
        anchor = base
        while anchor in found:
            n += 1
            anchor = f"{base}-{n}"
        found.add(anchor)
    return found


LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


@pytest.mark.parametrize("doc", USER_DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(doc):
    broken = []
    for target in LINK.findall(code_free(doc.read_text(encoding="utf-8"))):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        file = (doc.parent / path).resolve() if path else doc
        if not file.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{target} (no such heading in {file.relative_to(ROOT)})")
    assert not broken, f"{doc.relative_to(ROOT)}: broken links: {', '.join(broken)}"


# A reference to this project's own history: who wrote what in which sitting, or its tracker's numbers. Upstream
# references name their project right before the number (`llama.cpp#20824`, `ggml-org/llama.cpp #19706`,
# "llama.cpp issue 123"), and those are fine.
SESSION = re.compile(r"\b(this|that|the|a|previous|earlier|last|next|another|same) session\b", re.I)
ISSUE = re.compile(r"(?<![\w.\-/])(#\d+\b|issue\s+#?\d+\b)", re.I)


def history(text: str) -> list[str]:
    """What in `text` tells of sessions or of this project's own issue numbers."""
    found = [m.group(0) for m in SESSION.finditer(text)]
    for m in ISSUE.finditer(text):
        before = text[max(0, m.start() - 60):m.start()].split()
        if before and re.search(r"[./]", before[-1]):
            continue  # the project named right before the number: upstream
        found.append(m.group(0))
    return found


@pytest.mark.parametrize("doc", USER_DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_user_docs_tell_no_history(doc):
    found = history(doc.read_text(encoding="utf-8"))
    assert not found, f"{doc.relative_to(ROOT)} mentions {found}: user docs say what is, not how it came to be"


def test_history_and_anchor_checks_catch_what_they_should():
    assert history("as measured in the previous session") == ["previous session"]
    assert history("fixed in #13") == ["#13"] and history("see issue 13") == ["issue 13"]
    assert history("llama.cpp#20824, ggml-org/llama.cpp #19706, a llama.cpp issue 123, [a](#at-the-7b)") == []
    assert slug("Is it good enough? (`localscore compare`)") == "is-it-good-enough-localscore-compare"
    assert slug("Two embedders (`--embedder`)") == "two-embedders---embedder"
