"""The staged context is the single truth of what the engine sees: on every engine, an
ignore rule never drops a file lowbuild generated (a pack, an artifact), and a file the
ignore file leaves out neither reaches the image nor makes anything rebuild. When a
packed file changes, the plan names it (from the record on the built image).

Each test writes a one-image project into tmp_path and runs the `lowbuild` command on it
with the `engine` fixture's engine, like a user would.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from live_services import BASE_IMAGE

from lowbuild.engines.base import Engine
from lowbuild.errors import EngineError


@dataclass(frozen=True)
class Project:
    root: Path
    ref: str
    engine: Engine
    env: dict[str, str]

    @property
    def context(self) -> Path:
        return self.root / "contexts" / "web"

    def lowbuild(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "lowbuild", *args, "--engine", self.engine.name],
            cwd=self.root, env=self.env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip

    def plan(self) -> dict[str, object]:
        result = self.lowbuild("plan", "--json")
        assert result.returncode == 0, result.stderr
        images: list[dict[str, object]] = json.loads(result.stdout)["images"]
        return images[0]


@pytest.fixture
def project(engine: Engine, base_image: str, tmp_path: Path) -> Iterator[Project]:
    """A project `web` whose Dockerfile ADDs the pack www.tar.gz (from site/) and COPYs
    the artifact blob.tar.gz (a file:// URL); the test adds the ignore file."""
    namespace = f"localhost/lowbuild-test-{engine.name}-{secrets.token_hex(4)}"
    root = tmp_path / "project"
    (root / "contexts" / "web" / "site").mkdir(parents=True)
    (root / "lowbuild.yaml").write_text(f"name: ignores\nnamespace: {namespace}\n")
    blob = tmp_path / "blob.tar.gz"
    blob.write_bytes(b"not really gzip, copied as is\n")
    context = root / "contexts" / "web"
    (context / "image.yaml").write_text(
        "name: web\n"
        "packs:\n  - {into: www.tar.gz, from: site}\n"
        "artifacts:\n"
        f"  - file: blob.tar.gz\n    urls: ['{blob.as_uri()}']\n"
        f"    sha256: {hashlib.sha256(blob.read_bytes()).hexdigest()}\n"
    )
    (context / "site" / "index.html").write_text("<h1>welcome</h1>\n")
    (context / "notes.txt").write_text("kept out of the image\n")
    (context / "Dockerfile").write_text(
        f"FROM {BASE_IMAGE}\n"
        "ADD www.tar.gz /srv/\n"
        "COPY blob.tar.gz /blob.tar.gz\n"
        "COPY . /ctx/\n"
        # The build itself checks what it got, so a success means the files arrived.
        "RUN grep -q welcome /srv/index.html && grep -q 'copied as is' /blob.tar.gz\n"
    )
    env = {**os.environ, "LOWBUILD_CACHE": str(tmp_path / "cache"), "COLUMNS": "200"}
    made = Project(root=root, ref=f"{namespace}/web:latest", engine=engine, env=env)
    yield made
    try:
        if engine.inspect_image(made.ref) is not None:
            engine.remove_image(made.ref, force=True)
    except EngineError:
        pass  # the test's own failure is the one worth seeing


@pytest.mark.parametrize("ignore_file", [".dockerignore", "Dockerfile.dockerignore"])
def test_tarballs_lowbuild_placed_reach_the_engine_despite_an_ignore_rule(
    project: Project, ignore_file: str
) -> None:
    # `Dockerfile.dockerignore` is what podman and BuildKit read next to the Dockerfile
    # they are given: it is only harmless if they are given the staged copy.
    (project.context / ignore_file).write_text("*.tar.gz\nnotes.txt\n")

    result = project.lowbuild("build")

    assert result.returncode == 0, result.stderr[-3000:]
    info = project.engine.inspect_image(project.ref)
    assert info is not None
    assert project.plan()["action"] == "up-to-date"


def test_containerignored_file_stays_out_and_editing_it_rebuilds_nothing(
    project: Project,
) -> None:
    (project.context / ".containerignore").write_text("notes.txt\n")
    (project.context / "Dockerfile").write_text(
        (project.context / "Dockerfile").read_text() + "RUN test ! -e /ctx/notes.txt\n"
    )
    result = project.lowbuild("build")
    assert result.returncode == 0, result.stderr[-3000:]

    (project.context / "notes.txt").write_text("edited, still not for the image\n")

    planned = project.plan()
    assert planned["action"] == "up-to-date", planned
    result = project.lowbuild("build", "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    assert [record["state"] for record in json.loads(result.stdout)] == ["up-to-date"]


def test_plan_names_the_changed_file_inside_a_pack(project: Project) -> None:
    # As in the seed family: the raw tree reaches the image only as the pack.
    (project.context / ".dockerignore").write_text("site/\n")
    result = project.lowbuild("build")
    assert result.returncode == 0, result.stderr[-3000:]

    (project.context / "site" / "index.html").write_text("<h1>welcome back</h1>\n")

    planned = project.plan()
    assert planned["action"] == "build"
    assert planned["reasons"] == ["context changed: packs site/ → site/index.html"]


def _file_in_image(project: Project, path: str) -> str:
    code, output = project.engine.run_once(image=project.ref, command=["cat", path])
    assert code == 0, output
    return output


def test_an_edit_that_keeps_a_files_size_reaches_the_image(project: Project) -> None:
    # Staged files carry one fixed mtime (reproducible layers). BuildKit's incremental
    # context sync takes a file whose size and mtime match its last copy as unchanged, so
    # buildx, given the stage as a directory, shipped the old bytes under a new fingerprint.
    (project.context / ".dockerignore").write_text("notes.txt\n")
    (project.context / "note.txt").write_text("AAAA\n")
    (project.context / "Dockerfile").write_text(
        (project.context / "Dockerfile").read_text() + "COPY note.txt /note.txt\n"
    )
    assert project.lowbuild("build").returncode == 0

    for text in ("BBBB\n", "CCCC\n"):
        (project.context / "note.txt").write_text(text)
        result = project.lowbuild("build")
        assert result.returncode == 0, result.stderr[-3000:]
        assert _file_in_image(project, "/note.txt") == text
