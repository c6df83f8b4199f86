"""Text from outside the harness made safe to render: the one escaping of every rendered string.

A results file may come from another machine, and a host name, a command line, a container image
or a process name is whatever its author made it. summary.md and fleet.md are read on web pages,
where `<img src=…>` is a tracking pixel, `[x](…)` a link, a newline a fake heading and a `|` a
broken table. So every string a renderer takes from a run (its facts, command line, dataset,
errors, notes) is escaped once, before rendering: `markdown_safe(run)` for Markdown (HTML's
`& < >`, Markdown's `\\ [ ] |` and backtick, newlines and control characters), `console_safe(run)`
for a terminal (newlines and control characters only: no escape sequence reaches it). Figures are
numbers and are not touched; a value in a code span (the command line, a data path) keeps its
`|` and brackets, which a code span shows as they are.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from enum import Enum
from typing import Any, TypeVar

T = TypeVar("T")

CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
MARKDOWN = {
    "\\": "\\\\",
    "|": "\\|",
    "[": "\\[",
    "]": "\\]",
    "`": "\\`",
    "&": "&amp;",
    "<": "&lt;",
    ">": "&gt;",
}
MARKDOWN_CHARS = re.compile("[" + re.escape("".join(MARKDOWN)) + "]")
IN_CODE_SPAN = {"command_line", "source", "path", "executable"}  # rendered inside backticks


def plain(text: str) -> str:
    """One line, no control character: what a terminal or a table cell may show."""
    return CONTROL.sub(" ", text)


def markdown(text: str) -> str:
    """Text for Markdown read as HTML: one line, nothing that becomes markup."""
    return MARKDOWN_CHARS.sub(lambda match: MARKDOWN[match.group()], plain(text))


def code_span(text: str) -> str:
    """Text for inside a single-backtick code span: one line, no backtick to close it early."""
    return plain(text).replace("`", "'")


def markdown_safe(value: T) -> T:
    """A copy of a run (or any record) with every string escaped for Markdown."""
    return _map_strings(value, markdown, "")


def console_safe(value: T) -> T:
    """A copy with every string on one line and free of control characters (terminal escapes)."""
    return _map_strings(value, plain, "")


def _map_strings(value: Any, escape: Callable[[str], str], name: str) -> Any:
    if isinstance(value, Enum) or value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, str):
        return code_span(value) if escape is markdown and name in IN_CODE_SPAN else escape(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        changes = {
            field.name: _map_strings(getattr(value, field.name), escape, field.name)
            for field in dataclasses.fields(value)
            if field.init
        }
        return dataclasses.replace(value, **changes)
    if isinstance(value, dict):
        return {
            (escape(key) if isinstance(key, str) else key): _map_strings(
                item, escape, key if isinstance(key, str) else ""
            )
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_map_strings(item, escape, name) for item in value]
    if isinstance(value, tuple):
        return tuple(_map_strings(item, escape, name) for item in value)
    return value
