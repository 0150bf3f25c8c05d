"""`lowbuild bump` and `lowbuild outdated` against a loopback upstream: two versions of a
tarball with their `.sha256` files and an index page, served over HTTP.

A bump downloads the new version, checks it against upstream's sha256, rewrites
image.yaml in place and shows the plan: the bumped image and its child are rebuilt, the
rest is not. A wrong upstream checksum is refused (exit 4) with image.yaml untouched.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from json_outputs import conforming
from live_services import BASE_IMAGE

from lowbuild.engines.base import Engine


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def serving(directory: Path) -> Iterator[str]:
    """`directory` over HTTP on loopback, in a thread; its base URL."""
    handler = functools.partial(_Quiet, directory=str(directory))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def tarball(version: str) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        data = f"#!/bin/sh\necho tool {version}\n".encode()
        info = tarfile.TarInfo(f"tool-{version}/tool")
        info.size, info.mode = len(data), 0o755
        tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def publish(upstream: Path, version: str, *, claimed: str | None = None) -> str:
    """tool-VERSION.tar.gz and its .sha256 (claiming `claimed` when given); its sha256."""
    data = tarball(version)
    sha = hashlib.sha256(data).hexdigest()
    (upstream / f"tool-{version}.tar.gz").write_bytes(data)
    (upstream / f"tool-{version}.tar.gz.sha256").write_text(
        f"{claimed or sha}  tool-{version}.tar.gz\n"
    )
    index = "".join(
        f'<a href="{p.name}">{p.name}</a>\n' for p in sorted(upstream.glob("tool-*.tar.gz"))
    )
    (upstream / "index.html").write_text(f"<html><body>\n{index}</body></html>\n")
    return sha


IMAGE_YAML = """\
# tool, pinned by hand; bump keeps this comment
name: tool
tags: ["1.0"]
args: {{TOOL_VERSION: "1.0"}}
artifacts:
  - file: tool-1.0.tar.gz
    urls: [{url}/tool-1.0.tar.gz]   # upstream
    sha256: {sha}
    sha256-url: {url}/tool-1.0.tar.gz.sha256
    releases: {{index: "{url}/index.html", pattern: 'tool-([0-9.]+)\\.tar\\.gz"'}}
