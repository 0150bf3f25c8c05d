"""The one downloader: declared artifacts → verified cache entries.

For each artifact the candidate URLs are the project's mirror rewrites first,
then the declared URLs in order. Each URL is streamed (constant memory) into a
partial cache file while being hashed; a digest mismatch discards the bytes and
moves on to the next URL, so wrong or partial bytes never become an entry.

Transient failures (connection errors, timeouts, 5xx, 408, 429) are retried with
bounded exponential backoff; a body cut short is resumed with `Range` when the
server honours it (206 + a matching Content-Range), a bounded number of times.
Redirects are followed by hand, a bounded number of hops, and credentials from the
URL are only ever sent to the URL's own origin; no cookie is stored or sent.

Every download is bounded: by the artifact's `size:` exactly (a Content-Length that
disagrees, or one byte more, stops it), else by the project's `max-download:`
ceiling, so a server streaming without end cannot fill the disk. What is already
in the cache is only reported present after its bytes are verified again
(`Cache.verified_entry`). URLs are shown through `redact`: no password is printed.

`offline=True` never constructs an HTTP client, so no socket is opened at all;
file:// URLs are still used.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC
from pathlib import Path
from typing import TYPE_CHECKING, Protocol
from urllib.parse import unquote, urlsplit

from lowbuild.errors import (
    CacheWriteError,
    FetchError,
    Interrupted,
    OfflineMissing,
    VerificationError,
)
from lowbuild.redact import redact
from lowbuild.sources.cache import CHUNK, Cache
from lowbuild.spec.model import DEFAULT_MAX_DOWNLOAD, Artifact, ImageSpec, Rewrite

if TYPE_CHECKING:
    import httpx

DEFAULT_JOBS = 4


@dataclass(frozen=True)
class FetchPolicy:
    """How hard to try one URL. Tests shrink the delays; defaults suit real mirrors."""

    attempts: int = 4  # tries per URL for transient failures
    backoff: float = 0.5  # first delay in seconds, doubled after each failure
    backoff_max: float = 8.0
    retry_after_max: float = 60.0  # longest `Retry-After` (429, 503) waited for, in seconds
    connect_timeout: float = 10.0
    read_timeout: float = 30.0  # longest silence tolerated while reading
    max_redirects: int = 5
    max_resumes: int = 5  # Range resumes after a body was cut short
    max_download: int = DEFAULT_MAX_DOWNLOAD  # bytes, for an artifact without `size:`


class FetchReporter(Protocol):
    """Receives progress; called from worker threads (implementations must be thread-safe)."""

    def started(self, name: str, total: int | None) -> None: ...

    def advanced(self, name: str, nbytes: int) -> None: ...

    def finished(self, name: str, message: str) -> None: ...


class SilentReporter:
    """A reporter that shows nothing."""

    def started(self, name: str, total: int | None) -> None:
        pass

    def advanced(self, name: str, nbytes: int) -> None:
        pass

    def finished(self, name: str, message: str) -> None:
        pass


@dataclass(frozen=True)
class FetchOutcome:
    """One artifact now in the cache: where it came from ("cache" if it already was)."""

    image: str
    artifact: Artifact
    path: Path
    source: str


@dataclass(frozen=True)
class ComputedDigest:
    """`--print-digests`: the sha256 of what `url` serves for `file`, or why it failed.
    `url` is as declared (credentials included): show it through `redact`."""

    image: str
    file: str
    url: str
    sha256: str | None
    error: str | None = None


def candidate_urls(artifact: Artifact, rewrites: Sequence[Rewrite]) -> tuple[str, ...]:
    """The URLs to try, in order: every rewrite of every declared URL, then the declared URLs."""
    rewritten = [
        rule.replacement + url[len(rule.prefix) :]
        for url in artifact.urls
        for rule in rewrites
        if url.startswith(rule.prefix)
    ]
    return tuple(dict.fromkeys([*rewritten, *artifact.urls]))


def missing_artifact_lines(artifact: Artifact, images: Sequence[str]) -> list[str]:
    """How every message names an artifact that is not in the cache: its file, digest,
    the images (first one first) that declare it, and the commands that bring it."""
    get = (
        f"      get it with: lowbuild fetch {images[0]}   or: lowbuild cache add {artifact.file}"
        if artifact.urls
        else f"      cache-only (no urls: declared): lowbuild cache add {artifact.file}, "
        "or lowbuild bundle import a bundle holding it"
    )
    return [
        f"  {artifact.file}  sha256:{artifact.sha256}  image {', '.join(images)}"
        f"{_declared_at(artifact)}",
        get,
    ]


# ---------------------------------------------------------------------------
# One URL into one receiver (a cache writer, or a hasher for --print-digests)


class _Receiver(Protocol):
    """Where a download's bytes go; `restart` drops what it has (the body starts over)."""

    size: int

    def write(self, data: bytes) -> None: ...

    def restart(self) -> None: ...


