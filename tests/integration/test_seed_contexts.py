"""The seed family (contexts/ + lowbuild.yaml), built for real on podman.

What a user of the tutorial would check by hand after `make demo`: the upstream
tarballs arrive with the pinned digests, every image builds and passes its smoke test,
the services run as the base image's fixed users, haproxy really forwards to Tomcat,
and the hand-made (commit) image carries its author and message.

Needs network access to this host's Debian mirror (the images install packages, the
tarballs come from Debian's source archive); a cold run takes a few minutes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from live_services import wait_for_http

from lowbuild.spec.load import load_project

REPO = Path(__file__).resolve().parents[2]
FETCH_SCRIPT = REPO / "scripts" / "fetch_seed_sources.sh"
SEED_IMAGES = {"base", "nginx-pkg", "nginx", "jdk", "tomcat", "haproxy", "nginx-commit"}

pytestmark = pytest.mark.root


def _podman() -> str:
    found = shutil.which("podman")
    if found is None:
        pytest.fail("podman is not installed: run `make provision`", pytrace=False)
    return found


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass(frozen=True)
class SeedRun:
    """The seed project copied into a temp dir, with its own lowbuild cache."""

    root: Path
    sources: Path
    env: dict[str, str]

    def lowbuild(self, *args: str, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "lowbuild", *args],
            cwd=self.root,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def fetch_sources(self, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", str(FETCH_SCRIPT), str(self.sources)],
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=600,
        )


@pytest.fixture(scope="module")
def seed(tmp_path_factory: pytest.TempPathFactory) -> SeedRun:
    tmp = tmp_path_factory.mktemp("seed")
    root = tmp / "project"
    root.mkdir()
    shutil.copy2(REPO / "lowbuild.yaml", root / "lowbuild.yaml")
    shutil.copytree(REPO / "contexts", root / "contexts", symlinks=True)
    env = {**os.environ, "LOWBUILD_CACHE": str(tmp / "cache"), "COLUMNS": "200"}
    return SeedRun(root=root, sources=tmp / "sources", env=env)


@pytest.fixture(scope="module")
def fetched(seed: SeedRun) -> subprocess.CompletedProcess[str]:
    result = seed.fetch_sources()
    assert result.returncode == 0, result.stderr
    return result


@pytest.fixture(scope="module")
def built(seed: SeedRun, fetched: subprocess.CompletedProcess[str]) -> dict[str, dict[str, object]]:
    """`lowbuild build --test` of the whole family; its JSON records by image name."""
    _podman()
    result = seed.lowbuild("build", "--engine", "podman", "--json", "--test", "--jobs", "2")
    records = json.loads(result.stdout) if result.stdout.strip() else []
    assert result.returncode == 0, result.stderr[-4000:]
    return {record["image"]: record for record in records}


@contextmanager
def _container(*run_args: str) -> Iterator[str]:
    """A detached container, always removed afterwards; yields its ID."""
    podman = _podman()
    name = f"lowbuild-seedtest-{uuid.uuid4().hex[:8]}"
    subprocess.run(
        [podman, "run", "-d", "--pull=never", "--name", name, *run_args],
        check=True,
        capture_output=True,
        text=True,
    )
    try:
        yield name
    finally:
        subprocess.run([podman, "rm", "--force", "--time", "0", name], capture_output=True)


def _host_port(container: str, port: int) -> int:
    out = subprocess.run(
        [_podman(), "port", container, str(port)], check=True, capture_output=True, text=True
    ).stdout
    return int(out.split()[0].rsplit(":", 1)[1])


def _process_users(container: str, command: str) -> set[str]:
    """The users that processes whose command line starts with `command` run as."""
    out = subprocess.run(
        [_podman(), "exec", container, "ps", "-eo", "uid=,args="],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return {
        line.split(None, 1)[0]
        for line in out.splitlines()
        if line.split(None, 1)[1:] and line.split(None, 1)[1].startswith(command)
    }


def test_fetch_script_gets_the_upstream_tarballs_with_the_pinned_digests(
    seed: SeedRun, fetched: subprocess.CompletedProcess[str]
) -> None:
    pinned = {
        artifact.file: artifact.sha256
        for image in load_project(seed.root).images
        for artifact in image.artifacts
    }
    assert set(pinned) == {"nginx-1.22.1.tar.gz", "haproxy-2.6.12.tar.gz"}
    assert fetched.stdout.strip() == str(seed.sources)
    for file, sha256 in pinned.items():
        assert _sha256(seed.sources / file) == sha256, file
    # Handed to lowbuild: an offline fetch of the project now finds everything.
    offline = seed.lowbuild("fetch", "--offline")
    assert offline.returncode == 0, offline.stderr


def test_fetch_script_rerun_downloads_nothing(
    seed: SeedRun, fetched: subprocess.CompletedProcess[str]
) -> None:
    started = time.monotonic()
    again = seed.fetch_sources()
    assert again.returncode == 0, again.stderr
    assert "reading source indexes" not in again.stderr
    assert again.stderr.count("already in") == 2
    assert time.monotonic() - started < 30


def test_fetch_script_fails_loudly_without_a_lowbuild_to_admit_the_files(
    seed: SeedRun, fetched: subprocess.CompletedProcess[str], tmp_path: Path
) -> None:
    # Only bash's own directories: no venv, so no `lowbuild` on PATH.
    bare = os.pathsep.join(d for d in ("/usr/bin", "/bin") if not Path(d, "lowbuild").exists())
    missing = seed.fetch_sources(PATH=bare)
    assert missing.returncode != 0
    assert "no `lowbuild` on PATH" in missing.stderr and str(seed.sources) in missing.stderr

    blocked = tmp_path / "not-a-directory"
    blocked.write_text("a file where the cache should be")
    refused = seed.fetch_sources(LOWBUILD_CACHE=str(blocked / "cache"))
    assert refused.returncode != 0 and refused.stdout == ""  # no DEST printed as if all went well
    assert "could not admit" in refused.stderr


def test_whole_seed_family_builds_and_passes_its_smoke_tests(
    built: dict[str, dict[str, object]],
) -> None:
    assert set(built) == SEED_IMAGES
    for name, record in built.items():
        assert record["state"] in ("built", "up-to-date"), (name, record["detail"])
        assert record["test"]["passed"], (name, record["test"])  # type: ignore[index]


def test_versions_are_tagged_next_to_latest(built: dict[str, dict[str, object]]) -> None:
    listed = subprocess.run(
        [_podman(), "images", "--format", "{{.Repository}}:{{.Tag}}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    for ref in ("lowbuild/nginx:1.22.1", "lowbuild/haproxy:2.6.12", "lowbuild/tomcat:latest"):
        assert f"localhost/{ref}" in listed, ref


def test_services_run_as_the_fixed_users_of_the_base_image(
    built: dict[str, dict[str, object]],
) -> None:
    with _container("-p", "127.0.0.1::80", "lowbuild/nginx:latest") as nginx:
        wait_for_http(f"http://127.0.0.1:{_host_port(nginx, 80)}/", timeout=30)
        assert _process_users(nginx, "nginx: worker process") == {"2000"}
    with _container("-p", "127.0.0.1::8080", "lowbuild/tomcat:latest") as tomcat:
        wait_for_http(f"http://127.0.0.1:{_host_port(tomcat, 8080)}/", timeout=60)
        assert _process_users(tomcat, "/usr/local/jdk/bin/java") == {"2001"}


def test_haproxy_forwards_to_tomcat(built: dict[str, dict[str, object]]) -> None:
    # haproxy joins Tomcat's network namespace, so its default back end 127.0.0.1:8080
    # is that Tomcat; its own port 9999 is published on the Tomcat container.
    with (
        _container("-p", "127.0.0.1::9999", "lowbuild/tomcat:latest") as tomcat,
        _container("--network", f"container:{tomcat}", "lowbuild/haproxy:latest"),
    ):
        url = f"http://127.0.0.1:{_host_port(tomcat, 9999)}"
        assert wait_for_http(f"{url}/health", timeout=30).text == "haproxy ok"
        deadline = time.monotonic() + 90
        while True:
            page = httpx.get(f"{url}/", timeout=5.0)
            if page.status_code == 200 or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert page.status_code == 200
        assert "Hello from the seed family's Tomcat" in page.text
        assert "Apache Tomcat/10" in page.text


def test_hand_made_image_carries_its_author_and_message(
    built: dict[str, dict[str, object]],
) -> None:
    info = json.loads(
        subprocess.run(
            [_podman(), "image", "inspect", "lowbuild/nginx-commit:latest"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )[0]
    assert info["Author"] == "seed family <ops@example.com>"
    assert info["Comment"] == "nginx from Debian packages, installed by hand, daemon off"
    assert info["Config"]["Cmd"] == ["nginx"]
    assert "80/tcp" in info["Config"]["ExposedPorts"]
    # Its labels are what the recipe and lowbuild set, readable: no escaped JSON, no
    # ownership label or podman environment from the working container.
    labels = info["Config"]["Labels"]
    assert labels["org.opencontainers.image.title"] == "nginx-commit"
    assert json.loads(labels["lowbuild.inputs"])["recipe"]["kind"] == "commit"
    assert "lowbuild.owned" not in labels
    assert not any(e.startswith(("container=", "TERM=")) for e in info["Config"]["Env"])


def test_bumping_haproxy_to_a_newer_version_served_here_rebuilds_haproxy_only(
    seed: SeedRun, built: dict[str, dict[str, object]], tmp_path: Path
) -> None:
    """The seed's haproxy pointed at a loopback upstream (its URLs only: not an input of
    the image), then bumped from 2.6.12 to 2.6.13: checked against the .sha256 served
    there, and the plan rebuilds haproxy alone."""
    from test_bump import serving

    upstream = tmp_path / "upstream"
    upstream.mkdir()
    new = b"stand-in for haproxy 2.6.13: the plan needs its digest, not its contents\n"
    (upstream / "haproxy-2.6.13.tar.gz").write_bytes(new)
    sha = hashlib.sha256(new).hexdigest()
    (upstream / "haproxy-2.6.13.tar.gz.sha256").write_text(f"{sha}  haproxy-2.6.13.tar.gz\n")
    spec = seed.root / "contexts" / "haproxy" / "image.yaml"
    dockerfile = spec.with_name("Dockerfile")
    original, original_dockerfile = spec.read_text(), dockerfile.read_text()
    try:
        with serving(upstream) as url:
            spec.write_text(original.replace("https://www.haproxy.org/download/2.6/src", url))
            before = seed.lowbuild("plan", "--engine", "podman", "--json")
            actions = {r["image"]: r["action"] for r in json.loads(before.stdout)["images"]}
            assert set(actions.values()) == {"up-to-date"}, actions
            bumped = seed.lowbuild("bump", "haproxy", "--version", "2.6.13", "--engine", "podman")
            assert bumped.returncode == 0, bumped.stderr
        text = spec.read_text()
        assert "haproxy-2.6.12" not in text and f"sha256: {sha}" in text
        assert 'args: {HAPROXY_VERSION: "2.6.13"}' in text and 'tags: ["2.6.13"]' in text
        # the Dockerfile's default of that build arg follows; nothing else of it changes
        assert dockerfile.read_text() == original_dockerfile.replace(
            "ARG HAPROXY_VERSION=2.6.12", "ARG HAPROXY_VERSION=2.6.13"
        )
        after = seed.lowbuild("plan", "--engine", "podman", "--json")
        actions = {r["image"]: r["action"] for r in json.loads(after.stdout)["images"]}
        assert {name for name, action in actions.items() if action != "up-to-date"} == {"haproxy"}
    finally:
        spec.write_text(original)
        dockerfile.write_text(original_dockerfile)
