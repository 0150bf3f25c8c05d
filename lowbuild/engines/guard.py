"""Run one engine command so that it can be stopped completely, and so that it dies with lowbuild.

lowbuild.engines.commands starts every streamed engine command (builds, buildah RUN steps)
as `python -S guard.py <lowbuild's pid> patient|prompt <argv...>`. This file imports
nothing of lowbuild, so the extra interpreter costs one start (~40 ms measured on a busy
2-core host) per build, not a package import.

Why a process between lowbuild and the engine:
  * A RUN step does not run in the engine's process group: podman and buildah hand it to
    `buildah-oci-runtime`, which starts the step's shell in a session of its own, and when
    podman is stopped by a signal it exits without killing that shell (seen on podman 4.3
    and buildah 1.28 with runc: `sleep` in a RUN step ran on after SIGTERM/SIGINT). The
    guard is a child subreaper (PR_SET_CHILD_SUBREAPER), so every process the engine
    starts stays its descendant even when orphaned, and it can find and kill them all.
  * Stopping in the right order lets the engine clean up after itself: the RUN step's
    processes are killed first, the engine sees the step fail and removes its working
    container (`--force-rm`), then it exits. Only an engine that does not exit in time is
    sent SIGTERM, then SIGKILL. docker and buildx have no local RUN process: their client
    is sent SIGTERM at once, and dockerd cancels the build when its client goes away.
    A "patient" stop (podman, buildah builds) also waits, killing RUN steps as they start,
    when no step was running: podman signalled while it commits a layer can leave an
    image whose layer is gone ("layer not known" in the next build's cache lookup).
  * It dies with lowbuild: PR_SET_PDEATHSIG sends the guard SIGTERM when its parent dies,
    even by SIGKILL, and SIGTERM starts the same stop as an interrupt. The signal fires when
    the *thread* that forked the guard ends, not the process: lowbuild forks it from the
    worker thread that then blocks reading its output until it exits, so that thread
    outlives the guard unless the whole process dies, which is the case we want. The guard
    sets it on itself (no `preexec_fn`, which is unsafe in a threaded parent) and then
    checks that its parent is still the expected pid, closing the race with an early death.

Exit status: the engine's, or 130 when the guard was told to stop.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36

ENGINE_CLEANUP_S = 10.0
"""How long the engine may take to fail the killed RUN step and remove its working container."""
TERM_GRACE_S = 5.0
"""How long after SIGTERM before SIGKILL."""

# Shared helpers that outlive any one engine command and must not be killed: rootless
# podman's user-namespace holder (named so by podman's rootless_linux.c, or catatonit).
_SPARED = frozenset({"podman pause", "catatonit"})

_stopping = False


def _on_stop(signum: int, frame: object) -> None:
    global _stopping
    _stopping = True


def _processes() -> dict[int, tuple[int, int, str, str]]:
    """pid → (ppid, process group, state, comm) of every process visible in /proc."""
    found: dict[int, tuple[int, int, str, str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue  # gone meanwhile
        # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
        comm = text[text.index("(") + 1 : text.rindex(")")]
        fields = text[text.rindex(")") + 2 :].split()
        found[int(entry.name)] = (int(fields[1]), int(fields[2]), fields[0], comm)
    return found


def _descendants(root: int) -> dict[int, tuple[int, int, str, str]]:
    table = _processes()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    result: dict[int, tuple[int, int, str, str]] = {}
    todo = list(children.get(root, ()))
    while todo:
        pid = todo.pop()
        result[pid] = table[pid]
        todo.extend(children.get(pid, ()))
    return result


def _sweep(*, engine: int, engine_group: int, everything: bool) -> int:
    """SIGKILL descendants: those outside the engine's process group (the RUN steps), or
    all of them with `everything`. Reaps what was orphaned to the guard (never the engine
    itself: Popen waits for that one). Returns how many were killed."""
    me = os.getpid()
    killed = 0
    for pid, (ppid, group, state, comm) in _descendants(me).items():
        if comm in _SPARED:
            continue
        if state == "Z":
            if ppid == me and pid != engine:
                _reap(pid)
            continue
        if everything or group != engine_group:
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except ProcessLookupError:
                pass
    return killed


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def _stop(engine: subprocess.Popen[bytes], *, patient: bool) -> None:
    group = os.getpgrp()
    if _sweep(engine=engine.pid, engine_group=group, everything=False) or patient:
        deadline = time.monotonic() + ENGINE_CLEANUP_S
        while engine.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
            _sweep(
                engine=engine.pid, engine_group=group, everything=False
            )  # a step that started meanwhile
    if engine.poll() is None:
        # The guard shares the group (it made the session); its handler only sets a flag.
        os.killpg(group, signal.SIGTERM)
        try:
            engine.wait(timeout=TERM_GRACE_S)
        except subprocess.TimeoutExpired:
            engine.kill()
            engine.wait()
    _sweep(engine=engine.pid, engine_group=group, everything=True)
    time.sleep(0.05)
    _sweep(
        engine=engine.pid, engine_group=group, everything=True
    )  # reap what the first sweep killed


def main(argv: list[str]) -> int:
    parent, patient, command = int(argv[1]), argv[2] == "patient", argv[3:]
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, _on_stop)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent or _stopping:
        return 130  # lowbuild died (or stopped us) before the signal was armed
    try:
        # The guard's own stdin: /dev/null, or the file run_command was asked to feed
        # (a build context as a tar stream, engines/buildx.py).
        engine = subprocess.Popen(command)
    except FileNotFoundError:
        print(f"{command[0]}: command not found", file=sys.stderr)
        return 127
    while True:
        try:
            code = engine.wait(timeout=0.2)
        except subprocess.TimeoutExpired:
            if _stopping:
                _stop(engine, patient=patient)
                return 130
            continue
        return 130 if _stopping else code


if __name__ == "__main__":
    sys.exit(main(sys.argv))
