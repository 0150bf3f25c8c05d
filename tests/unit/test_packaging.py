"""The distribution as a user gets it: the wheel and the sdist built from this tree the
way `python -m build` builds them (with setuptools fetched into an isolated env)."""

from __future__ import annotations

import subprocess
import sys
import tarfile
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    built = subprocess.run(
        [sys.executable, "-m", "build", "--sdist", "--wheel", "--outdir", str(out), str(ROOT)],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    return out


def test_the_wheel_declares_its_licence_and_carries_the_text(dist: Path) -> None:
    [wheel] = dist.glob("lowbuild-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        [metadata] = [n for n in names if n.endswith(".dist-info/METADATA")]
        fields = Parser().parsestr(archive.read(metadata).decode())
        licence = next(n for n in names if n.endswith("licenses/LICENSE"))
        assert "Apache License" in archive.read(licence).decode()[:200]
    assert fields["License-Expression"] == "Apache-2.0"
    assert "Topic :: Software Development :: Build Tools" in fields.get_all("Classifier")
    assert "lowbuild/py.typed" in names
    assert not any(name.startswith("tests/") for name in names)


def test_the_sdist_carries_the_tests(dist: Path) -> None:
    [sdist] = dist.glob("lowbuild-*.tar.gz")
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    for wanted in (
        "LICENSE",
        "README.md",
        "tests/unit/test_packaging.py",
        "tests/integration/conftest.py",
        "tests/integration/live_services.py",
    ):
        assert wanted in names, wanted
    assert not any("__pycache__" in name for name in names)
