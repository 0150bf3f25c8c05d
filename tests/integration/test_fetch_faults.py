"""Fetching against a real misbehaving HTTP server: the right outcome, a clear message,
and never a wrong or partial entry in the cache."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from fault_server import FaultServer

from lowbuild.errors import FetchError, OfflineMissing, VerificationError
from lowbuild.sources.cache import Cache
from lowbuild.sources.fetch import FetchPolicy, compute_digests, fetch_artifacts
from lowbuild.spec.model import Artifact, ImageSpec, Rewrite

PAYLOAD = os.urandom(300_000)
SHA = hashlib.sha256(PAYLOAD).hexdigest()
FAST = FetchPolicy(attempts=3, backoff=0.01, backoff_max=0.05, connect_timeout=2, read_timeout=0.5)


@pytest.fixture
def server() -> Iterator[FaultServer]:
    with FaultServer() as srv:
        srv.add("src.tar.gz", PAYLOAD)
        yield srv


@pytest.fixture
def cache(tmp_path: Path) -> Cache:
    return Cache(tmp_path / "cache")


def image_with(
    *urls: str, sha256: str = SHA, sha512: str | None = None, file: str = "src.tar.gz"
) -> ImageSpec:
    return ImageSpec(
        name="app",
        directory=Path("/nonexistent"),
        artifacts=(Artifact(file=file, urls=tuple(urls), sha256=sha256, sha512=sha512),),
    )


def cache_files(cache: Cache) -> list[str]:
    """Every file in the cache's entry directory, partials included."""
    directory = cache.root / "sha256"
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def test_good_download_becomes_a_readable_entry_and_is_not_fetched_again(
    server: FaultServer, cache: Cache
) -> None:
    old = os.umask(0o077)  # the entry mode must not depend on the umask
    try:
        [outcome] = fetch_artifacts(
            [image_with(server.url("ok", "src.tar.gz"))], cache=cache, policy=FAST
        )
    finally:
        os.umask(old)
    assert outcome.path.read_bytes() == PAYLOAD
    assert outcome.path.stat().st_mode & 0o777 == 0o644
    assert (cache.root / "sha256").stat().st_mode & 0o777 == 0o755
    assert cache_files(cache) == [SHA]
    [again] = fetch_artifacts(
        [image_with(server.url("ok", "src.tar.gz"))], cache=cache, policy=FAST
    )
    assert again.source == "cache"
    assert server.state.count("/ok/src.tar.gz") == 1


def test_truncated_body_never_enters_cache(server: FaultServer, cache: Cache) -> None:
    url = server.url("truncate", "src.tar.gz")
    with pytest.raises(FetchError) as info:
        fetch_artifacts([image_with(url)], cache=cache, policy=FAST)
    message = str(info.value)
    assert "src.tar.gz" in message and url in message
    assert "closed early" in message or "cut short" in message
    assert cache_files(cache) == []


def test_html_page_served_as_200_is_rejected_and_next_mirror_used(
    server: FaultServer, cache: Cache
) -> None:
    html = server.url("html", "src.tar.gz")
    with pytest.raises(VerificationError) as info:  # not the pinned bytes: exit 4
        fetch_artifacts([image_with(html)], cache=cache, policy=FAST)
    assert "sha256 mismatch" in str(info.value) and html in str(info.value)
    assert cache_files(cache) == []

    [outcome] = fetch_artifacts(
        [image_with(html, server.url("ok", "src.tar.gz"))], cache=cache, policy=FAST
    )
    assert outcome.source == server.url("ok", "src.tar.gz")
    assert cache_files(cache) == [SHA]


def test_server_error_is_retried_then_succeeds(server: FaultServer, cache: Cache) -> None:
    url = server.url("flaky", "src.tar.gz")
    [outcome] = fetch_artifacts([image_with(url)], cache=cache, policy=FAST)
    assert outcome.path.read_bytes() == PAYLOAD
    assert server.state.count("/flaky/src.tar.gz") == 2


def test_retry_after_of_a_busy_server_is_honoured(server: FaultServer, cache: Cache) -> None:
    # FAST backs off for 0.01 s; the server asked for 1 s, and gets it.
    [outcome] = fetch_artifacts(
        [image_with(server.url("busy", "src.tar.gz"))], cache=cache, policy=FAST
    )
    assert outcome.path.read_bytes() == PAYLOAD
    first, second = server.state.requests
    assert second.at - first.at >= 0.95


