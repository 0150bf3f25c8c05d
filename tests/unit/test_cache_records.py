"""A cache entry is trusted only while its stat matches the record made when its bytes
last hashed right: any edit, even one that puts the mtime back, means hashing again."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import pytest

from lowbuild.errors import VerificationError
from lowbuild.sources.cache import RACY_NS, Cache, StatRecord

DATA = os.urandom(200_000)
SHA = hashlib.sha256(DATA).hexdigest()


def flip_byte(path: Path, offset: int = 1000) -> None:
    with path.open("r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x01]))


@pytest.fixture
def cache(tmp_path: Path) -> Cache:
    cache = Cache(tmp_path / "cache")
    source = tmp_path / "src.bin"
    source.write_bytes(DATA)
    cache.admit_file(source, sha256=SHA)
    return cache


def record_of(cache: Cache) -> StatRecord | None:
    path = cache.root / "verified" / SHA
    return StatRecord.from_list(json.loads(path.read_text())) if path.exists() else None


def test_a_settled_entry_is_trusted_by_its_recorded_stat(cache: Cache) -> None:
    # Just written: file times advance in clock ticks, so its stat is not trusted yet
    # (an edit in the same tick would leave it unchanged); it is hashed on each use.
    assert cache.verified_entry(SHA, name="src.bin") == cache.entry_path(SHA)
    assert record_of(cache) is None
    time.sleep(RACY_NS / 1e9 + 0.1)
    # Settled: hashed once more, then its stat stands for its bytes.
    assert cache.verified_entry(SHA, name="src.bin") == cache.entry_path(SHA)
    assert record_of(cache) == StatRecord.of(cache.entry_path(SHA))
    # The record never outlives the bytes it vouched for.
    flip_byte(cache.entry_path(SHA))
    with pytest.raises(VerificationError):
        cache.verified_entry(SHA, name="src.bin")
    [bad] = cache.verify()
    assert bad.sha256 == SHA and record_of(cache) is None


def test_an_edited_entry_is_never_reported_verified(cache: Cache) -> None:
    flip_byte(cache.entry_path(SHA))
    with pytest.raises(VerificationError) as caught:
        cache.verified_entry(SHA, name="src.bin")
    message = str(caught.value)
    assert "src.bin" in message and str(cache.entry_path(SHA)) in message
    assert "`lowbuild cache verify`" in message and "`lowbuild fetch`" in message


def test_putting_the_mtime_back_does_not_hide_an_edit(cache: Cache) -> None:
    entry = cache.entry_path(SHA)
    before = entry.stat()
    flip_byte(entry)
    os.utime(entry, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert entry.stat().st_mtime_ns == before.st_mtime_ns and entry.stat().st_size == before.st_size
    with pytest.raises(VerificationError):
        cache.verified_entry(SHA, name="src.bin")


def test_verify_quarantines_a_bad_entry(cache: Cache) -> None:
    flip_byte(cache.entry_path(SHA))
    [bad] = cache.verify()
    assert bad.sha256 == SHA and bad.quarantined_to.is_file()
    assert not cache.entry_path(SHA).exists()


def test_adding_the_good_file_again_repairs_a_corrupt_entry(cache: Cache, tmp_path: Path) -> None:
    flip_byte(cache.entry_path(SHA))
    good = tmp_path / "again.bin"
    good.write_bytes(DATA)
    cache.admit_file(good, sha256=SHA)
    assert cache.entry_path(SHA).read_bytes() == DATA
    assert cache.verified_entry(SHA, name="src.bin") == cache.entry_path(SHA)
