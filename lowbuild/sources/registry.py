"""Registries seen from outside the engine: where the registry cache keeps an image
built from given inputs, and what a registry serves under a tag, asked with one
manifest request (no pull, no upload).

The pulls and pushes themselves are the engine's (Engine.pull/push, with its own
credentials). These requests are anonymous: a registry that wants a login answers 401,
which counts as "cannot say", and lowbuild then leaves the question to the engine (the
build pulls, the push pushes). TLS is verified against the system's CAs plus the ones
the engines trust for that registry (`certs.d/HOST:PORT/*.crt` of containers and
docker), so a registry with its own CA needs no `tls-verify: false` here either.
"""

from __future__ import annotations

import os
import re
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from lowbuild.spec.model import Registry
from lowbuild.spec.platforms import split_key

if TYPE_CHECKING:
    import httpx

CACHE_TAG_PREFIX = "lb-"
LOOKUP_TIMEOUT_S = 10.0

_IMAGE_MANIFESTS = (
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
_INDEXES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
)
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")

# Where podman, buildah, skopeo (containers) and docker look for a registry's own CA.
_CERTS_DIRS = ("/etc/containers/certs.d", "/etc/docker/certs.d")


def cache_tag(fingerprint: str) -> str:
    """The tag of an image built from inputs with `fingerprint` ("sha256:<hex>")."""
    return CACHE_TAG_PREFIX + fingerprint.removeprefix("sha256:")[:20]


def cache_ref(registry: Registry, name: str, fingerprint: str) -> str:
    """Where the registry cache keeps image `name` built from inputs with `fingerprint`:
    `<prefix>/<name>:lb-<first 20 hex digits>` (a variant's `name`, `web@linux-arm64`,
    is its image's: the platform is in the fingerprint)."""
    return registry.ref(split_key(name)[0], cache_tag(fingerprint))


def certs_dirs() -> list[Path]:
    """The certs.d directories the engines read, the user's own first (rootless)."""
    config_home = os.environ.get("XDG_CONFIG_HOME") or Path("~/.config").expanduser()
    return [Path(config_home) / "containers" / "certs.d", *map(Path, _CERTS_DIRS)]


def registry_cas(host: str) -> Iterator[Path]:
    """The CA files the engines trust for `host` (`HOST[:PORT]`): `certs.d/HOST/*.crt`."""
    for directory in certs_dirs():
        try:
            yield from sorted((directory / host).glob("*.crt"))
        except OSError:
            continue


def split_ref(ref: str) -> tuple[str, str, str]:
    """`host[:port]/path/name:tag` as (host[:port], path/name, tag)."""
    host, _, rest = ref.partition("/")
    repository, _, tag = rest.rpartition(":")
    if not host or not repository or not tag or "/" in tag:
        raise ValueError(f"not a registry reference with a tag: {ref!r}")
    return host, repository, tag


def registry_digest(ref: str, *, tls_verify: bool = True) -> str | None:
    """The manifest digest the registry serves as `ref` (`host/path:tag`), asked of the
    registry itself (anonymously); None when it serves none or cannot be asked."""
    host, repository, tag = split_ref(ref)
    with RegistryClient(Registry(name=host, prefix=host, tls_verify=tls_verify)) as client:
        return client.manifest_digest(repository, tag)


class RegistryClient:
    """Anonymous manifest requests to one registry over one connection pool.

    With TLS verification the registry is asked over https, trusting the system's CAs
    and the engines' own for it; with `tls_verify: false` (a registry declared
    self-signed or plain) over https without verification, then plain http, as the
    engines do. Every failure is an answer of None: this client only ever saves work."""

    def __init__(self, registry: Registry, *, timeout: float = LOOKUP_TIMEOUT_S) -> None:
        import httpx

        self.registry = registry
        self.host, _, self.path = registry.prefix.partition("/")
        if registry.tls_verify:
            context = ssl.create_default_context()
            for ca in registry_cas(self.host):
                try:
                    context.load_verify_locations(cafile=str(ca))
                except (OSError, ssl.SSLError):
                    continue
            verify: ssl.SSLContext | bool = context
            self.schemes: list[str] = ["https"]
        else:
            verify = False
            self.schemes = ["https", "http"]
        self.client = httpx.Client(
            verify=verify,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 3.0)),
            follow_redirects=True,
        )
        self._lock = threading.Lock()  # the planner asks from several threads at once
        self.failure: str | None = None  # why the registry could not be asked, once it could not
        # Whether some answer was neither yes nor no (a login wanted, an error): then a
        # miss here does not mean the engine, with its credentials, would miss too.
        self.unsure = False

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.client.close()

    def image_id(self, name: str, tag: str) -> str | None:
        """The config digest of the image manifest under `name:tag`, which is the image
        ID every engine gives the image once pulled; None when there is none, it is a
        manifest list, or the registry cannot be asked."""
        answer = self._manifest("GET", name, tag, _IMAGE_MANIFESTS)
        if answer is None:
            return None
        try:
            config = answer.json().get("config") or {}
        except (ValueError, AttributeError):
            return None
        digest = config.get("digest") if isinstance(config, dict) else None
        return digest if isinstance(digest, str) and _DIGEST.match(digest) else None

    def manifest_digest(self, name: str, tag: str) -> str | None:
        """The digest of the manifest the registry serves as `name:tag` (a HEAD request),
        or None when it serves none or cannot be asked."""
        answer = self._manifest("HEAD", name, tag, _IMAGE_MANIFESTS + _INDEXES)
        digest = answer.headers.get("Docker-Content-Digest") if answer is not None else None
        return digest if isinstance(digest, str) and _DIGEST.match(digest) else None

    def _manifest(
        self, method: str, name: str, tag: str, accept: tuple[str, ...]
    ) -> httpx.Response | None:
        import httpx

        repository = f"{self.path}/{name}" if self.path else name
        headers = {"Accept": ", ".join(accept)}
        for scheme in list(self.schemes):
            url = f"{scheme}://{self.host}/v2/{repository}/manifests/{tag}"
            try:
                answer = self.client.request(method, url, headers=headers)
            except httpx.HTTPError as exc:
                # A plain-http registry: ask it plainly from now on. An unreachable one:
                # ask it nothing more (one timeout per run, not one per image).
                with self._lock:
                    if scheme in self.schemes:
                        self.schemes.remove(scheme)
                    if not self.schemes:
                        self.failure = f"{type(exc).__name__}: {exc}".rstrip(": ")
                continue
            if answer.status_code == 200:
                return answer
            if answer.status_code != 404:
                self.unsure = True
            return None
        self.unsure = True
        return None
