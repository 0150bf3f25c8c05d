"""podman, through python-on-whales' DockerClient(client_call=["podman"]).

Where podman needs flags python-on-whales does not know, the command is built here:
  * build and commit take `--format docker`: podman's default OCI format has no field for
    a commit message, HEALTHCHECK, SHELL or ONBUILD, so those would be silently dropped;
  * build takes `--pull=never` (podman would otherwise try registries for a missing base);
  * save takes `--format docker-archive` and `--multi-image-archive` for several refs;
  * push takes `--tls-verify=false` for plain-http registries;
  * rm takes `--time 0` (see `_remove_container`);
  * commit takes one `KEY="value"` per `--change` (see lowbuild.engines.changes), and a
    commit recipe's working container runs with `--unsetenv-all` (see `_working_flags`).
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from lowbuild.engines.base import BuildRequest, EngineName, ImageInfo, LogSink, Signer
from lowbuild.engines.changes import podman_changes
from lowbuild.engines.commands import (
    build_marker,
    build_marker_flags,
    container_name_prefix,
    labels_as_one_step,
    run_command,
    run_iidfile_build,
    run_scratch,
)
from lowbuild.engines.parse import build_secrets, pushed_digest
from lowbuild.engines.signing import sign_in_registry
from lowbuild.engines.whales import (
    QUICK_TIMEOUT_S,
    WhalesEngine,
    new_container_name,
    remove_containers,
)
from lowbuild.errors import EngineError
from lowbuild.spec.changes import Change


class PodmanEngine(WhalesEngine):
    """podman: daemonless; builds with its embedded buildah."""

    name: EngineName = "podman"
    default_binary = "podman"
    commit_flags = ("--format", "docker", "--quiet")

    def image_store_bytes(self) -> int:
        # podman's `system df` adds up every image's full size, so layers two images share
        # count twice; the storage directory on disk is the honest total. A remote engine's
        # directory is not this machine's to read: its `system df` is what there is.
        if self.remote:
            return super().image_store_bytes()
        argv = [*self.cli, "info", "--format", "{{.Store.GraphRoot}}"]
        return disk_usage(Path(run_command(argv, timeout=QUICK_TIMEOUT_S).stdout.strip()))

    def version(self) -> str:
        # Remote: the service's version (the client's says nothing of what builds).
        side = "Server" if self.remote else "Client"
        argv = [*self.cli, "version", "--format", f"{{{{.{side}.Version}}}}"]
        return run_command(argv, timeout=QUICK_TIMEOUT_S).stdout.strip()

    def build(self, request: BuildRequest, *, log: LogSink | None = None) -> str:
        return buildah_style_build(
            self.cli, request, log=log, resolve=self.resolve_image_id, force_rm=True
        )

    def _change_args(self, changes: Sequence[Change]) -> list[str]:
        return podman_changes(changes)

    def _working_flags(self, base: ImageInfo) -> list[str]:
        # `podman commit` writes the container's whole environment into the image
        # (libpod/container_commit.go: "this includes all the default environment vars"),
        # so podman's own `container=podman` and containers.conf's `TERM=xterm` would end up
        # in every committed image. --unsetenv-all drops every default and the base's own
        # environment is given back, so the steps and the image see exactly the base's.
        return ["--pull=never", "--unsetenv-all", *(f"--env={entry}" for entry in base.env)]

    def _remove_container(self, name: str) -> None:
        # `podman rm --force` first waits 10 s for SIGTERM, which a PID 1 like
        # `busybox httpd` ignores; `--time 0` kills at once, as `docker rm --force` does.
        remove_containers([*self.cli, "rm", "--force", "--ignore", "--time", "0", name])

    def run_containers(self, run_id: str) -> frozenset[str]:
        # A stopped `podman build` can leave its buildah working container behind (seen
        # with SIGTERM and SIGINT on podman 4.3 when no RUN step was running); such
        # containers are "external", listed only with --external, and told apart by the
        # build marker their buildah.json records (commands.build_marker_flags).
        if self.remote:
            # The service's build containers are its own to clean up when the client goes
            # (and its container storage is not this machine's files): only ours, by name.
            return self.named_containers(run_id)
        prefix, marker = container_name_prefix(run_id), f"id={build_marker(run_id)},"
        argv = [
            *self.cli,
            "ps",
            "--all",
            "--external",
            "--no-trunc",
            "--format",
            "{{.ID}} {{.Names}}",
        ]
        for attempt in range(5):
            try:
                out = run_command(argv, timeout=QUICK_TIMEOUT_S).stdout
                break
            except EngineError as exc:
                # `ps --external` fails when a container it is listing is removed meanwhile
                # ("determining buildah container for container …: container not known"),
                # which other builds on the host do all the time: list again.
                if "container not known" not in exc.stderr or attempt == 4:
                    raise
                time.sleep(0.2)
        listed = [line.split() for line in out.splitlines() if line.strip()]
        if not listed:
            return frozenset()
        storage = self._container_storage()
        return frozenset(
            words[0]
            for words in listed
            if (len(words) > 1 and words[1].startswith(prefix))
            or any(s.startswith(marker) for s in build_secrets(storage / words[0]))
        )

    def _container_storage(self) -> Path:
        """Where containers/storage keeps each container's metadata (`<id>/userdata`)."""
        argv = [*self.cli, "info", "--format", "{{.Store.GraphRoot}}\t{{.Store.GraphDriverName}}"]
        root, _, driver = run_command(argv, timeout=QUICK_TIMEOUT_S).stdout.strip().partition("\t")
        return Path(root) / f"{driver}-containers"

    def remove_containers(self, ids: Iterable[str]) -> None:
        wanted = sorted(ids)
        if wanted:
            run_command([*self.cli, "rm", "--force", "--ignore", "--time", "0", *wanted])

    def save(self, refs: Sequence[str], path: Path) -> None:
        argv: list[str | Path] = [*self.cli, "save", "--format", "docker-archive"]
        if len(refs) > 1:
            argv.append("--multi-image-archive")
        run_command([*argv, "--output", path, *refs])

    @property
    def image_cli(self) -> tuple[str, ...]:
        """The command that pushes and pulls (podman; buildah's engine says buildah)."""
        return self.cli

    def push(
        self,
        ref: str,
        destination: str,
        *,
        tls_verify: bool = True,
        log: LogSink | None = None,
        sign: Signer | None = None,
    ) -> str:
        # `podman push` and `buildah push` take the same flags, but for a passphrase file:
        # buildah has none, so skopeo signs what it pushed (engines/signing.py).
        by_cli = sign is not None and (self.name == "podman" or sign.passphrase_file is None)
        digest = push_with_digestfile(
            self.image_cli,
            ref,
            destination,
            tls_verify=tls_verify,
            log=log,
            sign_flags=sign.push_flags() if sign is not None and by_cli else (),
        )
        if sign is not None and not by_cli:
            repository, _, tag = destination.rpartition(":")
            sign_in_registry(repository, digest, [tag], sign, tls_verify=tls_verify, log=log)
        return digest

    def join_manifest(
        self,
        instances: Sequence[str],
        destination: str,
        *,
        tls_verify: bool = True,
        log: LogSink | None = None,
    ) -> str:
        # A local list under a name of this run only, pushed with its instances' manifests
        # (`--all`: they are in the registry already, so nothing else is sent), removed.
        tls = f"--tls-verify={str(tls_verify).lower()}"
        cli = self.image_cli
        name = f"localhost/{new_container_name()}:list"
        run_command([*cli, "manifest", "create", name])
        try:
            for instance in instances:
                run_command([*cli, "manifest", "add", tls, name, f"docker://{instance}"], log=log)
            with tempfile.TemporaryDirectory(prefix="push-", dir=run_scratch()) as scratch:
                digestfile = Path(scratch) / "digest"
                argv: list[str | Path] = [*cli, "manifest", "push", "--all", tls]
                argv += ["--format", "v2s2", "--digestfile", digestfile]
                run_command([*argv, name, f"docker://{destination}"], log=log, merge_output=True)
                written = digestfile.read_text() if digestfile.exists() else ""
        finally:
            run_command([*cli, "manifest", "rm", name], check=False)
        if not written.strip():
            from lowbuild.sources.registry import registry_digest

            written = registry_digest(destination, tls_verify=tls_verify) or ""
        return pushed_digest(written, destination)

    def pull(self, ref: str, *, tls_verify: bool = True, log: LogSink | None = None) -> str | None:
        tls = f"--tls-verify={str(tls_verify).lower()}"
        return self._pulled(ref, [*self.image_cli, "pull", tls, "--quiet", ref], log)


