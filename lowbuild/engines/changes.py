"""Dockerfile `changes` applied at commit time (`docker commit --change`, `podman commit
--change`), validated before any engine sees them, and translated to `buildah config` flags.

Engines disagree on what they accept and fail late and vaguely ("unknown change
instruction" after the container ran); checking up front names the bad string.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass

from lowbuild.errors import SpecError

# What `docker commit --change` accepts; podman accepts these too (and STOPSIGNAL, which
# docker refuses, so it is left out to keep one spec valid on every engine).
COMMIT_INSTRUCTIONS = frozenset(
    {"CMD", "ENTRYPOINT", "ENV", "EXPOSE", "LABEL", "ONBUILD", "USER", "VOLUME", "WORKDIR"}
)

_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_PORT = re.compile(r"^(\d{1,5})(/(tcp|udp|sctp))?$")


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
        case "CMD" | "ENTRYPOINT" | "VOLUME":
            if change.argument.startswith("["):
                _json_strings(change.argument, text)
        case "ENV":
            for key, _ in env_pairs(change):
                if not _ENV_KEY.match(key):
                    raise SpecError(f"commit change {text!r}: {key!r} is not a variable name")
        case "EXPOSE":
            for port in change.argument.split():
                found = _PORT.match(port)
                if not found or not 0 < int(found.group(1)) < 65536:
                    raise SpecError(f"commit change {text!r}: {port!r} is not a port[/proto]")
        case "LABEL":
            label_pairs(change, text)
        case _:
            pass


def _json_strings(argument: str, text: str) -> list[str]:
    try:
        value = json.loads(argument)
    except json.JSONDecodeError as exc:
        raise SpecError(f"commit change {text!r}: not a valid JSON array: {exc}") from exc
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise SpecError(f"commit change {text!r}: the JSON form must be an array of strings")
    return value


def _shell_words(argument: str, text: str) -> list[str]:
    try:
        return shlex.split(argument)
    except ValueError as exc:
        raise SpecError(f"commit change {text!r}: {exc}") from exc


def env_pairs(change: Change) -> list[tuple[str, str]]:
    """ENV's (name, value) pairs: `ENV A=1 B="two words"` or the legacy `ENV A some value`."""
    if "=" not in change.argument.split(" ", 1)[0]:
        key, _, value = change.argument.partition(" ")
        return [(key, value.strip())]
    pairs = []
    for word in _shell_words(change.argument, str(change)):
        key, sep, value = word.partition("=")
        if not sep:
            raise SpecError(f"commit change {str(change)!r}: {word!r} is not NAME=value")
        pairs.append((key, value))
    return pairs


def label_pairs(change: Change, text: str | None = None) -> list[tuple[str, str]]:
    """LABEL's (key, value) pairs: `LABEL a=b "c d"=e`."""
    pairs = []
    for word in _shell_words(change.argument, text or str(change)):
        key, sep, value = word.partition("=")
        if not sep or not key:
            raise SpecError(f"commit change {text or str(change)!r}: {word!r} is not key=value")
        pairs.append((key, value))
    return pairs


def exec_form(change: Change) -> list[str]:
    """CMD/ENTRYPOINT as the argv the image will hold: the JSON form as written, the shell
    form wrapped in `/bin/sh -c` (what a Dockerfile does)."""
    if change.argument.startswith("["):
        return _json_strings(change.argument, str(change))
    return ["/bin/sh", "-c", change.argument]


def buildah_config_args(changes: Sequence[Change]) -> list[str]:
    """`buildah config` flags with the effect of `changes` (buildah commit has no --change)."""
    args: list[str] = []
    for change in changes:
        match change.instruction:
            case "CMD":
                args += ["--cmd", json.dumps(exec_form(change))]
            case "ENTRYPOINT":
                args += ["--entrypoint", json.dumps(exec_form(change))]
            case "ENV":
                for key, value in env_pairs(change):
                    args += ["--env", f"{key}={value}"]
            case "EXPOSE":
                for port in change.argument.split():
                    # buildah stores a bare "80" as is; docker and podman mean "80/tcp".
                    args += ["--port", port if "/" in port else f"{port}/tcp"]
            case "LABEL":
                for key, value in label_pairs(change):
                    args += ["--label", f"{key}={value}"]
            case "USER":
                args += ["--user", change.argument]
            case "WORKDIR":
                args += ["--workingdir", change.argument]
            case "VOLUME":
                volumes = (
                    _json_strings(change.argument, str(change))
                    if change.argument.startswith("[")
                    else change.argument.split()
                )
                for volume in volumes:
                    args += ["--volume", volume]
            case "ONBUILD":
                args += ["--onbuild", change.argument]
    return args
