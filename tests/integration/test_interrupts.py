"""Ctrl-C, SIGTERM, SIGKILL and a second run at once: a build either finishes or leaves
nothing behind, and two runs never build one project at the same time.

Each test writes a tiny busybox family into tmp_path and runs the real `lowbuild` command
as a subprocess against a real engine. A RUN step's command line holds a marker unique to
the test, so "no process of the build remains" is checked by scanning /proc for it, on the
host, whichever process tree the engine put the step in.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest
from cli_runs import remove_namespace_images
from conftest import requested_engines
from live_services import BASE_IMAGE

from lowbuild.engines.detect import engine_by_name


def marker_processes(marker: str) -> list[int]:
    """pids of the processes whose command line holds `marker`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker.encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def wait_until(predicate: object, *, timeout: float, what: str) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.1)


@dataclass
class Project:
    root: Path
    namespace: str
    engine: str
    marker: str
    env: dict[str, str]

    def start(self, *args: str) -> subprocess.Popen[str]:
        # A session of its own, like a terminal's foreground job: SIGINT goes to the group.
        return subprocess.Popen(
            [sys.executable, "-m", "lowbuild", *args],
            cwd=self.root,
            env=self.env,
            start_new_session=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def lowbuild(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "lowbuild", *args],
            cwd=self.root,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
        )

    def build(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.lowbuild("build", "--engine", self.engine, "--json", *args)

    def run_ids(self) -> list[str]:
        runs = self.root / ".lowbuild" / "runs"
        return [json.loads(p.read_text())["run_id"] for p in runs.glob("*.json")]

    def leftover_containers(self, run_ids: list[str]) -> set[str]:
        engine = engine_by_name(self.engine)
        return {c for run_id in run_ids for c in engine.run_containers(run_id)}

    def leftover_temp_dirs(self, run_ids: list[str]) -> list[Path]:
        tmp = Path(tempfile.gettempdir())
        return [p for run_id in run_ids for p in tmp.glob(f"lowbuild-run-{run_id}-*")]


def _write(root: Path, namespace: str, name: str, parent: str | None, dockerfile_tail: str) -> None:
    context = root / "contexts" / name
    context.mkdir(parents=True)
    (context / "image.yaml").write_text(
        f"name: {name}\n" + (f"parent: {parent}\n" if parent else "")
    )
    base = f"{namespace}/{parent}:latest" if parent else BASE_IMAGE
    (context / "Dockerfile").write_text(f"FROM {base}\n{dockerfile_tail}")


@pytest.fixture(params=requested_engines())
def project(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Project]:
    name: str = request.param
    namespace = f"lowbuild-inttest-{uuid.uuid4().hex[:8]}"
    marker = f"lowbuild-marker-{uuid.uuid4().hex[:12]}"
    root = tmp_path / "project"
    root.mkdir()
    (root / "lowbuild.yaml").write_text(
        f'name: inttest\nnamespace: {namespace}\ncontexts: ["contexts/*"]\n'
    )
    env = {**os.environ, "LOWBUILD_CACHE": str(tmp_path / "cache"), "COLUMNS": "200"}
    yield Project(root=root, namespace=namespace, engine=name, marker=marker, env=env)
    remove_namespace_images("docker" if name in {"docker", "buildx"} else "podman", namespace)


# ---- item 10: Ctrl-C and SIGTERM stop the RUN step itself ----


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_interrupt_leaves_no_process_and_no_container_of_the_build(
    project: Project, signum: signal.Signals
) -> None:
    _write(
        project.root,
        project.namespace,
        "a",
        None,
        f"RUN echo first > /first\nRUN sh -c 'sleep 300; echo {project.marker}'\n",
    )
    process = project.start("build", "--engine", project.engine)
    try:
        wait_until(lambda: marker_processes(project.marker), timeout=120, what="the RUN step")
        run_ids = project.run_ids()
        assert len(run_ids) == 1, "a running build records itself in .lowbuild/runs"
        if signum == signal.SIGINT:
            os.killpg(process.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
        else:
            process.send_signal(signal.SIGTERM)  # what a CI runner cancelling a job does
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 130, stderr
    assert "interrupted" in stderr
    # dockerd stops a cancelled build's step on its own schedule: allow it a few seconds.
    wait_until(lambda: not marker_processes(project.marker), timeout=5, what="the RUN step to go")
    assert project.leftover_containers(run_ids) == set()
    assert project.leftover_temp_dirs(run_ids) == []
    assert project.run_ids() == [], "the record of a run that stopped cleanly is removed"


# ---- item 11: SIGKILL of lowbuild leaves nothing that the next run does not remove ----

KILL_TRIALS = int(os.environ.get("LOWBUILD_KILL_TRIALS", "3"))
"""Kills at random moments per engine; scripts/sigkill_trials.sh runs 10 (or more)."""


def _client(engine: str) -> str:
    return "docker" if engine in {"docker", "buildx"} else "podman"


def _timestamp(raw: str) -> float:
    # RFC 3339 with up to nanoseconds: keep microseconds for fromisoformat.
    trimmed = re.sub(r"(\.\d{6})\d*", r"\1", raw).replace("Z", "+00:00")
    return datetime.fromisoformat(trimmed).timestamp()


def _dangling_images_of_killed_runs(
    project: Project, windows: list[tuple[float, float]]
) -> list[str]:
    """Untagged images made while a killed run was running whose history holds this test's
    marker (made by its builds). (Rebuilding a tag leaves the image it replaced untagged,
    as every engine does: that is not a leftover of a kill.)"""
    client = _client(project.engine)
    listed = subprocess.run(
        [client, "images", "--filter", "dangling=true", "--quiet", "--no-trunc"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    if not listed:
        return []
    # One inspect for all (the machine's other builds leave many): their creation times.
    inspected = subprocess.run(
        [
            client,
            "image",
            "inspect",
            "--format",
            "{{.Id}} {{json .Created}}",
            *dict.fromkeys(listed),
        ],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    ours = []
    for line in inspected.splitlines():
        image, _, created = line.partition(" ")
        when = _timestamp(created.strip().strip('"'))
        if not any(start <= when <= end + 1 for start, end in windows):
            continue
        history = subprocess.run(
            [client, "history", "--no-trunc", "--format", "{{.CreatedBy}}", image],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        if project.marker in history:
            ours.append(image)
    return ours


def _write_kill_family(project: Project, stamp: str) -> None:
    """a → b, each a few short RUN steps after a COPY of `stamp` (changed per trial, so
    each trial builds both again)."""
    for name, parent in (("a", None), ("b", "a")):
        context = project.root / "contexts" / name
        if not context.exists():
            steps = "".join(f"RUN echo {project.marker}-{name}{i} > /{name}{i}\n" for i in range(2))
            _write(project.root, project.namespace, name, parent, f"COPY stamp /stamp\n{steps}")
        (context / "stamp").write_text(stamp + "\n")


def _build_processes(project: Project) -> list[int]:
    """Processes of this project's builds: engine commands name the image tags (which hold
    the namespace), RUN steps hold the marker."""
    return marker_processes(project.marker) + marker_processes(project.namespace)


def test_sigkill_at_random_moments_leaves_nothing_the_next_run_does_not_remove(
    project: Project,
) -> None:
    rng = random.Random()
    stamp = uuid.uuid4().hex
    _write_kill_family(project, stamp)
    # How long a build of the family takes here: kills are spread over that time.
    started = time.monotonic()
    first = project.build()
    assert first.returncode == 0, first.stderr
    duration = time.monotonic() - started
    killed_runs: list[str] = []
    windows: list[tuple[float, float]] = []
    for trial in range(KILL_TRIALS):
        _write_kill_family(project, f"{stamp}-{trial}")
        started = time.time()
        process = project.start("build", "--engine", project.engine)
        delay = rng.uniform(0.3, duration)
        if trial == KILL_TRIALS - 1 and not killed_runs:
            # Every kill so far came before the run recorded itself (a fast engine's
            # builds leave little time after that): this one waits for the record, so
            # the test always kills at least one run the next one must clean up after.
            wait_until(lambda: project.run_ids(), timeout=60, what="the run to record itself")
            delay = rng.uniform(0.0, duration / 2)
        time.sleep(delay)
        run_ids = project.run_ids()
        process.kill()  # SIGKILL lowbuild alone, as the OOM killer or `kill -9` would
        process.communicate(timeout=30)
        killed_runs += run_ids
        windows.append((started, time.time()))
        # The engine commands die with lowbuild (the guard's PDEATHSIG), before any next run.
        wait_until(
            lambda: not _build_processes(project),
            timeout=20,
            what=f"the build processes of the run killed after {delay:.1f} s to go",
        )
        after = project.build()
        assert after.returncode == 0, f"trial {trial} (killed after {delay:.1f} s): {after.stderr}"
        assert project.leftover_containers(killed_runs) == set(), f"trial {trial}, {delay:.1f} s"
        assert project.leftover_temp_dirs(killed_runs) == [], f"trial {trial}, {delay:.1f} s"
        assert project.run_ids() == []
        stage = project.root / ".lowbuild" / "stage"
        assert list(stage.glob("*.tmp")) == [], f"trial {trial}, {delay:.1f} s"
        # This trial's window only: a later trial's rebuild untags what an earlier one made.
        dangling = _dangling_images_of_killed_runs(project, windows[-1:])
        assert dangling == [], f"trial {trial}, {delay:.1f} s: {after.stderr[-1500:]}"
    again = project.build()
    assert again.returncode == 0, again.stderr
    states = {record["image"]: record["state"] for record in json.loads(again.stdout)}
    assert states == {"a": "up-to-date", "b": "up-to-date"}
    assert killed_runs, "no trial killed a run that had recorded itself: the test proved nothing"


def test_sigkill_during_a_run_step_stops_the_step_and_the_next_run_cleans_up(
    project: Project,
) -> None:
    _write(
        project.root,
        project.namespace,
        "a",
        None,
        f"RUN echo first > /first\nRUN sh -c 'sleep 300; echo {project.marker}'\n",
    )
    process = project.start("build", "--engine", project.engine)
    try:
        wait_until(lambda: marker_processes(project.marker), timeout=120, what="the RUN step")
        run_ids = project.run_ids()
        process.kill()
        process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert len(run_ids) == 1
    # The engine command dies with lowbuild, RUN step included, without waiting for a next run.
    wait_until(
        lambda: not _build_processes(project), timeout=20, what="the killed run's build to stop"
    )
    cleaned = project.lowbuild("clean")
    assert cleaned.returncode == 0, cleaned.stderr
    assert f"pid {process.pid}" in cleaned.stderr
    assert project.leftover_containers(run_ids) == set()
    assert project.leftover_temp_dirs(run_ids) == []
    assert project.run_ids() == []


def test_clean_removes_the_containers_of_a_killed_run(project: Project) -> None:
    # A commit recipe's working container is started by lowbuild itself (not a build):
    # it outlives a SIGKILL of lowbuild, with the step still running in it.
    context = project.root / "contexts" / "manual"
    context.mkdir(parents=True)
    (context / "image.yaml").write_text(
        "name: manual\nkind: commit\ncommit:\n"
        f"  base: {BASE_IMAGE}\n"
        f"  steps:\n    - run: sh -c 'sleep 300; echo {project.marker}'\n"
    )
    process = project.start("build", "--engine", project.engine)
    try:
        wait_until(lambda: marker_processes(project.marker), timeout=60, what="the step")
        run_ids = project.run_ids()
        process.kill()
        process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert len(run_ids) == 1
    left = project.leftover_containers(run_ids)
    assert left, "the killed run's working container is there to be cleaned"
    cleaned = project.lowbuild("clean")
    assert cleaned.returncode == 0, cleaned.stderr
    assert f"{len(left)} container(s)" in cleaned.stderr
    assert project.leftover_containers(run_ids) == set()
    wait_until(lambda: not marker_processes(project.marker), timeout=10, what="the step to go")
    assert project.run_ids() == []
    nothing = project.lowbuild("clean")
    assert nothing.returncode == 0 and "nothing to clean" in nothing.stderr


# ---- item 12: one run at a time per project ----


def test_second_build_waits_for_the_first_and_names_its_pid(project: Project) -> None:
    _write(
        project.root,
        project.namespace,
        "a",
        None,
        f"RUN sh -c 'sleep 4; echo {project.marker}' > /a\n",
    )
    _write(project.root, project.namespace, "b", "a", "RUN echo b > /b\n")
    first = project.start("build", "--engine", project.engine, "--json")
    wait_until(lambda: marker_processes(project.marker), timeout=60, what="the first build")
    refused = project.lowbuild("build", "--engine", project.engine, "--no-wait")
    assert refused.returncode == 1, refused.stderr
    assert f"pid {first.pid}" in refused.stderr and "--no-wait" in refused.stderr
    assert "Traceback" not in refused.stderr
    # export bake stages contexts into the same .lowbuild: it takes the same lock.
    bake = project.lowbuild("export", "bake", "--no-wait", "-o", str(project.root / "bake.json"))
    assert bake.returncode == 1 and f"pid {first.pid}" in bake.stderr, bake.stderr
    second = project.start("build", "--engine", project.engine, "--json")
    first_out, first_err = first.communicate(timeout=120)
    second_out, second_err = second.communicate(timeout=120)
    assert first.returncode == 0, first_err
    assert second.returncode == 0, second_err
    assert f"waiting for another lowbuild run (pid {first.pid})" in second_err
    # The second ran after the first had finished: it found everything built.
    assert {r["state"] for r in json.loads(first_out)} == {"built"}
    assert {r["state"] for r in json.loads(second_out)} == {"up-to-date"}