def push_with_digestfile(
    cli: Sequence[str],
    ref: str,
    destination: str,
    *,
    tls_verify: bool,
    log: LogSink | None,
    sign_flags: Sequence[str] = (),
) -> str:
    """`podman push` or `buildah push` (the same flags) of `ref` to `docker://destination`,
    in the docker format the images were built in; the digest from `--digestfile`."""
    with tempfile.TemporaryDirectory(prefix="push-", dir=run_scratch()) as scratch:
        digestfile = Path(scratch) / "digest"
        argv: list[str | Path] = [
            *cli,
            "push",
            f"--tls-verify={str(tls_verify).lower()}",
            "--format",
            "docker",
            "--digestfile",
            digestfile,
            *sign_flags,
            ref,
            f"docker://{destination}",
        ]
        run_command(argv, log=log, merge_output=True)
        written = digestfile.read_text() if digestfile.exists() else ""
    if not written.strip():
        # `podman --remote push --digestfile` writes nothing (podman 4): the registry
        # itself says what it stored.
        from lowbuild.sources.registry import registry_digest

        written = registry_digest(destination, tls_verify=tls_verify) or ""
    return pushed_digest(written, destination)


def buildah_style_build(
    cli: Sequence[str],
    request: BuildRequest,
    *,
    log: LogSink | None,
    resolve: Callable[[str], str],
    force_rm: bool = False,
) -> str:
    """`podman build` or `buildah build` (the same flags: podman embeds buildah); the ID.

    `force_rm` (podman): remove the working container when a step fails, which is how an
    interrupted build cleans up after its RUN step is killed (engines/guard.py). buildah
    refuses the flag without `--layers`, and removes it without being asked."""
    # One LABEL step instead of one per label: see labels_as_one_step.
    with labels_as_one_step(request) as request:
        # `--pull=never` is the spelling both accept (buildah's older `--pull-never` is
        # hidden and deprecated).
        argv: list[str | Path] = [
            *cli,
            "build",
            "--format",
            "docker",
            "--pull=never",
            *(["--force-rm"] if force_rm else []),
            *build_marker_flags(),
            *request.flags(),
        ]
        return run_iidfile_build(
            argv, context=request.context, log=log, resolve=resolve, patient_stop=True
        )


def disk_usage(root: Path) -> int:
    """Bytes the files under `root` take on disk (blocks, each inode once), staying on
    root's filesystem (a running container's overlay mount is not counted again).
    Directories this user may not read are skipped."""
    device = root.stat().st_dev
    seen: set[int] = set()
    total = 0
    for directory, subdirs, files in os.walk(root, onerror=lambda _: None):
        kept = []
        for name in subdirs:
            try:
                if Path(directory, name).lstat().st_dev == device:
                    kept.append(name)
            except OSError:
                continue
        subdirs[:] = kept
        for name in (*files, *kept):
            try:
                info = Path(directory, name).lstat()
            except OSError:
                continue
            if info.st_ino not in seen:
                seen.add(info.st_ino)
                total += info.st_blocks * 512
    return total
