"""What one lowbuild run holds in its project, and what a killed run leaves to the next.

* The project lock (`.lowbuild/lock`): build, export bake and bundle export take it, so two
  runs never build the same family at once (a child built on a parent that the other run
  is retagging). A second run waits, saying which pid holds it, or with `--no-wait`
  refuses (exit 1).
* The run record (`.lowbuild/runs/<pid>.json`): pid, process start time, RUN_ID, engine,
  and the fingerprint of each image it started to build. Everything the run makes carries
  its RUN_ID (engines.commands), so when a run dies by SIGKILL, the next run in the
  project (or `lowbuild clean`) finds the record of a process that no longer exists and
  removes exactly what that run made: its containers (named or marked with its RUN_ID),
  its temporary directories, half-staged contexts, and the untagged images of its builds
  (a build cut off between writing the image and tagging it; found by fingerprint label).
  Its engine commands stopped themselves when it died (engines/guard.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from lowbuild.engines.base import Engine
from lowbuild.engines.commands import RUN_ID, scratch_dirs
from lowbuild.errors import EngineError, ProjectBusy
from lowbuild.plan.fingerprint import FINGERPRINT_LABEL
from lowbuild.sources.cache import write_atomically

LOCK_FILE = "lock"
OWNER_FILE = "lock.owner"  # the holder's pid: filelock truncates the lock file itself on open
RUNS_DIR = "runs"
GUARD_WAIT_S = 30.0  # a dead run's engine commands may still be cleaning up after themselves


def process_start(pid: int) -> int | None:
    """When process `pid` started (clock ticks since boot), or None when there is none.
    With the pid, it names one process: a pid alone may have been reused since."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    return int(text[text.rindex(")") + 2 :].split()[19])


GITIGNORE = (
    "# Written by lowbuild: its working state (logs, staged contexts, run records) stays\n"
    "# out of git; published.json (what was pushed where, by digest) may be committed.\n"
    "*\n"
    "!published.json\n"
)


def make_state_dir(state_dir: Path) -> None:
    """Create the project's state directory, with a .gitignore the first time (one a
    user edited is left alone)."""
    from lowbuild.sources.cache import write_atomically

    state_dir.mkdir(parents=True, exist_ok=True)
    if not (state_dir / ".gitignore").exists():
        write_atomically(state_dir / ".gitignore", GITIGNORE)


@contextmanager
def project_lock(
    state_dir: Path, *, wait: bool = True, notify: Callable[[str], None] = lambda line: None
) -> Iterator[None]:
    """Hold the project's exclusive lock for the block. Busy: `notify` a line naming the
    holder and wait (Ctrl-C still interrupts), or raise ProjectBusy when not `wait`."""
    from filelock import FileLock, Timeout

    make_state_dir(state_dir)
    lock = FileLock(state_dir / LOCK_FILE, thread_local=False)
    owner = state_dir / OWNER_FILE
    try:
        lock.acquire(timeout=0)
    except Timeout:
        holder = _holder(owner)
        if not wait:
            raise ProjectBusy(
                f"another lowbuild run ({holder}) holds the project lock {state_dir / LOCK_FILE}; "
                "try again when it has finished, or leave out --no-wait to wait for it"
            ) from None
        notify(f"waiting for another lowbuild run ({holder}), which holds {state_dir / LOCK_FILE}")
        lock.acquire()
    try:
        write_atomically(owner, f"{os.getpid()}\n")
        yield
    finally:
        owner.unlink(missing_ok=True)
        lock.release()


def _holder(owner: Path) -> str:
    try:
        return f"pid {int(owner.read_text().strip())}"
    except (OSError, ValueError):
        return "pid unknown: it is starting or finishing"


@dataclass(frozen=True)
class RunRecord:
    pid: int
    started: int  # process_start(pid) when the run began
    run_id: str
    engine: str
    fingerprints: tuple[str, ...] = ()  # of the images it started to build

    def to_json(self) -> dict[str, object]:
        return {**asdict(self), "fingerprints": list(self.fingerprints)}

    @classmethod
    def from_json(cls, data: dict[str, object]) -> RunRecord:
        fingerprints = data.get("fingerprints") or []
        assert isinstance(fingerprints, list)
        return cls(
            pid=int(str(data["pid"])),
            started=int(str(data["started"])),
            run_id=str(data["run_id"]),
            engine=str(data["engine"]),
            fingerprints=tuple(str(f) for f in fingerprints),
        )

    def alive(self) -> bool:
        return process_start(self.pid) == self.started


class RunJournal:
    """This run's record file, kept up to date as builds start."""

    def __init__(self, path: Path, record: RunRecord) -> None:
        self.path = path
        self._record = record
        self._lock = threading.Lock()
        self._write()

    def note_build(self, fingerprint: str) -> None:
        """Called before an image's build starts, with the fingerprint it will be labelled with."""
        with self._lock:
            fingerprints = (*self._record.fingerprints, fingerprint)
            self._record = dataclasses.replace(self._record, fingerprints=fingerprints)
            self._write()

    def _write(self) -> None:
        write_atomically(self.path, json.dumps(self._record.to_json()) + "\n")


