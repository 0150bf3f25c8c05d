"""A smoke test's `timeout:` holds, on every engine: a command that never ends, a server
that never answers and an engine CLI that hangs each fail as "timed out after N s"
close to N, and leave no container behind.

The image under test is the busybox base with a label of this module's own, so the
containers it spawns are found by that label (containers inherit their image's labels),
whatever other containers the machine runs at the same time. Its default command is a
server that accepts a connection on 8080 and never says a word (and one on 8081 that
answers at once).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from containers import containers
from json_outputs import conforming
from live_services import BASE_IMAGE

from lowbuild.engines.base import BuildRequest, Engine
from lowbuild.errors import SmokeTestFailed
from lowbuild.run.smoke import run_smoke_test
from lowbuild.spec.model import CommandTest, HttpTest

MARKER = "lowbuild.test.smoke-timeouts"

# Well over a removal and a log read (under a second each), well under what the old code
# took: 30 s for `sleep 30`, 5 s more for a silent server's first request.
SLACK_S = 3.0


@dataclass(frozen=True)
class Silent:
    """The marked image: `ref`, and `label` ("key=value") to find its containers by."""

    ref: str
    label: str


@pytest.fixture(scope="module")
def silent(engine: Engine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Silent]:
    value = secrets.token_hex(6)
    context = tmp_path_factory.mktemp("silent")
    # 8080, `sleep | nc`: nc's stdin never ends, so it holds each connection open,
    # reading, and never answers; the loop listens again after a client gives up.
    # 8081: busybox httpd, which answers at once.
    (context / "Dockerfile").write_text(
        f"FROM {BASE_IMAGE}\n"
        f"LABEL {MARKER}={value}\n"
        "RUN mkdir /www && echo served-in-time > /www/index.html\n"
        'CMD ["sh", "-c", "httpd -p 8081 -h /www; '
        'while :; do sleep 3600 | nc -l -p 8080; done"]\n'
    )
    ref = f"localhost/lowbuild-test/{engine.name}-silent-{value}:1"
    engine.build(BuildRequest(context=context, tags=[ref]))
    yield Silent(ref=ref, label=f"{MARKER}={value}")
    engine.remove_image(ref, force=True)


def _containers_left(engine: Engine, silent: Silent) -> list[str]:
    return sorted(containers(engine, label=silent.label))


def test_tests_that_finish_in_time_pass_as_before(engine: Engine, silent: Silent) -> None:
    http = run_smoke_test(
        engine, image=silent.ref, test=HttpTest(port=8081, expect="served-in-time", timeout=20)
    )
    command = run_smoke_test(
        engine,
        image=silent.ref,
        test=CommandTest(command=("sh", "-c", "echo one\necho two\n"), expect="two", timeout=20),
    )
    assert http.summary == "GET / → 200, body has 'served-in-time'"
    assert command.summary == "echo one ⏎ echo two → exit 0, output has 'two'"
    assert _containers_left(engine, silent) == []


def test_command_that_outlives_its_timeout_fails_in_time_and_leaves_no_container(
    engine: Engine, silent: Silent
) -> None:
    started = time.monotonic()
    with pytest.raises(SmokeTestFailed) as failed:
        run_smoke_test(
            engine, image=silent.ref, test=CommandTest(command=("sh", "-c", "sleep 30"), timeout=3)
        )
    took = time.monotonic() - started
    assert "smoke command `sleep 30` timed out after 3 s" in str(failed.value)
    assert took < 3 + SLACK_S, f"took {took:.1f} s"
    assert _containers_left(engine, silent) == []


def test_http_test_whose_server_never_answers_times_out_at_its_timeout(
    engine: Engine, silent: Silent
) -> None:
    started = time.monotonic()
    with pytest.raises(SmokeTestFailed) as failed:
        run_smoke_test(engine, image=silent.ref, test=HttpTest(port=8080, timeout=2))
    took = time.monotonic() - started
    assert "GET / on port 8080 timed out after 2 s waiting for status 200" in str(failed.value)
    assert took < 2 + SLACK_S, f"took {took:.1f} s"
    assert _containers_left(engine, silent) == []


def _descendants(pid: int) -> Iterator[tuple[int, list[str]]]:
    """(pid, argv) of every live process below `pid`, read from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    pending = list(children.get(pid, ()))
    while pending:
        child = pending.pop()
        pending += children.get(child, ())
        try:
            argv = (Path("/proc") / str(child) / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        yield child, [arg.decode(errors="replace") for arg in argv if arg]


def _freeze_the_engine_wait(stopped: list[int], done: threading.Event) -> None:
    """SIGSTOP the engine CLI's `wait` for our container as soon as it runs: a CLI that
    hangs. A stopped process ignores everything but SIGKILL. Resumed after 20 s as a
    safety net, so code that never kills it fails this test instead of hanging it."""
    give_up = time.monotonic() + 20
    while not done.is_set() and time.monotonic() < give_up:
        if not stopped:
            for pid, argv in _descendants(os.getpid()):
                if "wait" in argv and any(arg.startswith("lowbuild-") for arg in argv):
                    os.kill(pid, signal.SIGSTOP)
                    stopped.append(pid)
                    break
        time.sleep(0.02)
    for pid in stopped:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)


