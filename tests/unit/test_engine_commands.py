"""The one runner of engine commands: failures carry what the command said, lines stream
in order. Uses /bin/sh as the command: a real process, no engine needed."""

from __future__ import annotations

import pytest

from lowbuild.engines.commands import run_command
from lowbuild.errors import EngineError, EngineUnavailable


def test_failure_carries_command_exit_code_and_stderr() -> None:
    with pytest.raises(EngineError) as raised:
        run_command(["sh", "-c", "echo progress; echo 'step 3 broke' >&2; exit 7"])
    error = raised.value
    assert error.returncode == 7
    assert error.command[:2] == ["sh", "-c"]
    assert "step 3 broke" in error.stderr
    assert "exit 7" in str(error)


def test_streamed_lines_arrive_in_order_and_a_failure_keeps_all_output() -> None:
    lines: list[str] = []
    with pytest.raises(EngineError) as raised:
        run_command(["sh", "-c", "echo one; echo two >&2; echo three; exit 2"], log=lines.append)
    assert lines == ["one", "two", "three"]
    assert all(word in raised.value.stderr for word in ("one", "two", "three"))


def test_extra_environment_reaches_the_command_only() -> None:
    out = run_command(["sh", "-c", "echo $DOCKER_BUILDKIT"], env={"DOCKER_BUILDKIT": "0"})
    assert out.stdout.strip() == "0"


def test_missing_binary_is_an_unavailable_engine() -> None:
    with pytest.raises(EngineUnavailable, match="lowbuild doctor"):
        run_command(["lowbuild-no-such-engine", "version"])


def test_a_command_that_hangs_is_stopped_at_the_timeout() -> None:
    with pytest.raises(EngineError) as raised:
        run_command(["sleep", "5"], timeout=0.2)
    assert raised.value.returncode == -1


def test_the_commands_of_one_endpoint_are_stopped_and_no_other() -> None:
    """stop_commands_of: what an endpoint given up has running (a quick command and a
    streamed one, under its guard) fails at once; another endpoint's goes on."""
    import threading
    import time

    from lowbuild.engines.commands import stop_commands_of

    results: dict[str, object] = {}

    def run(key: str, argv: list[str], **kw: object) -> None:
        try:
            results[key] = run_command(argv, **kw)  # type: ignore[arg-type]
        except EngineError as exc:
            results[key] = exc

    # `sh -c CMD NAME`: NAME stands for the endpoint's words in the command line.
    lost = ["sh", "-c", "exec sleep 30", "endpoint-lost"]  # one process, as an engine client
    kept = ["sh", "-c", "sleep 2", "endpoint-kept"]
    threads = [
        threading.Thread(target=run, args=("quick", lost)),
        threading.Thread(target=run, args=("streamed", lost), kwargs={"merge_output": True}),
        threading.Thread(target=run, args=("other", kept)),
    ]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    time.sleep(0.5)
    assert stop_commands_of(["exec sleep 30", "endpoint-lost"], grace=1.0) == 2
    for thread in threads:
        thread.join(timeout=10)
    assert isinstance(results["quick"], EngineError)
    assert isinstance(results["streamed"], EngineError)
    assert not isinstance(results["other"], EngineError)  # ran its 2 s to the end
    assert time.monotonic() - started < 5