@contextmanager
def recorded_run(
    state_dir: Path, *, engine: str, fingerprints: tuple[str, ...] = ()
) -> Iterator[RunJournal]:
    """Record this run under `state_dir/runs/` for the block (removed on a normal exit,
    Ctrl-C included; left behind only when the process is killed)."""
    pid = os.getpid()
    record = RunRecord(
        pid=pid,
        started=process_start(pid) or 0,
        run_id=RUN_ID,
        engine=engine,
        fingerprints=fingerprints,
    )
    path = state_dir / RUNS_DIR / f"{pid}.json"
    make_state_dir(state_dir)
    path.parent.mkdir(exist_ok=True)
    try:
        yield RunJournal(path, record)
    finally:
        path.unlink(missing_ok=True)


@dataclass(frozen=True)
class Cleaned:
    """What was removed for one dead run."""

    record: RunRecord
    containers: tuple[str, ...]
    temp_dirs: tuple[Path, ...]
    images: tuple[str, ...]


def clean_dead_runs(state_dir: Path, *, engine_for: Callable[[str], Engine]) -> list[Cleaned]:
    """Remove what each dead run recorded under `state_dir` left behind (see the module
    docstring). Call it holding the project lock: then no live run is staging, and any
    half-staged context in `state_dir/stage` is a dead run's."""
    runs = state_dir / RUNS_DIR
    found = sorted(runs.glob("*.json")) if runs.is_dir() else []
    cleaned: list[Cleaned] = []
    for path in found:
        try:
            record = RunRecord.from_json(json.loads(path.read_text()))
        except (OSError, ValueError, KeyError, TypeError):
            path.unlink(missing_ok=True)  # half-written: its writer died before the rename
            continue
        if record.alive():
            continue
        _wait_for_guards(record.pid)
        engine = engine_for(record.engine)
        containers = sorted(engine.run_containers(record.run_id))
        engine.remove_containers(containers)
        temp_dirs = scratch_dirs(record.run_id)
        for directory in temp_dirs:
            shutil.rmtree(directory, ignore_errors=True)
        images = _remove_untagged_images(engine, record.fingerprints)
        path.unlink(missing_ok=True)
        cleaned.append(Cleaned(record, tuple(containers), tuple(temp_dirs), tuple(images)))
    if cleaned:
        stage = state_dir / "stage"
        half_staged = list(stage.glob("*.tmp")) if stage.is_dir() else []
        for leftover in half_staged:
            if leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)
    return cleaned


def _remove_untagged_images(engine: Engine, fingerprints: tuple[str, ...]) -> list[str]:
    """Remove the untagged images carrying one of `fingerprints` (a build the dead run
    started); one still in use, or tagged meanwhile, stays."""
    removed = []
    for fingerprint in dict.fromkeys(fingerprints):
        for image in sorted(engine.untagged_images(label=f"{FINGERPRINT_LABEL}={fingerprint}")):
            try:
                engine.remove_image(image)
            except EngineError:
                continue
            removed.append(image)
    return removed


def _wait_for_guards(pid: int) -> None:
    """Wait until the engine guards the dead run `pid` started have finished stopping their
    commands (each names its lowbuild's pid on its command line); SIGKILL them after
    GUARD_WAIT_S. Their engine commands remove their own working containers meanwhile."""
    import signal

    deadline = time.monotonic() + GUARD_WAIT_S
    while guards := _guards_of(pid):
        if time.monotonic() > deadline:
            for guard in guards:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(guard, signal.SIGKILL)
            return
        time.sleep(0.1)


def _guards_of(pid: int) -> list[int]:
    guards = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if len(argv) > 3 and argv[2].endswith(b"/guard.py") and argv[3] == str(pid).encode():
            guards.append(int(entry.name))
    return guards


@contextmanager
def project_session(
    state_dir: Path,
    *,
    engine: str | None,
    wait: bool,
    notify: Callable[[str], None],
    engine_for: Callable[[str], Engine],
) -> Iterator[RunJournal | None]:
    """The lock, then the dead runs' leftovers removed, then this run recorded (when it
    uses an `engine`) for the block; yields the run's journal (None without an engine)."""
    with project_lock(state_dir, wait=wait, notify=notify):
        cleaned = clean_dead_runs(state_dir, engine_for=engine_for)
        for item in cleaned:
            notify(describe(item))
        if engine is None:
            yield None
            return
        # dockerd may finish writing the image of a build whose client was killed a few
        # seconds after the client has gone (seen with the classic builder): this run takes
        # over the dead runs' fingerprints, and looks for their untagged images again at its
        # end (or, if it is killed too, the next run does).
        inherited = tuple(f for item in cleaned for f in item.record.fingerprints)
        with recorded_run(state_dir, engine=engine, fingerprints=inherited) as journal:
            yield journal
            for name in {item.record.engine for item in cleaned}:
                _remove_untagged_images(engine_for(name), inherited)


def describe(item: Cleaned) -> str:
    record = item.record
    return (
        f"removed what a killed lowbuild run (pid {record.pid}, {record.engine}) left: "
        f"{len(item.containers)} container(s), {len(item.temp_dirs)} temporary dir(s), "
        f"{len(item.images)} untagged image(s)"
    )
