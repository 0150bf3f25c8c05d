"""Dockerfile `changes` of a commit recipe, read the way a Dockerfile reads them.

A change is parsed once here, with the Dockerfile's rules, into literal values (each
engine then gets those values in its own syntax: lowbuild/engines/changes.py). `$` must
be written `\\$`: expanding it would need the container's environment, which the engines
resolve differently. Engines also disagree on what they accept and fail late and vaguely
("unknown change instruction" after the container ran); checking when the spec is loaded
names the bad string.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass

from lowbuild.errors import SpecError

# What `docker commit --change` accepts; podman accepts these too (and STOPSIGNAL, which
# docker refuses, so it is left out to keep one spec valid on every engine).
COMMIT_INSTRUCTIONS = frozenset(
    {"CMD", "ENTRYPOINT", "ENV", "EXPOSE", "LABEL", "ONBUILD", "USER", "VOLUME", "WORKDIR"}
)

_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# podman takes tcp and udp only (docker also sctp): one spec valid on every engine.
_PORT = re.compile(r"^(\d{1,5})(/(tcp|udp))?$")


@dataclass(frozen=True)
class Change:
    """One validated change: `instruction` upper-case, `argument` as written."""

    instruction: str
    argument: str

    def __str__(self) -> str:
        return f"{self.instruction} {self.argument}"


def parse_change(text: str) -> Change:
    """Validate one change string ("CMD [\"a\"]", "EXPOSE 80/tcp", "ENV A=1", …).

    Raises SpecError naming the string and what is wrong with it.
    """
    if "\n" in text or "\r" in text:
        raise SpecError(f"commit change {text!r}: must be a single line")
    keyword, _, argument = text.strip().partition(" ")
    instruction = keyword.upper()
    argument = argument.strip()
    if instruction not in COMMIT_INSTRUCTIONS:
        allowed = ", ".join(sorted(COMMIT_INSTRUCTIONS))
        raise SpecError(f"commit change {text!r}: {keyword!r} is not one of {allowed}")
    if not argument:
        raise SpecError(f"commit change {text!r}: {instruction} needs an argument")
    change = Change(instruction, argument)
    _check_argument(change, text)
    return change


def parse_changes(texts: Sequence[str]) -> tuple[Change, ...]:
    """parse_change for each string, in order."""
    return tuple(parse_change(t) for t in texts)


def _check_argument(change: Change, text: str) -> None:
    match change.instruction:
        case "CMD" | "ENTRYPOINT":
            exec_form(change)
        case "ENV":
            for key, _ in env_pairs(change):
                if not _ENV_KEY.match(key):
                    raise SpecError(f"commit change {text!r}: {key!r} is not a variable name")
        case "EXPOSE":
            ports(change)
        case "LABEL":
            label_pairs(change)
        case "USER":
            literal(change)
        case "WORKDIR":
            if not literal(change).startswith("/"):
                # docker joins a relative one to the container's directory, podman does not.
                raise SpecError(f"commit change {text!r}: WORKDIR must be an absolute path")
        case "VOLUME":
            volumes(change)
        case _:
            pass


# ---- reading: the Dockerfile's rules ----


def _fail(change: Change, problem: str) -> SpecError:
    return SpecError(f"commit change {str(change)!r}: {problem}")


def _raw_words(change: Change) -> list[str]:
    """The argument split at blanks outside quotes, quotes and escapes kept (how the
    Dockerfile parser splits ENV and LABEL before it splits each word at its first `=`)."""
    words: list[str] = []
    word: list[str] = []
    quote = ""
    started = False
    chars = iter(change.argument)
    for ch in chars:
        if quote:
            word.append(ch)
            if ch == quote:
                quote = ""
            elif ch == "\\" and quote == '"':
                word.append(next(chars, ""))
        elif ch.isspace():
            if started:
                words.append("".join(word))
            word, started = [], False
        else:
            started = True
            word.append(ch)
            if ch in "'\"":
                quote = ch
            elif ch == "\\":
                word.append(next(chars, ""))
    if quote:
        raise _fail(change, "unclosed quotation")
    if started:
        words.append("".join(word))
    return words


def _unquote(change: Change, word: str) -> str:
    """One Dockerfile word as the literal it stands for: quotes removed, `\\x` outside
    quotes is `x`, inside double quotes `\\"`, `\\\\` and `\\$` are escapes (any other
    backslash stays), single quotes keep everything. An unescaped `$` is refused."""
    out: list[str] = []
    i = 0
    while i < len(word):
        ch = word[i]
        if ch == "'":
            end = word.find("'", i + 1)
            if end < 0:
                raise _fail(change, "unclosed quotation")
            out.append(word[i + 1 : end])
            i = end + 1
            continue
        if ch == '"':
            i += 1
            while i < len(word) and word[i] != '"':
                if word[i] == "\\" and i + 1 < len(word) and word[i + 1] in '"\\$':
                    i += 1
                elif word[i] == "$":
                    raise _dollar(change)
                out.append(word[i])
                i += 1
            if i >= len(word):
                raise _fail(change, "unclosed quotation")
            i += 1
            continue
        if ch == "\\" and i + 1 < len(word):
            i += 1
        elif ch == "$":
            raise _dollar(change)
        out.append(word[i])
        i += 1
    return "".join(out)


def _dollar(change: Change) -> SpecError:
    return _fail(
        change,
        "write a literal $ as \\$ (variables are not expanded in commit changes: "
        "docker, podman and buildah would each give a different value)",
    )


def _pairs(change: Change, what: str) -> list[tuple[str, str]]:
    pairs = []
    for word in _raw_words(change):
        key, sep, value = word.partition("=")
        literal_key = _unquote(change, key)
        if not sep or not literal_key:
            raise _fail(change, f"{word!r} is not {what}")
        pairs.append((literal_key, _unquote(change, value)))
    return pairs


def env_pairs(change: Change) -> list[tuple[str, str]]:
    """ENV's (name, value) pairs: `ENV A=1 B="two words"` or the legacy `ENV A some value`."""
    if "=" not in change.argument.split(" ", 1)[0]:
        key, _, value = change.argument.partition(" ")
        return [(key, _unquote(change, value.strip()))]
    return _pairs(change, "NAME=value")