def test_retry_after_beyond_the_policy_limit_is_cut_to_it(
    server: FaultServer, cache: Cache
) -> None:
    policy = replace(FAST, retry_after_max=0.1)
    fetch_artifacts([image_with(server.url("busy", "src.tar.gz"))], cache=cache, policy=policy)
    first, second = server.state.requests
    assert second.at - first.at < 0.9


def test_404_on_first_mirror_falls_back_to_second(server: FaultServer, cache: Cache) -> None:
    [outcome] = fetch_artifacts(
        [image_with(server.url("missing", "src.tar.gz"), server.url("ok", "src.tar.gz"))],
        cache=cache,
        policy=FAST,
    )
    assert outcome.source == server.url("ok", "src.tar.gz")
    # a 404 is not transient: asked once, not retried
    assert server.state.count("/missing/src.tar.gz") == 1
    assert cache_files(cache) == [SHA]


def test_connection_reset_every_time_fails_with_every_url_and_reason(
    server: FaultServer, cache: Cache
) -> None:
    reset, missing = server.url("reset", "src.tar.gz"), server.url("missing", "src.tar.gz")
    with pytest.raises(FetchError) as info:
        fetch_artifacts([image_with(reset, missing)], cache=cache, policy=FAST)
    message = str(info.value)
    assert f"{reset}: " in message and "gave up after" in message
    assert f"{missing}: HTTP 404" in message
    assert cache_files(cache) == []


def test_broken_download_resumes_with_range(server: FaultServer, cache: Cache) -> None:
    [outcome] = fetch_artifacts(
        [image_with(server.url("resetonce", "src.tar.gz"))], cache=cache, policy=FAST
    )
    assert outcome.path.read_bytes() == PAYLOAD
    second = server.state.requests[1]
    assert second.headers["range"] == f"bytes={len(PAYLOAD) // 3}-"
    assert second.headers["if-range"] == '"v1"'
    assert cache_files(cache) == [SHA]


def test_broken_download_without_range_support_restarts_from_zero(
    server: FaultServer, cache: Cache
) -> None:
    [outcome] = fetch_artifacts(
        [image_with(server.url("norange", "src.tar.gz"))], cache=cache, policy=FAST
    )
    assert outcome.path.read_bytes() == PAYLOAD
    assert all("range" not in r.headers for r in server.state.requests)


def test_stalled_server_times_out(server: FaultServer, cache: Cache) -> None:
    url = server.url("stall", "src.tar.gz")
    started = time.monotonic()
    with pytest.raises(FetchError) as info:
        fetch_artifacts([image_with(url)], cache=cache, policy=FAST)
    assert time.monotonic() - started < 10
    assert "read timeout" in str(info.value)
    assert cache_files(cache) == []


def test_redirect_loop_is_reported(server: FaultServer, cache: Cache) -> None:
    with pytest.raises(FetchError) as info:
        fetch_artifacts([image_with(server.url("loop", "src.tar.gz"))], cache=cache, policy=FAST)
    assert "redirect loop" in str(info.value)
    assert server.state.count("/loop/src.tar.gz") == 1  # permanent: not retried
    assert cache_files(cache) == []


def test_credentials_and_cookies_are_not_forwarded_to_another_origin(
    server: FaultServer, cache: Cache
) -> None:
    url = f"http://user:secret@127.0.0.1:{server.port}/redirect/src.tar.gz"
    [outcome] = fetch_artifacts([image_with(url)], cache=cache, policy=FAST)
    assert outcome.path.read_bytes() == PAYLOAD
    first, second = server.state.requests
    assert first.headers["authorization"].startswith("Basic ")
    assert second.headers["host"].startswith("localhost:")
    assert "authorization" not in second.headers
    assert "cookie" not in second.headers


def test_empty_body_is_rejected(server: FaultServer, cache: Cache) -> None:
    with pytest.raises(FetchError, match="empty body"):
        fetch_artifacts([image_with(server.url("empty", "src.tar.gz"))], cache=cache, policy=FAST)
    assert cache_files(cache) == []


