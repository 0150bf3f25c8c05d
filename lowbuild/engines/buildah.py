"""buildah, driven through its own CLI (python-on-whales does not cover it).

buildah builds and manages images but has no "run a detached container with a published
port": the containers (run, exec, logs, run_once, commit of a RunningContainer, listing
and removing them) are PodmanEngine's, inherited and run with `podman`. Both use the same
containers/storage, so every image buildah builds is visible to podman and every image
podman commits is visible to buildah; a host with the buildah engine therefore also needs
podman installed (`lowbuild doctor` checks both).
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Sequence
from pathlib import Path

from lowbuild.engines.base import (
    BuildRequest,
    EngineName,
    ImageInfo,
    LogSink,
    RecipeRequest,
    ShellStep,
)
from lowbuild.engines.changes import buildah_config_args
from lowbuild.engines.commands import run_command
from lowbuild.engines.parse import image_info_from_config, says_image_missing
from lowbuild.engines.podman import PodmanEngine, buildah_style_build
from lowbuild.engines.whales import QUICK_TIMEOUT_S, new_container_name
from lowbuild.errors import EngineError
from lowbuild.spec.changes import parse_changes

_IMAGE_ID = re.compile(r"^(sha256:)?[0-9a-f]{12,64}$")


class BuildahEngine(PodmanEngine):
    """buildah (`self.buildah`) for images; podman (`self.binary`, same storage) for
    containers."""

    name: EngineName = "buildah"

    def __init__(self, *, binary: str = "buildah", podman: str = "podman") -> None:
        super().__init__(binary=podman)
        self.buildah = binary

    def version(self) -> str:
        argv = [self.buildah, "version", "--json"]
        return str(json.loads(run_command(argv, timeout=QUICK_TIMEOUT_S).stdout)["version"])

    def build(self, request: BuildRequest, *, log: LogSink | None = None) -> str:
        return buildah_style_build((self.buildah,), request, log=log, resolve=self.resolve_image_id)

    def inspect_image(self, ref: str) -> ImageInfo | None:
        try:
            out = run_command([self.buildah, "inspect", "--type", "image", ref]).stdout
        except EngineError as exc:
            if says_image_missing(exc):
                return None
            raise
        document = json.loads(out)
        # buildah keeps the image config in Docker's shape under "Docker"; names are not in
        # `inspect`, only in `images`.
        docker = document.get("Docker") or {}
        listed = json.loads(run_command([self.buildah, "images", "--json", ref]).stdout or "[]")
        info = image_info_from_config(
            image_id=document["FromImageID"],
            tags=[name for entry in listed for name in entry.get("names") or ()],
            author=docker.get("author") or "",
            comment=docker.get("comment") or "",
            config=docker.get("config") or {},
        )
        return dataclasses.replace(info, architecture=str(docker.get("architecture") or ""))

    def inspect_images(self, refs: Sequence[str]) -> dict[str, ImageInfo | None]:
        # `buildah inspect` takes one name; one `buildah images --json` per ref is what
        # inspect_image already needs, so there is nothing to batch.
        return {ref: self.inspect_image(ref) for ref in dict.fromkeys(refs)}

    def tag(self, ref: str, new_ref: str) -> None:
        run_command([self.buildah, "tag", ref, new_ref])

    def save(self, refs: Sequence[str], path: Path) -> None:
        if len(refs) != 1:
            # A docker-archive written by `buildah push` holds one image; podman writes
            # multi-image archives from the same storage.
            super().save(refs, path)
            return
        (ref,) = refs
        # The archive records `ref` as its name, so a load gives the tag back; an ID has none.
        destination = f"docker-archive:{path}" + ("" if _IMAGE_ID.match(ref) else f":{ref}")
        run_command([self.buildah, "push", "--quiet", ref, destination])

    def load(self, path: Path) -> list[str]:
        out = run_command([self.buildah, "pull", "--quiet", f"docker-archive:{path}"]).stdout
        return out.split()[-1:]

    @property
    def image_cli(self) -> tuple[str, ...]:
        return (self.buildah,)  # push and pull: PodmanEngine's, run with buildah

    def remove_image(self, ref: str, *, force: bool = False) -> None:
        run_command([self.buildah, "rmi", *(["--force"] if force else []), ref])

    def commit_steps(self, request: RecipeRequest, *, log: LogSink | None = None) -> str:
        # buildah's own way, no idle process needed: `from`, `run`/`copy` per step, `config`
        # (buildah commit has no --change), then `commit --format docker` (OCI has no field
        # for the message). A buildah working container keeps the base's CMD/ENTRYPOINT.
        commit, network = request.commit, request.network
        config = buildah_config_args(parse_changes(commit.changes))
        if commit.author:
            config += ["--author", commit.author]
        if commit.message:
            config += ["--comment", commit.message]
        name = new_container_name()
        argv = [self.buildah, "from", "--pull=never", "--quiet", "--name", name]
        if request.platform:
            argv += ["--platform", request.platform]
        argv.append(request.base)
        working = run_command(argv).stdout.strip()
        try:
            for step in request.steps:
                if isinstance(step, ShellStep):
                    if log is not None:
                        log(f"RUN {step.command}")
                    net = ["--network", network] if network else []
                    argv = [self.buildah, "run", *net, working, "--", "/bin/sh", "-c", step.command]
                    run_command(argv, log=log, merge_output=True)
                else:
                    if log is not None:
                        log(f"COPY {step.source} {step.dest}")
                    run_command([self.buildah, "copy", working, step.source, step.dest])
            if config:
                run_command([self.buildah, "config", *config, working])
            argv = [self.buildah, "commit", "--format", "docker", "--quiet", working, commit.ref]
            printed = run_command(argv).stdout.strip().splitlines()[-1]
            return self.resolve_image_id(printed)
        finally:
            run_command([self.buildah, "rm", working])
