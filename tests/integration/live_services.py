"""Real services and inputs for integration tests: a loopback HTTP poller, a registry
handle, the site build context. Plain functions, imported by conftest and tests alike."""

from __future__ import annotations

import re
import shutil
import socket
import ssl
import subprocess
import tarfile
import time
import uuid
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
    log: Path  # its access log: every request, one line each
    pid: int  # its process (running_registry stops it; a test may kill it sooner)

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def writes(self) -> int:
        """Requests so far that upload or change something (PUT, PATCH, POST: blob
        uploads, manifests): a push that sends nothing adds none."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return len(re.findall(r'"(?:PUT|PATCH|POST) /v2/', text))

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


@dataclass(frozen=True)
class Secured:
    """TLS with a certificate signed by a CA of the test's own (`ca`, trusted through the
    engines' certs directories, never by turning verification off), and htpasswd logins
    (None: anyone may pull and push)."""

    ca: Path
    certificate: Path
    key: Path
    htpasswd: Path | None


def bcrypt_hash(password: str) -> str:
    """A bcrypt hash, as the registry's htpasswd wants, from the system's libcrypt (the
    C library behind Python's `crypt` module, which 3.13 removed)."""
    import ctypes
    import ctypes.util

    libcrypt = ctypes.CDLL(ctypes.util.find_library("crypt") or "libcrypt.so.1")
    libcrypt.crypt_gensalt.restype = ctypes.c_char_p
    libcrypt.crypt_gensalt.argtypes = [
        ctypes.c_char_p,
        ctypes.c_ulong,
        ctypes.c_char_p,
        ctypes.c_int,
    ]
    libcrypt.crypt.restype = ctypes.c_char_p
    libcrypt.crypt.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    salt = libcrypt.crypt_gensalt(b"$2b$", 10, None, 0)  # random bytes from the OS
    hashed = libcrypt.crypt(password.encode(), salt) if salt else None
    if not hashed or not hashed.startswith(b"$2b$"):
        raise RuntimeError("the system's libcrypt made no bcrypt hash")
    return hashed.decode()


def secure_registry_files(
    directory: Path, *, user: str | None = None, password: str = ""
) -> Secured:
    """A CA, a server certificate for 127.0.0.1 signed by it, and (with `user`) an
    htpasswd file with one bcrypt login: what a TLS registry with authentication needs."""
    directory.mkdir(parents=True, exist_ok=True)
    ca, ca_key = directory / "ca.crt", directory / "ca.key"
    cert, key, csr = directory / "server.crt", directory / "server.key", directory / "server.csr"
    ext = directory / "san.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1\n")

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key),
            "-out", str(ca), "-days", "2", "-subj", "/CN=lowbuild test CA")  # fmt: skip
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
            "-subj", "/CN=127.0.0.1")  # fmt: skip
    openssl("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
            "-CAcreateserial", "-out", str(cert), "-days", "2", "-extfile", str(ext))  # fmt: skip
    if user is None:
        return Secured(ca=ca, certificate=cert, key=key, htpasswd=None)
    htpasswd = directory / "htpasswd"
    htpasswd.write_text(f"{user}:{bcrypt_hash(password)}\n")
    return Secured(ca=ca, certificate=cert, key=key, htpasswd=htpasswd)


@contextmanager
def running_registry(
    root: Path,
    *,
    port: int | None = None,
    secured: Secured | None = None,
    netns: str | None = None,
) -> Iterator[Registry]:
    """`docker-registry serve` (the Debian registry) on loopback, storing in `root`: plain
    http, or TLS with logins when `secured`; stopped by its PID when the block ends,
    whatever happens. The same `root` and `port` give a restarted registry with the same
    contents. With `netns`, it serves on that network namespace's loopback (`ip netns
    exec`), out of this one's reach: it is up once its log says it listens."""
    binary = shutil.which("docker-registry")
    if binary is None:
        raise RuntimeError("docker-registry is not installed: run `bash scripts/provision.sh`")
    host = f"127.0.0.1:{port or free_port()}"
    root.mkdir(parents=True, exist_ok=True)
    config = root / "config.yml"
    tls = auth = ""
    if secured is not None:
        tls = f"  tls:\n    certificate: {secured.certificate}\n    key: {secured.key}\n"
        if secured.htpasswd is not None:
            auth = f"auth:\n  htpasswd:\n    realm: lowbuild-test\n    path: {secured.htpasswd}\n"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: info\n"
        f"storage:\n  filesystem:\n    rootdirectory: {root / 'storage'}\n"
        f"http:\n  addr: {host}\n{tls}{auth}"
    )
    log_path = root / "registry.log"
    inside = in_network_namespace(netns) if netns else []
    with log_path.open("ab") as log:
        process = subprocess.Popen([*inside, binary, "serve", str(config)], stdout=log, stderr=log)
        try:
            if netns is not None:
                _wait_for_line(log_path, f"listening on {host}", process)
            elif secured is None:
                wait_for_http(f"http://{host}/v2/", timeout=15.0).raise_for_status()
            else:  # any answer over TLS (401 without a login): it is up
                _wait_for_tls(f"https://{host}/v2/", ca=secured.ca)
            yield Registry(host=host, log=log_path, pid=process.pid)
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_for_line(
    log: Path, text: str, process: subprocess.Popen[bytes], timeout: float = 15.0
) -> None:
    deadline = time.monotonic() + timeout
    while text not in log.read_text(errors="replace"):
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the registry did not start: {log.read_text()[-800:]}")
        time.sleep(0.1)


def in_network_namespace(name: str) -> list[str]:
    """The prefix that runs a command in network namespace `name` and in nothing else of
    it: `nsenter --net`, not `ip netns exec`, whose fresh /sys hides the cgroup mounts
    the engines' runtimes need."""
    return ["nsenter", f"--net=/var/run/netns/{name}"]


@contextmanager
def network_namespace() -> Iterator[str]:
    """A network namespace of its own with only its loopback up (no route anywhere),
    removed afterwards: run a command in it with in_network_namespace(NAME). Needs root."""
    name = f"lowbuild-{uuid.uuid4().hex[:10]}"
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
    try:
        subprocess.run(
            [*in_network_namespace(name), "ip", "link", "set", "lo", "up"],
            check=True,
            capture_output=True,
        )
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False, capture_output=True)


def _wait_for_tls(url: str, *, ca: Path, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            httpx.get(url, timeout=2.0, verify=ssl.create_default_context(cafile=str(ca)))
            return
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


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
