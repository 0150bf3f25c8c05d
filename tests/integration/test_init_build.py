"""A hand-made tree imported with `lowbuild init`, then built and smoke-tested by lowbuild on
real podman: the company base on the local Debian image (fixed uid, as the tutorial's),
a web image on it serving a page with busybox httpd, their own build scripts' names kept.

The busybox binary is the host's static one, dropped beside the Dockerfile as the
tutorial drops tarballs: init pins it as an artifact and admits it to the cache.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from lowbuild.engines.detect import engine_by_name
from lowbuild.errors import EngineError

pytestmark = pytest.mark.root

DEBIAN = "localhost/lowbuild/bookworm:latest"


def lowbuild(root: Path, cache: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lowbuild", *args],
        cwd=root,
        env={**os.environ, "LOWBUILD_CACHE": str(cache), "COLUMNS": "250"},
        capture_output=True,
        text=True,
        timeout=900,
    )


def site_archive(path: Path) -> None:
    data = b"<h1>imported by lowbuild init</h1>\n"
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo("index.html")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))


def test_an_imported_tree_builds_in_order_and_its_suggested_tests_pass(tmp_path: Path) -> None:
    busybox = shutil.which("busybox")
    if busybox is None or engine_by_name("podman").inspect_image(DEBIAN) is None:
        pytest.fail("needs busybox-static and the Debian base: run scripts/provision.sh")
    token = tmp_path.name.lower().replace("_", "-")[-12:]
    root, cache = tmp_path / "opt-dockerfile", tmp_path / "cache"
    base, web = root / "system" / "company", root / "web" / "site"
    base.mkdir(parents=True)
    web.mkdir(parents=True)
    (base / "Dockerfile").write_text(f"FROM {DEBIAN}\nMAINTAINER ops\nRUN useradd -u 2000 nginx\n")
    (base / "docker_build.sh").write_text(f"docker build -t company-{token}:base .\n")
    shutil.copy2(busybox, web / "busybox")
    site_archive(web / "site.tar.gz")
    (web / "Dockerfile").write_text(
        f"FROM company-{token}:base\nCOPY busybox /usr/local/bin/busybox\n"
        "ADD site.tar.gz /www/\nEXPOSE 8080\n"
        'CMD ["/usr/local/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/www"]\n'
    )
    (web / "docker-build.sh").write_text(f"TAG=v1\ndocker build -t site-{token}:${{TAG}} .\n")
    engine = engine_by_name("podman")
    try:
        done = lowbuild(root, cache, "init", "--tests", "--engine", "podman", "--json")
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout)
        pinned = {a["file"]: a["urls"] for i in report["images"] for a in i["artifacts"]}
        assert pinned == {"busybox": [], "site.tar.gz": []}  # both cache-only: no URL around
        assert "localhost/lowbuild/bookworm:latest" in (root / "lowbuild.yaml").read_text()

        built = lowbuild(root, cache, "build", "--test", "--engine", "podman", "--json")
        assert built.returncode == 0, built.stderr[-4000:]
        records = {r["image"]: r for r in json.loads(built.stdout)}
        assert set(records) == {f"company-{token}", f"site-{token}"}
        site, company = records[f"site-{token}"], records[f"company-{token}"]
        assert company["state"] == site["state"] == "built"
        assert "test" not in company  # no EXPOSE, no suggested test
        assert site["test"]["passed"], site["test"]  # the HTTP probe init suggested, on 8080
        assert company["ended"] <= site["started"]  # in order: the base first
        # The tree's own names still work, as its scripts made them.
        for ref in (f"company-{token}:base", f"site-{token}:v1"):
            assert engine.inspect_image(ref) is not None, ref
        uid = engine.run_once(image=f"company-{token}:base", command=["id", "-u", "nginx"])
        assert uid == (0, "2000\n") or uid[1].strip() == "2000"
    finally:
        for name in (f"site-{token}", f"company-{token}"):
            for image in engine.labelled_images(f"org.opencontainers.image.title={name}"):
                for ref in (*image.tags, image.id):
                    with contextlib.suppress(EngineError):  # gone with an earlier tag
                        engine.remove_image(ref, force=True)
