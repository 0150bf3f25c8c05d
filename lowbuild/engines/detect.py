"""Choosing an engine: by name, by LOWBUILD_ENGINE, or the first that really works here.

`probe` is cheap (a binary lookup and one version query with a timeout). `lowbuild doctor`
uses the same `REQUIRED_BINARIES`, `check_version` and `engine_by_name` to say why an
engine cannot be used.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import NamedTuple

from lowbuild.engines.base import ENGINE_NAMES, Engine, EngineName
from lowbuild.engines.buildah import BuildahEngine
from lowbuild.engines.buildx import BuildxEngine
from lowbuild.engines.docker import DockerEngine
from lowbuild.engines.podman import PodmanEngine
from lowbuild.errors import (
    EngineError,
    EngineUnavailable,
    LowbuildError,
    UsageError,
    did_you_mean,
)

ENGINE_ENV = "LOWBUILD_ENGINE"

# The oldest versions whose flags lowbuild uses: podman's `--pull=never` and
# `--format docker`, dockerd's `--iidfile` on the classic builder, buildx's
# `--metadata-file`, buildah's `build --pull=never`. Older ones fail in confusing ways.
MINIMUM_VERSIONS: dict[EngineName, tuple[int, int, int]] = {
    "podman": (3, 4, 0),
    "docker": (20, 10, 0),
    "buildx": (0, 8, 0),
    "buildah": (1, 23, 0),
}

# Which binaries each engine needs on PATH (buildah runs containers with podman).
REQUIRED_BINARIES: dict[EngineName, tuple[str, ...]] = {
    "podman": ("podman",),
    "docker": ("docker",),
    "buildx": ("docker",),
    "buildah": ("buildah", "podman"),
}

_VERSION = re.compile(r"(\d+)\.(\d+)(?:\.(\d+))?")


class Probe(NamedTuple):
    """What `probe` found: usable or not, the version it reported, and why not."""

    ok: bool
    version: str
    reason: str


def parse_version(text: str) -> tuple[int, int, int]:
    """The first `major.minor[.patch]` in an engine's version text ("20.10.24+dfsg1",
    "v0.13.1", "github.com/docker/buildx 0.13.1+ds1 …"); ValueError when there is none."""
    found = _VERSION.search(text)
    if not found:
        raise ValueError(f"no version number in {text!r}")
    major, minor, patch = found.group(1, 2, 3)
    return int(major), int(minor), int(patch or 0)


def check_version(name: EngineName, text: str) -> str:
    """ "" when `text` is at least the minimum version for `name`, else the reason it is not."""
    try:
        found = parse_version(text)
    except ValueError as exc:
        return str(exc)
    minimum = MINIMUM_VERSIONS[name]
    if found < minimum:
        want = ".".join(map(str, minimum))
        return f"{name} {text} is older than the {want} lowbuild needs"
    return ""


def known_name(name: str, *, source: str = "") -> EngineName:
    """`name` as an EngineName; a UsageError (bad input, exit 2: a typo is not a broken
    engine) naming the known ones otherwise. `source` says where the name came from."""
    for known in ENGINE_NAMES:
        if name == known:
            return known
    raise UsageError(
        f"unknown engine {name!r}{source}{did_you_mean(name, ENGINE_NAMES)}: "
        f"lowbuild knows {', '.join(ENGINE_NAMES)}"
    )


def engine_by_name(name: str) -> Engine:
    """The engine called `name`, constructed without probing it."""
    match known_name(name):
        case "podman":
            return PodmanEngine()
        case "docker":
            return DockerEngine()
        case "buildx":
            return BuildxEngine()
        case "buildah":
            return BuildahEngine()


def probe(name: str) -> Probe:
    """Whether engine `name` can work here: its binaries are on PATH, it answers a version
    query within a few seconds (dockerd: the daemon answers), and it is new enough."""
    try:
        engine_name = known_name(name)
    except UsageError as exc:
        return Probe(False, "", str(exc))
    missing = [b for b in REQUIRED_BINARIES[engine_name] if shutil.which(b) is None]
    if missing:
        return Probe(False, "", f"{' and '.join(missing)} not found on PATH")
    try:
        version = engine_by_name(engine_name).version()
    except EngineError as exc:
        lines = exc.stderr.strip().splitlines()
        detail = lines[-1] if lines else f"exit {exc.returncode}"
        return Probe(False, "", f"`{' '.join(exc.command)}` failed: {detail}")
    except LowbuildError as exc:
        return Probe(False, "", str(exc))
    reason = check_version(engine_name, version)
    return Probe(not reason, version, reason)


# A daemonless engine is its binaries: the same files, run by the same user with the same
# configuration, answer the version query the same way. These are what that depends on.
DAEMONLESS: frozenset[str] = frozenset({"podman", "buildah"})
PROBE_ENV = (
    "PATH",
    "HOME",
    "XDG_RUNTIME_DIR",
    "XDG_CONFIG_HOME",
    "CONTAINER_HOST",
    "CONTAINER_CONNECTION",
    "CONTAINERS_CONF",
    "CONTAINERS_STORAGE_CONF",
    "CONTAINERS_REGISTRIES_CONF",
)


def probe_key(name: str) -> str | None:
    """What a passing probe of daemonless engine `name` depends on, as a digest: each
    required binary's resolved path and identity (inode, size, mtime, ctime: an upgrade
    changes them), the user, and the variables that point the engine elsewhere. None for
    an engine behind a daemon (the probe is what checks the daemon answers) or a binary
    not found."""
    if name not in DAEMONLESS:
        return None
    parts: dict[str, object] = {"engine": name, "uid": os.getuid()}
    for binary in REQUIRED_BINARIES[known_name(name)]:
        path = shutil.which(binary)
        if path is None:
            return None
        try:
            st = Path(path).stat()
        except OSError:
            return None
        parts[binary] = [
            os.path.realpath(path),
            st.st_ino,
            st.st_size,
            st.st_mtime_ns,
            st.st_ctime_ns,
        ]
    parts["env"] = {key: os.environ.get(key) for key in PROBE_ENV}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


class ProbeMemo:
    """Passing probes of daemonless engines, remembered in a file (the project's state
    directory): a run whose engine's binaries and settings are those of a probe that
    passed before skips the version query (about 0.1 s of a no-op build). Anything that
    cannot be read is no memo; anything that cannot be written is not remembered."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _read(self) -> dict[str, str]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return (
            {k: v for k, v in data.items() if isinstance(v, str)} if isinstance(data, dict) else {}
        )

    def passed(self, name: str) -> str | None:
        """The version a passing probe of `name`, as it is now, reported; None: none."""
        key = probe_key(name)
        return None if key is None else self._read().get(key)

    def remember(self, name: str, version: str) -> None:
        key = probe_key(name)
        if key is None:
            return
        from lowbuild.sources.cache import write_atomically

        known = self._read()
        known[key] = version
        with contextlib.suppress(OSError):
            write_atomically(self.path, json.dumps(known, indent=1))


