"""docker buildx (BuildKit, docker driver) with `--load`: the docker engine with
another `build`; everything else is DockerEngine's."""

from __future__ import annotations

import json
import tarfile
import tempfile
from pathlib import Path

from lowbuild.context.pack import pack_deterministic
from lowbuild.engines.base import BuildRequest, EngineName, LogSink
from lowbuild.engines.commands import run_command, run_scratch
from lowbuild.engines.docker import DockerEngine
from lowbuild.engines.whales import QUICK_TIMEOUT_S
from lowbuild.errors import EngineError


class BuildxEngine(DockerEngine):
    """`docker buildx build --load` into dockerd's image store."""

    name: EngineName = "buildx"

    def version(self) -> str:
        """The buildx plugin's version ("github.com/docker/buildx 0.13.1 …" → "0.13.1")."""
        argv = [*self.cli, "buildx", "version"]
        words = run_command(argv, timeout=QUICK_TIMEOUT_S).stdout.split()
        return words[1] if len(words) > 1 else " ".join(words)

    def build(self, request: BuildRequest, *, log: LogSink | None = None) -> str:
        # Our own command, not python-on-whales' buildx.build: that one spawns the client
        # itself, outside the command runner that stops it on Ctrl-C and makes it die with
        # lowbuild (commands.run_command through engines/guard.py).
        # The context is sent as a tar (below): the Dockerfile is named by its path in it.
        context = request.context
        outside = request.dockerfile is not None and not _is_inside(request.dockerfile, context)
        in_tar: Path | None = None
        if request.dockerfile is not None:
            in_tar = OUTSIDE_DOCKERFILE if outside else _path_inside(request.dockerfile, context)
        argv: list[str | Path] = [
            *self.cli,
            "buildx",
            "build",
            "--load",
            "--progress",
            "plain",  # one line per event, readable in a log file
            *request.flags(dockerfile=in_tar),
        ]
        if request.network == "host":  # BuildKit refuses a host-network RUN unless entitled
            argv += ["--allow", "network.host"]
        with tempfile.TemporaryDirectory(prefix="buildx-meta-", dir=run_scratch()) as scratch:
            metadata = Path(scratch) / "metadata.json"
            # The context goes as a tar stream on stdin, not as a directory. BuildKit syncs
            # a local directory incrementally and takes a file whose mode, owner, size and
            # mtime match its previous copy as unchanged, without reading it (fsutil's
            # stat comparison, keyed by the source's name, not its path). Staged contexts
            # have fixed mtimes (reproducible layers), so an edit that kept a file's size
            # reached no image: seen with buildx 0.13 on dockerd 20.10. A tar is read whole.
            stream = Path(scratch) / "context.tar"
            pack_deterministic(context, stream, "tar")
            if outside and request.dockerfile is not None:
                # A Dockerfile written for this build (a platform's variant): it goes in
                # the tar beside the context, under a name no context file has.
                with tarfile.open(stream, "a") as tar:
                    tar.add(request.dockerfile, arcname=str(OUTSIDE_DOCKERFILE))
            run_command(
                [*argv, "--metadata-file", metadata, "-"],
                log=log,
                merge_output=True,
                stdin=stream,
            )
            written = json.loads(metadata.read_text())
        # The docker driver reports the image ID as the digest; other drivers also write
        # the config digest, which is the image ID when theirs is a manifest digest.
        printed = written.get("containerimage.config.digest") or written.get(
            "containerimage.digest"
        )
        if not printed:
            raise EngineError(["docker", "buildx", "build"], 0, f"no image ID in {written}")
        return self.resolve_image_id(printed)


OUTSIDE_DOCKERFILE = Path(".lowbuild-platform.Dockerfile")


def _is_inside(path: Path, context: Path) -> bool:
    return path.resolve().is_relative_to(context.resolve())


def _path_inside(dockerfile: Path, context: Path) -> Path:
    """`dockerfile`'s path relative to `context` (lowbuild always stages it there)."""
    try:
        return dockerfile.resolve().relative_to(context.resolve())
    except ValueError:
        raise EngineError(
            ["docker", "buildx", "build"],
            2,
            f"the Dockerfile {dockerfile} is not inside the build context {context}",
        ) from None