class _HashingReceiver:
    """Hashes bytes and keeps nothing (for --print-digests)."""

    def __init__(self) -> None:
        self.size = 0
        self._sha256 = hashlib.sha256()

    def write(self, data: bytes) -> None:
        self._sha256.update(data)
        self.size += len(data)

    def restart(self) -> None:
        self.size = 0
        self._sha256 = hashlib.sha256()

    @property
    def sha256(self) -> str:
        return self._sha256.hexdigest()


class _Transient(Exception):
    """Worth trying the same URL again; `retry_after`: when the server asked to (seconds)."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class _Permanent(Exception):
    """This URL will not work; go to the next."""


@dataclass(frozen=True)
class _Bound:
    """The most bytes one artifact's download may have; `declared`: it is the artifact's
    own `size:` (then the body must have exactly that many bytes)."""

    limit: int
    declared: bool

    @classmethod
    def of(cls, artifact: Artifact, policy: FetchPolicy) -> _Bound:
        if artifact.size is not None:
            return cls(limit=artifact.size, declared=True)
        return cls(limit=policy.max_download, declared=False)

    def describe(self) -> str:
        if self.declared:
            return f"its declared size: {self.limit} bytes"
        return (
            f"the download limit of {self.limit} bytes (declare `size:` for this artifact, "
            "or raise `max-download:` in lowbuild.yaml)"
        )

    def check_length(self, length: int | None) -> None:
        """Refuse before reading a body whose announced length cannot be right."""
        if length is None:
            return
        if self.declared and length != self.limit:
            raise _Permanent(f"the server announces {length} bytes, not {self.describe()}")
        if length > self.limit:
            raise _Permanent(f"the server announces {length} bytes, more than {self.describe()}")

    def check_more(self, have: int, more: int) -> None:
        """Refuse `more` bytes on top of `have` when they would pass the limit."""
        if have + more > self.limit:
            raise _Permanent(f"stopped: the body is larger than {self.describe()}")


class _ClientSource:
    """Creates the shared httpx client on first use, so offline runs never build one."""

    def __init__(self, policy: FetchPolicy, *, offline: bool) -> None:
        self._policy = policy
        self._offline = offline
        self._client: httpx.Client | None = None
        self._lock = threading.Lock()

    def get(self) -> httpx.Client:
        import httpx  # here, not at the top: a warm-cache fetch never needs it

        if self._offline:
            raise AssertionError("offline: no HTTP client may be created")
        with self._lock:
            if self._client is None:
                timeout = httpx.Timeout(
                    connect=self._policy.connect_timeout,
                    read=self._policy.read_timeout,
                    write=self._policy.read_timeout,
                    pool=self._policy.connect_timeout,
                )
                # A jar whose policy accepts no domain: no cookie is ever stored or sent.
                # (imported here: http.cookiejar costs a build that fetches nothing 10 ms)
                from http.cookiejar import CookieJar, DefaultCookiePolicy

                jar = CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))
                self._client = httpx.Client(
                    timeout=timeout,
                    follow_redirects=False,
                    cookies=jar,
                    trust_env=True,
                    headers={"Accept-Encoding": "identity", "User-Agent": "lowbuild"},
                )
            return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return (url.scheme, url.host, url.port)


def _open_following_redirects(
    client: httpx.Client, url: str, headers: dict[str, str], policy: FetchPolicy
) -> httpx.Response:
    """GET `url` (streaming), following redirects by hand; returns the final response."""
    import httpx

    first = httpx.URL(url)
    authorization: str | None = None
    if first.username or first.password:
        token = base64.b64encode(f"{first.username}:{first.password}".encode()).decode()
        authorization = f"Basic {token}"
    current = first.copy_with(username=None, password=None)
    seen = [str(current)]
    for _hop in range(policy.max_redirects + 1):
        hop_headers = dict(headers)
        # Credentials belong to the origin the user wrote; never hand them to another.
        if authorization and _origin(current) == _origin(first):
            hop_headers["Authorization"] = authorization
        request = client.build_request("GET", current, headers=hop_headers)
        response = client.send(request, stream=True)
        if not response.is_redirect:
            return response
        location = response.headers.get("Location")
        response.close()
        if not location:
            raise _Permanent(f"HTTP {response.status_code} redirect without a Location header")
        target = current.join(location).copy_with(username=None, password=None)
        if target.scheme not in ("http", "https"):
            raise _Permanent(f"redirect to unsupported URL {target}")
        if str(target) in seen:
            raise _Permanent("redirect loop: " + " -> ".join([*seen, str(target)]))
        seen.append(str(target))
        current = target
    raise _Permanent(f"too many redirects (more than {policy.max_redirects}): " + " -> ".join(seen))


def retry_after(value: str, *, now: float | None = None) -> float | None:
    """The seconds a `Retry-After` header asks to wait (delay-seconds or an HTTP date),
    never below 0; None when absent or unreadable."""
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT; a naive one is read as such
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


@dataclass
class _ResumeState:
    """What we know about the body across attempts, to resume it safely."""

    total: int | None = None
    validator: str | None = None  # ETag or Last-Modified, sent as If-Range
    ranges_ok: bool = False


@dataclass
class _Transfer:
    """One URL's download across its attempts: where the bytes go, what is known of the
    body, the most bytes it may have, and whom to tell of progress (total, done)."""

    receiver: _Receiver
    bound: _Bound
    progress: Callable[[int | None, int], None]
    state: _ResumeState = field(default_factory=_ResumeState)


def _http_attempt(client: httpx.Client, url: str, transfer: _Transfer, policy: FetchPolicy) -> None:
    """One request, resuming from where the receiver is when that is safe.
    Raises _Transient or _Permanent."""
    import httpx

    receiver, state, progress = transfer.receiver, transfer.state, transfer.progress
    headers: dict[str, str] = {}
    resuming = receiver.size > 0 and state.ranges_ok
    if resuming:
        headers["Range"] = f"bytes={receiver.size}-"
        # If the file changed since, If-Range makes the server send it whole (200).
        # Without a validator the final digest check still catches a spliced body.
        if state.validator:
            headers["If-Range"] = state.validator
    elif receiver.size > 0:
        receiver.restart()
        progress(state.total, 0)
    try:
        response = _open_following_redirects(client, url, headers, policy)
    except httpx.TransportError as exc:
        raise _Transient(_describe_transport_error(exc)) from None
    try:
        _read_body(response, transfer, resuming=resuming)
    finally:
        response.close()
    if state.total is not None and receiver.size != state.total:
        raise _Transient(f"body cut short: got {receiver.size} of {state.total} bytes")
    if receiver.size == 0:
        raise _Permanent("empty body")


def _read_body(response: httpx.Response, transfer: _Transfer, *, resuming: bool) -> None:
    import httpx

    receiver, state, bound = transfer.receiver, transfer.state, transfer.bound
    progress = transfer.progress
    status = response.status_code
    if status in (408, 429) or status >= 500:  # timeout, rate limit, server trouble
        asked = (
            retry_after(response.headers.get("Retry-After", "")) if status in (429, 503) else None
        )
        said = f" (Retry-After {asked:g} s)" if asked is not None else ""
        raise _Transient(f"HTTP {status} {response.reason_phrase}{said}", retry_after=asked)
    if status == 206 and resuming:
        start, total = _parse_content_range(response.headers.get("Content-Range", ""))
        if start != receiver.size or (state.total is not None and total != state.total):
            raise _Permanent(
                f"bad Content-Range {response.headers.get('Content-Range')!r} "
                f"when resuming at byte {receiver.size}"
            )
        bound.check_length(total)
    elif status == 200:
        if receiver.size > 0:  # the server ignored Range (or the file changed): start over
            receiver.restart()
        length = response.headers.get("Content-Length")
        state.total = int(length) if length and length.isdigit() else None
        bound.check_length(state.total)
        state.ranges_ok = response.headers.get("Accept-Ranges", "").lower() == "bytes"
        state.validator = response.headers.get("ETag") or response.headers.get("Last-Modified")
    else:
        raise _Permanent(f"HTTP {status} {response.reason_phrase}")
    progress(state.total, receiver.size)
    try:
        # No chunk_size: httpx would buffer up to it, and bytes received before a
        # broken connection would be lost instead of resumed from.
        for chunk in response.iter_raw():
            bound.check_more(receiver.size, len(chunk))  # before the bytes touch the disk
            receiver.write(chunk)
            progress(state.total, receiver.size)
    except httpx.TransportError as exc:
        got = f"after {receiver.size} of {state.total} bytes" if state.total else ""
        raise _Transient(f"{_describe_transport_error(exc)} {got}".strip()) from None


def _parse_content_range(value: str) -> tuple[int | None, int | None]:
    # "bytes 100-199/200"
    try:
        unit, rest = value.split(" ", 1)
        span, total = rest.split("/", 1)
        start = span.split("-", 1)[0]
        return (
            (int(start), None if total == "*" else int(total)) if unit == "bytes" else (None, None)
        )
    except ValueError:
        return None, None


def _describe_transport_error(exc: httpx.TransportError) -> str:
    import httpx

    kind = {
        httpx.ConnectTimeout: "connect timeout",
        httpx.ReadTimeout: "read timeout (server stalled)",
        httpx.ConnectError: "connection failed",
        httpx.ReadError: "connection broken while reading",
        httpx.RemoteProtocolError: "connection closed early",
    }.get(type(exc), type(exc).__name__)
    detail = str(exc)
    return f"{kind}: {detail}" if detail else kind


def _file_url_path(url: str) -> Path:
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise _Permanent(f"file URL with a remote host {parts.netloc!r} is not supported")
    return Path(unquote(parts.path))


def _copy_file_url(
    url: str, receiver: _Receiver, bound: _Bound, progress: Callable[[int | None, int], None]
) -> None:
    path = _file_url_path(url)
    # Only reading the source is caught here: a receiver that cannot write raises its own
    # error (CacheWriteError, not an OSError), which names the cache, not the source.
    try:
        f = path.open("rb")
    except FileNotFoundError:
        raise _Permanent(f"no such file: {path}") from None
    except OSError as exc:
        raise _Permanent(f"cannot read {path}: {exc.strerror}") from None
    with f:
        try:
            total = path.stat().st_size
        except OSError as exc:
            raise _Permanent(f"cannot read {path}: {exc.strerror}") from None
        bound.check_length(total)
        while True:
            try:
                chunk = f.read(CHUNK)
            except OSError as exc:
                raise _Permanent(f"cannot read {path}: {exc.strerror}") from None
            if not chunk:
                break
            bound.check_more(receiver.size, len(chunk))
            receiver.write(chunk)
            progress(total, receiver.size)
    if receiver.size == 0:
        raise _Permanent("empty file")


def _download(
    *,
    client_source: _ClientSource,
    url: str,
    receiver: _Receiver,
    policy: FetchPolicy,
    bound: _Bound,
    progress: Callable[[int | None, int], None],
    cancel: threading.Event | None = None,
) -> None:
    """`url` into `receiver`: a file URL copied, an HTTP one tried `policy.attempts` times
    (resumed at once when a body broke off, else after a backoff or the server's
    Retry-After). Raises _Permanent when this URL will not do."""
    scheme = urlsplit(url).scheme
    if scheme == "file":
        _copy_file_url(url, receiver, bound, progress)
        return
    if scheme not in ("http", "https"):
        raise _Permanent(f"unsupported URL scheme {scheme!r} (use http, https or file)")
    transfer = _Transfer(receiver, bound, progress)
    failures = 0
    resumes = 0
    while True:
        if cancel is not None and cancel.is_set():
            raise _Cancelled
        before = receiver.size
        try:
            _http_attempt(client_source.get(), url, transfer, policy)
            return
        except _Transient as exc:
            resumable = transfer.state.ranges_ok and resumes < policy.max_resumes
            if receiver.size > before and resumable:
                resumes += 1
                continue  # resume right away: the server is up, the connection broke
            failures += 1
            if failures >= policy.attempts:
                raise _Permanent(f"{exc} (gave up after {failures} attempts)") from None
            delay = min(policy.backoff * 2 ** (failures - 1), policy.backoff_max)
            if exc.retry_after is not None:  # the server said when: no sooner, within reason
                delay = max(delay, min(exc.retry_after, policy.retry_after_max))
            if cancel is not None and cancel.wait(delay):  # an interrupt ends the wait
                raise _Cancelled from None
            if cancel is None:
                time.sleep(delay)


# ---------------------------------------------------------------------------
# One artifact, then many


@dataclass(frozen=True)
class _Digest:
    """One distinct digest to obtain, with every declaration that asked for it."""

    image: str
    artifact: Artifact
    urls: tuple[str, ...]
    also: tuple[tuple[str, Artifact], ...] = ()


class _Missing(Exception):
    def __init__(self, wanted: _Digest, tried: list[str], *, mismatched: bool = False) -> None:
        super().__init__(wanted.artifact.file)
        self.wanted = wanted
        self.tried = tried
        self.mismatched = mismatched  # a source served bytes that are not the pinned ones


def _verified_in_cache(cache: Cache, artifact: Artifact) -> Path | None:
    """The artifact's entry once verified again, or None when the cache has none (also
    when one vanished meanwhile, e.g. `cache verify` quarantined it)."""
    try:
        return cache.verified_entry(artifact.sha256, name=artifact.file)
    except FileNotFoundError:
        return None


class _Cancelled(BaseException):
    """Raised in a download thread once the run was interrupted: not an Exception, so no
    handler of failed sources takes it for one; the cache writer removes the partial."""


def _obtain(
    wanted: _Digest,
    *,
    cancel: threading.Event,
    cache: Cache,
    client_source: _ClientSource,
    offline: bool,
    policy: FetchPolicy,
    reporter: FetchReporter,
) -> FetchOutcome:
    """Make sure the wanted digest is in the cache; raise _Missing with every URL's reason.

    An entry already there counts only once its bytes are verified again (a
    VerificationError naming it and the fix otherwise); a cache that cannot be
    written to raises CacheWriteError naming the cache path."""
    artifact = wanted.artifact
    if (cached := _verified_in_cache(cache, artifact)) is not None:
        return FetchOutcome(wanted.image, artifact, cached, "cache")
    tried: list[str] = []
    mismatched = False
    bound = _Bound.of(artifact, policy)
    with cache.entry_lock(artifact.sha256):
        # Another process may have finished it while we waited for the lock.
        if (cached := _verified_in_cache(cache, artifact)) is not None:
            return FetchOutcome(wanted.image, artifact, cached, "cache")
        for url in wanted.urls:
            if offline and urlsplit(url).scheme != "file":
                continue
            shown = False

            def progress(total: int | None, done: int) -> None:
                nonlocal shown
                if cancel.is_set():  # after every chunk: an interrupt stops at once
                    raise _Cancelled
                if not shown:
                    reporter.started(artifact.file, total)
                    shown = True
                reporter.advanced(artifact.file, done)

            with cache.writer(sha256=artifact.sha256, sha512=artifact.sha512) as writer:
                try:
                    _download(
                        client_source=client_source,
                        url=url,
                        receiver=writer,
                        policy=policy,
                        bound=bound,
                        progress=progress,
                        cancel=cancel,
                    )
                    path = writer.commit()
                except (_Permanent, _Transient, VerificationError) as exc:
                    tried.append(redact(f"{url}: {exc}"))
                    mismatched = mismatched or isinstance(exc, VerificationError)
                    continue
                except CacheWriteError as exc:
                    # No other URL would help: the cache itself cannot take the bytes.
                    raise CacheWriteError(f"{artifact.file}: {exc}") from None
            reporter.finished(
                artifact.file, redact(f"{artifact.file}  {writer.size} bytes  from {url}")
            )
            return FetchOutcome(wanted.image, artifact, path, url)
    raise _Missing(wanted, tried, mismatched=mismatched)


def _distinct_digests(images: Iterable[ImageSpec], rewrites: Sequence[Rewrite]) -> list[_Digest]:
    """One entry per distinct sha256, with the URLs of every declaration of it."""
    by_digest: dict[str, list[tuple[str, Artifact]]] = {}
    for image in images:
        for artifact in image.artifacts:
            by_digest.setdefault(artifact.sha256, []).append((image.name, artifact))
    plan = []
    for decls in by_digest.values():
        urls = tuple(dict.fromkeys(url for _, a in decls for url in candidate_urls(a, rewrites)))
        first_image, first_artifact = decls[0]
        plan.append(
            _Digest(image=first_image, artifact=first_artifact, urls=urls, also=tuple(decls[1:]))
        )
    return plan


def _declared_at(artifact: Artifact) -> str:
    return f" ({artifact.location})" if artifact.location else ""


def _offline_message(missing: list[_Missing]) -> str:
    lines = [
        f"{len(missing)} input(s) not in the cache, and --offline forbids downloading:",
    ]
    for m in missing:
        w = m.wanted
        a = w.artifact
        lines += missing_artifact_lines(a, sorted({w.image, *(name for name, _ in w.also)}))
        lines.extend(f"      tried {t}" for t in m.tried)
    # An offline host gets its inputs as a bundle: say so wherever offline meets a gap.
    lines.append(
        "on an air-gapped host, bring them all at once with: lowbuild bundle import FILE "
        "(written by `lowbuild bundle export FILE` on a connected host)"
    )
    return "\n".join(lines)


def _fetch_message(failed: list[_Missing]) -> str:
    lines = [f"could not fetch {len(failed)} artifact(s):"]
    for m in failed:
        a = m.wanted.artifact
        lines.append(f"  {a.file} (image {m.wanted.image}, sha256:{a.sha256}){_declared_at(a)}")
        if not a.urls:
            lines.append(
                "      cache-only (no urls: declared) and not in the cache: "
                f"lowbuild cache add {a.file}, or lowbuild bundle import a bundle holding it"
            )
        elif not m.tried:
            lines.append("      no URL to try")
        lines.extend(f"      {t}" for t in m.tried)
    return "\n".join(lines)


def fetch_artifacts(
    images: Iterable[ImageSpec],
    *,
    cache: Cache,
    rewrites: Sequence[Rewrite] = (),
    offline: bool = False,
    jobs: int = DEFAULT_JOBS,
    policy: FetchPolicy | None = None,
    reporter: FetchReporter | None = None,
) -> list[FetchOutcome]:
    """Make every artifact of `images` present and verified in `cache`.

    Downloads run in `jobs` threads. Raises VerificationError (a cache entry whose
    bytes no longer match, named with the fix), OfflineMissing (offline, listing every
    missing file with its digest and the command that gets it) or FetchError
    (naming each failed artifact and every URL tried, with the reason for each).
    Artifacts that did succeed stay in the cache either way.
    """
    policy = policy or FetchPolicy()
    reporter = reporter or SilentReporter()
    plan = _distinct_digests(images, rewrites)
    client_source = _ClientSource(policy, offline=offline)
    outcomes: list[FetchOutcome] = []
    failed: list[_Missing] = []
    corrupt: list[str] = []
    cancel = threading.Event()
    pool = ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="fetch")
    futures: list[Future[FetchOutcome]] = []
    try:
        futures += [
            pool.submit(
                _obtain,
                wanted,
                cancel=cancel,
                cache=cache,
                client_source=client_source,
                offline=offline,
                policy=policy,
                reporter=reporter,
            )
            for wanted in plan
        ]
        for future in futures:
            try:
                outcomes.append(future.result())
            except _Missing as exc:
                failed.append(exc)
            except VerificationError as exc:
                corrupt.append(str(exc))
    except BaseException as exc:
        # Ctrl-C or SIGTERM: stop every download now (each stops at its next chunk, and
        # closing the client breaks a read that waits for one), start no other, and wait
        # only for the threads to remove their partial files.
        cancel.set()
        stopped = sum(1 for future in futures if not future.done())
        pool.shutdown(wait=False, cancel_futures=True)
        client_source.close()
        pool.shutdown(wait=True)
        if isinstance(exc, KeyboardInterrupt):
            raise Interrupted(
                f"interrupted: stopped {stopped} download(s); no partial file is left, and "
                "what was complete stays in the cache"
            ) from None
        raise
    finally:
        pool.shutdown(wait=True)
        client_source.close()
    if corrupt:
        raise VerificationError("\n".join(corrupt))
    if failed:
        if offline:
            raise OfflineMissing(_offline_message(failed))
        if any(missing.mismatched for missing in failed):
            # Bytes that are not the pinned ones: a verification failure (exit 4), not
            # a source that merely could not be reached.
            raise VerificationError(_fetch_message(failed))
        raise FetchError(_fetch_message(failed))
    return outcomes


def compute_digests(
    images: Iterable[ImageSpec],
    *,
    rewrites: Sequence[Rewrite] = (),
    offline: bool = False,
    policy: FetchPolicy | None = None,
) -> list[ComputedDigest]:
    """Download every candidate URL of every artifact and hash it, keeping nothing.

    For pinning: the bytes are never admitted to the cache, whatever they hash to.
    """
    policy = policy or FetchPolicy()
    client_source = _ClientSource(policy, offline=offline)
    results = []
    try:
        for image in images:
            for artifact in image.artifacts:
                for url in candidate_urls(artifact, rewrites):
                    if offline and urlsplit(url).scheme != "file":
                        continue
                    receiver = _HashingReceiver()
                    try:
                        _download(
                            client_source=client_source,
                            url=url,
                            receiver=receiver,
                            policy=policy,
                            bound=_Bound.of(artifact, policy),
                            progress=lambda total, done: None,
                        )
                    except (_Permanent, _Transient) as exc:
                        results.append(
                            ComputedDigest(image.name, artifact.file, url, None, redact(str(exc)))
                        )
                        continue
                    results.append(ComputedDigest(image.name, artifact.file, url, receiver.sha256))
    finally:
        client_source.close()
    return results
