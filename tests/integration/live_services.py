"""Real services and inputs for integration tests: a loopback HTTP poller, a registry
handle, the site build context. Plain functions, imported by conftest and tests alike."""

from __future__ import annotations

import socket
import tarfile
import time
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

    def tags(self, repository: str) -> list[str]:
        """Tags the registry holds for `repository` (empty when it has none)."""
        answer = httpx.get(f"{self.url}/v2/{repository}/tags/list", timeout=5.0)
        if answer.status_code == 404:
            return []
        answer.raise_for_status()
        return list(answer.json().get("tags") or [])


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
