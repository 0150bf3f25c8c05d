"""The one protocol every engine implements, and the requests it takes.

Nothing outside lowbuild/engines asks which engine it has."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

# The engine names are the spec's (lowbuild.yaml `engine:`); re-exported for the engines.
from lowbuild.spec.model import ENGINE_NAMES as ENGINE_NAMES
from lowbuild.spec.model import EngineName as EngineName

LogSink = Callable[[str], None]
"""Receives engine output one line at a time (no trailing newline), as it is printed."""

OWNED_LABEL = "lowbuild.owned"
"""Every container lowbuild runs carries `lowbuild.owned=true`, so strays can be found
(`podman ps --all --filter label=lowbuild.owned`). Except a commit recipe's working container:
commit would copy the label into the image, so it is known by its name (`lowbuild-…`)."""

# What to do about a base image from outside the family that an engine's store lacks.
MISSING_BASE_HINT = (
    "lowbuild never pulls; bring it in first: `podman pull`/`docker pull` it, "
    "`podman load`/`docker load` an archive of it, or `lowbuild bundle import` a bundle"
)

LOOPBACK = "127.0.0.1"
"""Where a local engine publishes a container's ports, and they are reached."""

REMOVE_TIMEOUT_S = 10.0
"""How long removing a container may take (the engine kills it first) before lowbuild
gives up on an engine that hangs: normally well under a second."""


LOG_AFTER_TIMEOUT_S = 3.0
"""How long reading the log of a container that ran out of time may take: its user has
waited for the timeout already, and an engine that hangs must not hold them longer."""


def seconds_left(deadline: float | None) -> float | None:
    """Seconds until `deadline` (a time.monotonic() value), never below 0; None: no limit."""
    return None if deadline is None else max(0.0, deadline - time.monotonic())


_FULL_ID = re.compile(r"^(sha256:)?([0-9a-f]{64})$")


def short_id(image_id: str) -> str:
    """The 12 hex digits an image ID is shown by (as `docker images` shows it)."""
    return image_id.removeprefix("sha256:")[:12]


def normalise_image_id(raw: str) -> str:
    """An engine's full image ID as "sha256:<64 hex>" (podman prints bare hex, docker and
    buildah's --iidfile write it prefixed). Raises ValueError for anything else, short IDs
    included: those must be resolved by the engine, not guessed."""
    found = _FULL_ID.match(raw.strip().lower())
    if not found:
        raise ValueError(f"not a full image ID: {raw.strip()!r}")
    return f"sha256:{found.group(2)}"


@dataclass(frozen=True)
class ImageInfo:
    """What lowbuild needs to know of a local image."""

    id: str  # "sha256:<hex>"
    tags: tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    author: str = ""
    comment: str = ""
    cmd: tuple[str, ...] | None = None
    entrypoint: tuple[str, ...] | None = None
    env: tuple[str, ...] = ()
    exposed_ports: tuple[str, ...] = ()  # e.g. ("80/tcp",)
    user: str = ""
    workdir: str = ""
    size: int | None = None  # bytes, as the engine's inspect says (None: not asked)
    created: str = ""  # RFC 3339, as the engine's inspect says
    layers: tuple[str, ...] = ()  # RootFS diff IDs, base first (only with the size)
    architecture: str = ""  # "amd64", "arm64", … ("": the engine did not say)


@dataclass(frozen=True)
class RunningContainer:
    """A container started by Engine.run; `ports` maps container port -> host port."""

    id: str
    name: str
    ports: Mapping[int, int] = field(default_factory=dict)
    host: str = LOOPBACK  # where its published ports are reached from here


@dataclass(frozen=True)
class ShellStep:
    """A commit-recipe step: run `command` with `/bin/sh -c` in the working container."""

    command: str


@dataclass(frozen=True)
class CopyStep:
    """A commit-recipe step: copy host file or directory `source` to `dest` in the working
    container (`dest`: the target path, or an existing directory to copy into)."""

    source: Path
    dest: str


WorkStep = ShellStep | CopyStep


