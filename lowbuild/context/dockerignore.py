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

Which file holds the rules: the first that exists of `<Dockerfile>.dockerignore`
(next to the Dockerfile; podman and BuildKit both prefer it), `.containerignore`
(podman's name, which podman prefers to `.dockerignore`) and `.dockerignore`.
That is podman's order; docker's classic builder knows only `.dockerignore` and
BuildKit no `.containerignore`, but lowbuild applies the rules itself, so every
engine sees the same files.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lowbuild.errors import Location, SpecError
from lowbuild.spec.load import utf8_text


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


def ignore_file_names(dockerfile: str | None) -> tuple[str, ...]:
    """The names an engine reads ignore rules from, relative to the context, first one
    that exists wins. `dockerfile`: the Dockerfile's path in the context (None: none)."""
    own = (f"{dockerfile}.dockerignore",) if dockerfile is not None else ()
    return (*own, ".containerignore", ".dockerignore")


@dataclass(frozen=True)
class IgnoreFile:
    """The rules that apply to a context, and the file they came from (None: none)."""

    name: str | None
    rules: tuple[IgnoreRule, ...]


def load_ignore_file(context_dir: Path, *, dockerfile: str | None) -> IgnoreFile:
    """The rules of the first of `ignore_file_names(dockerfile)` in `context_dir`.

    Raises SpecError (with the line for text that is not UTF-8) when it cannot be read.
    """
    for name in ignore_file_names(dockerfile):
        path = context_dir / name
        if not path.is_file():
            continue
        if not path.resolve().is_relative_to(context_dir.resolve()):
            raise SpecError(
                f"is a link to {path.resolve()}, outside the context {context_dir}",
                Location(path),
            )
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise SpecError(f"cannot read: {exc.strerror or exc}", Location(path)) from None
        return IgnoreFile(name=name, rules=tuple(parse_dockerignore(utf8_text(raw, path))))
    return IgnoreFile(name=None, rules=())


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
