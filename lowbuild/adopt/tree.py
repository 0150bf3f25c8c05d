"""Reading a tree of hand-made image directories: every Dockerfile, what it builds on, what
it ADDs and COPYs, what it exposes and runs, and the build scripts beside it.

Nothing is changed and nothing is run. A file that cannot be read or understood is a
SpecError naming it (and the line), so `lowbuild init` writes nothing.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from lowbuild.adopt.scripts import BuildScript, find_build_scripts, read_build_script
from lowbuild.context.dockerfile import (
    DockerfileImages,
    Instruction,
    instructions,
    parse_dockerfile_text,
)
from lowbuild.errors import Location, SpecError

DOCKERFILE = "Dockerfile"
# Never looked into: version control, lowbuild's own state, virtualenvs, dependencies.
_SKIPPED_DIRS = frozenset({".git", ".hg", ".svn", ".lowbuild", ".venv", "node_modules"})
_URL = re.compile(r"""(?:https?|ftp)://[^\s'"<>()]+""")
_TEXT_SUFFIXES = frozenset({".sh", ".md", ".txt", ".rst", ""})
MAX_TEXT_BYTES = 256 * 1024
TAR_SUFFIXES = (".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz", ".tar")
ARCHIVE_SUFFIXES = (*TAR_SUFFIXES, ".zip")
BINARY_SUFFIXES = (".jar", ".war", ".ear", ".rpm", ".deb", ".bin", ".run", ".whl")
BIG_FILE = 1024 * 1024  # a file this big that a Dockerfile ADDs is an input, not a source
HAND_MADE_LIMIT = 16 * 1024 * 1024  # archives bigger than this are not looked into


@dataclass(frozen=True)
class Source:
    """A file a Dockerfile ADDs or COPYs from its directory (`path` relative to it)."""

    path: str
    line: int
    instruction: str  # ADD or COPY


@dataclass(frozen=True)
class ImageDirectory:
    """One directory with a Dockerfile, read."""

    directory: Path  # absolute
    relative: str  # to the tree's root, POSIX, "." for the root itself
    dockerfile: Path
    images: DockerfileImages
    instructions: tuple[Instruction, ...]
    sources: tuple[Source, ...]
    scripts: tuple[BuildScript, ...]
    url_adds: tuple[tuple[int, str], ...] = field(default=())  # ADD <url>: (line, url)
    missing: tuple[tuple[int, str], ...] = field(default=())  # (line, source) not there


def _walk(root: Path) -> list[Path]:
    """Directories under `root` (itself included) that hold a Dockerfile, sorted."""
    found = []
    for directory, subdirs, files in os.walk(root):
        subdirs[:] = sorted(d for d in subdirs if d not in _SKIPPED_DIRS)
        if DOCKERFILE in files:
            found.append(Path(directory))
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def _words(value: str) -> list[str]:
    """An instruction's arguments: the JSON form `["a", "b"]` or shell words."""
    text = value.strip()
    if text.startswith("["):
        try:
            parsed = json.loads(text)
            if isinstance(parsed, list) and all(isinstance(w, str) for w in parsed):
                return parsed
        except ValueError:
            pass
    try:
        return shlex.split(text, posix=True)
    except ValueError:
        return text.split()


def _sources(
    directory: Path, found: list[Instruction], dockerfile: Path
) -> tuple[list[Source], list[tuple[int, str]], list[tuple[int, str]]]:
    """The files ADD/COPY take from the directory, the URLs ADD downloads, and the
    sources that are not there (each with its line)."""
    sources: list[Source] = []
    urls: list[tuple[int, str]] = []
    missing: list[tuple[int, str]] = []
    for instruction in found:
        if instruction.keyword not in ("ADD", "COPY"):
            continue
        words = [w for w in _words(instruction.value) if not w.startswith("--")]
        if any(w.startswith("--from") for w in _words(instruction.value)):
            continue
        for word in words[:-1]:  # the last word is the destination
            if _URL.fullmatch(word):
                urls.append((instruction.line, word))
                continue
            relative = word.lstrip("/")  # a source is relative to the context, "/" or not
            matches = sorted(directory.glob(relative)) if any(c in word for c in "*?[") else []
            if not matches and not (directory / relative).exists() and "$" not in word:
                missing.append((instruction.line, word))
            for path in matches or [directory / relative]:
                if path.is_file():
                    try:
                        relative = path.resolve().relative_to(directory.resolve()).as_posix()
                    except ValueError:
                        raise SpecError(
                            f"{instruction.keyword} {word}: outside the directory",
                            Location(dockerfile, instruction.line),
                        ) from None
                    sources.append(Source(relative, instruction.line, instruction.keyword))
    return sources, urls, missing


