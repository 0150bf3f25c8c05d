"""What podman, docker and docker buildx share: containers and images driven through
python-on-whales' DockerClient with the engine's binary as `client_call`. Starting,
waiting for, reading and removing containers are our own commands instead, each with a
time limit (python-on-whales' have none): see `_started`.

Subclasses add `build` and the few commands whose flags differ per engine
(commit, save, push): see podman.py, docker.py, buildx.py. buildah.py borrows the
container half from podman (same storage).
"""

from __future__ import annotations

import functools
import json
import os
import secrets
import shlex
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from lowbuild.engines.base import (
    LOG_AFTER_TIMEOUT_S,
    LOOPBACK,
    OWNED_LABEL,
    REMOVE_TIMEOUT_S,
    CommitRequest,
    EngineName,
    ImageInfo,
    LogSink,
    RecipeRequest,
    RunningContainer,
    ShellStep,
    Signer,
    normalise_image_id,
    seconds_left,
)
from lowbuild.engines.changes import docker_changes
from lowbuild.engines.commands import (
    CommandOutput,
    container_name_prefix,
    run_command,
    whales_errors,
)
from lowbuild.engines.parse import (
    image_info_from_inspect,
    inspected_batch,
    loaded_refs,
    published_ports,
    pushed_digest,
    says_image_missing,
    says_manifest_missing,
    store_bytes,
)
from lowbuild.engines.signing import on_loopback, sign_in_registry
from lowbuild.errors import EngineError, EngineTimedOut
from lowbuild.spec.changes import Change, parse_changes

if TYPE_CHECKING:
    from python_on_whales import DockerClient

QUICK_TIMEOUT_S = 30.0
"""For commands that only ask the engine something (version, info)."""

_BATCH = 200  # refs per `image inspect`: keeps argv short whatever the family's size


def new_container_name() -> str:
    """Every container gets a name of ours, so a failed start can still be removed by it;
    the name starts with this run's prefix, so a killed run's are found by the next one."""
    return f"{container_name_prefix()}{secrets.token_hex(6)}"


def remove_containers(argv: Sequence[str], *, check: bool = True) -> CommandOutput:
    """Run `argv`, an `rm --force` of containers, for at most REMOVE_TIMEOUT_S.

    An engine that takes longer is an EngineError naming the command to run later, not
    an EngineTimedOut: the caller's own time limit (a smoke test's) is not what ran out.
    """
    try:
        return run_command(argv, timeout=REMOVE_TIMEOUT_S, check=check)
    except EngineTimedOut as exc:
        raise EngineError(
            argv,
            -1,
            f"the engine did not remove the container within {REMOVE_TIMEOUT_S:g} s;"
            f" remove it later: {shlex.join(argv)}",
        ) from exc