"""


@dataclass
class Upstream:
    root: Path
    files: Path
    url: str
    env: dict[str, str]
    namespace: str
    old_sha: str

    def lowbuild(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "lowbuild", *args],
            cwd=self.root,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=600,
        )

    @property
    def image_yaml(self) -> Path:
        return self.root / "contexts" / "tool" / "image.yaml"


@pytest.fixture
def upstream(tmp_path: Path, engine: Engine) -> Iterator[Upstream]:
    files = tmp_path / "upstream"
    files.mkdir()
    old_sha = publish(files, "1.0")
    namespace = f"lbbump{uuid.uuid4().hex[:8]}"
    root = tmp_path / "family"
    with serving(files) as url:
        tool = root / "contexts" / "tool"
        tool.mkdir(parents=True)
        (root / "lowbuild.yaml").write_text(f"name: bumped\nnamespace: {namespace}\ntag: '1'\n")
        (tool / "image.yaml").write_text(IMAGE_YAML.format(url=url, sha=old_sha))
        (tool / "Dockerfile").write_text(
            f"FROM {BASE_IMAGE}\nARG TOOL_VERSION\nADD tool-${{TOOL_VERSION}}.tar.gz /opt/\n"
        )
        child = root / "contexts" / "child"
        child.mkdir()
        (child / "image.yaml").write_text("name: child\nparent: tool\n")
        (child / "Dockerfile").write_text(f"FROM {namespace}/tool:1\nRUN echo child > /child\n")
        other = root / "contexts" / "other"
        other.mkdir()
        (other / "image.yaml").write_text("name: other\n")
        (other / "Dockerfile").write_text(f"FROM {BASE_IMAGE}\nRUN echo other > /other\n")
        env = {**os.environ, "LOWBUILD_CACHE": str(tmp_path / "cache"), "COLUMNS": "200"}
        made = Upstream(root, files, url, env, namespace, old_sha)
        try:
            yield made
        finally:
            for name in ("child", "tool", "other"):
                ref = f"{namespace}/{name}:1"
                if engine.inspect_image(ref) is not None:
                    engine.remove_image(ref, force=True)


@pytest.mark.parametrize("engine", ["podman"], indirect=True)
def test_bump_checks_upstreams_sha256_rewrites_in_place_and_rebuilds_only_what_changed(
    upstream: Upstream,
) -> None:
    built = upstream.lowbuild("build", "--engine", "podman", "--no-sbom")
    assert built.returncode == 0, built.stderr[-2000:]
    new_sha = publish(upstream.files, "1.1")

    outdated = upstream.lowbuild("outdated", "--json")
    assert outdated.returncode == 0, outdated.stderr
    (record,) = conforming("outdated", outdated.stdout)
    assert (record["pinned"], record["newer"], record["latest"]) == ("1.0", ["1.1"], "1.1")

    before = upstream.image_yaml.read_bytes()
    dry = upstream.lowbuild("bump", "tool", "--version", "1.1", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"+    sha256: {new_sha}" in dry.stdout and '-tags: ["1.0"]' in dry.stdout
    assert upstream.image_yaml.read_bytes() == before
    cached = Path(upstream.env["LOWBUILD_CACHE"])
    assert not list(cached.rglob(new_sha))  # nothing downloaded

    bumped = upstream.lowbuild("bump", "tool", "--version", "1.1", "--engine", "podman")
    assert bumped.returncode == 0, bumped.stderr
    expected = (
        before.decode()
        .replace('"1.0"', '"1.1"')
        .replace("tool-1.0.tar.gz", "tool-1.1.tar.gz")
        .replace(upstream.old_sha, new_sha)
    )
    assert upstream.image_yaml.read_text() == expected  # comments, flow style, quotes kept
    assert f"upstream publishes sha256 {new_sha}" in bumped.stderr
    plan = {
        line.split()[1]: line.split()[3]
        for line in bumped.stdout.splitlines()
        if line.startswith("│")
    }
    assert plan == {"tool": "build", "child": "build", "other": "up-to-date"}, bumped.stdout

    # the new file is in the cache: the build needs no download, and rebuilds two images
    rebuilt = upstream.lowbuild("build", "--engine", "podman", "--no-sbom", "--offline", "--json")
    assert rebuilt.returncode == 0, rebuilt.stderr[-2000:]
    states = {r["image"]: r["state"] for r in json.loads(rebuilt.stdout)}
    assert states == {"tool": "built", "child": "built", "other": "up-to-date"}

    again = upstream.lowbuild("outdated")
    assert again.returncode == 0 and "up to date" in again.stdout


@pytest.mark.parametrize("engine", ["podman"], indirect=True)
def test_a_bump_whose_download_is_not_upstreams_sha256_is_refused_and_changes_nothing(
    upstream: Upstream,
) -> None:
    publish(upstream.files, "1.1", claimed="0" * 64)
    before = upstream.image_yaml.read_bytes()
    refused = upstream.lowbuild("bump", "tool", "--version", "1.1", "--engine", "podman")
    assert refused.returncode == 4, refused.stderr
    assert "left as it was" in refused.stderr
    assert upstream.image_yaml.read_bytes() == before
    # never admitted to the cache under any name
    cached = Path(upstream.env["LOWBUILD_CACHE"])
    assert not [
        p for p in cached.rglob("*") if p.is_file() and "1.1" in p.read_bytes().decode("latin-1")
    ]

    missing = upstream.lowbuild("bump", "tool", "--version", "9.9", "--engine", "podman")
    assert missing.returncode == 1 and "HTTP 404" in missing.stderr
    assert upstream.image_yaml.read_bytes() == before


@pytest.mark.parametrize("engine", ["podman"], indirect=True)
def test_outdated_says_when_it_cannot_check(upstream: Upstream) -> None:
    offline = upstream.lowbuild("outdated", "--offline", "--json")
    assert offline.returncode == 1
    (record,) = conforming("outdated", offline.stdout)
    assert record["newer"] == [] and "cannot check" in record["error"]
    assert "offline" in record["error"]


@pytest.mark.parametrize("engine", ["podman"], indirect=True)
def test_upstream_pages_are_read_through_the_projects_mirrors(upstream: Upstream) -> None:
    """A spec naming an upstream this host cannot reach, and a `mirrors:` rule to the
    loopback copy: outdated and bump read the index and the .sha256 through the mirror."""
    dead = "http://127.0.0.1:9/upstream"  # port 9 (discard): nothing listens here
    upstream.image_yaml.write_text(upstream.image_yaml.read_text().replace(upstream.url, dead))
    with (upstream.root / "lowbuild.yaml").open("a") as spec:
        spec.write(f'mirrors:\n  - {{prefix: "{dead}/", replacement: "{upstream.url}/"}}\n')
    new_sha = publish(upstream.files, "1.1")
    outdated = upstream.lowbuild("outdated", "--json")
    assert outdated.returncode == 0, outdated.stderr
    assert [r["newer"] for r in conforming("outdated", outdated.stdout)] == [["1.1"]]
    bumped = upstream.lowbuild("bump", "tool", "--version", "1.1", "--engine", "podman")
    assert bumped.returncode == 0, bumped.stderr
    assert f"sha256: {new_sha}" in upstream.image_yaml.read_text()
    assert f"{dead}/tool-1.1.tar.gz" in upstream.image_yaml.read_text()  # the spec's URL kept
