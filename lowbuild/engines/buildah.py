"""buildah, driven through its own CLI (python-on-whales does not cover it).

buildah builds and manages images but has no "run a detached container with a published
port": for run/exec/logs/run_once, and so for committing a RunningContainer, this engine
uses podman. Both use the same containers/storage, so every image buildah builds is
visible to podman and every image podman commits is visible to buildah; a host with the
buildah engine therefore also needs podman installed (`lowbuild doctor` checks both).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path

from lowbuild.engines.base import (
    EngineName,
    ImageInfo,
    LogSink,
    RunningContainer,
    ShellStep,
    WorkStep,
)
from lowbuild.engines.changes import buildah_config_args, parse_changes
from lowbuild.engines.commands import run_command
from lowbuild.engines.podman import PodmanEngine, buildah_style_build
from lowbuild.engines.whales import (
    QUICK_TIMEOUT_S,
    image_info_from_config,
    new_container_name,
    says_image_missing,
)
from lowbuild.errors import EngineError

_IMAGE_ID = re.compile(r"^(sha256:)?[0-9a-f]{12,64}$")


class BuildahEngine:
    """buildah for images; podman (same storage) for containers."""

    name: EngineName = "buildah"

    def __init__(self, *, binary: str = "buildah", podman: PodmanEngine | None = None) -> None:
        self.binary = binary
        self.podman = podman or PodmanEngine()

    def version(self) -> str:
        argv = [self.binary, "version", "--json"]
        return str(json.loads(run_command(argv, timeout=QUICK_TIMEOUT_S).stdout)["version"])

    def build(
        self,
        *,
        context: Path,
        dockerfile: Path | None = None,
        tags: Sequence[str] = (),
        build_args: Mapping[str, str] | None = None,
        labels: Mapping[str, str] | None = None,
        network: str | None = None,
        pull: bool = False,
        log: LogSink | None = None,
    ) -> str:
        return buildah_style_build(
            self.binary,
            context=context,
            dockerfile=dockerfile,
            tags=tags,
            build_args=build_args,
            labels=labels,
            network=network,
            pull=pull,
            log=log,
            resolve=self._resolve_image_id,
        )

    def inspect_image(self, ref: str) -> ImageInfo | None:
        try:
            out = run_command([self.binary, "inspect", "--type", "image", ref]).stdout
        except EngineError as exc:
            if says_image_missing(exc):
                return None
            raise
        document = json.loads(out)
        # buildah keeps the image config in Docker's shape under "Docker"; names are not in
        # `inspect`, only in `images`.
        docker = document.get("Docker") or {}
        listed = json.loads(run_command([self.binary, "images", "--json", ref]).stdout or "[]")
        return image_info_from_config(
            image_id=document["FromImageID"],
            tags=[name for entry in listed for name in entry.get("names") or ()],
            author=docker.get("author") or "",
            comment=docker.get("comment") or "",
            config=docker.get("config") or {},
        )

    def inspect_images(self, refs: Sequence[str]) -> dict[str, ImageInfo | None]:
        # `buildah inspect` takes one name; one `buildah images --json` per ref is what
        # inspect_image already needs, so there is nothing to batch.
        return {ref: self.inspect_image(ref) for ref in dict.fromkeys(refs)}

    def _resolve_image_id(self, printed: str) -> str:
        info = self.inspect_image(printed.strip())
        if info is None:
            raise EngineError([self.binary, "inspect", printed], 1, "no such image")
        return info.id

    def tag(self, ref: str, new_ref: str) -> None:
        run_command([self.binary, "tag", ref, new_ref])

    def save(self, refs: Sequence[str], path: Path) -> None:
        if len(refs) != 1:
            # A docker-archive written by `buildah push` holds one image; podman writes
            # multi-image archives from the same storage.
            self.podman.save(refs, path)
            return
        (ref,) = refs
        # The archive records `ref` as its name, so a load gives the tag back; an ID has none.
        destination = f"docker-archive:{path}" + ("" if _IMAGE_ID.match(ref) else f":{ref}")
        run_command([self.binary, "push", "--quiet", ref, destination])

    def load(self, path: Path) -> list[str]:
        out = run_command([self.binary, "pull", "--quiet", f"docker-archive:{path}"]).stdout
        return out.split()[-1:]

    def push(self, ref: str, *, tls_verify: bool = True) -> None:
        tls = f"--tls-verify={str(tls_verify).lower()}"
        run_command([self.binary, "push", "--quiet", tls, ref, f"docker://{ref}"])

    def remove_image(self, ref: str, *, force: bool = False) -> None:
        run_command([self.binary, "rmi", *(["--force"] if force else []), ref])

    # ---- containers: podman's (see the module docstring) ----

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
        return self.podman.run(
            image=image,
            command=command,
            publish=publish,
            network=network,
            name=name,
            timeout=timeout,
        )

    def exec(self, container: RunningContainer, command: Sequence[str]) -> str:
        return self.podman.exec(container, command)

    def logs(self, container: RunningContainer, *, timeout: float | None = None) -> str:
        return self.podman.logs(container, timeout=timeout)

    def run_once(
        self,
        *,
        image: str,
        command: Sequence[str],
        network: str | None = None,
        timeout: float | None = None,
    ) -> tuple[int, str]:
        return self.podman.run_once(
            image=image, command=command, network=network, timeout=timeout
        )

    def commit(
        self,
        container: RunningContainer,
        *,
        ref: str,
        author: str = "",
        message: str = "",
        changes: Sequence[str] = (),
    ) -> str:
        # A RunningContainer is a podman container, which `buildah commit` cannot see.
        return self.podman.commit(
            container, ref=ref, author=author, message=message, changes=changes
        )

    def commit_steps(
        self,
        *,
        base: str,
        ref: str,
        steps: Sequence[WorkStep],
        author: str = "",
        message: str = "",
        changes: Sequence[str] = (),
        network: str | None = None,
        log: LogSink | None = None,
    ) -> str:
        # buildah's own way, no idle process needed: `from`, `run`/`copy` per step, `config`
        # (buildah commit has no --change), then `commit --format docker` (OCI has no field
        # for the message). A buildah working container keeps the base's CMD/ENTRYPOINT.
        config = buildah_config_args(parse_changes(changes))
        if author:
            config += ["--author", author]
        if message:
            config += ["--comment", message]
        argv = [self.binary, "from", "--pull=never", "--quiet", "--name", new_container_name(), base]
        box = run_command(argv).stdout.strip()
        try:
            for step in steps:
                if isinstance(step, ShellStep):
                    if log is not None:
                        log(f"RUN {step.command}")
                    net = ["--network", network] if network else []
                    argv = [self.binary, "run", *net, box, "--", "/bin/sh", "-c", step.command]
                    run_command(argv, log=log, merge_output=True)
                else:
                    if log is not None:
                        log(f"COPY {step.source} {step.dest}")
                    run_command([self.binary, "copy", box, step.source, step.dest])
            if config:
                run_command([self.binary, "config", *config, box])
            argv = [self.binary, "commit", "--format", "docker", "--quiet", box, ref]
            return self._resolve_image_id(run_command(argv).stdout.strip().splitlines()[-1])
        finally:
            run_command([self.binary, "rm", box])

    def list_containers(self, *, label: str | None = None) -> Iterator[str]:
        return self.podman.list_containers(label=label)

    def run_containers(self, run_id: str) -> frozenset[str]:
        # The same storage as podman, which lists buildah's containers too.
        return self.podman.run_containers(run_id)

    def untagged_images(self, *, label: str) -> frozenset[str]:
        return self.podman.untagged_images(label=label)

    def remove_containers(self, ids: Iterable[str]) -> None:
        self.podman.remove_containers(ids)
