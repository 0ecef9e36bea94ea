"""The CLI reference, generated from the Typer app at every docs build (an mkdocs hook, named in mkdocs.yml).

docs/reference/cli.md holds the page's introduction and the marker ``MARKER``; the build replaces the marker with
one section per command of ``featx.cli.app`` (its help, usage, arguments and options by help panel), so the page
cannot miss a new command or describe a removed one. ``python scripts/docs_cli.py`` prints the generated markdown.
"""
from __future__ import annotations

import re

import typer.main
from rich.errors import MarkupError
from rich.text import Text

from featx.cli import app

MARKER = "<!-- featx-cli-reference -->"


def _plain(text: str | None) -> str:
    """Help text as the terminal shows it: rich markup resolved (the app's rich_markup_mode), one paragraph a line."""
    text = (text or "").strip()
    try:
        text = Text.from_markup(text).plain
    except MarkupError:
        pass
    return "\n\n".join(" ".join(p.split()) for p in re.split(r"\n\s*\n", text) if p.strip())


def _escape(text: str) -> str:
    """Markdown-safe text, code spans kept: ``<store>`` and ``part-*.h5`` outside backticks shown as written."""
    parts = re.split(r"(`[^`]*`)", text)
    for i in range(0, len(parts), 2):
        parts[i] = (parts[i].replace("\\", "\\\\").replace("*", "\\*").replace("<", "&lt;").replace(">", "&gt;")
                    .replace("[", "\\[").replace("]", "\\]"))
    return "".join(parts)


def _cell(text: str) -> str:
    return _escape(text).replace("|", "\\|").replace("\n\n", "<br>")


def _row(param, ctx) -> str:
    """One table row from the help record the terminal prints: names, help, and its ``[default: ...]`` apart."""
    names, help_text = param.get_help_record(ctx) or (param.name, "")
    match = re.search(r"\s+\[([^\[\]]*)\]$", help_text)
    note = match.group(1) if match else ""
    help_text = help_text[:match.start()] if match else help_text
    return f"| `{names}` | {_cell(_plain(help_text))} | {_cell(note)} |"


def _command_section(name: str, command, parent) -> list[str]:
    ctx = command.context_class(command, info_name=name, parent=parent)
    lines = [f"## featx {name}", "", _escape(_plain(command.help)), "",
             "```text", command.get_usage(ctx).removeprefix("Usage: "), "```", ""]
    panels: dict[str, list] = {}
    for param in command.get_params(ctx):
        if getattr(param, "hidden", False):
            continue
        default = "Arguments" if param.param_type_name == "argument" else "Options"
        panels.setdefault(getattr(param, "rich_help_panel", None) or default, []).append(param)
    for panel, params in panels.items():
        lines += [f"**{panel}**", "", "| name | description | default |", "|---|---|---|"]
        lines += [_row(p, ctx) for p in params]
        lines.append("")
    return lines


def _root():
    """The click group behind ``featx.cli.app`` (typer's own click) and its context."""
    group = typer.main.get_command(app)
    return group, group.context_class(group, info_name="featx")


def commands() -> dict:
    """The app's registered commands by name, in the order ``featx --help`` lists them."""
    group, ctx = _root()
    return {name: group.get_command(ctx, name) for name in group.list_commands(ctx)}


def cli_markdown() -> str:
    """Markdown for every command of ``featx.cli.app``."""
    group, root = _root()
    lines = [_escape(_plain(group.help)), "", "| command | what it does |", "|---|---|"]
    found = commands()
    lines += [f"| [`featx {n}`](#featx-{n}) | {_cell(_plain(c.get_short_help_str(limit=200)))} |"
              for n, c in found.items()]
    lines.append("")
    for name, command in found.items():
        lines += _command_section(name, command, root)
    return "\n".join(lines)


def on_page_markdown(markdown: str, page, config, files) -> str:  # noqa: ARG001  (mkdocs hook signature)
    """mkdocs hook: the CLI reference page gets the generated markdown in place of ``MARKER``."""
    return markdown.replace(MARKER, cli_markdown()) if MARKER in markdown else markdown


if __name__ == "__main__":
    print(cli_markdown())
