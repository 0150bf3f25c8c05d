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

import hashlib
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator

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
        _check_sboms(engine, root)
    finally:
        _remove_namespace(engine, root)


def _check_sboms(engine: str, root: Path) -> None:
    """Each image's SBOM: valid CycloneDX 1.6, the one its label names, listing each
    artifact with its pinned digest and the Debian packages really installed."""
    store = engine_by_name(engine)
    project = load_project(root / "lowbuild.yaml")
    validator = JsonStrictValidator(SchemaVersion.V1_6)
    packages: dict[str, set[str]] = {}
    for spec in project.images:
        data = (root / ".lowbuild" / "sbom" / f"{spec.name}.cyclonedx.json").read_bytes()
        assert validator.validate_str(data.decode()) is None, spec.name
        info = store.inspect_image(project.ref(spec.name))
        assert info is not None
        assert info.labels["lowbuild.sbom"] == "sha256:" + hashlib.sha256(data).hexdigest()
        found = json.loads(data)["components"]
        hashes = {c["bom-ref"]: c.get("hashes") for c in found}
        for artifact in spec.artifacts:
            expected = [{"alg": "SHA-256", "content": artifact.sha256}]
            assert hashes[f"artifact:{artifact.file}"] == expected, (spec.name, artifact.file)
        packages[spec.name] = {c["name"] for c in found if c["type"] == "library"}
        assert len(packages[spec.name]) > 50, spec.name  # all Debian-based
    assert "openssl" in packages["haproxy"] and "libssl3" in packages["haproxy"]
    assert "nginx" in packages["nginx-pkg"]  # installed from Debian's packages


def _remove_namespace(engine: str, root: Path) -> None:
    """Remove every image the copied family tags (all its refs) from `engine`'s store."""
    store = engine_by_name(engine)
    project = load_project(root / "lowbuild.yaml")
    for spec in project.images:
        for ref in project.refs(spec):
            if store.inspect_image(ref) is not None:
                store.remove_image(ref, force=True)
