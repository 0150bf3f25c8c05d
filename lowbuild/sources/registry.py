"""The registry cache seen from outside the engine: where an image built from given
inputs is kept, and whether the registry has it, asked with one manifest request.

The pull itself is the engine's (Engine.pull, with its own credentials). This lookup is
anonymous: a registry that wants a login answers 401, which counts as "unknown", and
the build then asks the engine to pull instead.
"""

from __future__ import annotations

import re

from lowbuild.spec.model import Registry

CACHE_TAG_PREFIX = "lb-"
LOOKUP_TIMEOUT_S = 10.0

_MANIFEST_TYPES = ", ".join(
    [
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
    ]
)
_IMAGE_ID = re.compile(r"^sha256:[0-9a-f]{64}$")


def cache_tag(fingerprint: str) -> str:
    """The tag of an image built from inputs with `fingerprint` ("sha256:<hex>")."""
    return CACHE_TAG_PREFIX + fingerprint.removeprefix("sha256:")[:20]


def cache_ref(registry: Registry, name: str, fingerprint: str) -> str:
    """Where the registry cache keeps image `name` built from inputs with `fingerprint`:
    `<prefix>/<name>:lb-<first 20 hex digits>`."""
    return registry.ref(name, cache_tag(fingerprint))


def cached_image_id(registry: Registry, name: str, fingerprint: str) -> str | None:
    """The ID of the image the cache holds for `name` and `fingerprint` (its manifest's
    config digest, which is the image ID every engine gives it once pulled), or None
    when it has none or cannot say (unreachable, a login needed, a manifest list)."""
    import httpx

    host, _, path = registry.prefix.partition("/")
    repository = f"{path}/{name}" if path else name
    scheme = "https" if registry.tls_verify else "http"
    url = f"{scheme}://{host}/v2/{repository}/manifests/{cache_tag(fingerprint)}"
    try:
        answer = httpx.get(
            url,
            headers={"Accept": _MANIFEST_TYPES},
            timeout=LOOKUP_TIMEOUT_S,
            follow_redirects=True,
        )
        if answer.status_code != 200:
            return None
        config = answer.json().get("config") or {}
    except (httpx.HTTPError, ValueError, AttributeError):
        return None
    digest = config.get("digest") if isinstance(config, dict) else None
    return digest if isinstance(digest, str) and _IMAGE_ID.match(digest) else None
