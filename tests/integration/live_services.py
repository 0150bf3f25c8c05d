"""Real services and inputs for integration tests: a loopback HTTP poller, a registry
handle, the site build context. Plain functions, imported by conftest and tests alike."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tarfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

BASE_IMAGE = "localhost/lowbuild/busybox:latest"


def free_port() -> int:
    """A port free on 127.0.0.1 right now (for servers that cannot report their own)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_http(url: str, *, timeout: float = 15.0) -> httpx.Response:
    """GET `url` until it answers, at most `timeout` seconds; the last error if it never does."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return httpx.get(url, timeout=2.0)
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@dataclass(frozen=True)
class Registry:
    """A running registry: `host` ("127.0.0.1:port") for image references, `url` for its API."""

    host: str

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def manifest_digest(self, repository: str, tag: str) -> str | None:
        """The digest the registry serves `repository:tag`'s manifest under, or None."""
        accept = ", ".join(
            [
                "application/vnd.docker.distribution.manifest.v2+json",
                "application/vnd.oci.image.manifest.v1+json",
            ]
        )
        answer = httpx.head(
            f"{self.url}/v2/{repository}/manifests/{tag}", headers={"Accept": accept}, timeout=5.0
        )
        if answer.status_code == 404:
            return None
        answer.raise_for_status()
        return answer.headers["Docker-Content-Digest"]

    def tags(self, repository: str) -> list[str]:
        """Tags the registry holds for `repository` (empty when it has none)."""
        answer = httpx.get(f"{self.url}/v2/{repository}/tags/list", timeout=5.0)
        if answer.status_code == 404:
            return []
        answer.raise_for_status()
        return list(answer.json().get("tags") or [])


@contextmanager
def running_registry(root: Path, *, port: int | None = None) -> Iterator[Registry]:
    """`docker-registry serve` (the Debian registry) on loopback, plain http, storing in
    `root`; stopped by its PID when the block ends, whatever happens. The same `root`
    and `port` give a restarted registry with the same contents."""
    binary = shutil.which("docker-registry")
    if binary is None:
        raise RuntimeError("docker-registry is not installed: run `bash scripts/provision.sh`")
    host = f"127.0.0.1:{port or free_port()}"
    root.mkdir(parents=True, exist_ok=True)
    config = root / "config.yml"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: info\n"
        f"storage:\n  filesystem:\n    rootdirectory: {root / 'storage'}\n"
        f"http:\n  addr: {host}\n"
    )
    with (root / "registry.log").open("ab") as log:
        process = subprocess.Popen([binary, "serve", str(config)], stdout=log, stderr=log)
        try:
            wait_for_http(f"http://{host}/v2/", timeout=15.0).raise_for_status()
            yield Registry(host=host)
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def make_site_context(directory: Path) -> Path:
    """Write a build context into `directory` whose Dockerfile ADDs a local .tar.gz
    (auto-extracted by the engine) and serves it with busybox httpd on 8080;
    `/www/index.html` holds SITE_TEXT. Returns the context directory."""
    site = directory / "site"
    site.mkdir()
    (site / "index.html").write_text(SITE_TEXT)
    context = directory / "context"
    context.mkdir()
    with tarfile.open(context / "site.tar.gz", "w:gz") as archive:
        archive.add(site / "index.html", arcname="index.html")
    (context / "Dockerfile").write_text(SITE_DOCKERFILE)
    return context


SITE_TEXT = "<h1>lowbuild serves this page</h1>\n"
SITE_DOCKERFILE = f"""\
FROM {BASE_IMAGE}
ADD site.tar.gz /www/
RUN echo "built by RUN" > /www/run.txt
ENV GREETING=hello
EXPOSE 8080
LABEL org.lowbuild.test.kind=site
CMD ["busybox", "httpd", "-f", "-p", "8080", "-h", "/www"]
"""