def label_pairs(change: Change) -> list[tuple[str, str]]:
    """LABEL's (key, value) pairs: `LABEL a=b "c d"=e`."""
    return _pairs(change, "key=value")


def literal(change: Change) -> str:
    """USER's or WORKDIR's argument as one literal (quotes removed, blanks kept)."""
    return _unquote(change, change.argument)


def _json_strings(change: Change) -> list[str]:
    try:
        value = json.loads(change.argument)
    except json.JSONDecodeError as exc:
        raise _fail(change, f"not a valid JSON array: {exc}") from exc
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _fail(change, "the JSON form must be an array of strings")
    return value


def exec_form(change: Change) -> list[str]:
    """CMD/ENTRYPOINT as the argv the image will hold: the JSON form as written, the shell
    form wrapped in `/bin/sh -c` (what a Dockerfile does)."""
    if change.argument.startswith("["):
        return _json_strings(change)
    return ["/bin/sh", "-c", change.argument]


def ports(change: Change) -> list[str]:
    """EXPOSE's ports as the image records them ("80" means "80/tcp")."""
    found = []
    for port in change.argument.split():
        match = _PORT.match(port)
        if not match or not 0 < int(match.group(1)) < 65536:
            raise _fail(change, f"{port!r} is not a port[/tcp|/udp]")
        found.append(f"{int(match.group(1))}/{match.group(3) or 'tcp'}")
    return found


def volumes(change: Change) -> list[str]:
    """VOLUME's paths: the JSON form or blank-separated words."""
    if change.argument.startswith("["):
        paths = _json_strings(change)
        if any("$" in path for path in paths):
            raise _dollar(change)
    else:
        paths = [_unquote(change, word) for word in _raw_words(change)]
    if not all(paths):
        raise _fail(change, "a volume path is empty")
    return paths
