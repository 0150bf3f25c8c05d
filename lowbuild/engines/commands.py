"""The one place that spawns engine commands, and the one place that turns engine failures
into lowbuild.errors.EngineError.

Most engine calls go through python-on-whales; this module runs the commands it lacks
(podman's `--format docker`, `commit --change`, buildah, the classic builder with
`DOCKER_BUILDKIT=0` in its environment) and wraps python-on-whales' DockerException,
so callers only ever see EngineError.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from lowbuild.engines.base import BuildRequest, LogSink
from lowbuild.engines.changes import label_line
from lowbuild.errors import EngineError, EngineTimedOut, EngineUnavailable

if TYPE_CHECKING:
    from python_on_whales.utils import ValidPath


RUN_ID = secrets.token_hex(6)
"""This lowbuild process's mark on what it makes: its containers are named
`lowbuild-<RUN_ID>-…` and its podman/buildah builds carry `build_marker_flags()`, so an
interrupted run, or the next run after a killed one, removes exactly these and never a
container of another build on the same host."""

CONTAINER_PREFIX = "lowbuild-"


def container_name_prefix(run_id: str = RUN_ID) -> str:
    return f"{CONTAINER_PREFIX}{run_id}-"


def build_marker(run_id: str = RUN_ID) -> str:
    """The secret id that marks a podman/buildah build's working containers as `run_id`'s."""
    return f"lowbuild-run-{run_id}"


def build_marker_flags() -> list[str]:
    """podman/buildah `build` flags that mark its working containers as this run's.

    Why a secret: podman gives a build's working containers no label, and names them after
    the base image (`busybox-working-container`), shared by every build from that base;
    but it records the build's `--secret` options in each one's buildah.json
    (CommonBuildOpts.Secrets). An unused secret changes nothing in the image, the layer
    cache or the build's output."""
    return ["--secret", f"id={build_marker()},src={os.devnull}"]


_scratch: Path | None = None
_scratch_lock = threading.Lock()


def run_scratch() -> Path:
    """This run's own temporary directory (`$TMPDIR/lowbuild-run-<RUN_ID>-…`), removed at
    exit; a killed run's is found by its RUN_ID and removed by the next run."""
    global _scratch
    with _scratch_lock:
        if _scratch is None or not _scratch.is_dir():
            _scratch = Path(tempfile.mkdtemp(prefix=f"lowbuild-run-{RUN_ID}-"))
            atexit.register(shutil.rmtree, _scratch, True)
        return _scratch


def scratch_dirs(run_id: str) -> list[Path]:
    """The temporary directories of run `run_id` (see run_scratch)."""
    return sorted(Path(tempfile.gettempdir()).glob(f"lowbuild-run-{run_id}-*"))


@dataclass(frozen=True)
class CommandOutput:
    """What a finished command printed. With a log sink, stderr was merged into stdout."""

    stdout: str
    stderr: str
    returncode: int = 0


def run_command(
    argv: Sequence[ValidPath],
    *,
    env: Mapping[str, str] | None = None,
    log: LogSink | None = None,
    merge_output: bool = False,
    timeout: float | None = None,
    check: bool = True,
    patient_stop: bool = False,
    stdin: Path | None = None,
) -> CommandOutput:
    """Run `argv` to completion; raise EngineError when it exits non-zero (unless `check`
    is False: then the output and exit code are returned, for commands that report
    partial results, like `image inspect` of several refs some of which are missing).

    `env` is added to this process's environment. With `log` (or `merge_output`), stderr is
    merged into stdout so the lines keep their order; each line is passed to `log` as it
    arrives, and a failure carries the whole merged output (a build's failing RUN prints its
    message on stdout with podman and on stderr with docker: the caller needs both).
    A missing binary raises EngineUnavailable; past `timeout` the command is killed and
    EngineTimedOut (an EngineError, exit -1) raised. `timeout` is for commands whose output
    is not streamed: a streamed command is only timed once its output ends.
    `patient_stop` (streamed podman/buildah builds): when stopped, the engine is let run on
    for a few seconds, its RUN steps killed as they start, so that it fails and cleans up
    by itself instead of being signalled in the middle of a commit (engines/guard.py).
    `stdin`: a file the command reads as its standard input (else /dev/null).
    """
    args = [str(a) for a in argv]
    full_env = {**os.environ, **env} if env else None
    try:
        if log is None and not merge_output and stdin is None:
            done = _run_quick(args, env=full_env, timeout=timeout)
            if done.returncode != 0 and check:
                raise EngineError(args, done.returncode, done.stderr or done.stdout)
            return done
        return _run_merged(
            args,
            env=full_env,
            log=log,
            timeout=timeout,
            patient_stop=patient_stop,
            stdin=stdin,
        )
    except FileNotFoundError as exc:
        raise EngineUnavailable(
            f"cannot run {shlex.join(args)}: {args[0]} is not installed or not on PATH "
            "(run `lowbuild doctor`)"
        ) from exc
    except subprocess.TimeoutExpired as exc:
        assert timeout is not None  # only a timed command can expire
        raise EngineTimedOut(args, seconds=timeout) from exc


