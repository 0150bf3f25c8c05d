"""A corrupted cache entry never reaches an image: `fetch` does not call it verified,
`build` stops with exit 4 naming the file and the fix, and once the user follows the
fix (`cache verify`, `fetch`) the next build ships the good bytes, even though a stage
made from the entry before it rotted was still on disk. Real files, real podman."""

from __future__ import annotations

import hashlib
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from live_services import BASE_IMAGE

GOOD = os.urandom(100_000)
SHA = hashlib.sha256(GOOD).hexdigest()


def flip_byte(path: Path, offset: int = 5000) -> None:
    """One byte changed in place: same inode, same size, as rot or a stray write leaves it."""
    with path.open("r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))


@dataclass(frozen=True)
class Family:
    root: Path
    cache: Path
    ref: str

    def lowbuild(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "lowbuild", *args],  # the project is found in cwd
            cwd=self.root,
            env={**os.environ, "LOWBUILD_CACHE": str(self.cache)},
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )

    @property
    def entry(self) -> Path:
        return self.cache / "sha256" / SHA

    def shipped_sha256(self) -> str:
        """The sha256 of the artifact as it is inside the built image."""
        out = subprocess.run(
            [
                "podman",
                "run",
                "--rm",
                "--network",
                "none",
                self.ref,
                "sha256sum",
                "/in/payload.bin",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        ).stdout
        return out.split()[0]

    def image_exists(self) -> bool:
        return subprocess.run(["podman", "image", "exists", self.ref], check=False).returncode == 0


@pytest.fixture
def family(tmp_path: Path) -> Iterator[Family]:
    """One image, FROM the busybox base, that copies a pinned artifact from a file:// URL."""
    source = tmp_path / "upstream" / "payload.bin"
    source.parent.mkdir()
    source.write_bytes(GOOD)
    root = tmp_path / "project"
    context = root / "contexts" / "app"
    context.mkdir(parents=True)
    namespace = f"lowbuild-integrity-{secrets.token_hex(4)}"
    (root / "lowbuild.yaml").write_text(
        f"name: integrity\nnamespace: {namespace}\nengine: podman\n"
    )
    (context / "Dockerfile").write_text(f"FROM {BASE_IMAGE}\nCOPY payload.bin /in/payload.bin\n")
    (context / "image.yaml").write_text(
        "name: app\nnetwork: none\nartifacts:\n"
        f"  - file: payload.bin\n    urls: [file://{source}]\n    sha256: {SHA}\n"
    )
    made = Family(root=root, cache=tmp_path / "cache", ref=f"{namespace}/app:latest")
    yield made
    subprocess.run(["podman", "rmi", "-f", made.ref], capture_output=True, check=False)


def assert_names_file_and_fix(stderr: str) -> None:
    message = " ".join(stderr.split())
    assert "cache entry for payload.bin is corrupt" in message, stderr
    assert "`lowbuild cache verify`" in message and "`lowbuild fetch`" in message
    assert "Traceback" not in stderr


def test_fetch_does_not_call_a_corrupt_entry_verified(family: Family) -> None:
    assert family.lowbuild("fetch").returncode == 0
    again = family.lowbuild("fetch")
    assert again.returncode == 0 and "verified" in again.stderr
    flip_byte(family.entry)
    corrupt = family.lowbuild("fetch")
    assert corrupt.returncode == 4, corrupt.stderr
    assert "verified" not in corrupt.stdout + corrupt.stderr
    assert_names_file_and_fix(corrupt.stderr)


def test_corrupt_cache_entry_never_reaches_an_image(family: Family) -> None:
    """The issue's story: a stage made from the good entry exists, the entry rots, the
    user removes the image and builds, follows the fix, and builds again."""
    assert family.lowbuild("fetch").returncode == 0
    first = family.lowbuild("build")
    assert first.returncode == 0, first.stderr
    assert family.shipped_sha256() == SHA

    flip_byte(family.entry)
    subprocess.run(["podman", "rmi", "-f", family.ref], capture_output=True, check=True)
    refused = family.lowbuild("build")
    assert refused.returncode == 4, refused.stdout + refused.stderr
    assert_names_file_and_fix(refused.stderr)
    assert not family.image_exists()  # nothing built

    verify = family.lowbuild("cache", "verify")
    assert verify.returncode == 4 and "moved to" in verify.stderr  # quarantined
    refetch = family.lowbuild("fetch")
    assert refetch.returncode == 0 and "(1 downloaded)" in refetch.stderr, refetch.stderr
    subprocess.run(["podman", "rmi", "-f", family.ref], capture_output=True, check=False)
    rebuilt = family.lowbuild("build")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert family.shipped_sha256() == SHA
