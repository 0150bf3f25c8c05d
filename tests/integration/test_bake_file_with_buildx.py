"""`lowbuild export bake` for real: the file it writes builds the family with
`docker buildx bake` (wave by wave), and the images hold what lowbuild would put in
them: the verified artifact and the packed directory.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

BASE = "localhost/lowbuild/busybox:latest"
PAYLOAD = b"carried into bake by lowbuild\n"


@pytest.fixture
def namespace() -> Iterator[str]:
    if shutil.which("docker") is None:
        pytest.fail("docker is not installed: run `make provision`", pytrace=False)
    name = f"lowbuild-baketest-{uuid.uuid4().hex[:8]}"
    yield name
    listed = subprocess.run(
        ["docker", "images", "--format", "{{.Repository}}:{{.Tag}}"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    ours = [ref for ref in listed if ref.startswith(f"{name}/")]
    if ours:
        subprocess.run(["docker", "rmi", "-f", *ours], capture_output=True, check=False)


def _write_family(root: Path, namespace: str, served: Path) -> None:
    """base (FROM busybox, an artifact from a file:// URL) → app (a pack)."""
    (root / "lowbuild.yaml").write_text(
        f'name: baketest\nnamespace: {namespace}\ncontexts: ["contexts/*"]\n'
    )
    base = root / "contexts" / "base"
    base.mkdir(parents=True)
    sha256 = hashlib.sha256(PAYLOAD).hexdigest()
    (base / "image.yaml").write_text(
        "name: base\n"
        "artifacts:\n"
        f'  - file: payload.txt\n    urls: ["file://{served}"]\n    sha256: {sha256}\n'
    )
    (base / "Dockerfile").write_text(f"FROM {BASE}\nCOPY payload.txt /payload.txt\n")
    app = root / "contexts" / "app"
    (app / "site").mkdir(parents=True)
    (app / "site" / "index.html").write_text("packed for bake\n")
    (app / "image.yaml").write_text(
        "name: app\nparent: base\npacks:\n  - {into: site.tar.gz, from: site/}\n"
    )
    (app / "Dockerfile").write_text(
        f"FROM {namespace}/base:latest\nADD site.tar.gz /site/\n"
        'CMD ["sh", "-c", "cat /payload.txt /site/index.html"]\n'
    )


@pytest.mark.root
def test_exported_bake_file_builds_the_family_with_buildx_bake(
    tmp_path: Path, namespace: str
) -> None:
    served = tmp_path / "served" / "payload.txt"
    served.parent.mkdir()
    served.write_bytes(PAYLOAD)
    root = tmp_path / "project"
    root.mkdir()
    _write_family(root, namespace, served)
    env = {**os.environ, "LOWBUILD_CACHE": str(tmp_path / "cache"), "COLUMNS": "200"}
    bake = tmp_path / "docker-bake.json"

    exported = subprocess.run(
        [sys.executable, "-m", "lowbuild", "export", "bake", "-o", str(bake)],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert exported.returncode == 0, exported.stderr
    groups = json.loads(bake.read_text())["group"]
    assert groups["wave-0"]["targets"] == ["base"]
    assert groups["wave-1"]["targets"] == ["app"]
    for wave in ("wave-0", "wave-1"):
        built = subprocess.run(
            ["docker", "buildx", "bake", "-f", str(bake), wave],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert built.returncode == 0, built.stderr[-3000:]
    ran = subprocess.run(
        ["docker", "run", "--rm", f"{namespace}/app:latest"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == PAYLOAD.decode() + "packed for bake\n"
