"""`lowbuild graph` as a user runs it: the real command line on a project directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def run_lowbuild(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`lowbuild ARGS` in `cwd`, with `env` added to this environment."""
    return subprocess.run(
        [sys.executable, "-m", "lowbuild", *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        check=False,
    )


def write_family(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "lowbuild.yaml").write_text("name: seed\n")
    for name, image_yaml, dockerfile in [
        ("base", "name: base\n", "FROM localhost/lowbuild/busybox:latest\n"),
        ("web", "name: web\nparent: base\n", "FROM lowbuild/base:latest\n"),
    ]:
        directory = root / "contexts" / name
        directory.mkdir(parents=True)
        (directory / "image.yaml").write_text(image_yaml)
        (directory / "Dockerfile").write_text(dockerfile)


def test_graph_prints_family_and_external_base_as_dot(tmp_path: Path) -> None:
    write_family(tmp_path)
    result = run_lowbuild("graph", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert '"localhost/lowbuild/busybox:latest" -> "base";' in result.stdout
    assert '"base" -> "web";' in result.stdout


def test_graph_as_mermaid_from_another_directory(tmp_path: Path) -> None:
    write_family(tmp_path / "project")
    result = run_lowbuild(
        "graph",
        "-f",
        str(tmp_path / "project" / "lowbuild.yaml"),
        "--format",
        "mermaid",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "graph LR"
    assert "img0 --> img1" in result.stdout


def test_graph_reports_spec_error_with_file_and_line_and_exit_2(tmp_path: Path) -> None:
    write_family(tmp_path)
    (tmp_path / "contexts" / "web" / "image.yaml").write_text("name: web\n")
    result = run_lowbuild("graph", cwd=tmp_path)
    assert result.returncode == 2
    message = result.stderr.replace("\n", "")  # the console wraps long lines
    assert f"{tmp_path / 'contexts' / 'web' / 'image.yaml'}:1" in message
    assert "add `parent: base`" in message
    assert "Traceback" not in result.stderr
