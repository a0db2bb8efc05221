"""docs/api.md, the Python API reference, generated from the docstrings of what `localscore` exports.

    python scripts/api_reference.py            # print it
    python scripts/api_reference.py --write    # write docs/api.md

It walks `localscore.__all__`: each function with its signature and docstring, each class with its docstring and
its public methods (those localscore defines, inherited ones included). tests/project/test_docs.py fails when docs/api.md
differs from what this renders."""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / "docs" / "api.md"
WRITE_COMMAND = "python scripts/api_reference.py --write"
# A signature longer than this is written one parameter per line.
WIDTH = 100

HEADER = f"""# Python API reference

What `import localscore` offers. The functions are the [commands](cli.md), with their options as keyword arguments
of the same names; [formats.md](formats.md#python) shows them in use. Errors a user can cause raise the
`LocalscoreError` subclasses below, with one-line messages. Generated from the docstrings by `{WRITE_COMMAND}`:
edit the docstrings, not this page.
"""


def render() -> str:
    """The whole reference, as docs/api.md holds it."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import localscore

    functions, classes = [], []
    for name in localscore.__all__:
        obj = getattr(localscore, name)
        if inspect.isclass(obj):
            classes.append((name, obj))
        elif callable(obj):
            functions.append((name, obj))
    parts = [HEADER, f"`localscore.__version__` is the package's version (`{localscore.__version__}`).\n"]
    parts.append("## Functions\n")
    parts += [_function(f"localscore.{name}", obj, level=3) for name, obj in functions]
    parts.append("## Classes\n")
    exported = {obj for _, obj in classes}
    parts += [_class(name, obj, exported) for name, obj in classes]
    return "\n".join(parts)


def _function(title: str, obj, *, level: int, prefix: str = "") -> str:
    heading = "#" * level
    lines = [f"{heading} {title.rsplit('.', 1)[-1] if prefix else title}", "", "```python",
             _signature(prefix + title.rsplit(".", 1)[-1] if prefix else title, obj), "```", ""]
    lines += _docstring(inspect.getdoc(obj))
    return "\n".join(lines) + "\n"


def _class(name: str, cls: type, exported: set) -> str:
    bases = [base.__name__ for base in cls.__bases__ if base is not object]
    title = f"localscore.{name}"
    lines = [f"### {title}", ""]
    if bases:
        lines += [f"A subclass of `{'`, `'.join(bases)}`.", ""]
    own_doc = cls.__dict__.get("__doc__")
    lines += _docstring(inspect.cleandoc(own_doc) if own_doc else None)
    for method_name, method in _methods(cls, exported):
        kind = _kind(cls, method_name)
        label = f"{name}.{method_name}"
        lines += ["", f"#### {label}{' (' + kind + ')' if kind else ''}", "", "```python",
                  _signature(label, method, drop_self=kind != "static method"), "```", ""]
        lines += _docstring(inspect.getdoc(method))
    return "\n".join(lines).rstrip("\n") + "\n"


def _methods(cls: type, exported: set):
    """The public methods localscore defines on `cls` or on its bases that are not exported themselves (an exported
    base has its own section), in definition order."""
    seen: dict[str, object] = {}
    for klass in reversed(cls.__mro__):
        if not klass.__module__.startswith("localscore") or (klass is not cls and klass in exported):
            continue
        for attr, value in vars(klass).items():
            if attr.startswith("_"):
                continue
            function = value.__func__ if isinstance(value, (classmethod, staticmethod)) else value
            if inspect.isfunction(function):
                seen.pop(attr, None)
                seen[attr] = getattr(cls, attr)
    return list(seen.items())


def _kind(cls: type, name: str) -> str:
    for klass in cls.__mro__:
        if name in vars(klass):
            raw = vars(klass)[name]
            if isinstance(raw, classmethod):
                return "class method"
            if isinstance(raw, staticmethod):
                return "static method"
            return ""
    return ""


def _signature(name: str, obj, *, drop_self: bool = False) -> str:
    signature = inspect.signature(obj)
    params = list(signature.parameters.values())
    if drop_self and params and params[0].name in ("self", "cls"):
        params = params[1:]
    texts, star_done = [], False
    for param in params:
        if param.kind is param.KEYWORD_ONLY and not star_done:
            texts.append("*")
            star_done = True
        if param.kind is param.VAR_POSITIONAL:
            star_done = True
        texts.append(_parameter(param))
    returns = "" if signature.return_annotation is inspect.Signature.empty else \
        f" -> {_annotation(signature.return_annotation)}"
    line = f"{name}({', '.join(texts)}){returns}"
    if len(line) <= WIDTH:
        return line
    return f"{name}(\n" + "".join(f"    {text},\n" for text in texts) + f"){returns}"


def _parameter(param: inspect.Parameter) -> str:
    text = {param.VAR_POSITIONAL: "*", param.VAR_KEYWORD: "**"}.get(param.kind, "") + param.name
    if param.annotation is not param.empty:
        text += f": {_annotation(param.annotation)}"
    if param.default is not param.empty:
        text += f" = {param.default!r}" if param.annotation is not param.empty else f"={param.default!r}"
    return text


def _annotation(annotation) -> str:
    # Modules use `from __future__ import annotations`: annotations are the source's own text.
    if isinstance(annotation, str):
        return annotation.strip("'\"")
    return inspect.formatannotation(annotation)


def _docstring(text: str | None) -> list[str]:
    """A docstring as Markdown: its paragraphs as they are, `>>>` lines as a Python block."""
    if not text:
        return ["(no docstring)"]
    lines: list[str] = []
    in_code = False
    for line in text.splitlines():
        is_code = line.lstrip().startswith((">>> ", "... "))
        if is_code and not in_code:
            if lines and lines[-1] != "":
                lines.append("")
            lines.append("```python")
            in_code = True
        elif not is_code and in_code:
            lines.append("```")
            in_code = False
        lines.append(line.lstrip()[4:] if is_code else line)
    if in_code:
        lines.append("```")
    return lines


def main(argv: list[str]) -> int:
    text = render()
    if argv == ["--write"]:
        TARGET.write_text(text, encoding="utf-8")
        print(f"wrote {TARGET.relative_to(ROOT)}", file=sys.stderr)
        return 0
    if argv:
        print("usage: python scripts/api_reference.py [--write]", file=sys.stderr)
        return 2
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