def test_engine_cli_that_hangs_is_killed_at_the_timeout(engine: Engine, silent: Silent) -> None:
    stopped: list[int] = []
    done = threading.Event()
    freezer = threading.Thread(target=_freeze_the_engine_wait, args=(stopped, done))
    freezer.start()
    started = time.monotonic()
    try:
        # The command itself ends after 1 s; only the frozen engine CLI keeps it waiting.
        with pytest.raises(SmokeTestFailed) as failed:
            run_smoke_test(
                engine, image=silent.ref, test=CommandTest(command=("sleep", "1"), timeout=3)
            )
        took = time.monotonic() - started
    finally:
        done.set()
        freezer.join()
    assert stopped, "the engine's `wait` command was never seen"
    assert "timed out after 3 s" in str(failed.value)
    assert took < 3 + SLACK_S, f"took {took:.1f} s"
    assert not Path(f"/proc/{stopped[0]}").exists() or _is_zombie(stopped[0])
    assert _containers_left(engine, silent) == []


def _is_zombie(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_build_test_and_lowbuild_test_report_the_timeout_and_exit_1(tmp_path: Path) -> None:
    """Through the `lowbuild` command on podman: a multi-line test command that hangs."""
    value = secrets.token_hex(6)
    root = tmp_path / "project"
    context = root / "contexts" / "sleepy"
    context.mkdir(parents=True)
    (root / "lowbuild.yaml").write_text(
        f"name: sleepy\nnamespace: lowbuild-test-sleepy-{value}\nengine: podman\n"
        'contexts: ["contexts/*"]\n'
    )
    (context / "image.yaml").write_text(
        "name: sleepy\ntest:\n  command: |\n    echo getting ready\n    sleep 30\n  timeout: 3\n"
    )
    (context / "Dockerfile").write_text(f"FROM {BASE_IMAGE}\nLABEL {MARKER}={value}\n")
    env = {**os.environ, "LOWBUILD_CACHE": str(tmp_path / "cache"), "COLUMNS": "200"}

    def lowbuild(*args: str) -> tuple[subprocess.CompletedProcess[str], float]:
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "lowbuild", *args],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        return done, time.monotonic() - started

    shown = "smoke command `echo getting ready ⏎ sleep 30` timed out after 3 s"
    try:
        built, took = lowbuild("build", "--test", "--json")
        assert built.returncode == 1, built.stderr
        assert took < 25, f"took {took:.1f} s"
        # The progress line: the whole command on one line, then the verdict.
        assert f"✗ test sleepy: lowbuild-test-sleepy-{value}/sleepy:latest: {shown}" in (
            built.stderr
        )
        (record,) = conforming("build", built.stdout)
        assert record["state"] == "built"
        assert record["test"]["passed"] is False
        assert shown in record["test"]["detail"]
        assert "getting ready" in record["test"]["detail"]  # the output so far
        assert shown in Path(record["log"]).read_text()

        tested, took = lowbuild("test", "sleepy")
        assert tested.returncode == 1, tested.stderr
        assert took < 15, f"took {took:.1f} s"
        assert shown in tested.stdout  # the table's detail
        log = root / ".lowbuild" / "logs" / "latest" / "sleepy.log"
        assert shown in log.read_text()
        tested, _ = lowbuild("test", "sleepy", "--json")
        assert tested.returncode == 1, tested.stderr
        [result] = conforming("test", tested.stdout)
        assert result["passed"] is False and shown in result["detail"]
    finally:
        left = subprocess.run(
            ["podman", "ps", "--all", "--quiet", "--filter", f"label={MARKER}={value}"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.split()
        subprocess.run(
            ["podman", "rmi", "--force", f"lowbuild-test-sleepy-{value}/sleepy:latest"],
            capture_output=True,
            check=False,
        )
    assert left == []