class WhalesEngine:
    """Shared implementation for the engines python-on-whales drives (podman, docker, buildx)."""

    name: EngineName
    default_binary: str  # the CLI run unless another is given

    def __init__(
        self,
        *,
        binary: str | None = None,
        connection: Sequence[str] = (),
        address: str = LOOPBACK,
    ) -> None:
        self.binary = binary or self.default_binary
        # Where the engine's published ports are reached from here: this machine's loopback
        # (published there only), or a remote endpoint's host (published on all of its
        # interfaces, since they are reached from another machine).
        self.address = address
        self.connection = tuple(connection)
        self.cli: tuple[str, ...] = (self.binary, *self.connection)
        """Every command's first words: the client and how it reaches its engine
        (engines/endpoints.py: `podman --url …`, `docker --host …`); local: the client alone."""

    @property
    def remote(self) -> bool:
        """Whether the engine is reached through a connection (its storage is not this
        machine's files, even when its socket is)."""
        return bool(self.connection)

    @functools.cached_property
    def client(self) -> DockerClient:
        """python-on-whales' client, made (and the package imported, ~0.5 s) on first use:
        a no-op build, plan or fetch never needs it."""
        from python_on_whales import DockerClient

        return DockerClient(client_call=list(self.cli))

    # ---- images ----

    def inspect_image(self, ref: str) -> ImageInfo | None:
        # One `image inspect` read as JSON: python-on-whales' Image re-runs inspect on
        # every attribute access (its cache lasts 10 ms), which is slow and not atomic.
        try:
            out = run_command([*self.cli, "image", "inspect", ref]).stdout
        except EngineError as exc:
            if says_image_missing(exc):
                return None
            raise
        documents = json.loads(out)
        return image_info_from_inspect(documents[0]) if documents else None

    def inspect_images(self, refs: Sequence[str]) -> dict[str, ImageInfo | None]:
        # One `image inspect a b c` instead of one process per ref: planning a family
        # asks for every image, and each engine process costs 50-100 ms.
        unique = list(dict.fromkeys(refs))
        batches = [unique[start : start + _BATCH] for start in range(0, len(unique), _BATCH)]

        def inspect(batch: list[str]) -> dict[str, ImageInfo | None]:
            out = run_command([*self.cli, "image", "inspect", *batch], check=False)
            paired = inspected_batch(batch, out)
            return paired if paired is not None else {r: self.inspect_image(r) for r in batch}

        if len(batches) <= 1:
            return inspect(batches[0]) if batches else {}
        # The engine spends CPU on every ref (podman: about 1.5 ms), so a large family's
        # batches go out side by side, one per core: 2,000 refs took 2.6 s one after the
        # other on two cores.
        from concurrent.futures import ThreadPoolExecutor

        found: dict[str, ImageInfo | None] = {}
        with ThreadPoolExecutor(max_workers=min(len(batches), os.cpu_count() or 1)) as pool:
            for paired in pool.map(inspect, batches):
                found.update(paired)
        return found

    def tag(self, ref: str, new_ref: str) -> None:
        run_command([*self.cli, "tag", ref, new_ref], timeout=QUICK_TIMEOUT_S)

    def save(self, refs: Sequence[str], path: Path) -> None:
        with whales_errors():
            self.client.image.save(list(refs), output=path)

    def load(self, path: Path) -> list[str]:
        # Our own command: python-on-whales keeps only the last word of "Loaded image" lines,
        # which drops all but one of podman's comma-separated "Loaded image(s): a,b".
        return loaded_refs(run_command([*self.cli, "load", "--input", path]).stdout)

    def push(
        self,
        ref: str,
        destination: str,
        *,
        tls_verify: bool = True,
        log: LogSink | None = None,
        sign: Signer | None = None,
    ) -> str:
        # dockerd decides TLS itself: 127.0.0.0/8 registries are insecure by default, others
        # must be listed in its daemon.json `insecure-registries`; the CLI has no flag.
        # `docker push` takes no destination: the image is tagged with it for the push.
        run_command([*self.cli, "tag", ref, destination])
        try:
            out = run_command([*self.cli, "push", destination], log=log, merge_output=True)
        finally:
            # The source keeps its own tag, so this only drops the destination name.
            run_command([*self.cli, "rmi", destination], check=False)
        digest = pushed_digest(out.stdout, destination)
        if sign is not None:  # docker has no signing of its own: skopeo signs by digest
            repository, _, tag = destination.rpartition(":")
            # as dockerd decided for the push: a loopback registry is plain http
            tls = tls_verify and not on_loopback(destination)
            sign_in_registry(repository, digest, [tag], sign, tls_verify=tls, log=log)
        return digest

    def join_manifest(
        self,
        instances: Sequence[str],
        destination: str,
        *,
        tls_verify: bool = True,
        log: LogSink | None = None,
    ) -> str:
        # dockerd keeps no manifest lists: buildx joins them in the registry itself (it
        # decides TLS as dockerd does: loopback registries are plain http).
        argv = [*self.cli, "buildx", "imagetools", "create", "--tag", destination, *instances]
        run_command(argv, log=log, merge_output=True)
        from lowbuild.sources.registry import registry_digest

        return pushed_digest(registry_digest(destination, tls_verify=tls_verify) or "", destination)

    def pull(self, ref: str, *, tls_verify: bool = True, log: LogSink | None = None) -> str | None:
        # dockerd decides TLS itself (see push); podman overrides this with its flag.
        return self._pulled(ref, [*self.cli, "pull", ref], log)

    def _pulled(self, ref: str, argv: Sequence[str], log: LogSink | None) -> str | None:
        """Run the pull command `argv`; the ID of `ref` after it, None on a registry miss."""
        try:
            run_command(argv, log=log, merge_output=True)
        except EngineError as exc:
            if says_manifest_missing(exc):
                return None
            raise
        return self.resolve_image_id(ref)

    def remove_image(self, ref: str, *, force: bool = False) -> None:
        with whales_errors():
            self.client.image.remove(ref, force=force)

    # ---- containers ----

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
        return self._started(
            image=image,
            command=command,
            publish=publish,
            network=network,
            name=name,
            deadline=None if timeout is None else time.monotonic() + timeout,
        )

    # The container commands are ours, not python-on-whales': its commands have no time
    # limit, and a smoke test's must hold even when the engine CLI itself hangs (the
    # command is killed at the deadline and the container removed).

    @contextmanager
    def _started(
        self,
        *,
        image: str,
        command: Sequence[str] | None = None,
        entrypoint: str | None = None,
        publish: Sequence[int] = (),
        network: str | None = None,
        name: str | None = None,
        deadline: float | None = None,
    ) -> Iterator[RunningContainer]:
        name = name or new_container_name()
        # On the host's network a container's ports are the host's own: engines discard
        # `--publish` there (docker warns, podman says nothing), so there is nothing to map.
        # Rootless podman without a usable /dev/net/tun has no other network that reaches
        # the host: its user sets `netns = "host"` in containers.conf, which makes the
        # host's network the default one, so it is read back from the container.
        on_host = network == "host"
        argv = [*self.cli, "run", "--detach", "--name", name, "--label", f"{OWNED_LABEL}=true"]
        if entrypoint is not None:
            argv += ["--entrypoint", entrypoint]
        if network:
            argv += ["--network", network]
        if not on_host:
            # An empty host port lets the engine pick a free one, without the race of
            # choosing it here; we read back what it chose.
            bind = f"{LOOPBACK}::" if self.address == LOOPBACK else ""
            argv += [flag for port in publish for flag in ("--publish", f"{bind}{port}")]
        try:
            container_id = (
                run_command([*argv, image, *(command or ())], timeout=seconds_left(deadline))
                .stdout.strip()
                .splitlines()[-1]
            )
            ports = None
            if publish and not on_host:
                inspected = run_command(
                    [*self.cli, "container", "inspect", name], timeout=seconds_left(deadline)
                ).stdout
                document = json.loads(inspected)[0]
                on_host = (document.get("HostConfig") or {}).get("NetworkMode") == "host"
                ports = (document.get("NetworkSettings") or {}).get("Ports")
            yield RunningContainer(
                id=container_id,
                name=name,
                ports={p: p for p in publish} if on_host else published_ports(ports, publish),
                host=self.address,
            )
        finally:
            self._remove_container(name)

    def _remove_container(self, name: str) -> None:
        """Force-remove container `name`; a container that is already gone is fine."""
        argv = [*self.cli, "rm", "--force", name]
        removed = remove_containers(argv, check=False)
        if removed.returncode != 0:
            from python_on_whales.exceptions import NoSuchContainer
            from python_on_whales.utils import get_docker_exception_type

            if get_docker_exception_type(removed.stderr.encode()) is not NoSuchContainer:
                raise EngineError(argv, removed.returncode, removed.stderr)

    def exec(self, container: RunningContainer, command: Sequence[str]) -> str:
        with whales_errors():
            return str(self.client.container.execute(container.id, list(command)))

    def logs(self, container: RunningContainer, *, timeout: float | None = None) -> str:
        out = run_command([*self.cli, "logs", container.name], timeout=timeout)
        return out.stdout + out.stderr

    def run_once(
        self,
        *,
        image: str,
        command: Sequence[str],
        network: str | None = None,
        timeout: float | None = None,
        entrypoint: str | None = None,
    ) -> tuple[int, str]:
        # Detached + wait instead of `run --rm`: the exit code of the command must not be
        # confused with the engine's own failures (both would make `run` exit non-zero).
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._started(
            image=image, command=command, entrypoint=entrypoint, network=network, deadline=deadline
        ) as container:
            wait = [*self.cli, "wait", container.name]
            try:
                code = int(run_command(wait, timeout=seconds_left(deadline)).stdout.split()[-1])
            except EngineTimedOut as exc:
                assert timeout is not None  # only a timed wait can expire
                raise EngineTimedOut(
                    wait, seconds=timeout, output=self._logs_so_far(container)
                ) from exc
            return code, self.logs(container, timeout=QUICK_TIMEOUT_S)

    def _logs_so_far(self, container: RunningContainer) -> str:
        """The log of a container that ran out of time, read briefly; never raises."""
        try:
            return self.logs(container, timeout=LOG_AFTER_TIMEOUT_S)
        except EngineError as exc:
            return f"(could not read the container log: {exc})"

    def run_containers(self, run_id: str) -> frozenset[str]:
        # dockerd removes the containers of a cancelled build itself (BuildKit, and the
        # classic builder with --force-rm): only lowbuild's own named containers remain.
        return self.named_containers(run_id)

    def named_containers(self, run_id: str) -> frozenset[str]:
        """IDs of the containers named with run `run_id`'s prefix, in any state."""
        prefix = container_name_prefix(run_id)
        argv = [*self.cli, "ps", "--all", "--no-trunc", "--format", "{{.ID}} {{.Names}}"]
        # `--filter name=` is a substring match on docker; the prefix is checked here.
        out = run_command([*argv, "--filter", f"name={prefix}"], timeout=QUICK_TIMEOUT_S).stdout
        return frozenset(
            words[0]
            for words in (line.split() for line in out.splitlines())
            if len(words) > 1 and words[1].lstrip("/").startswith(prefix)
        )

    def untagged_images(self, *, label: str) -> frozenset[str]:
        argv = [*self.cli, "images", "--quiet", "--no-trunc", "--filter", "dangling=true"]
        out = run_command([*argv, "--filter", f"label={label}"], timeout=QUICK_TIMEOUT_S).stdout
        return frozenset(out.split())

    def labelled_images(self, label: str) -> list[ImageInfo]:
        # --all: an earlier build a later one was built on is an "intermediate" image.
        argv = [*self.cli, "images", "--all", "--quiet", "--no-trunc"]
        argv += ["--filter", f"label={label}"]
        ids = list(dict.fromkeys(run_command(argv, timeout=QUICK_TIMEOUT_S).stdout.split()))
        found = self.inspect_sized(ids)
        return [info for info in found.values() if info is not None]  # None: removed meanwhile

    def inspect_sized(self, refs: Sequence[str]) -> dict[str, ImageInfo | None]:
        # This class's `image inspect`, also for buildah, whose own inspect has no size
        # (its `images` rounds it): podman reads the same storage.
        return WhalesEngine.inspect_images(self, refs)

    def image_store_bytes(self) -> int:
        # dockerd's `system df` counts each layer once; it prints the total rounded.
        template = "{{.Type}}|{{.Size}}"
        out = run_command([*self.cli, "system", "df", "--format", template]).stdout
        try:
            return store_bytes(out)
        except ValueError as exc:
            raise EngineError([*self.cli, "system", "df"], 0, str(exc)) from exc

    def remove_containers(self, ids: Iterable[str]) -> None:
        for container in sorted(ids):
            self._remove_container(container)

    # ---- commit: python-on-whales' commit has no --change, so the command is ours ----

    commit_flags: tuple[str, ...] = ()
    """Engine-specific `commit` flags (podman: keep the docker format, print only the ID)."""

    def commit(self, container: RunningContainer, request: CommitRequest) -> str:
        argv: list[str] = [*self.cli, "commit", *self.commit_flags]
        if request.author:
            argv += ["--author", request.author]
        if request.message:
            argv += ["--message", request.message]
        for change in self._change_args(parse_changes(request.changes)):
            argv += ["--change", change]
        argv += [container.id, request.ref]
        out = run_command(argv).stdout.strip().splitlines()
        return self.resolve_image_id(out[-1] if out else request.ref)

    def _change_args(self, changes: Sequence[Change]) -> list[str]:
        """`changes` in the syntax this engine's `commit --change` parses (docker: Dockerfile
        lines; podman overrides this)."""
        return docker_changes(changes)

    @contextmanager
    def _working_container(
        self,
        *,
        base: ImageInfo,
        image: str,
        entrypoint: str | None,
        command: Sequence[str],
        network: str | None,
        platform: str | None = None,
    ) -> Iterator[RunningContainer]:
        """The commit recipe's working container, idling in `command`; removed at the end.

        Why no lowbuild.owned label: `commit` writes the container's labels into the image
        (docker merges the container's config into the committed one, podman copies
        c.Labels() in libpod/container_commit.go) and no change can remove a label, only
        set it. It is found by its name (lowbuild-…) instead."""
        name = new_container_name()
        argv = [*self.cli, "run", "--detach", "--name", name, *self._working_flags(base)]
        if network:
            argv += ["--network", network]
        if platform:
            argv += ["--platform", platform]
        if entrypoint is not None:
            argv += ["--entrypoint", entrypoint]
        try:
            out = run_command([*argv, image, *command]).stdout.split()
            yield RunningContainer(id=out[-1] if out else name, name=name)
        finally:
            self._remove_container(name)

    def _working_flags(self, base: ImageInfo) -> list[str]:
        """Engine-specific `run` flags of a commit recipe's working container (podman's
        keep its own environment out of the image)."""
        return []

    def commit_steps(self, request: RecipeRequest, *, log: LogSink | None = None) -> str:
        base, commit = request.base, request.commit
        given = parse_changes(commit.changes)
        base_info = self.inspect_image(base)
        if base_info is None:
            raise EngineError([*self.cli, "image", "inspect", base], 1, f"no local image {base}")
        # The working container idles in a shell loop. docker and podman commit the
        # container's own command, so the base's CMD/ENTRYPOINT are put back as changes
        # unless the recipe sets them. The entrypoint is overridden only when the base has
        # one (it would swallow the loop), because an empty ENTRYPOINT/CMD cannot be
        # restored: dockerd merges an empty one with the container's. So a base without
        # CMD, and a recipe without CMD, gives an image whose CMD is the idle loop.
        restore = [
            f"{what} {json.dumps(list(value))}"
            for what, value in (("CMD", base_info.cmd), ("ENTRYPOINT", base_info.entrypoint))
            if value and what not in {c.instruction for c in given}
        ]
        loop = "while :; do sleep 3600; done"
        if base_info.entrypoint:
            entrypoint, idle = "/bin/sh", ["-c", loop]
        else:
            entrypoint, idle = None, ["/bin/sh", "-c", loop]
        with self._working_container(
            base=base_info,
            image=base,
            entrypoint=entrypoint,
            command=idle,
            network=request.network,
            platform=request.platform,
        ) as working:
            for step in request.steps:
                if isinstance(step, ShellStep):
                    if log is not None:
                        log(f"RUN {step.command}")
                    output = self.exec(working, ["/bin/sh", "-c", step.command])
                else:
                    if log is not None:
                        log(f"COPY {step.source} {step.dest}")
                    with whales_errors():
                        self.client.container.copy(step.source, (working.id, step.dest))
                    output = ""
                for line in output.splitlines():
                    if log is not None:
                        log(line)
            restored = replace(commit, changes=[*restore, *commit.changes])
            return self.commit(working, restored)

    def resolve_image_id(self, printed: str) -> str:
        """A full "sha256:<hex>" ID from what an engine printed (full, bare or short)."""
        try:
            return normalise_image_id(printed)
        except ValueError:
            pass
        info = self.inspect_image(printed.strip())
        if info is None:
            raise EngineError([*self.cli, "image", "inspect", printed], 1, "no such image")
        return info.id
