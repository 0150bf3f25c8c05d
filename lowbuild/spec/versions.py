"""Versions in artifact file names: read them, compare them, replace them.

`haproxy-2.6.12.tar.gz` is haproxy at version 2.6.12. lowbuild reads that for the SBOM
(an artifact's name and version), for `bump` (which rewrites one version everywhere the
spec says it) and for `outdated` (which compares the pinned version with upstream's).
"""

from __future__ import annotations

import re

_ARCHIVE = re.compile(
    r"(\.tar\.(gz|bz2|xz|zst|lz)|\.tgz|\.tbz2|\.txz|\.zip|\.tar|\.jar|\.war|\.gz|\.xz|\.whl)$"
)
_NAME_VERSION = re.compile(r"^(?P<name>.+?)[-_]v?(?P<version>\d[\w.+~]*(?:[-_]\d[\w.+~]*)*)$")
_PRE_RELEASE = re.compile(r"(?i)(dev|alpha|beta|pre|rc|a|b)")


def name_and_version(file: str) -> tuple[str, str]:
    """An artifact's name and version read from its file name ("haproxy-2.6.12.tar.gz"
    → ("haproxy", "2.6.12")); ("name", "") when it carries no version."""
    stem = _ARCHIVE.sub("", file)
    match = _NAME_VERSION.match(stem)
    if match is None:
        return stem, ""
    return match["name"], match["version"]


def version_key(version: str) -> tuple[tuple[int, int | str], ...]:
    """A sort key: numeric parts compare as numbers ("2.10" > "2.9"), and a pre-release
    sorts before its release ("3.0-rc1" < "3.0" < "3.0.1")."""
    key: list[tuple[int, int | str]] = []
    for part in re.findall(r"\d+|[A-Za-z]+", version):
        if part.isdigit():
            key.append((2, int(part)))
        elif _PRE_RELEASE.fullmatch(part):
            key.append((0, part.lower()))  # before the release (which ends: nothing more)
        else:
            key.append((1, part.lower()))
    key.append((1, ""))  # the release itself: after its pre-releases
    return tuple(key)


def is_pre_release(version: str) -> bool:
    return any(_PRE_RELEASE.fullmatch(p) for p in re.findall(r"[A-Za-z]+", version))


def replace_version(text: str, old: str, new: str) -> str:
    """`text` with `old` replaced by `new` where it stands as a whole version (not inside
    a longer one: replacing 2.6.1 leaves 2.6.12 alone)."""
    pattern = re.compile(rf"(?<![\w.]){re.escape(old)}(?![\w]|\.\d)")
    return pattern.sub(new, text)
