"""docker buildx (BuildKit, docker driver) with `--load`: the docker engine with
another `build`; everything else is DockerEngine's."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from lowbuild.engines.base import EngineName, LogSink
from lowbuild.engines.commands import run_command, whales_errors
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
        with tempfile.TemporaryDirectory(prefix="lowbuild-meta-") as scratch, whales_errors():
            metadata = Path(scratch) / "metadata.json"
            lines = self.client.buildx.build(
                context,
                file=dockerfile,
                tags=list(tags),
                build_args=dict(build_args or {}),
                labels=dict(labels or {}),
                network=network,
                # BuildKit refuses a host-network RUN unless the build is entitled to it.
                allow=["network.host"] if network == "host" else [],
                pull=pull,
                load=True,
                progress="plain",  # one line per event, readable in a log file
                metadata_file=metadata,
                stream_logs=True,
            )
            # stream_logs=True makes python-on-whales return the line iterator.
            assert isinstance(lines, Iterator)
            for line in lines:
                if log is not None:
                    log(line.rstrip("\n"))
            written = json.loads(metadata.read_text())
        # The docker driver reports the image ID as the digest; other drivers also write
        # the config digest, which is the image ID when theirs is a manifest digest.
        printed = written.get("containerimage.config.digest") or written.get(
            "containerimage.digest"
        )
        if not printed:
            raise EngineError(["docker", "buildx", "build"], 0, f"no image ID in {written}")
        return self.resolve_image_id(printed)
