"""The README's table of exit codes, walked: each code it lists is what a user gets in a
case the table names (130, an interrupt, is tried for real in
integration/test_interrupts.py)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from test_graph_cli import run_lowbuild

README = Path(__file__).resolve().parents[2] / "README.md"


def table_codes() -> set[int]:
    text = README.read_text()
    table = text[text.index("Exit codes:") :].split("\n\n")[1]
    return {int(code) for code in re.findall(r"^\| (\d+) \|", table, re.MULTILINE)}


def family(root: Path, *, artifact_url: str = "", sha256: str = "0" * 64) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "lowbuild.yaml").write_text("name: codes\n")
    base = root / "contexts" / "base"
    base.mkdir(parents=True)
    artifacts = (
        f"artifacts:\n  - file: tool.txt\n    urls: ['{artifact_url}']\n    sha256: {sha256}\n"
        if artifact_url
        else ""
    )
    (base / "image.yaml").write_text("name: base\n" + artifacts)
    (base / "Dockerfile").write_text("FROM localhost/lowbuild/busybox:latest\n")
    return root


def lowbuild(*args: str, cwd: Path, env: dict[str, str] | None = None) -> int:
    done = subprocess.run(
        [sys.executable, "-m", "lowbuild", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, "LOWBUILD_CACHE": str(cwd / ".cache"), **(env or {})},
        check=False,
    )
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode


def test_the_table_lists_the_codes_this_walk_covers() -> None:
    assert table_codes() == {0, 1, 2, 3, 4, 130}


def test_0_success(tmp_path: Path) -> None:
    assert lowbuild("graph", cwd=family(tmp_path)) == 0


def test_1_a_download_that_failed(tmp_path: Path) -> None:
    root = family(tmp_path, artifact_url=(tmp_path / "gone.txt").as_uri())
    assert lowbuild("fetch", cwd=root) == 1


@pytest.mark.parametrize(
    "case", ["spec", "command line", "unknown engine", "engine from the environment", "offline"]
)
def test_2_bad_input(tmp_path: Path, case: str) -> None:
    root = family(tmp_path, artifact_url=(tmp_path / "tool.txt").as_uri())
    if case == "spec":
        (root / "contexts" / "base" / "image.yaml").write_text("name: [unclosed\n")
        assert lowbuild("graph", cwd=root) == 2
    elif case == "command line":
        assert lowbuild("build", "--jobs", "0", cwd=root) == 2
    elif case == "unknown engine":
        assert lowbuild("plan", "--engine", "podmn", cwd=root) == 2
    elif case == "engine from the environment":
        assert lowbuild("plan", cwd=root, env={"LOWBUILD_ENGINE": "dockr"}) == 2
    else:
        assert lowbuild("fetch", "--offline", cwd=root) == 2
    missing = tmp_path / "not-there.txt"
    assert lowbuild("cache", "add", str(missing), cwd=root) == 2


def test_3_no_usable_engine(tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    assert lowbuild("plan", cwd=family(tmp_path / "p"), env={"PATH": str(empty)}) == 3


def test_4_verification(tmp_path: Path) -> None:
    tool = tmp_path / "tool.txt"
    tool.write_text("the real tool\n")
    declared = hashlib.sha256(b"another tool\n").hexdigest()
    root = family(tmp_path / "p", artifact_url=tool.as_uri(), sha256=declared)
    assert lowbuild("fetch", cwd=root) == 4  # the download is not what was pinned
    assert lowbuild("cache", "add", str(tool), cwd=root) == 4  # nor is the file brought


def test_a_failure_with_json_asked_still_gives_stdout_a_json_error(tmp_path: Path) -> None:
    root = family(tmp_path)
    (root / "contexts" / "base" / "image.yaml").write_text("name: base\ntags:\n\t- x\n")

    done = run_lowbuild("plan", "--json", cwd=root)

    assert done.returncode == 2
    error = json.loads(done.stdout)["error"]
    assert error["kind"] == "spec" and error["exit_code"] == 2
    assert (error["file"], error["line"], error["column"]) == (
        str(root / "contexts" / "base" / "image.yaml"),
        3,
        1,
    )
    assert "a tab" in error["message"]
    # The same through LOWBUILD_JSON, for a command without --json of its own.
    missing = subprocess.run(
        [sys.executable, "-m", "lowbuild", "cache", "add", str(tmp_path / "absent.tgz")],
        cwd=family(tmp_path / "sound"),
        env={**os.environ, "LOWBUILD_JSON": "1", "LOWBUILD_CACHE": str(tmp_path / "c")},
        capture_output=True,
        text=True,
        check=False,
    )
    assert missing.returncode == 2
    assert json.loads(missing.stdout)["error"]["kind"] == "usage"