def read_directory(root: Path, directory: Path) -> ImageDirectory:
    """One image directory: its Dockerfile read in full, its build scripts."""
    dockerfile = directory / DOCKERFILE
    try:
        text = dockerfile.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"cannot read Dockerfile: {exc}", Location(dockerfile)) from None
    images = parse_dockerfile_text(text, path=dockerfile)  # SpecError with file:line
    found = list(instructions(text, path=dockerfile))
    sources, url_adds, missing = _sources(directory, found, dockerfile)
    scripts = []
    for path in find_build_scripts(directory):
        script = read_build_script(path)
        if script.builds or path.name in ("docker_build.sh", "docker-build.sh"):
            scripts.append(script)
    relative = directory.relative_to(root).as_posix()
    return ImageDirectory(
        directory=directory,
        relative=relative,
        dockerfile=dockerfile,
        images=images,
        instructions=tuple(found),
        sources=tuple(dict.fromkeys(sources)),
        scripts=tuple(scripts),
        url_adds=tuple(url_adds),
        missing=tuple(missing),
    )


def read_tree(root: Path) -> list[ImageDirectory]:
    """Every image directory under `root`; a SpecError when there is none."""
    if not root.is_dir():
        raise SpecError(f"{root} is not a directory")
    directories = [read_directory(root, d) for d in _walk(root)]
    if not directories:
        raise SpecError(f"no {DOCKERFILE} in {root} or any directory below it: nothing to import")
    return directories


def urls_in_tree(root: Path) -> dict[str, list[str]]:
    """File name → the URLs that end in it, from the text files of the tree (scripts,
    READMEs, Dockerfiles): where `wget`/`curl` lines say each tarball came from."""
    found: dict[str, list[str]] = {}
    for directory, subdirs, files in os.walk(root):
        subdirs[:] = sorted(d for d in subdirs if d not in _SKIPPED_DIRS)
        for name in sorted(files):
            path = Path(directory, name)
            if name != DOCKERFILE and path.suffix not in _TEXT_SUFFIXES:
                continue
            try:
                if path.stat().st_size > MAX_TEXT_BYTES:
                    continue
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                continue
            for url in _URL.findall(text):
                url = url.rstrip(".,;:")
                file = url.rsplit("/", 1)[-1]
                if file and url not in found.setdefault(file, []):
                    found[file].append(url)
    return found


def is_input_file(path: Path) -> bool:
    """A file that is an input to pin (a tarball, a package, a big binary), not a source
    file of the image (a config, a script, a page)."""
    name = path.name.lower()
    if name.endswith(ARCHIVE_SUFFIXES) or name.endswith(BINARY_SUFFIXES):
        return True
    try:
        return path.stat().st_size >= BIG_FILE
    except OSError:
        return False


def hand_made_from(archive: Path) -> str | None:
    """The directory (relative to the archive's, "." for its own) whose files a tar
    archive holds, when they all lie there: an archive made by hand with `tar czvf` from
    files kept beside it, which a `packs:` entry would make reproducibly. None otherwise."""
    if not archive.name.lower().endswith(TAR_SUFFIXES):
        return None
    if archive.stat().st_size > HAND_MADE_LIMIT:  # a JDK is not made by hand: not opened
        return None
    try:
        with tarfile.open(archive) as tar:
            members = [m for m in tar.getmembers() if m.isfile()]
    except (OSError, tarfile.TarError, EOFError):
        return None
    if not members:
        return None
    names = [m.name.removeprefix("./") for m in members]
    base = archive.parent
    if all((base / name).is_file() for name in names):
        return "."
    # `tar czvf code.tar.gz -C code .` or `tar czvf code.tar.gz code/`: a subdirectory.
    tops = {name.split("/", 1)[0] for name in names}
    if len(tops) == 1:
        (top,) = tops
        if (base / top).is_dir() and all((base / name).is_file() for name in names):
            return top
    return None
