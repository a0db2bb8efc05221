"""docs/cli.md, the command-line reference, generated from the click commands themselves.

    python scripts/cli_reference.py            # print it
    python scripts/cli_reference.py --write    # write docs/cli.md

Only click's public objects are read (commands, their help, their parameters' `to_info_dict()`), never how
localscore/cli.py builds them, so the reference follows the CLI whatever generates its options. tests/project/test_docs.py
fails when docs/cli.md differs from what this renders."""

from __future__ import annotations

import sys
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / "docs" / "cli.md"
WRITE_COMMAND = "python scripts/cli_reference.py --write"

HEADER = f"""# Command-line reference

Every command of `localscore` with every argument and option, as `localscore COMMAND --help` shows them (each
command also takes `--help`). The options are the keyword arguments of the same names in the
[Python API](api.md) (`--n-gpu-layers` is `n_gpu_layers`). Generated from the commands by `{WRITE_COMMAND}`: edit
the help in the code, not this page.
"""


def render() -> str:
    """The whole reference, as docs/cli.md holds it."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from localscore.cli import cli

    root = click.Context(cli, info_name="localscore")
    parts = [HEADER, _root_section(cli, root)]
    names = cli.list_commands(root)
    parts.append("Commands: " + ", ".join(f"[`{name}`](#localscore-{name})" for name in names) + ".\n")
    for name in names:
        command = cli.get_command(root, name)
        if command is not None and not command.hidden:
            parts.append(_command_section(command, click.Context(command, info_name=name, parent=root)))
    return "\n".join(parts)


def _root_section(group: click.Command, ctx: click.Context) -> str:
    lines = [f"`{_usage(group, ctx)}`", "", *_help(group.help)]
    options = [param for param in group.params if not getattr(param, "hidden", False)]
    if options:
        lines += ["", *_table(options)]
    return "\n".join(lines) + "\n"


def _command_section(command: click.Command, ctx: click.Context) -> str:
    lines = [f"## localscore {ctx.info_name}", "", f"`{_usage(command, ctx)}`", "", *_help(command.help)]
    params = [param for param in command.params if not getattr(param, "hidden", False)]
    if params:
        lines += ["", *_table(params)]
    return "\n".join(lines) + "\n"


def _usage(command: click.Command, ctx: click.Context) -> str:
    return " ".join([ctx.command_path, *command.collect_usage_pieces(ctx)])


def _help(text: str | None) -> list[str]:
    """The command's help as Markdown paragraphs; an `Example: ...` paragraph becomes a shell block."""
    lines: list[str] = []
    for paragraph in (text or "").replace("\b\n", "").strip().split("\n\n"):
        paragraph = " ".join(line.strip() for line in paragraph.splitlines()).strip()
        if not paragraph:
            continue
        if lines:
            lines.append("")
        if paragraph.startswith("Example:"):
            lines += ["```sh", paragraph[len("Example:"):].strip(), "```"]
        else:
            lines.append(_escape(paragraph))
    return lines


def _table(params: list[click.Parameter]) -> list[str]:
    rows = ["| argument or option | takes | default | |", "|---|---|---|---|"]
    for param in params:
        info = param.to_info_dict()
        rows.append(f"| {_names(param, info)} | {_takes(info)} | {_default(info)} | {_escape(info.get('help') or '')} |")
    return rows


def _names(param: click.Parameter, info: dict) -> str:
    if info["param_type_name"] == "argument":
        name = (param.metavar or info["name"].upper())
        return f"`{name}`"
    flags = ", ".join(info["opts"])
    if info.get("secondary_opts"):
        flags += " / " + ", ".join(info["secondary_opts"])
    return f"`{flags}`"


def _takes(info: dict) -> str:
    kind = info["type"]
    if info.get("is_flag") and kind["param_type"] == "Bool":
        text = "flag"
    elif "choices" in kind:
        text = " \\| ".join(f"`{choice}`" for choice in kind["choices"])
    elif kind["param_type"] in ("IntRange", "FloatRange"):
        text = _range(kind)
    elif kind["param_type"] == "Path":
        text = "file" if not kind.get("dir_okay") else "path"
        if kind.get("allow_dash"):
            text += " or `-`"
    else:
        text = kind["name"]
    nargs = info.get("nargs", 1)
    if nargs == -1:
        text += ", one or more" if info.get("required") else ", any number"
    elif nargs > 1:
        text += f", {nargs} of them"
    if info.get("multiple"):
        text += ", repeatable"
    return text


def _range(kind: dict) -> str:
    number = "integer" if kind["param_type"] == "IntRange" else "number"
    low, high = kind.get("min"), kind.get("max")
    below = "<" if kind.get("min_open") else "≤"
    above = "<" if kind.get("max_open") else "≤"
    if low is not None and high is not None:
        return f"{number}, {low} {below} x {above} {high}"
    if low is not None:
        return f"{number}, {'>' if kind.get('min_open') else '≥'} {low}"
    if high is not None:
        return f"{number}, {above} {high}"
    return number


def _default(info: dict) -> str:
    if info.get("required"):
        return "required"
    if info.get("envvar"):
        envvars = info["envvar"] if isinstance(info["envvar"], (list, tuple)) else [info["envvar"]]
        text = " or ".join(f"`${name}`" for name in envvars)
        return text if info.get("default") is None else f"{text}, else `{info['default']}`"
    default = info.get("default")
    if default is None or (info.get("is_flag") and default is False) or callable(default):
        return ""
    if isinstance(default, (list, tuple)):
        return ", ".join(f"`{item}`" for item in default) if default else ""
    return f"`{default}`"


def _escape(text: str) -> str:
    # Table cells end at a bare |; everything else of the help reads the same in Markdown.
    return text.replace("|", "\\|")


def main(argv: list[str]) -> int:
    text = render()
    if argv == ["--write"]:
        TARGET.write_text(text, encoding="utf-8")
        print(f"wrote {TARGET.relative_to(ROOT)}", file=sys.stderr)
        return 0
    if argv:
        print("usage: python scripts/cli_reference.py [--write]", file=sys.stderr)
        return 2
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
