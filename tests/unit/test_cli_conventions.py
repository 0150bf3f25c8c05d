"""Terminal conventions a user brings from git and podman: the project is found from any
directory inside it, and `-h` is `--help` on every command."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from filelock import FileLock
from test_graph_cli import run_lowbuild, write_family


def test_the_project_is_found_from_a_directory_inside_it(tmp_path: Path) -> None:
    write_family(tmp_path / "project")
    inside = tmp_path / "project" / "contexts" / "web"

    result = run_lowbuild("graph", "--format", "mermaid", cwd=inside)

    assert result.returncode == 0, result.stderr
    assert 'img1["web"]' in result.stdout


def test_the_nearest_project_wins_and_none_at_all_is_one_clear_line(tmp_path: Path) -> None:
    write_family(tmp_path / "outer")
    solo = tmp_path / "outer" / "nested" / "contexts" / "solo"
    solo.mkdir(parents=True)
    (solo.parents[1] / "lowbuild.yaml").write_text("name: nested\n")
    (solo / "image.yaml").write_text("name: solo\n")
    (solo / "Dockerfile").write_text("FROM localhost/lowbuild/busybox:latest\n")
    nested = run_lowbuild("graph", "--format", "mermaid", cwd=solo)
    assert nested.returncode == 0, nested.stderr
    assert "solo" in nested.stdout and "web" not in nested.stdout

    nowhere = tmp_path / "empty"
    nowhere.mkdir()
    missing = run_lowbuild("graph", cwd=nowhere)
    assert missing.returncode == 2
    assert f"no lowbuild.yaml in {nowhere.resolve()} or any directory above it" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_flags_show_as_flags_and_completion_is_offered(tmp_path: Path) -> None:
    shown = run_lowbuild("build", "--help", cwd=tmp_path, env={"COLUMNS": "160"}).stdout
    flags = [line for line in shown.splitlines() if re.search(r"--(test|push|offline) ", line)]
    assert len(flags) == 3, shown
    assert not any("<bool>" in line for line in flags), flags
    top = run_lowbuild("--help", cwd=tmp_path).stdout
    assert "--install-completion" in top


def test_dash_h_is_help_on_every_level(tmp_path: Path) -> None:
    for args in (["-h"], ["build", "-h"], ["cache", "ls", "-h"], ["bundle", "-h"]):
        result = run_lowbuild(*args, cwd=tmp_path)
        assert result.returncode == 0, (args, result.stderr)
        assert "Usage:" in result.stdout and "--help" in result.stdout, args


def test_the_state_directory_keeps_itself_out_of_git_but_published_json(tmp_path: Path) -> None:
    write_family(tmp_path)
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)

    result = run_lowbuild("clean", cwd=tmp_path)  # takes the project lock: makes .lowbuild/

    assert result.returncode == 0, result.stderr
    (tmp_path / ".lowbuild" / "logs").mkdir()
    (tmp_path / ".lowbuild" / "logs" / "x.log").write_text("a log\n")
    (tmp_path / ".lowbuild" / "published.json").write_text("{}\n")
    untracked = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\n")
    state = sorted(line[3:] for line in untracked if ".lowbuild" in line)
    assert state == [".lowbuild/published.json"]


def test_ci_sets_options_through_lowbuild_variables(tmp_path: Path) -> None:
    """What a CI sets once for every step: LOWBUILD_OFFLINE, LOWBUILD_JOBS (read as if
    given on the command line, so a bad value is refused the same way)."""
    write_family(tmp_path)
    image = tmp_path / "contexts" / "base" / "image.yaml"
    unreachable = "http://127.0.0.1:9/tool.txt"  # the discard port: nothing answers
    image.write_text(
        image.read_text() + f"artifacts:\n  - file: tool.txt\n    urls: ['{unreachable}']\n"
        f"    sha256: {'0' * 64}\n"
    )
    cache = {"LOWBUILD_CACHE": str(tmp_path / "cache")}

    def run(**extra: str) -> subprocess.CompletedProcess[str]:
        return run_lowbuild("fetch", cwd=tmp_path, env={**cache, **extra})

    assert run().returncode == 1  # tried the network
    offline = run(LOWBUILD_OFFLINE="1")
    assert offline.returncode == 2, offline.stderr  # missing offline: bad input, no socket
    assert "offline" in offline.stderr
    jobs = run_lowbuild("build", cwd=tmp_path, env={**cache, "LOWBUILD_JOBS": "0"})
    assert jobs.returncode == 2 and "--jobs" in jobs.stderr


def clean_interrupted_while_waiting(
    tmp_path: Path, env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    """`lowbuild clean` of a family in `tmp_path`, sent SIGTERM while it waits for the
    project lock this test holds: (exit code, stdout, stderr)."""
    write_family(tmp_path)
    (tmp_path / ".lowbuild").mkdir()
    with FileLock(tmp_path / ".lowbuild" / "lock"):
        waiting = subprocess.Popen(
            [sys.executable, "-m", "lowbuild", "clean"],
            cwd=tmp_path,
            env={**os.environ, **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(1.5)  # it is waiting for the lock by now
        waiting.send_signal(signal.SIGTERM)
        stdout, stderr = waiting.communicate(timeout=15)
    return waiting.returncode, stdout, stderr


def test_an_interrupted_command_says_so_and_exits_130(tmp_path: Path) -> None:
    """Any command, interrupted where it has no cleanup of its own to report (here: waiting
    for the project lock another run holds), says "interrupted" and exits 130."""
    code, _, stderr = clean_interrupted_while_waiting(tmp_path)
    assert code == 130, stderr
    assert stderr.rstrip().endswith("interrupted"), stderr
