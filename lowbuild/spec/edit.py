"""Editing a spec file in place: a few scalar values changed, every other byte kept.

ruamel.yaml's round-trip loader says where each value of `image.yaml` starts (line and
column, whatever the style: block or flow, quoted or plain). The file's own text is then
changed at exactly those places, so comments, key order, quoting, flow style and
indentation stay as the user wrote them: nothing is regenerated from a dict.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lowbuild.errors import Location, SpecError

PathPart = str | int


@dataclass(frozen=True)
class Edit:
    """Change the scalar at `path` (keys and list indexes from the document's root) from
    `old` to `new`."""

    path: tuple[PathPart, ...]
    old: str
    new: str


def load_round_trip(text: str, *, origin: Path) -> object:
    """The document as ruamel.yaml's round-trip loader reads it (with positions)."""
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    try:
        return YAML(typ="rt").load(text)
    except YAMLError as exc:
        raise SpecError(f"not YAML ruamel.yaml can read: {exc}", Location(origin)) from None


def apply_edits(text: str, edits: Sequence[Edit], *, origin: Path) -> str:
    """`text` with each edit made where its value is written; SpecError (naming the file
    and line) when a value is not written as one plain or quoted scalar holding `old`."""
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    document = load_round_trip(text, origin=origin)
    lines = text.splitlines(keepends=True)
    placed: list[tuple[int, int, Edit]] = []
    for edit in edits:
        parent = document
        for part in edit.path[:-1]:
            parent = parent[part]  # type: ignore[index]
        last = edit.path[-1]
        if isinstance(parent, CommentedMap):
            line, column = parent.lc.value(last)
        elif isinstance(parent, CommentedSeq) and isinstance(last, int):
            line, column = parent.lc.item(last)
        else:
            raise SpecError(f"{_shown(edit.path)}: not a value of this file", Location(origin))
        placed.append((line, column, edit))
    # Right to left on each line: an edit never moves a place still to be edited.
    for line, column, edit in sorted(placed, key=lambda p: (p[0], p[1]), reverse=True):
        source = lines[line]
        start = column + (1 if source[column : column + 1] in ("'", '"') else 0)
        if not source.startswith(edit.old, start):
            raise SpecError(
                f"{_shown(edit.path)}: expected {edit.old!r} here, written on one line; "
                "edit this value by hand",
                Location(origin, line + 1),
            )
        lines[line] = source[:start] + edit.new + source[start + len(edit.old) :]
    return "".join(lines)


def unified_diff(before: str, after: str, *, path: str) -> str:
    return "".join(
        difflib.unified_diff(
            before.splitlines(keepends=True),
            after.splitlines(keepends=True),
            fromfile=f"a/{path}",
            tofile=f"b/{path}",
        )
    )


def _shown(path: Sequence[PathPart]) -> str:
    shown = ""
    for part in path:
        shown += f"[{part}]" if isinstance(part, int) else (f".{part}" if shown else part)
    return shown
