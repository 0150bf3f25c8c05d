"""The project lock and the run records, on real files and real processes (no engine)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lowbuild.errors import ProjectBusy
from lowbuild.run.session import (
    RunRecord,
    process_start,
    project_lock,
    recorded_run,
)


def test_a_second_holder_is_refused_with_the_holders_pid(tmp_path: Path) -> None:
    with project_lock(tmp_path):
        with pytest.raises(ProjectBusy) as refused, project_lock(tmp_path, wait=False):
            pass
        assert f"pid {os.getpid()}" in str(refused.value)
        assert str(tmp_path / "lock") in str(refused.value)
    with project_lock(tmp_path, wait=False):  # released: free again
        pass
    assert not (tmp_path / "lock.owner").exists()


def test_a_running_build_is_recorded_and_the_record_goes_when_it_ends(tmp_path: Path) -> None:
    with recorded_run(tmp_path, engine="podman", fingerprints=("sha256:aa",)) as journal:
        journal.note_build("sha256:bb")
        record = RunRecord.from_json(json.loads(journal.path.read_text()))
        assert record.pid == os.getpid() and record.engine == "podman"
        assert record.fingerprints == ("sha256:aa", "sha256:bb")
        assert record.alive()
    assert list((tmp_path / "runs").iterdir()) == []


def test_a_record_of_a_finished_process_is_dead_even_if_its_pid_returns() -> None:
    child = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    pid = int(child.stdout)
    dead = RunRecord(pid=pid, started=1, run_id="x", engine="podman")
    assert not dead.alive()
    reused = RunRecord(
        pid=os.getpid(), started=(process_start(os.getpid()) or 0) + 1, run_id="x", engine="podman"
    )
    assert not reused.alive(), "same pid, another start time: another process"
