"""Read a Dockerfile just far enough to know which images it builds on.

The plan needs, for every image, the images its Dockerfile pulls in: the base
of each stage (`FROM`), images copied from (`COPY --from=<image>`), images
mounted (`RUN --mount=from=<image>`), and which of those the final stage
stands on, all with their line numbers so a mismatch can be reported at the
right place. This is not a full Dockerfile parser: it knows parser directives
(`escape`), line continuations, comments, heredocs (skipped), global `ARG`s
with their defaults and the build args that override them, and the variable
forms engines expand in `FROM` (`$VAR`, `${VAR}`, `${VAR:-word}`, ...).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from lowbuild.errors import Location, SpecError

SCRATCH = "scratch"

ImageUseKind = Literal["FROM", "COPY --from", "RUN --mount"]

_DIRECTIVE = re.compile(r"^#\s*([A-Za-z][A-Za-z0-9_-]*)\s*=\s*(.*?)\s*$")
_KNOWN_DIRECTIVES = frozenset({"syntax", "escape", "check"})
_INSTRUCTION = re.compile(r"^\s*(\S+)\s*(.*)$", re.DOTALL)
_HEREDOC = re.compile(r"<<(-?)([\"']?)([A-Za-z_][A-Za-z0-9_]*)\2")
_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_STAGE_NAME = re.compile(r"^[a-z][a-z0-9._-]*$")
# What engines accept as instructions. Anything else is not quoted back in an error: a
# file that is not a Dockerfile may hold anything (a key, a password), and a message
# can end up in a CI log.
_KEYWORDS = frozenset(
    {
        "ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM", "HEALTHCHECK",
        "LABEL", "MAINTAINER", "ONBUILD", "RUN", "SHELL", "STOPSIGNAL", "USER", "VOLUME",
        "WORKDIR",
    }
)  # fmt: skip


@dataclass(frozen=True)
class ImageUse:
    """An image the Dockerfile needs from outside itself, as written (after ARG substitution)."""

    ref: str
    line: int
    kind: ImageUseKind


@dataclass(frozen=True)
class Stage:
    """One `FROM`: its base is an image ref, `scratch`, or an earlier stage (`base_stage`)."""

    index: int
    name: str | None
    base: str
    line: int
    base_stage: int | None = None


@dataclass(frozen=True)
class DockerfileImages:
    """What a Dockerfile builds on.

    `images` lists every image from outside the Dockerfile, in file order (never
    `scratch`, never a stage). `final_base` is the image the last stage ultimately
    stands on (following `FROM <earlier stage>`), or None when that is `scratch`.
    """

    path: Path
    stages: tuple[Stage, ...]
    images: tuple[ImageUse, ...]
    final_base: ImageUse | None


@dataclass(frozen=True)
class Instruction:
    """One logical instruction (`lowbuild init` reads them all; the plan only FROM & co.)."""

    keyword: str  # upper case
    value: str  # the rest, continuation lines joined
    line: int  # where the keyword is


def parse_dockerfile(
    path: Path, *, build_args: Mapping[str, str] | None = None
) -> DockerfileImages:
    """Parse the Dockerfile at `path`; `build_args` override global ARG defaults.

    Raises SpecError (with the file and line) when the file is missing or a FROM
    cannot be understood.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError("Dockerfile not found", Location(path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"cannot read Dockerfile: {exc}", Location(path)) from None
    return parse_dockerfile_text(text, path=path, build_args=build_args)


def parse_dockerfile_text(
    text: str, *, path: Path, build_args: Mapping[str, str] | None = None
) -> DockerfileImages:
    """Same as parse_dockerfile, from the text; `path` is only used in messages."""
    overrides = dict(build_args or {})
    global_args: dict[str, str | None] = {}
    stages: list[Stage] = []
    images: list[ImageUse] = []
    for instruction in instructions(text, path=path):
        where = Location(path, instruction.line)
        if instruction.keyword not in _KEYWORDS:
            raise SpecError("not a Dockerfile instruction (is this file a Dockerfile?)", where)
        if instruction.keyword == "ARG" and not stages:
            _declare_global_args(instruction.value, global_args, overrides, where=where)
        elif instruction.keyword == "FROM":
            stage = _stage(instruction, stages, global_args, where=where)
            stages.append(stage)
            if stage.base_stage is None and stage.base != SCRATCH:
                images.append(ImageUse(stage.base, instruction.line, "FROM"))
        elif not stages:
            raise SpecError(
                f"{instruction.keyword} before the first FROM (only ARG may come before FROM)",
                where,
            )
        elif instruction.keyword in ("COPY", "RUN"):
            source = _from_flag(instruction, global_args, where=where)
            if source is not None:
                use = _image_from_source(source, stages, instruction, where=where)
                if use is not None:
                    images.append(use)
    if not stages:
        raise SpecError("no FROM instruction", Location(path, 1))
    return DockerfileImages(
        path=path, stages=tuple(stages), images=tuple(images), final_base=_final_base(stages)
    )


# ---- lines → instructions ----


def instructions(text: str, *, path: Path) -> Iterator[Instruction]:
    """Logical instructions: directives read, comments dropped, continuations joined,
    heredocs skipped."""
    lines = text.splitlines()
    escape, index = _directives(lines, path=path)
    while index < len(lines):
        stripped = lines[index].strip()
        if not stripped or stripped.startswith("#"):
            index += 1
            continue
        start = index
        parts: list[str] = []
        line = lines[index].rstrip()
        # A line ending in the escape character continues; comment and blank lines
        # inside a continuation are dropped, as engines do.
        while line.endswith(escape):
            parts.append(line[: -len(escape)])
            index += 1
            while index < len(lines) and (
                not lines[index].strip() or lines[index].lstrip().startswith("#")
            ):
                index += 1
            line = lines[index].rstrip() if index < len(lines) else ""
        parts.append(line)
        index += 1
        match = _INSTRUCTION.match(" ".join(parts))
        if match is None:
            continue
        keyword, value = match.group(1).upper(), match.group(2).strip()
        if keyword in ("RUN", "COPY", "ADD"):
            index = _skip_heredocs(value, lines, index)
        yield Instruction(keyword, value, start + 1)


def _directives(lines: list[str], *, path: Path) -> tuple[str, int]:
    """Read parser directives at the top; return the escape character and the first other line."""
    escape = "\\"
    index = 0
    while index < len(lines):
        match = _DIRECTIVE.match(lines[index])
        if match is None or match.group(1).lower() not in _KNOWN_DIRECTIVES:
            break
        if match.group(1).lower() == "escape":
            if match.group(2) not in ("\\", "`"):
                raise SpecError(
                    f"escape directive must be \\ or `, not {match.group(2)!r}",
                    Location(path, index + 1),
                )
            escape = match.group(2)
        index += 1
    return escape, index


def _skip_heredocs(value: str, lines: list[str], index: int) -> int:
    """Step over the bodies of `<<WORD` heredocs so their lines are not read as instructions."""
    for match in _HEREDOC.finditer(value):
        strip_tabs, word = match.group(1) == "-", match.group(3)
        while index < len(lines):
            body = lines[index].lstrip("\t") if strip_tabs else lines[index]
            index += 1
            if body.rstrip() == word:
                break
    return index


# ---- ARG and variable substitution ----


def _declare_global_args(
    value: str,
    global_args: dict[str, str | None],
    overrides: Mapping[str, str],
    *,
    where: Location,
) -> None:
    """`ARG A=1 B` before the first FROM: a build arg wins over the default."""
    try:
        words = shlex.split(value, posix=True)
    except ValueError as exc:
        raise SpecError(f"cannot read ARG: {exc}", where) from None
    if not words:
        raise SpecError("ARG needs a name", where)
    for word in words:
        name, has_default, default = word.partition("=")
        if not _VAR_NAME.fullmatch(name):
            raise SpecError(f"ARG name {name!r} is not valid", where)
        if name in overrides:
            global_args[name] = overrides[name]
        elif has_default:
            # Defaults may use earlier ARGs: ARG TAG=${VERSION}-slim
            global_args[name] = expand(default, global_args, where=where)
        else:
            global_args[name] = None


def expand(word: str, variables: Mapping[str, str | None], *, where: Location) -> str:
    """Substitute `$VAR`, `${VAR}`, `${VAR:-word}`, `${VAR-word}`, `${VAR:+word}`,
    `${VAR+word}`, `${VAR:?msg}` as engines do in FROM. An unset VAR is empty;
    `\\$` is a literal dollar sign. A None value means declared but unset."""
    out: list[str] = []
    index = 0
    while index < len(word):
        char = word[index]
        if char == "\\" and index + 1 < len(word) and word[index + 1] == "$":
            out.append("$")
            index += 2
        elif char == "$" and word.startswith("${", index):
            end = _closing_brace(word, index + 2, where=where)
            out.append(_braced(word[index + 2 : end], variables, where=where))
            index = end + 1
        elif char == "$" and (match := _VAR_NAME.match(word, index + 1)):
            out.append(variables.get(match.group(0)) or "")
            index = match.end()
        else:
            out.append(char)
            index += 1
    return "".join(out)


def _closing_brace(word: str, start: int, *, where: Location) -> int:
    depth = 1
    for index in range(start, len(word)):
        if word[index] == "{":
            depth += 1
        elif word[index] == "}":
            depth -= 1
            if depth == 0:
                return index
    raise SpecError(f"unclosed ${{ in {word!r}", where)


def _braced(body: str, variables: Mapping[str, str | None], *, where: Location) -> str:
    match = _VAR_NAME.match(body)
    if match is None:
        raise SpecError(f"bad substitution ${{{body}}}", where)
    name, rest = match.group(0), body[match.end() :]
    value = variables.get(name)
    if not rest:
        return value or ""
    for operator in (":-", ":+", ":?", "-", "+", "?"):
        if rest.startswith(operator):
            operand = rest[len(operator) :]
            return _apply_operator(operator, name, value, operand, variables, where=where)
    raise SpecError(f"unsupported substitution ${{{body}}}", where)


def _apply_operator(
    operator: str,
    name: str,
    value: str | None,
    operand: str,
    variables: Mapping[str, str | None],
    *,
    where: Location,
) -> str:
    # With a colon the test is "set and not empty"; without it, just "set".
    present = bool(value) if operator.startswith(":") else value is not None
    kind = operator[-1]
    if kind == "-":
        return (value or "") if present else expand(operand, variables, where=where)
    if kind == "+":
        return expand(operand, variables, where=where) if present else ""
    if not present:  # "?"
        raise SpecError(f"{name}: {operand or 'is not set'}", where)
    return value or ""


# ---- FROM, COPY --from, RUN --mount=from ----


def _stage(
    instruction: Instruction,
    stages: list[Stage],
    global_args: Mapping[str, str | None],
    *,
    where: Location,
) -> Stage:
    """`FROM [--platform=P] image [AS name]`, with global ARGs substituted into `image`."""
    words = instruction.value.split()
    while words and words[0].startswith("--"):
        flag = words.pop(0)
        if not flag.startswith("--platform="):
            raise SpecError(f"FROM: unknown flag {flag.split('=')[0]}", where)
    if len(words) == 3 and words[1].lower() == "as":
        written, name = words[0], words[2].lower()
        if not _STAGE_NAME.match(name):
            raise SpecError(f"FROM: stage name {words[2]!r} is not valid", where)
        if any(stage.name == name for stage in stages):
            raise SpecError(f"FROM: stage name {name!r} is used twice", where)
    elif len(words) == 1:
        written, name = words[0], None
    else:
        raise SpecError(
            f"FROM: expected `FROM image [AS name]`, got `FROM {instruction.value}`", where
        )
    base = expand(written, global_args, where=where)
    if not base:
        raise SpecError(f"FROM {written} names no image (an ARG it uses is empty or unset)", where)
    earlier = _stage_named(base, stages)
    return Stage(
        index=len(stages),
        name=name,
        base=base,
        line=instruction.line,
        base_stage=earlier.index if earlier is not None else None,
    )


def _stage_named(reference: str, stages: list[Stage]) -> Stage | None:
    for stage in stages:
        if stage.name is not None and stage.name == reference.lower():
            return stage
    return None


def _from_flag(
    instruction: Instruction, global_args: Mapping[str, str | None], *, where: Location
) -> str | None:
    """The source named by `COPY --from=X` or `RUN --mount=...,from=X`, if any."""
    for word in instruction.value.split():
        if not word.startswith("--"):
            break  # flags come first
        if instruction.keyword == "COPY" and word.startswith("--from="):
            return expand(word.removeprefix("--from="), global_args, where=where)
        if instruction.keyword == "RUN" and word.startswith("--mount="):
            options = dict(
                option.partition("=")[::2] for option in word.removeprefix("--mount=").split(",")
            )
            if options.get("from"):
                return expand(options["from"], global_args, where=where)
    return None


def _image_from_source(
    source: str, stages: list[Stage], instruction: Instruction, *, where: Location
) -> ImageUse | None:
    """An image, when `source` is not an earlier stage (by name or index)."""
    if source.isdigit():
        if int(source) >= len(stages):
            raise SpecError(f"--from={source}: there is no earlier stage {source}", where)
        return None
    if _stage_named(source, stages) is not None:
        return None
    kind: ImageUseKind = "COPY --from" if instruction.keyword == "COPY" else "RUN --mount"
    return ImageUse(source, instruction.line, kind)


def _final_base(stages: list[Stage]) -> ImageUse | None:
    """Follow the last stage down through `FROM <stage>` to the image it stands on."""
    stage = stages[-1]
    while stage.base_stage is not None:
        stage = stages[stage.base_stage]
    if stage.base == SCRATCH:
        return None
    return ImageUse(stage.base, stage.line, "FROM")


# ---- pointing a Dockerfile at one platform's images ----


def retarget_dockerfile(
    text: str,
    *,
    path: Path,
    build_args: Mapping[str, str] | None = None,
    targets: Mapping[str, str],
) -> str:
    """`text` with each image it uses from outside (FROM, COPY --from, RUN --mount from)
    that `targets` maps (by the ref as parsed: ARGs substituted) written as its target
    instead: how a platform's variant builds on its parent's variant and its bases'
    images for that platform. Every other byte stays. A use that cannot be rewritten in
    place (split over continuation lines) is a SpecError naming its line."""
    lines = text.splitlines(keepends=True)
    overrides = dict(build_args or {})
    global_args: dict[str, str | None] = {}
    stages: list[Stage] = []
    for instruction in instructions(text, path=path):
        where = Location(path, instruction.line)
        if instruction.keyword == "ARG" and not stages:
            _declare_global_args(instruction.value, global_args, overrides, where=where)
        elif instruction.keyword == "FROM":
            stage = _stage(instruction, stages, global_args, where=where)
            stages.append(stage)
            if stage.base_stage is None and stage.base in targets:
                written = [word for word in instruction.value.split() if not word.startswith("--")]
                _rewrite(
                    lines, where, rf"(?<=\s){re.escape(written[0])}(?=\s|$)", targets[stage.base]
                )
        elif instruction.keyword in ("COPY", "RUN") and stages:
            source = _from_flag(instruction, global_args, where=where)
            if source is None or source not in targets:
                continue
            if _image_from_source(source, stages, instruction, where=where) is None:
                continue
            for word in instruction.value.split():
                if not word.startswith("--"):
                    break
                if word.startswith("--from="):
                    pattern = rf"(?<=--from=){re.escape(word.removeprefix('--from='))}(?=\s|$)"
                    _rewrite(lines, where, pattern, targets[source])
                elif word.startswith("--mount="):
                    options = dict(
                        option.partition("=")[::2]
                        for option in word.removeprefix("--mount=").split(",")
                    )
                    if options.get("from"):
                        pattern = rf"(?<=from=){re.escape(options['from'])}(?=[,\s]|$)"
                        _rewrite(lines, where, pattern, targets[source])
    return "".join(lines)


def _rewrite(lines: list[str], where: Location, pattern: str, target: str) -> None:
    assert where.line is not None
    index = where.line - 1
    changed, count = re.subn(pattern, lambda _: target, lines[index], count=1)
    if count != 1:
        raise SpecError(
            f"cannot point this line at {target} (the image it names is split over lines): "
            "write it on the instruction's first line",
            where,
        )
    lines[index] = changed