@dataclass(frozen=True)
class BuildRequest:
    """One Dockerfile build, the same for every engine."""

    context: Path
    dockerfile: Path | None = None  # None: `Dockerfile` in the context
    tags: Sequence[str] = ()
    build_args: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    network: str | None = None  # None: the engine's default network
    platform: str | None = None  # None: the engine's own (the machine's)

    def flags(self, *, dockerfile: Path | None = None) -> list[str | Path]:
        """The flags podman, buildah and the docker CLI spell the same way; `dockerfile`
        names the Dockerfile otherwise than `self.dockerfile` (buildx: inside a tar)."""
        argv: list[str | Path] = []
        named = dockerfile if dockerfile is not None else self.dockerfile
        if named is not None:
            argv += ["--file", named]
        for tag in self.tags:
            argv += ["--tag", tag]
        for key, value in self.build_args.items():
            argv += ["--build-arg", f"{key}={value}"]
        for key, value in self.labels.items():
            argv += ["--label", f"{key}={value}"]
        if self.network:
            argv += ["--network", self.network]
        if self.platform:
            argv += ["--platform", self.platform]
        return argv


@dataclass(frozen=True)
class Signer:
    """A GPG key by fingerprint, and the file holding its passphrase (None: a key without
    one, or one gpg-agent already holds)."""

    key: str
    passphrase_file: Path | None = None

    def push_flags(self, *, passphrase: bool = True) -> list[str]:
        """The `--sign-by` flags of podman push (`passphrase`: it takes a passphrase file)."""
        flags = ["--sign-by", self.key]
        if passphrase and self.passphrase_file is not None:
            flags += ["--sign-passphrase-file", str(self.passphrase_file)]
        return flags


@dataclass(frozen=True)
class CommitRequest:
    """What a commit makes: the image `ref`, its author and message (`commit -a -m`), and
    Dockerfile instructions applied on the way (`commit -c`, see engines/changes.py)."""

    ref: str
    author: str = ""
    message: str = ""
    changes: Sequence[str] = ()


@dataclass(frozen=True)
class RecipeRequest:
    """A commit recipe: the steps run in a working container from `base` (on `network`;
    None: the engine's default), then committed as `commit` says."""

    base: str
    steps: Sequence[WorkStep]
    commit: CommitRequest
    network: str | None = None
    platform: str | None = None  # the working container's (None: the machine's)


