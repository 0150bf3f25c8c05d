"""Downloads are bounded and a full cache is one clear line: a real loopback server
that streams more than it should, and a real tiny tmpfs mounted as the cache."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fault_server import FaultServer

from lowbuild.errors import CacheWriteError, FetchError
from lowbuild.sources.cache import Cache
from lowbuild.sources.fetch import FetchPolicy, compute_digests, fetch_artifacts
from lowbuild.spec.model import Artifact, ImageSpec

PAYLOAD = os.urandom(64 * 1024)
SHA = hashlib.sha256(PAYLOAD).hexdigest()
BIG = os.urandom(1024 * 1024)  # four times the tmpfs below
BIG_SHA = hashlib.sha256(BIG).hexdigest()
FAST = FetchPolicy(attempts=2, backoff=0.01, backoff_max=0.05, connect_timeout=2, read_timeout=2)


@pytest.fixture
def server() -> Iterator[FaultServer]:
    with FaultServer() as srv:
        srv.add("src.tar.gz", PAYLOAD)
        srv.add("big.bin", BIG)
        yield srv


def image_with(
    url: str, *, size: int | None = None, sha256: str = SHA, file: str = "src.tar.gz"
) -> ImageSpec:
    return ImageSpec(
        name="app",
        directory=Path("/nonexistent"),
        artifacts=(Artifact(file=file, urls=(url,), sha256=sha256, size=size),),
    )


def cache_files(cache: Cache) -> list[str]:
    directory = cache.root / "sha256"
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def test_body_longer_than_the_declared_size_is_cut_off(server: FaultServer, tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    with pytest.raises(FetchError) as caught:
        fetch_artifacts(
            [image_with(server.url("flood", "src.tar.gz"), size=len(PAYLOAD))],
            cache=cache,
            policy=FAST,
        )
    message = str(caught.value)
    assert "src.tar.gz" in message and f"declared size: {len(PAYLOAD)} bytes" in message
    assert cache_files(cache) == []  # no entry, no partial
    # Stopped as soon as the body passed the limit, not after the server's 512 MiB.
    assert server.state.flooded < 64 * 1024 * 1024


def test_content_length_that_disagrees_with_size_is_refused_before_reading(
    server: FaultServer, tmp_path: Path
) -> None:
    cache = Cache(tmp_path / "cache")
    with pytest.raises(FetchError) as caught:
        fetch_artifacts(
            [image_with(server.url("ok", "src.tar.gz"), size=len(PAYLOAD) - 1)],
            cache=cache,
            policy=FAST,
        )
    assert f"announces {len(PAYLOAD)} bytes" in str(caught.value)
    assert cache_files(cache) == []


def test_the_right_size_downloads(server: FaultServer, tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    [outcome] = fetch_artifacts(
        [image_with(server.url("ok", "src.tar.gz"), size=len(PAYLOAD))], cache=cache, policy=FAST
    )
    assert outcome.path.read_bytes() == PAYLOAD


def test_endless_body_stops_at_the_default_ceiling(server: FaultServer, tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    ceiling = FetchPolicy(attempts=1, read_timeout=5, max_download=1024 * 1024)
    with pytest.raises(FetchError) as caught:
        fetch_artifacts(
            [image_with(server.url("flood", "src.tar.gz"))], cache=cache, policy=ceiling
        )
    message = str(caught.value)
    assert "src.tar.gz" in message and "1048576 bytes" in message
    assert "max-download:" in message and "size:" in message
    assert cache_files(cache) == []
    assert server.state.flooded < 64 * 1024 * 1024


def test_announced_length_above_the_ceiling_is_refused_before_reading(
    server: FaultServer, tmp_path: Path
) -> None:
    cache = Cache(tmp_path / "cache")
    ceiling = FetchPolicy(attempts=1, max_download=len(PAYLOAD) - 1)
    with pytest.raises(FetchError) as caught:
        fetch_artifacts([image_with(server.url("ok", "src.tar.gz"))], cache=cache, policy=ceiling)
    assert f"announces {len(PAYLOAD)} bytes, more than the download limit" in str(caught.value)
    assert cache_files(cache) == []


def test_print_digests_is_bounded_too(server: FaultServer) -> None:
    ceiling = FetchPolicy(attempts=1, read_timeout=5, max_download=1024 * 1024)
    [result] = compute_digests(
        [image_with(server.url("flood", "src.tar.gz"), sha256="")], policy=ceiling
    )
    assert result.sha256 is None and result.error is not None and "1048576 bytes" in result.error


# ---- a full disk under the cache ----


@pytest.fixture
def tiny_cache(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs mounted as the cache directory, unmounted whatever happens."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount_point = tmp_path / "tiny-cache"
    mount_point.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount_point)], check=True
    )
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def write_project(root: Path, url: str) -> Path:
    context = root / "contexts" / "app"
    context.mkdir(parents=True)
    (root / "lowbuild.yaml").write_text("name: demo\n")
    (context / "Dockerfile").write_text("FROM scratch\nCOPY big.bin /\n")
    (context / "image.yaml").write_text(
        f"name: app\nartifacts:\n  - file: big.bin\n    urls: [{url}]\n    sha256: {BIG_SHA}\n"
    )
    return root / "lowbuild.yaml"


def fetch_cli(project: Path, cache: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lowbuild", "fetch", "-f", str(project), "--cache", str(cache)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("scheme", ["http", "file"])
def test_full_cache_disk_is_one_line_naming_the_cache(
    server: FaultServer, tmp_path: Path, tiny_cache: Path, scheme: str
) -> None:
    source = tmp_path / "big.bin"
    source.write_bytes(BIG)
    url = server.url("ok", "big.bin") if scheme == "http" else f"file://{source}"
    done = fetch_cli(write_project(tmp_path / "p", url), tiny_cache)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    message = " ".join(done.stderr.split())
    assert message.startswith("error: "), message
    assert "no space left on device" in message and str(tiny_cache) in message
    assert "big.bin" in message
    assert "cannot read" not in message  # the source was fine: the cache is full
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert list((tiny_cache / "sha256").iterdir()) == []  # no partial left
    assert source.read_bytes() == BIG


def test_full_cache_raises_a_cache_write_error_from_the_api(
    server: FaultServer, tiny_cache: Path
) -> None:
    with pytest.raises(CacheWriteError) as caught:
        fetch_artifacts(
            [image_with(server.url("ok", "big.bin"), sha256=BIG_SHA, file="big.bin")],
            cache=Cache(tiny_cache),
            policy=FAST,
        )
    assert "no space left on device" in str(caught.value)
    assert list((tiny_cache / "sha256").iterdir()) == []
