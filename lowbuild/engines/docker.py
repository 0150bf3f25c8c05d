"""docker with the classic builder (`DOCKER_BUILDKIT=0`), through python-on-whales.

The classic builder is what older CI runners and `docker commit` workflows know; BuildKit
is the `buildx` engine (buildx.py), which shares everything here but `build`.
"""

from __future__ import annotations

from pathlib import Path

from lowbuild.engines.base import BuildRequest, EngineName, LogSink, normalise_image_id
from lowbuild.engines.commands import run_command, run_iidfile_build
from lowbuild.engines.whales import QUICK_TIMEOUT_S, WhalesEngine


class DockerEngine(WhalesEngine):
    """docker CLI + dockerd; `build` uses the classic builder."""

    name: EngineName = "docker"
    default_binary = "docker"

    def version(self) -> str:
        """The daemon's version: it, not the client, does the building."""
        argv = [*self.cli, "version", "--format", "{{.Server.Version}}"]
        return run_command(argv, timeout=QUICK_TIMEOUT_S).stdout.strip()

    def build(self, request: BuildRequest, *, log: LogSink | None = None) -> str:
        # Our own command, not python-on-whales' legacy_build: that one cannot put
        # DOCKER_BUILDKIT=0 in the command's environment only (setting it in ours would leak
        # into concurrent buildx builds) and prints progress instead of handing us the lines.
        # Without --pull the classic builder uses a local base when it has one.
        # --force-rm: classic builds leave failed intermediate containers behind otherwise.
        argv: list[str | Path] = [*self.cli, "build", "--force-rm", *request.flags()]
        return run_iidfile_build(
            argv,
            context=request.context,
            log=log,
            resolve=normalise_image_id,
            env={"DOCKER_BUILDKIT": "0"},
        )