_LIVE: set[subprocess.Popen[str]] = set()  # streamed commands, each under its guard
_QUICK: set[subprocess.Popen[str]] = set()  # the others (inspect, tag, version, …)
_LIVE_LOCK = threading.Lock()


def _run_quick(
    args: list[str], *, env: dict[str, str] | None, timeout: float | None
) -> CommandOutput:
    """`args` to completion, its output captured (subprocess.run's way), known while it
    runs so that `stop_commands_of` can kill it (an endpoint that stopped answering)."""
    with subprocess.Popen(
        args,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
    ) as process:
        with _LIVE_LOCK:
            _QUICK.add(process)
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            raise
        finally:
            with _LIVE_LOCK:
                _QUICK.discard(process)
    return CommandOutput(stdout=stdout, stderr=stderr, returncode=process.returncode)


def _runs(process: subprocess.Popen[str], words: Sequence[str]) -> bool:
    """Whether `process`'s command line has `words` in a row (a guard's has the engine
    command after its own words)."""
    argv = [str(a) for a in process.args] if isinstance(process.args, list) else []
    width = len(words)
    return any(argv[i : i + width] == list(words) for i in range(len(argv) - width + 1))


def stop_commands_of(words: Sequence[str], *, grace: float = 5.0) -> int:
    """Stop the engine commands running now whose command line has `words` in a row (an
    endpoint's `podman --url …`): streamed ones as `stop_running_commands` does, with
    `grace`, the others killed at once. Their callers get an EngineError. Returns how
    many there were."""
    with _LIVE_LOCK:
        streamed = [process for process in _LIVE if _runs(process, words)]
        quick = [process for process in _QUICK if _runs(process, words)]
    for process in quick:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
    _stop(streamed, grace=grace)
    return len(streamed) + len(quick)


_GUARD = Path(__file__).with_name("guard.py")


def stop_running_commands(*, grace: float = 20.0) -> int:
    """Stop every streamed engine command still running (builds) and all it started: SIGTERM
    to its guard (engines/guard.py: kills the RUN steps, lets the engine remove its working
    container, then stops the engine); SIGKILL to the whole group after `grace` seconds.
    Returns how many were running."""
    with _LIVE_LOCK:
        running = list(_LIVE)
    _stop(running, grace=grace)
    return len(running)


def _stop(running: Sequence[subprocess.Popen[str]], *, grace: float) -> None:
    """SIGTERM to each guard; SIGKILL to its whole group once `grace` seconds are over."""
    for process in running:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for process in running:
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)


