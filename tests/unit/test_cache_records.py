"""A cache entry is trusted only while its stat matches the record made when its bytes
last hashed right: any edit, even one that puts the mtime back, means hashing again."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from lowbuild.errors import VerificationError
from lowbuild.sources.cache import Cache, StatRecord

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


def test_a_new_entry_carries_the_record_of_its_verified_stat(cache: Cache) -> None:
    record = json.loads((cache.root / "verified" / SHA).read_text())
    assert StatRecord.from_list(record) == StatRecord.of(cache.entry_path(SHA))
    assert cache.verified_entry(SHA, name="src.bin") == cache.entry_path(SHA)


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


def test_an_entry_without_a_record_is_hashed_and_then_recorded(cache: Cache) -> None:
    (cache.root / "verified" / SHA).unlink()  # e.g. a cache filled by an older lowbuild
    cache.verified_entry(SHA, name="src.bin")
    assert (cache.root / "verified" / SHA).is_file()


def test_verify_quarantines_a_bad_entry_and_forgets_its_record(cache: Cache) -> None:
    flip_byte(cache.entry_path(SHA))
    [bad] = cache.verify()
    assert bad.sha256 == SHA and bad.quarantined_to.is_file()
    assert not cache.entry_path(SHA).exists()
    assert not (cache.root / "verified" / SHA).exists()


def test_adding_the_good_file_again_repairs_a_corrupt_entry(cache: Cache, tmp_path: Path) -> None:
    flip_byte(cache.entry_path(SHA))
    good = tmp_path / "again.bin"
    good.write_bytes(DATA)
    cache.admit_file(good, sha256=SHA)
    assert cache.entry_path(SHA).read_bytes() == DATA
    assert cache.verified_entry(SHA, name="src.bin") == cache.entry_path(SHA)
