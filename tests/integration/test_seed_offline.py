"""The air gap with the real seed family: source-compiled nginx and haproxy, built
and smoke-tested on a host that has no network at all.

Connected side (this host's podman): the upstream tarballs are fetched, the company
base (with its compilers, so nothing needs a package manager offline) is built, and
one bundle is exported with the artifacts, the external base and the built base.

Air-gapped side: a network namespace with loopback only (`unshare --net`), a fresh
podman storage (CONTAINERS_STORAGE_CONF) and an empty lowbuild cache. The bundle is
imported there and `build --offline --test nginx haproxy` must compile both from the
bundled tarballs and pass their HTTP smoke tests. Any attempt to reach the network,
by lowbuild or by the engine, fails the build: there is no route anywhere.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FETCH_SCRIPT = REPO / "scripts" / "fetch_seed_sources.sh"
NGINX_SHA = "9ebb333a9e82b952acd3e2b4aeb1d4ff6406f72491bab6cd9fe69f0dea737f31"
HAPROXY_SHA = "58f9edb26bf3288f4b502658399281cc5d6478468bd178eafe579c8f41895854"

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(
        os.geteuid() != 0 or shutil.which("unshare") is None, reason="needs root and unshare(1)"
    ),
]

# Loopback is down in a new network namespace; the smoke tests' HTTP probes reach the
# published ports through it. Nothing else is there: no interface, no route, no DNS.
NO_NETWORK = ["unshare", "--net", "sh", "-c", 'ip link set lo up && exec "$@"', "no-network"]


@dataclass(frozen=True)
class Side:
    """One host's view: a project copy, a cache, and (air-gapped) its own storage."""

    root: Path
    env: dict[str, str]
    offline: bool = False

    def lowbuild(self, *args: str, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
        prefix = NO_NETWORK if self.offline else []
        return subprocess.run(
            [*prefix, sys.executable, "-m", "lowbuild", *args],
            cwd=self.root,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def images(self) -> set[str]:
        listed = subprocess.run(
            ["podman", "images", "--format", "{{.Repository}}:{{.Tag}}"],
            env=self.env,
            capture_output=True,
            text=True,
            check=True,
        )
        return set(listed.stdout.split())


def _project_copy(where: Path) -> Path:
    where.mkdir(parents=True)
    shutil.copy2(REPO / "lowbuild.yaml", where / "lowbuild.yaml")
    shutil.copytree(REPO / "contexts", where / "contexts", symlinks=True)
    return where


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The connected side: sources fetched, base built, bundle exported."""
    if shutil.which("podman") is None:
        pytest.fail("podman is not installed: run `make provision`", pytrace=False)
    top = tmp_path_factory.mktemp("connected")
    env = {**os.environ, "LOWBUILD_CACHE": str(top / "cache"), "COLUMNS": "200"}
    connected = Side(root=_project_copy(top / "project"), env=env)
    fetched = subprocess.run(
        ["bash", str(FETCH_SCRIPT), str(top / "sources")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert fetched.returncode == 0, fetched.stderr
    built = connected.lowbuild("build", "base", "--engine", "podman")
    assert built.returncode == 0, built.stderr[-4000:]
    out = top / "seed.bundle"
    exported = connected.lowbuild(
        "bundle",
        "export",
        str(out),
        "nginx",
        "haproxy",
        "--with-built",
        "base",
        "--engine",
        "podman",
    )
    assert exported.returncode == 0, exported.stderr
    return out


@pytest.fixture
def air_gapped(tmp_path: Path) -> Iterator[Side]:
    """A project copy, an empty cache and an empty podman storage, with no network."""
    storage = tmp_path / "storage"
    conf = tmp_path / "storage.conf"
    conf.write_text(
        f'[storage]\ndriver = "overlay"\ngraphroot = "{storage}/graph"\nrunroot = "{storage}/run"\n'
    )
    cache = tmp_path / "empty-cache"
    env = {
        **os.environ,
        "CONTAINERS_STORAGE_CONF": str(conf),
        "LOWBUILD_CACHE": str(cache),
        "COLUMNS": "200",
    }
    side = Side(root=_project_copy(tmp_path / "project"), env=env, offline=True)
    assert side.images() == set()  # a fresh store, not this host's
    yield side
    # Unmount whatever the store still has mounted, then remove it (never `podman
    # system reset`, which also clears the host's shared run state).
    _unmount_under(storage)
    shutil.rmtree(storage, ignore_errors=True)


def _unmount_under(directory: Path) -> None:
    """Lazily unmount every mount point below `directory`, deepest first."""
    points = [
        line.split()[1]
        for line in Path("/proc/self/mounts").read_text().splitlines()
        if line.split()[1].startswith(f"{directory}/")
    ]
    for point in sorted(points, key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)


def test_source_built_nginx_and_haproxy_build_and_pass_offline_from_a_bundle(
    bundle: Path, air_gapped: Side
) -> None:
    started = time.monotonic()
    imported = air_gapped.lowbuild("bundle", "import", str(bundle), "--engine", "podman")
    assert imported.returncode == 0, imported.stderr
    cache = Path(air_gapped.env["LOWBUILD_CACHE"])
    assert (cache / "sha256" / NGINX_SHA).is_file() and (cache / "sha256" / HAPROXY_SHA).is_file()
    assert {"localhost/lowbuild/base:latest", "localhost/lowbuild/bookworm:latest"} <= (
        air_gapped.images()
    )

    built = air_gapped.lowbuild(
        "build",
        "--offline",
        "--test",
        "--json",
        "--engine",
        "podman",
        "--jobs",
        "2",
        "nginx",
        "haproxy",
    )
    print(f"air-gapped import + build + test: {time.monotonic() - started:.0f}s")

    assert built.returncode == 0, built.stdout + built.stderr[-4000:]
    records = {record["image"]: record for record in json.loads(built.stdout)}
    # The bundled base carried its fingerprint: it is used as is, not rebuilt.
    assert records["base"]["state"] == "up-to-date"
    for name in ("nginx", "haproxy"):
        assert records[name]["state"] == "built", records[name]
        assert records[name]["test"]["passed"], records[name]
    assert "nginx 1.22.1 compiled from source" in records["nginx"]["test"]["detail"]


def test_offline_build_of_the_seed_family_without_a_bundle_names_what_is_missing(
    air_gapped: Side,
) -> None:
    built = air_gapped.lowbuild("build", "--offline", "--engine", "podman", "nginx")

    assert built.returncode == 2, built.stderr
    message = " ".join(built.stderr.split())
    # Reported up front, before any build: the missing base image and how to bring it.
    assert "lowbuild bundle import" in message, message
    assert air_gapped.images() == set()
