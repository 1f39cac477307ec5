"""The one Google-style docstring parser for tool schemas, stdlib only.

The `@tool` decorator (`tools.schema`, from live functions) and the API (`backend.crud.tool_schema`, from
source parsed with `ast`, never executed) both read a tool's summary and `Args:` descriptions here, so a
tool typed in the browser gets the schema the worker will build for it.
"""

from __future__ import annotations

import inspect
import re

SECTION = re.compile(r"^(Args|Arguments|Parameters|Returns|Return|Raises|Yields|Examples?|Notes?|Attributes):\s*$")
"""A section header line (unindented, after `inspect.cleandoc`)."""
ARG_SECTIONS = ("Args", "Arguments", "Parameters")
_ARG_LINE = re.compile(r"^(\*{0,2}\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$")


def parse_google_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """Split a Google-style docstring into (summary, {argument: description}).

    The summary is every line before the first section, whitespace-collapsed. Under `Args:` a line
    `name (type): text` at the section's indent starts an argument; deeper lines continue it.
    """
    lines = inspect.cleandoc(doc).splitlines()
    summary: list[str] = []
    args: dict[str, str] = {}
    section: str | None = None
    current: str | None = None
    args_indent = 0
    for raw in lines:
        header = SECTION.match(raw.strip()) if not raw.startswith((" ", "\t")) else None
        if header:
            section, current = header.group(1), None
            continue
        if section is None:
            summary.append(raw.strip())
        elif section in ARG_SECTIONS and raw.strip():
            indent = len(raw) - len(raw.lstrip())
            match = _ARG_LINE.match(raw.strip())
            if match and (current is None or indent <= args_indent):
                current, args_indent = match.group(1).lstrip("*"), indent
                args[current] = match.group(2).strip()
            elif current is not None:
                args[current] = f"{args[current]} {raw.strip()}".strip()
    return " ".join(" ".join(summary).split()), args
