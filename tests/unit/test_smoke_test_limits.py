"""A smoke test's `timeout:` (defaults, what the spec accepts) and how a test command is
shown on one line. The limits themselves are enforced against real engines:
tests/integration/test_smoke_timeouts.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from lowbuild.errors import SpecError
from lowbuild.run.smoke import shown_command
from lowbuild.spec.load import load_project
from lowbuild.spec.model import COMMAND_TEST_TIMEOUT_S, HTTP_TEST_TIMEOUT_S, CommandTest, HttpTest


def _project(tmp_path: Path, test_block: str) -> Path:
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "lowbuild.yaml").write_text('name: t\nnamespace: t\ncontexts: ["contexts/*"]\n')
    context = tmp_path / "contexts" / "app"
    context.mkdir(parents=True)
    (context / "Dockerfile").write_text("FROM localhost/lowbuild/busybox:latest\n")
    (context / "image.yaml").write_text("name: app\ntest:\n" + test_block)
    return tmp_path / "lowbuild.yaml"


def test_tests_without_timeout_get_the_documented_defaults(tmp_path: Path) -> None:
    command = load_project(_project(tmp_path / "c", "  command: id\n")).image("app").test
    http = load_project(_project(tmp_path / "h", "  http: {port: 80}\n")).image("app").test
    assert command == CommandTest(command=("sh", "-c", "id"), timeout=COMMAND_TEST_TIMEOUT_S)
    assert http == HttpTest(port=80, timeout=HTTP_TEST_TIMEOUT_S)
    assert COMMAND_TEST_TIMEOUT_S == HTTP_TEST_TIMEOUT_S == 60.0  # what the README says


# Each: the test: block of an image.yaml (after `name: app\ntest:\n`), the line refused.
BAD_TIMEOUTS = {
    "zero": ("  command: id\n  timeout: 0\n", 4),
    "negative": ("  command: id\n  timeout: -3\n", 4),
    "infinite": ("  command: id\n  timeout: .inf\n", 4),
    "nan": ("  command: id\n  timeout: .nan\n", 4),
    "beyond_a_day": ("  http:\n    port: 80\n    timeout: 100000\n", 5),
}


@pytest.mark.parametrize("test_block, line", BAD_TIMEOUTS.values(), ids=BAD_TIMEOUTS.keys())
def test_a_timeout_that_is_no_time_limit_is_refused_with_file_and_line(
    tmp_path: Path, test_block: str, line: int
) -> None:
    spec = _project(tmp_path, test_block)
    with pytest.raises(SpecError) as refused:
        load_project(spec)
    message = str(refused.value)
    assert message.startswith(f"{spec.parent / 'contexts' / 'app' / 'image.yaml'}:{line}: ")
    assert "must be more than 0 and at most 86400 seconds" in message
    assert refused.value.exit_code == 2


@pytest.mark.parametrize(
    "command, shown",
    [
        (("sh", "-c", "id nginx"), "id nginx"),
        (("sh", "-c", "echo getting ready\n  sleep 30\n\n"), "echo getting ready ⏎ sleep 30"),
        (("cat", "/etc/my file"), "cat '/etc/my file'"),
        (("printf", "a\nb"), "printf 'a ⏎ b'"),
        (("sh", "-c", "echo " + "x" * 200), "echo " + "x" * 114 + "…"),
    ],
    ids=["script", "multi_line_script", "argv", "argv_with_line_break", "long"],
)
def test_a_test_command_is_shown_on_one_line(command: tuple[str, ...], shown: str) -> None:
    assert shown_command(command) == shown
    assert "\n" not in shown_command(command)
