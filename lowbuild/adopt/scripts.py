"""Reading the build scripts people keep beside their Dockerfiles (`docker_build.sh`,
`docker-build.sh`, `build.sh`): which names and tags they build, and what else they do.

Nothing is run. A script is read line by line the way a person would: plain variable
assignments (`TAG=v1`, `export NAME="nginx"`) are remembered and expanded in the build
command; `docker build`, `podman build`, `buildah bud`/`buildah build` give their `-t`,
`--tag` values; every other command is reported, since lowbuild will not run it.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from lowbuild.errors import Location, SpecError

# Names a build script goes by, in the order they are preferred when there are several.
SCRIPT_NAMES = ("docker_build.sh", "docker-build.sh", "build.sh", "podman_build.sh")
_ASSIGNMENT = re.compile(r"^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)$")
_VARIABLE = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")
# Lines that only set the shell up or talk: not worth a finding.
_QUIET = re.compile(r"^(set\s+-[a-z]+|cd\s+\S+|echo\b.*|true|exit(\s+\d+)?)$")
MAX_SCRIPT_BYTES = 256 * 1024


@dataclass(frozen=True)
class BuildCommand:
    """One build command of a script: the references it tags, where, and how it read."""

    refs: tuple[str, ...]
    line: int
    text: str
    unresolved: tuple[str, ...] = ()  # variables it uses that are not plain assignments
    dockerfile: str | None = None  # -f/--file, when given
    context: str | None = None


@dataclass(frozen=True)
class BuildScript:
    path: Path
    builds: tuple[BuildCommand, ...] = ()
    other: tuple[tuple[int, str], ...] = field(default=())  # (line, command) lowbuild won't run


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """(first line number, line) with backslash continuations joined."""
    lines: list[tuple[int, str]] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        if not pending:
            start = number
        if raw.rstrip().endswith("\\"):
            pending.append(raw.rstrip()[:-1])
            continue
        pending.append(raw)
        lines.append((start, " ".join(part.strip() for part in pending).strip()))
        pending = []
    if pending:
        lines.append((start, " ".join(part.strip() for part in pending).strip()))
    return lines


def _expand(word: str, variables: dict[str, str], unresolved: list[str]) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name in variables:
            return variables[name]
        unresolved.append(name)
        return match.group(0)

    return _VARIABLE.sub(value, word)


def _build_words(words: list[str]) -> list[str] | None:
    """The arguments after the build verb, when `words` is a build command."""
    for index, word in enumerate(words):
        tool = word.rsplit("/", 1)[-1]
        rest = words[index + 1 :]
        if tool in ("docker", "podman") and rest[:1] == ["build"]:
            return rest[1:]
        if tool in ("docker", "podman") and rest[:2] in (["image", "build"], ["buildx", "build"]):
            return rest[2:]
        if tool == "buildah" and rest[:1] in (["bud"], ["build"], ["build-using-dockerfile"]):
            return rest[1:]
        if word not in ("sudo", "exec", "time") and not _ASSIGNMENT.match(word):
            return None
    return None


def _build_command(
    arguments: list[str], *, line: int, text: str, variables: dict[str, str]
) -> BuildCommand:
    refs: list[str] = []
    unresolved: list[str] = []
    dockerfile = context = None
    index = 0
    while index < len(arguments):
        word = arguments[index]
        flag, _, inline = word.partition("=")
        takes_value = flag in ("-t", "--tag", "-f", "--file")
        value = inline if inline else (arguments[index + 1] if index + 1 < len(arguments) else "")
        if takes_value:
            index += 1 if inline else 2
            expanded = _expand(value, variables, unresolved)
            if flag in ("-t", "--tag"):
                refs.append(expanded)
            else:
                dockerfile = expanded
            continue
        if word.startswith("-t") and len(word) > 2:  # -tname:tag
            refs.append(_expand(word[2:], variables, unresolved))
        elif not word.startswith("-"):
            context = _expand(word, variables, unresolved)
        index += 1
    return BuildCommand(
        refs=tuple(refs),
        line=line,
        text=text,
        unresolved=tuple(dict.fromkeys(unresolved)),
        dockerfile=dockerfile,
        context=context,
    )


def read_build_script(path: Path) -> BuildScript:
    """The build commands of the script at `path` and the other commands in it.

    Raises SpecError (naming the file) when it cannot be read."""
    try:
        raw = path.read_bytes()[: MAX_SCRIPT_BYTES + 1]
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"cannot read build script: {exc}", Location(path)) from None
    if len(raw) > MAX_SCRIPT_BYTES:
        raise SpecError(
            f"build script larger than {MAX_SCRIPT_BYTES // 1024} KiB: not read", Location(path)
        )
    variables: dict[str, str] = {}
    builds: list[BuildCommand] = []
    other: list[tuple[int, str]] = []
    for number, line in _logical_lines(text):
        if not line or line.startswith("#"):
            continue
        try:
            words = shlex.split(line, comments=True)
        except ValueError:
            other.append((number, line))
            continue
        if not words:
            continue
        assignment = (
            _ASSIGNMENT.match(" ".join(words))
            if len(words) == 1 or (words[0] == "export" and len(words) == 2)
            else None
        )
        if assignment:
            unresolved: list[str] = []
            value = _expand(assignment.group(2), variables, unresolved)
            if not unresolved and "$(" not in line and "`" not in line:
                variables[assignment.group(1)] = value
            continue
        arguments = _build_words(words)
        if arguments is not None:
            builds.append(_build_command(arguments, line=number, text=line, variables=variables))
        elif not _QUIET.match(line):
            other.append((number, line))
    return BuildScript(path=path, builds=tuple(builds), other=tuple(other))


def find_build_scripts(directory: Path) -> list[Path]:
    """The build scripts in `directory`: the usual names first, then any other `*.sh`
    that runs a build command (checked when read)."""
    named = [directory / name for name in SCRIPT_NAMES if (directory / name).is_file()]
    others = sorted(path for path in directory.glob("*.sh") if path.is_file() and path not in named)
    return [*named, *others]
