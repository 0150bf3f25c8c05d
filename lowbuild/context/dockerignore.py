"""`.dockerignore` semantics, as docker and podman apply them to a build context.

One pattern per line; `#` starts a comment line; blank lines are ignored.
Patterns are cleaned like paths (`./a//b/` → `a/b`, a leading `/` is dropped)
and matched against the slash-separated path relative to the context:
  `*` any run of non-slash characters, `?` one non-slash character,
  `[...]` a character class, `**` any number of directories (also zero),
  `\\` escapes the next character.
A pattern that matches a directory also matches everything below it.
`!pattern` re-includes what an earlier pattern excluded; the LAST matching
pattern decides.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class IgnoreRule:
    pattern: str
    exclusion: bool  # True for `!pattern` (re-include)
    regex: re.Pattern[str]


def _translate(pattern: str) -> re.Pattern[str]:
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "*":
            if pattern.startswith("**", i):
                i += 2
                if i < n and pattern[i] == "/":
                    out.append("(?:.*/)?")  # `**/` : zero or more whole directories
                    i += 1
                else:
                    out.append(".*")
                continue
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            end = pattern.find("]", i + 2 if pattern[i + 1 : i + 2] in ("!", "^") else i + 1)
            if end == -1:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1 : end]
                if body[:1] in ("!", "^"):
                    body = "^" + body[1:]
                out.append("[" + body.replace("\\", "\\\\") + "]")
                i = end
        elif c == "\\" and i + 1 < n:
            i += 1
            out.append(re.escape(pattern[i]))
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out) + r"\Z", re.DOTALL)


def parse_dockerignore(text: str) -> list[IgnoreRule]:
    """The rules of a .dockerignore file's text, in order."""
    rules = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        exclusion = line.startswith("!")
        if exclusion:
            line = line[1:].strip()
        cleaned = posixpath.normpath(line).lstrip("/")
        if cleaned in ("", "."):
            continue
        rules.append(IgnoreRule(cleaned, exclusion, _translate(cleaned)))
    return rules


def load_dockerignore(context_dir: Path) -> list[IgnoreRule]:
    """The rules of `context_dir/.dockerignore`, or none when there is no such file."""
    path = context_dir / ".dockerignore"
    return parse_dockerignore(path.read_text(encoding="utf-8")) if path.is_file() else []


def is_ignored(rel_path: str, rules: Sequence[IgnoreRule]) -> bool:
    """Whether `rel_path` (slash-separated, relative to the context) is left out."""
    parents = rel_path.split("/")[:-1]
    prefixes = ["/".join(parents[: i + 1]) for i in range(len(parents))]
    ignored = False
    for rule in rules:
        # Only a rule that could flip the current answer needs evaluating.
        if rule.exclusion != ignored:
            continue
        matched = bool(rule.regex.match(rel_path)) or any(rule.regex.match(p) for p in prefixes)
        if matched:
            ignored = not rule.exclusion
    return ignored


def may_contain_included(dir_path: str, rules: Sequence[IgnoreRule]) -> bool:
    """Whether an ignored directory might still hold re-included (`!`) paths: walk it then."""
    return any(
        rule.exclusion
        and (
            rule.pattern.startswith(dir_path + "/")
            or "*" in rule.pattern
            or "?" in rule.pattern
            or "[" in rule.pattern
        )
        for rule in rules
    )
