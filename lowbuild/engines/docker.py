"""docker with the classic builder (`DOCKER_BUILDKIT=0`), through python-on-whales.

The classic builder is what older CI runners and `docker commit` workflows know; BuildKit
is the `buildx` engine (buildx.py), which shares everything here but `build`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from lowbuild.engines.base import EngineName, LogSink, normalise_image_id
from lowbuild.engines.commands import build_flags, run_command, run_iidfile_build
from lowbuild.engines.whales import QUICK_TIMEOUT_S, WhalesEngine


class DockerEngine(WhalesEngine):
    """docker CLI + dockerd; `build` uses the classic builder."""

    name: EngineName = "docker"

    def __init__(self, *, binary: str = "docker") -> None:
        super().__init__(binary=binary)

    def version(self) -> str:
        """The daemon's version: it, not the client, does the building."""
        argv = [self.binary, "version", "--format", "{{.Server.Version}}"]
        return run_command(argv, timeout=QUICK_TIMEOUT_S).stdout.strip()

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
        # Our own command, not python-on-whales' legacy_build: that one cannot put
        # DOCKER_BUILDKIT=0 in the command's environment only (setting it in ours would leak
        # into concurrent buildx builds) and prints progress instead of handing us the lines.
        argv: list[str | Path] = [
            self.binary,
            "build",
            # Classic builds leave failed intermediate containers behind unless told not to.
            "--force-rm",
            *build_flags(
                dockerfile=dockerfile,
                tags=tags,
                build_args=build_args,
                labels=labels,
                network=network,
            ),
        ]
        if pull:  # without --pull the classic builder uses a local base when it has one
            argv.append("--pull")
        return run_iidfile_build(
            argv,
            context=context,
            log=log,
            resolve=normalise_image_id,
            env={"DOCKER_BUILDKIT": "0"},
        )
