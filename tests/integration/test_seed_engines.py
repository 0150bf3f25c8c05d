"""The whole seed family on the other engines: built cold and smoke-tested.

test_seed_contexts.py covers podman. Here the same seven recipes are built with
`--engine E` for each E in $LOWBUILD_SEED_ENGINES (default: docker; CI runs that
every time, and `LOWBUILD_SEED_ENGINES="docker buildx buildah"` checks all three).

So that the build is really cold (and leaves the user's own `lowbuild/*` images
alone), the family is copied under a namespace of its own: `namespace:` in
lowbuild.yaml and the `FROM lowbuild/...` lines that name family parents are
rewritten; nothing else changes. Its images are removed afterwards.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from lowbuild.engines.detect import engine_by_name
from lowbuild.spec.load import load_project

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))

from benchmarks.generate import copy_seed_family  # noqa: E402  (scripts/ is not a package)

FETCH_SCRIPT = REPO / "scripts" / "fetch_seed_sources.sh"
SEED_IMAGES = {"base", "nginx-pkg", "nginx", "jdk", "tomcat", "haproxy", "nginx-commit"}
ENGINES = os.environ.get("LOWBUILD_SEED_ENGINES", "docker").split()

pytestmark = pytest.mark.root


@pytest.mark.parametrize("engine", ENGINES)
def test_whole_seed_family_builds_cold_and_passes_on(engine: str, tmp_path: Path) -> None:
    namespace = f"lowbuild-seed-{engine}-{uuid.uuid4().hex[:8]}"
    root = tmp_path / "project"
    copy_seed_family(REPO, root, namespace=namespace)
    env = {**os.environ, "LOWBUILD_CACHE": str(tmp_path / "cache"), "COLUMNS": "200"}
    fetched = subprocess.run(
        ["bash", str(FETCH_SCRIPT), str(tmp_path / "sources")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert fetched.returncode == 0, fetched.stderr
    try:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "lowbuild",
                "build",
                "--engine",
                engine,
                "--test",
                "--json",
                "--jobs",
                "2",
            ],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
            timeout=1800,
        )
        records = {r["image"]: r for r in json.loads(result.stdout or "[]")}
        assert result.returncode == 0, result.stderr[-4000:]
        assert set(records) == SEED_IMAGES
        for name, record in records.items():
            assert record["state"] == "built", (name, record["detail"])
            assert record["test"]["passed"], (name, record["test"])
    finally:
        _remove_namespace(engine, root)


def _remove_namespace(engine: str, root: Path) -> None:
    """Remove every image the copied family tags (all its refs) from `engine`'s store."""
    store = engine_by_name(engine)
    project = load_project(root / "lowbuild.yaml")
    for spec in project.images:
        for ref in project.refs(spec):
            if store.inspect_image(ref) is not None:
                store.remove_image(ref, force=True)
