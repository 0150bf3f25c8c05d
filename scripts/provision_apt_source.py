#!/usr/bin/env python3
"""Print the URI of this host's main Debian archive, read from its own apt sources.

provision.sh uses it as the mirror for debootstrap and for a private sources entry
of the next Debian suite (the buildx plugin), so no host name is ever written into
the project: whatever mirror this machine already uses is the one we use.

Usage: provision_apt_source.py [CODENAME]     (default: VERSION_CODENAME of /etc/os-release)
Exit 1 with a message on stderr when no enabled `deb` entry for CODENAME with
component `main` exists.

Standard library only: it runs with the system python3, before any venv exists.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

APT_ETC = Path("/etc/apt")


@dataclass(frozen=True)
class AptEntry:
    """One `deb` line, or one deb822 stanza, flattened to what we match on."""

    types: tuple[str, ...]
    uris: tuple[str, ...]
    suites: tuple[str, ...]
    components: tuple[str, ...]


def parse_one_line(text: str) -> Iterator[AptEntry]:
    """Entries of a classic sources.list: `deb [options] URI SUITE COMPONENT...`."""
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if "[" in line:  # drop the `[arch=... signed-by=...]` option block
            head, _, rest = line.partition("[")
            line = head + rest.partition("]")[2]
        words = line.split()
        if len(words) >= 4:
            yield AptEntry((words[0],), (words[1],), (words[2],), tuple(words[3:]))


def parse_deb822(text: str) -> Iterator[AptEntry]:
    """Entries of a deb822 .sources file; stanzas with `Enabled: no` are skipped."""
    for stanza in text.split("\n\n"):
        fields: dict[str, str] = {}
        key = ""
        for raw in stanza.splitlines():
            if raw.startswith("#") or not raw.strip():
                continue
            if raw[0] in " \t" and key:  # continuation line
                fields[key] += " " + raw.strip()
                continue
            key, _, value = raw.partition(":")
            key = key.strip().lower()
            fields[key] = value.strip()
        if fields.get("enabled", "yes").lower() == "no":
            continue
        if "uris" in fields and "suites" in fields:
            yield AptEntry(
                tuple(fields.get("types", "").split()),
                tuple(fields["uris"].split()),
                tuple(fields["suites"].split()),
                tuple(fields.get("components", "").split()),
            )


def host_entries(apt_etc: Path = APT_ETC) -> Iterator[AptEntry]:
    """Every entry apt itself would read (same file name rules as apt)."""
    main_list = apt_etc / "sources.list"
    if main_list.is_file():
        yield from parse_one_line(main_list.read_text(errors="replace"))
    parts = apt_etc / "sources.list.d"
    if parts.is_dir():
        for path in sorted(parts.iterdir()):
            if path.suffix == ".list":
                yield from parse_one_line(path.read_text(errors="replace"))
            elif path.suffix == ".sources":
                yield from parse_deb822(path.read_text(errors="replace"))


def main_archive_uri(entries: Iterator[AptEntry], codename: str) -> str | None:
    """The first URI of an enabled `deb` entry serving exactly `codename` with `main`."""
    for entry in entries:
        if "deb" in entry.types and codename in entry.suites and "main" in entry.components:
            return entry.uris[0].rstrip("/")
    return None


def host_codename() -> str:
    for line in Path("/etc/os-release").read_text().splitlines():
        key, _, value = line.partition("=")
        if key == "VERSION_CODENAME":
            return value.strip().strip('"')
    raise SystemExit("provision_apt_source: no VERSION_CODENAME in /etc/os-release")


def main() -> int:
    codename = sys.argv[1] if len(sys.argv) > 1 else host_codename()
    uri = main_archive_uri(host_entries(), codename)
    if uri is None:
        print(
            f"provision_apt_source: no enabled 'deb' entry for suite {codename!r} with "
            f"component 'main' in {APT_ETC}/sources.list or {APT_ETC}/sources.list.d/",
            file=sys.stderr,
        )
        return 1
    print(uri)
    return 0


if __name__ == "__main__":
    sys.exit(main())
