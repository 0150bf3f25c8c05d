"""The wheel stands alone: installed into a fresh venv and run outside this repository
(no scripts/, no Makefile, no provisioned busybox in the store), doctor judges an engine
by itself, and nothing it prints sends the user to `make provision` or a script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv holding only the wheel; its dependencies come from this interpreter's
    site-packages through a .pth line (which does not load this checkout's editable
    install: only a site directory's own .pth files are run)."""
    tmp = tmp_path_factory.mktemp("wheel")
    built = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(tmp / "dist"), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    [wheel] = (tmp / "dist").glob("lowbuild-*.whl")
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    [site] = (venv / "lib").glob("python3*/site-packages")
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-deps"]
    subprocess.run([*pip, str(wheel)], check=True, timeout=300)
    return venv / "bin" / "lowbuild"


def run(lowbuild: Path, cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(lowbuild), *args],
        cwd=cwd,
        env={**os.environ, "COLUMNS": "250", **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_installed_wheel_is_the_one_running(installed: Path, tmp_path: Path) -> None:
    where = subprocess.run(
        [str(installed.parent / "python"), "-c", "import lowbuild; print(lowbuild.__file__)"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert str(ROOT) not in where and "site-packages" in where


def test_doctor_from_the_wheel_works_on_an_empty_store(installed: Path, tmp_path: Path) -> None:
    conf = tmp_path / "storage.conf"
    conf.write_text(
        f'[storage]\ndriver = "vfs"\ngraphroot = "{tmp_path}/graph"\nrunroot = "{tmp_path}/run"\n'
    )
    done = run(
        installed,
        tmp_path,
        "doctor",
        "--engine",
        "podman",
        "--json",
        CONTAINERS_STORAGE_CONF=str(conf),
    )
    assert done.returncode == 0, done.stderr
    [report] = json.loads(done.stdout)
    assert report["ok"], report["checks"]


def test_no_message_of_the_wheel_names_the_repository_s_tools(
    installed: Path, tmp_path: Path
) -> None:
    broken = run(
        installed,
        tmp_path,
        "doctor",
        "--engine",
        "docker",
        "--json",
        DOCKER_HOST=f"unix://{tmp_path}/nobody.sock",
    )
    assert broken.returncode == 3
    helps = [
        run(installed, tmp_path, *command, "--help").stdout
        for command in (["doctor"], ["build"], ["plan"], ["prune"], ["images"])
    ]
    for text in (broken.stdout, broken.stderr, *helps):
        assert "make provision" not in text and "scripts/" not in text, text


def test_the_wheel_carries_the_report_templates(installed: Path, tmp_path: Path) -> None:
    """The HTML pages are drawn from templates inside the package (package data)."""
    context = tmp_path / "contexts" / "one"
    context.mkdir(parents=True)
    (tmp_path / "lowbuild.yaml").write_text('name: alone\ncontexts: ["contexts/*"]\n')
    (context / "image.yaml").write_text("name: one\n")
    (context / "Dockerfile").write_text("FROM localhost/some/base:1\n")
    page = run(installed, tmp_path, "graph", "--format", "html")
    assert page.returncode == 0, page.stderr
    assert page.stdout.startswith("<!DOCTYPE html>") and 'data-node="one"' in page.stdout