def test_sha512_is_checked_when_pinned(server: FaultServer, cache: Cache) -> None:
    url = server.url("ok", "src.tar.gz")
    with pytest.raises(VerificationError, match="sha512 mismatch"):
        fetch_artifacts([image_with(url, sha512="0" * 128)], cache=cache, policy=FAST)
    assert cache_files(cache) == []
    good = hashlib.sha512(PAYLOAD).hexdigest()
    fetch_artifacts([image_with(url, sha512=good)], cache=cache, policy=FAST)
    assert cache_files(cache) == [SHA]


def test_mirror_rewrite_is_tried_before_declared_url(
    server: FaultServer, cache: Cache, tmp_path: Path
) -> None:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "src.tar.gz").write_bytes(PAYLOAD)
    declared = server.url("ok", "src.tar.gz")
    rewrites = (
        Rewrite(prefix=f"http://127.0.0.1:{server.port}/ok/", replacement=f"file://{mirror}/"),
    )
    [outcome] = fetch_artifacts([image_with(declared)], cache=cache, rewrites=rewrites, policy=FAST)
    assert outcome.source == f"file://{mirror}/src.tar.gz"
    assert server.state.requests == []


def test_offline_lists_every_missing_input_with_digest_and_command(
    cache: Cache, tmp_path: Path
) -> None:
    present = b"already here"
    present_sha = hashlib.sha256(present).hexdigest()
    (tmp_path / "present").write_bytes(present)
    cache.admit_file(tmp_path / "present", sha256=present_sha)
    images = [
        ImageSpec(
            name="nginx",
            directory=tmp_path,
            artifacts=(
                Artifact(
                    file="nginx.tar.gz",
                    urls=("https://example.invalid/nginx.tar.gz",),
                    sha256="a" * 64,
                ),
                Artifact(
                    file="ok.bin", urls=("https://example.invalid/ok.bin",), sha256=present_sha
                ),
            ),
        ),
        ImageSpec(
            name="haproxy",
            directory=tmp_path,
            artifacts=(
                Artifact(file="haproxy.tar.gz", urls=(f"file://{tmp_path}/nope",), sha256="b" * 64),
            ),
        ),
    ]
    with pytest.raises(OfflineMissing) as info:
        fetch_artifacts(images, cache=cache, offline=True)
    message = str(info.value)
    assert info.value.exit_code == 2
    assert "nginx.tar.gz  sha256:" + "a" * 64 in message
    assert "haproxy.tar.gz  sha256:" + "b" * 64 in message
    assert "lowbuild fetch nginx" in message and "lowbuild fetch haproxy" in message
    assert "lowbuild cache add nginx.tar.gz" in message
    assert "no such file" in message  # the file:// URL was tried, even offline
    assert "ok.bin" not in message


def test_print_digests_hashes_each_url_and_admits_nothing(
    server: FaultServer, cache: Cache
) -> None:
    image = image_with(
        server.url("ok", "src.tar.gz"),
        server.url("html", "src.tar.gz"),
        server.url("missing", "src.tar.gz"),
        sha256="c" * 64,
    )
    results = compute_digests([image], policy=FAST)
    assert [r.sha256 for r in results[:1]] == [SHA]
    assert results[1].sha256 is not None and results[1].sha256 != SHA
    assert results[2].sha256 is None and "404" in (results[2].error or "")
    assert cache_files(cache) == []


def test_parallel_fetch_of_many_artifacts(server: FaultServer, cache: Cache) -> None:
    bodies = {f"part{i}.bin": os.urandom(50_000 + i) for i in range(8)}
    for name, body in bodies.items():
        server.add(name, body)
    image = ImageSpec(
        name="many",
        directory=Path("/nonexistent"),
        artifacts=tuple(
            Artifact(
                file=name, urls=(server.url("slow", name),), sha256=hashlib.sha256(body).hexdigest()
            )
            for name, body in bodies.items()
        ),
    )
    server.state.slow_delay = 0.01
    outcomes = fetch_artifacts([image], cache=cache, jobs=4, policy=FAST)
    assert {o.artifact.file for o in outcomes} == set(bodies)
    assert cache_files(cache) == sorted(hashlib.sha256(b).hexdigest() for b in bodies.values())


def test_offline_sends_no_request_even_when_a_server_is_up(
    server: FaultServer, cache: Cache
) -> None:
    with pytest.raises(OfflineMissing):
        fetch_artifacts([image_with(server.url("ok", "src.tar.gz"))], cache=cache, offline=True)
    assert server.state.requests == []
    assert cache_files(cache) == []