def _run_merged(
    args: list[str],
    *,
    env: dict[str, str] | None,
    log: LogSink | None,
    timeout: float | None,
    patient_stop: bool,
    stdin: Path | None = None,
) -> CommandOutput:
    lines: list[str] = []
    if shutil.which(args[0]) is None:
        raise FileNotFoundError(args[0])
    # Through the guard (engines/guard.py), which dies with lowbuild and stops the
    # engine's RUN steps too. A session of its own: Ctrl-C at the terminal reaches lowbuild
    # only, which then stops its engine commands in order (stop_running_commands) instead
    # of having them killed mid-step, and can clean up after them.
    with (
        (stdin or Path(os.devnull)).open("rb") as source,
        subprocess.Popen(
            [
                sys.executable,
                "-S",
                str(_GUARD),
                str(os.getpid()),
                "patient" if patient_stop else "prompt",
                *args,
            ],
            env=env,
            stdin=source,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            bufsize=1,
            start_new_session=True,
        ) as process,
    ):
        with _LIVE_LOCK:
            _LIVE.add(process)
        try:
            assert process.stdout is not None  # PIPE was asked for
            for line in process.stdout:
                lines.append(line)
                if log is not None:
                    log(line.rstrip("\n"))
            returncode = process.wait(timeout=timeout)
        finally:
            with _LIVE_LOCK:
                _LIVE.discard(process)
    output = "".join(lines)
    if returncode != 0:
        raise EngineError(args, returncode, output)
    return CommandOutput(stdout=output, stderr="")


_ESCAPE_DIRECTIVE = re.compile(r"^#\s*escape\s*=", re.IGNORECASE)


@contextmanager
def labels_as_one_step(request: BuildRequest) -> Iterator[BuildRequest]:
    """For podman and buildah: the request to build, its labels moved into one LABEL
    instruction appended to a temporary copy of the Dockerfile.

    Why: podman/buildah (4.x) turn every `--label` into a LABEL step of its own, each
    committed as an intermediate image (~0.15 s apiece); lowbuild's eight labels made
    a one-file rebuild of a leaf take a second longer than the engine's own build.
    Appended to the last stage, one LABEL labels the final image the same way.
    Unchanged (labels stay flags) when there are none, when a label holds a line
    break, or when the Dockerfile sets its own escape character.
    """
    labels = request.labels
    source = request.dockerfile or request.context / "Dockerfile"
    try:
        text = source.read_text(encoding="utf-8") if labels else ""
    except (OSError, UnicodeDecodeError):
        text = ""
    movable = (
        bool(text)
        and not any("\n" in k + v or "\r" in k + v for k, v in labels.items())
        and not any(_ESCAPE_DIRECTIVE.match(line.strip()) for line in text.splitlines()[:5])
    )
    if not movable:
        yield request
        return
    with tempfile.TemporaryDirectory(prefix="dockerfile-", dir=run_scratch()) as scratch:
        copy = Path(scratch) / source.name
        copy.write_text(text + ("" if text.endswith("\n") else "\n") + label_line(labels) + "\n")
        yield replace(request, dockerfile=copy, labels={})


def run_iidfile_build(
    argv: Sequence[str | Path],
    *,
    context: Path,
    log: LogSink | None,
    resolve: Callable[[str], str],
    env: Mapping[str, str] | None = None,
    patient_stop: bool = False,
) -> str:
    """Run a build command that takes `--iidfile`, streaming its output to `log`;
    return `resolve(what it wrote)`, the full image ID. `patient_stop`: see run_command."""
    with tempfile.TemporaryDirectory(prefix="iid-", dir=run_scratch()) as scratch:
        iidfile = Path(scratch) / "iid"
        run_command(
            [*argv, "--iidfile", iidfile, context],
            env=env,
            log=log,
            merge_output=True,
            patient_stop=patient_stop,
        )
        return resolve(iidfile.read_text())


@contextmanager
def whales_errors() -> Iterator[None]:
    """Turn python-on-whales' DockerException (which carries command, exit code, stdout and
    stderr) into EngineError; a missing client binary into EngineUnavailable."""
    try:
        yield
    except FileNotFoundError as exc:
        raise EngineUnavailable(
            f"an engine binary is not installed or not on PATH: {exc} (run `lowbuild doctor`)"
        ) from exc
    except Exception as exc:
        # Imported here, not at the top: python-on-whales takes ~0.5 s to import, which
        # commands that never reach it (a no-op build, plan, fetch) should not pay.
        from python_on_whales.exceptions import DockerException

        if not isinstance(exc, DockerException):
            raise
        output = "\n".join(part for part in (exc.stderr, exc.stdout) if part)
        raise EngineError([str(a) for a in exc.docker_command], exc.return_code, output) from exc
