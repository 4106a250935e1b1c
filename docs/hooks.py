"""MkDocs hook: the CLI reference shows ``--help`` of every registered command, generated at build time.

A page line ``<!-- tinyref-help -->`` becomes one section per command in ``tinyref.cli.COMMANDS``,
so a new command or flag appears on the site without anyone editing the page.
"""
from __future__ import annotations

import os

MARKER = "<!-- tinyref-help -->"
WIDTH = "100"  # argparse wraps at $COLUMNS


def _help_text(parser) -> str:
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = WIDTH
    try:
        return parser.format_help().rstrip()
    finally:
        if old is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = old


def cli_reference() -> str:
    from tinyref.cli import COMMANDS, build_parser

    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command").choices
    parts = ["### `tinyref --help`", "", "```text", _help_text(parser), "```", ""]
    for name in COMMANDS:
        parts += [f"### `tinyref {name}`", "", "```text", _help_text(subparsers[name]), "```", ""]
    return "\n".join(parts)


def on_page_markdown(markdown: str, page, config, files) -> str:
    return markdown.replace(MARKER, cli_reference()) if MARKER in markdown else markdown
