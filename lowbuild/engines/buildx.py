"""docker buildx (BuildKit, docker driver) with `--load`: the docker engine with
another `build`; everything else is DockerEngine's."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from lowbuild.engines.base import EngineName, LogSink
from lowbuild.engines.commands import build_flags, run_command, run_scratch
from lowbuild.engines.docker import DockerEngine
from lowbuild.engines.whales import QUICK_TIMEOUT_S
from lowbuild.errors import EngineError


class BuildxEngine(DockerEngine):
    """`docker buildx build --load` into dockerd's image store."""

    name: EngineName = "buildx"

    def version(self) -> str:
        """The buildx plugin's version ("github.com/docker/buildx 0.13.1 …" → "0.13.1")."""
        argv = [self.binary, "buildx", "version"]
        words = run_command(argv, timeout=QUICK_TIMEOUT_S).stdout.split()
        return words[1] if len(words) > 1 else " ".join(words)

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
        # Our own command, not python-on-whales' buildx.build: that one spawns the client
        # itself, outside the command runner that stops it on Ctrl-C and makes it die with
        # lowbuild (commands.run_command through engines/guard.py).
        argv: list[str | Path] = [
            self.binary,
            "buildx",
            "build",
            "--load",
            "--progress",
            "plain",  # one line per event, readable in a log file
            *build_flags(
                dockerfile=dockerfile,
                tags=tags,
                build_args=build_args,
                labels=labels,
                network=network,
            ),
        ]
        if network == "host":  # BuildKit refuses a host-network RUN unless entitled to it
            argv += ["--allow", "network.host"]
        if pull:
            argv.append("--pull")
        with tempfile.TemporaryDirectory(prefix="buildx-meta-", dir=run_scratch()) as scratch:
            metadata = Path(scratch) / "metadata.json"
            run_command([*argv, "--metadata-file", metadata, context], log=log, merge_output=True)
            written = json.loads(metadata.read_text())
        # The docker driver reports the image ID as the digest; other drivers also write
        # the config digest, which is the image ID when theirs is a manifest digest.
        printed = written.get("containerimage.config.digest") or written.get(
            "containerimage.digest"
        )
        if not printed:
            raise EngineError(["docker", "buildx", "build"], 0, f"no image ID in {written}")
        return self.resolve_image_id(printed)
