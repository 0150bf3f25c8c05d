"""A commit-recipe family, end to end through the `lowbuild` command on each engine: the
committed image carries a readable record of its inputs, so when the recipe changes,
`lowbuild plan` says what changed instead of "no readable record of the previous inputs"."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from live_services import BASE_IMAGE

from lowbuild.engines.base import Engine
from lowbuild.errors import EngineError
from lowbuild.plan.fingerprint import INPUTS_LABEL

pytestmark = pytest.mark.engine

RECIPE = """\
name: hello
kind: commit
network: none
commit:
  base: {base}
  author: "tests <tests@lowbuild.invalid>"
  message: "a tiny commit recipe"
  steps:
    - run: echo hello > /hello.txt
  changes:
    - 'CMD ["cat", "/hello.txt"]'
    - 'ENV GREETING="{greeting}" LANG=C'
"""


def _write_recipe(root: Path, greeting: str) -> None:
    (root / "contexts" / "hello" / "image.yaml").write_text(
        RECIPE.format(base=BASE_IMAGE, greeting=greeting)
    )


@pytest.fixture
def commit_family(engine: Engine, tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A one-image commit family on busybox; (project root, image ref). Its image is
    removed afterwards."""
    namespace = f"localhost/lowbuild-committest-{uuid.uuid4().hex[:8]}"
    root = tmp_path / "project"
    (root / "contexts" / "hello").mkdir(parents=True)
    (root / "lowbuild.yaml").write_text(
        f'name: committest\nnamespace: {namespace}\ncontexts: ["contexts/*"]\n'
    )
    _write_recipe(root, "hello world")
    ref = f"{namespace}/hello:latest"
    yield root, ref
    try:
        if engine.inspect_image(ref) is not None:
            engine.remove_image(ref, force=True)
    except EngineError:
        pass  # the test's own failure is the one worth seeing


def _lowbuild(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LOWBUILD_CACHE": str(root.parent / "cache"), "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "lowbuild", *args],
        cwd=root, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_plan_explains_why_a_changed_commit_recipe_rebuilds(
    engine: Engine, commit_family: tuple[Path, str]
) -> None:
    root, ref = commit_family
    built = _lowbuild(root, "build", "--engine", engine.name)
    assert built.returncode == 0, built.stdout + built.stderr
    info = engine.inspect_image(ref)
    assert info is not None
    assert "GREETING=hello world" in info.env and "LANG=C" in info.env
    # The record lowbuild wrote is JSON again when read back from the image.
    assert json.loads(info.labels[INPUTS_LABEL])["recipe"]["kind"] == "commit"
    unchanged = _lowbuild(root, "plan", "--engine", engine.name, "--json")
    assert unchanged.returncode == 0, unchanged.stderr
    assert [p["action"] for p in json.loads(unchanged.stdout)["images"]] == ["up-to-date"]

    _write_recipe(root, "hello again")
    planned = _lowbuild(root, "plan", "--engine", engine.name, "--json")
    assert planned.returncode == 0, planned.stderr
    (hello,) = json.loads(planned.stdout)["images"]
    assert hello["action"] == "build"
    assert hello["reasons"] == ["commit recipe changed: changes"], hello
