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
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
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
            cwd=self.root, env=self.env, capture_output=True, text=True, timeout=300,
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
    (context / "image.yaml").write_text(f"name: {name}\n" + (f"parent: {parent}\n" if parent else ""))
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
    client = "docker" if name in {"docker", "buildx"} else "podman"
    listed = subprocess.run(
        [client, "images", "--format", "{{.Repository}}:{{.Tag}}"],
        capture_output=True, text=True, check=False,
    ).stdout.split()
    ours = [ref for ref in listed if namespace in ref]
    if ours:
        subprocess.run([client, "rmi", "-f", *ours], capture_output=True, check=False)


# ---- item 10: Ctrl-C and SIGTERM stop the RUN step itself ----


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_interrupt_leaves_no_process_and_no_container_of_the_build(
    project: Project, signum: signal.Signals
) -> None:
    _write(
        project.root, project.namespace, "a", None,
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
    wait_until(
        lambda: not marker_processes(project.marker), timeout=5, what="the RUN step to go"
    )
    assert project.leftover_containers(run_ids) == set()
    assert project.leftover_temp_dirs(run_ids) == []
    assert project.run_ids() == [], "the record of a run that stopped cleanly is removed"