def _probe(name: str, memo: ProbeMemo | None) -> Probe:
    if memo is not None:
        remembered = memo.passed(name)
        if remembered is not None:
            return Probe(True, remembered, "")
    found = probe(name)
    if found.ok and memo is not None:
        memo.remember(name, found.version)
    return found


_probed: dict[int, str] = {}


def probed_version(engine: Engine) -> str | None:
    """The version `engine`'s probe reported (or its memo remembered) when select_engine
    chose it; None for an engine it did not choose."""
    return _probed.get(id(engine))


def _chosen(name: str, found: Probe) -> Engine:
    engine = engine_by_name(name)
    if found.version:
        _probed[id(engine)] = found.version
    return engine


def select_engine(name: str | None = None, *, memo: ProbeMemo | None = None) -> Engine:
    """The engine to use: `name` if given, else $LOWBUILD_ENGINE, else the first of
    podman, docker, buildx, buildah whose probe passes. EngineUnavailable when the asked-for
    engine cannot work or none can, naming what was tried and why. With `memo`, a
    daemonless engine that passed before, unchanged, is not probed again."""
    asked = name or os.environ.get(ENGINE_ENV) or None
    if asked:
        source = "" if name else f" (from ${ENGINE_ENV})"
        known_name(asked, source=source)  # a typo is bad input, before any probe
        found = _probe(asked, memo)
        if not found.ok:
            raise EngineUnavailable(
                f"engine {asked!r}{source} is not usable: {found.reason}. "
                "Run `lowbuild doctor` for details."
            )
        return _chosen(asked, found)
    reasons = []
    for candidate in ENGINE_NAMES:
        found = _probe(candidate, memo)
        if found.ok:
            return _chosen(candidate, found)
        reasons.append(f"  {candidate}: {found.reason}")
    raise EngineUnavailable(
        "no usable container engine; tried:\n"
        + "\n".join(reasons)
        + "\nRun `lowbuild doctor` to see how to fix one."
    )
