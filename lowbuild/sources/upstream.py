"""What upstream says about an artifact: the sha256 it publishes for a version (a
`.sha256` file beside the tarball), and the versions its release page lists."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import unquote, urlsplit

import httpx

from lowbuild.errors import FetchError, LowbuildError, OfflineMissing
from lowbuild.redact import redact
from lowbuild.spec.model import Rewrite
from lowbuild.spec.versions import is_pre_release, version_key

MAX_PAGE_BYTES = 4 << 20  # a checksum file or a release listing, never a tarball
TIMEOUT_S = 30.0
_SHA256 = re.compile(r"\b([0-9a-fA-F]{64})\b")


def fetch_text(url: str, *, offline: bool = False, rewrites: Sequence[Rewrite] = ()) -> str:
    """The text `url` serves (http, https or file), at most MAX_PAGE_BYTES: tried through
    the project's mirror rewrites first, as artifacts are. Offline, or unreachable: an
    error that says it could not be read, naming each URL tried."""
    mirrored = [r.replacement + url[len(r.prefix) :] for r in rewrites if url.startswith(r.prefix)]
    failures: list[LowbuildError] = []
    for candidate in dict.fromkeys([*mirrored, url]):
        try:
            return _fetch_one(candidate, offline=offline)
        except (FetchError, OfflineMissing) as exc:
            failures.append(exc)
    if len(failures) == 1 or all(isinstance(f, OfflineMissing) for f in failures):
        raise failures[-1]
    raise FetchError("; ".join(str(f) for f in failures))


def _fetch_one(url: str, *, offline: bool) -> str:
    shown = redact(url)
    if urlsplit(url).scheme == "file":
        path = Path(unquote(urlsplit(url).path))
        try:
            return path.read_bytes()[:MAX_PAGE_BYTES].decode("utf-8", "replace")
        except OSError as exc:
            raise FetchError(f"cannot read {shown}: {exc.strerror or exc}") from None
    if offline:
        raise OfflineMissing(f"offline: cannot ask upstream ({shown})")
    try:
        with (
            httpx.Client(follow_redirects=True, timeout=TIMEOUT_S) as client,
            client.stream("GET", url) as response,
        ):
            if response.status_code != 200:
                raise FetchError(f"{shown}: HTTP {response.status_code}")
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > MAX_PAGE_BYTES:
                    raise FetchError(f"{shown}: more than {MAX_PAGE_BYTES} bytes, not a page")
            return body.decode(response.encoding or "utf-8", "replace")
    except httpx.HTTPError as exc:
        raise FetchError(f"cannot reach {shown}: {exc}") from None


def published_sha256(text: str, file: str) -> str | None:
    """The sha256 a checksum file gives `file`: its line naming the file (`sha256sum`
    format, `HEX  file` or `HEX *file`, or BSD `SHA256 (file) = HEX`), else the only
    digest in it. None when it names none."""
    for line in text.splitlines():
        found = _SHA256.search(line)
        if found and re.search(rf"[\s*(/]{re.escape(file)}\b", line):
            return found[1].lower()
    every = {d.lower() for d in _SHA256.findall(text)}
    return every.pop() if len(every) == 1 else None


def listed_versions(page: str, pattern: str) -> list[str]:
    """The versions `pattern` (one group) finds on a release page, oldest first."""
    found = {match for match in re.findall(pattern, page) if match}
    return sorted(found, key=version_key)


def newer_versions(current: str, versions: list[str], *, pre_releases: bool = False) -> list[str]:
    """The versions after `current`, oldest first; pre-releases only when asked (or when
    the pinned version is one)."""
    keep_pre = pre_releases or is_pre_release(current)
    return [
        v
        for v in versions
        if version_key(v) > version_key(current) and (keep_pre or not is_pre_release(v))
    ]