class Engine(Protocol):
    """A container engine driven through its CLI.

    Every method raises lowbuild.errors.EngineError (command, exit code, stderr)
    when the engine fails.
    """

    name: EngineName
    cli: tuple[str, ...]
    """The words every engine command starts with: the client, and how it reaches its
    engine (`podman --url …` for an endpoint); what stop_commands_of picks commands by."""

    def version(self) -> str: ...

    def build(self, request: BuildRequest, *, log: LogSink | None = None) -> str:
        """Build `request.context`; return the image ID ("sha256:<hex>"). Asks for no pull
        (podman and buildah are told never to; the planner has checked every base is local)."""
        ...

    def inspect_image(self, ref: str) -> ImageInfo | None:
        """The image, or None when no such local image exists."""
        ...

    def inspect_images(self, refs: Sequence[str]) -> dict[str, ImageInfo | None]:
        """`inspect_image` of every ref, in as few engine calls as the engine allows."""
        ...

    def run(
        self,
        *,
        image: str,
        command: Sequence[str] | None = None,
        publish: Sequence[int] = (),
        network: str | None = None,
        name: str | None = None,
        timeout: float | None = None,
    ) -> AbstractContextManager[RunningContainer]:
        """Start a detached container; publish each container port on a free host port
        (loopback). Leaving the `with` block removes the container whatever happened.
        Starting takes at most `timeout` seconds (the engine command is killed and
        EngineTimedOut raised), the removal at most REMOVE_TIMEOUT_S."""
        ...

    def exec(self, container: RunningContainer, command: Sequence[str]) -> str:
        """Run a command in a running container; return its stdout."""
        ...

    def logs(self, container: RunningContainer, *, timeout: float | None = None) -> str:
        """The container's output so far: its stdout, then its stderr."""
        ...

    def run_once(
        self,
        *,
        image: str,
        command: Sequence[str],
        network: str | None = None,
        timeout: float | None = None,
        entrypoint: str | None = None,
    ) -> tuple[int, str]:
        """Run a command in a fresh container to completion; (exit code, stdout+stderr).
        `entrypoint` replaces the image's (the command is then its arguments).
        The container is removed whatever happens. When the command (container start
        included) has not finished within `timeout` seconds, or an engine command hangs
        that long, raises EngineTimedOut carrying the output so far."""
        ...

    def commit(self, container: RunningContainer, request: CommitRequest) -> str:
        """Commit a container to `request.ref` with its author, message and Dockerfile
        changes (validated first: lowbuild.spec.changes); return the ID. Note: the
        container's labels (lowbuild.owned) and command become the image's unless the
        changes say otherwise."""
        ...

    def commit_steps(self, request: RecipeRequest, *, log: LogSink | None = None) -> str:
        """A commit recipe: a working container from `request.base`, each step in order,
        then a commit as `request.commit` says; return the image ID.
        CMD and ENTRYPOINT stay the base's unless the changes set them; environment and
        labels are the base's plus the changes' (nothing of the working container). The
        working container is removed whatever happens; a failing step raises EngineError
        with its output."""
        ...

    def tag(self, ref: str, new_ref: str) -> None: ...

    def save(self, refs: Sequence[str], path: Path) -> None:
        """Write an image archive (docker-archive format) holding `refs`."""
        ...

    def load(self, path: Path) -> list[str]:
        """Load an image archive; return the references or IDs it held."""
        ...

    def join_manifest(
        self,
        instances: Sequence[str],
        destination: str,
        *,
        tls_verify: bool = True,
        log: LogSink | None = None,
    ) -> str:
        """Push a manifest list joining `instances` (images the registry already holds,
        `host/path@sha256:…`, one per platform) as `destination` (`host/path:tag`);
        return its digest."""
        ...

    def push(
        self,
        ref: str,
        destination: str,
        *,
        tls_verify: bool = True,
        log: LogSink | None = None,
        sign: Signer | None = None,
    ) -> str:
        """Push local image `ref` to the registry as `destination` (`host/path:tag`), with
        the engine's own credentials; return the manifest digest the registry stored
        ("sha256:<hex>"). Blobs the registry has are not uploaded again. `tls_verify`:
        False for a registry the user declared plain-http or self-signed (dockerd decides
        that itself, from its `insecure-registries`). `sign`: the pushed manifest is
        signed by digest for `destination` (engines/signing.py says by what)."""
        ...

    def pull(self, ref: str, *, tls_verify: bool = True, log: LogSink | None = None) -> str | None:
        """Pull `ref` (`host/path:tag`) from its registry with the engine's own credentials;
        return the local image ID, or None when the registry has no such manifest. The only
        pull lowbuild ever asks for: a registry cache hit (run/build.py)."""
        ...

    def remove_image(self, ref: str, *, force: bool = False) -> None: ...

    def run_containers(self, run_id: str) -> frozenset[str]:
        """IDs of the containers lowbuild run `run_id` made (engines.commands.RUN_ID), in any
        state: those named `lowbuild-<run_id>-…`, and the working containers of its podman
        and buildah builds (found by their build marker; docker's daemon removes those of
        a cancelled build itself). Never a container of another build."""
        ...

    def untagged_images(self, *, label: str) -> frozenset[str]:
        """IDs of the untagged (dangling) images carrying `label` (key or key=value)."""
        ...

    def labelled_images(self, label: str) -> list[ImageInfo]:
        """Every local image carrying `label` (key or key=value), tagged or not, with its
        tags, labels, size and creation time (as `inspect_sized` gives them)."""
        ...

    def inspect_sized(self, refs: Sequence[str]) -> dict[str, ImageInfo | None]:
        """`inspect_images`, with each image's size and creation time filled in."""
        ...

    def image_store_bytes(self) -> int:
        """What the engine's image storage takes in all, in bytes, as its `system df`
        says (docker rounds it to 3-4 significant digits)."""
        ...

    def remove_containers(self, ids: Iterable[str]) -> None:
        """Force-remove containers (running ones are killed first); missing ones are fine."""
        ...
