"""The content-addressed cache: only verified bytes become entries, readable by everyone."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import pytest

from lowbuild.errors import VerificationError
from lowbuild.sources.cache import Cache, admit_declared, default_cache_root
from lowbuild.spec.model import Artifact

DATA = b"verified bytes\n" * 1000
SHA = hashlib.sha256(DATA).hexdigest()


def test_checksum_mismatch_never_enters_cache(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "c")
    with cache.entry_lock(SHA), cache.writer(sha256=SHA) as writer:
        writer.write(DATA[:-1] + b"?")
        with pytest.raises(VerificationError, match="sha256 mismatch"):
            writer.commit()
    assert list((tmp_path / "c" / "sha256").iterdir()) == []
    assert not cache.contains(SHA)


def test_entry_is_world_readable_whatever_the_umask(tmp_path: Path) -> None:
    source = tmp_path / "f"
    source.write_bytes(DATA)
    old = os.umask(0o077)
    try:
        path = Cache(tmp_path / "c").admit_file(source, sha256=SHA)
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644
    assert path.parent.stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "c").stat().st_mode & 0o777 == 0o755


def test_cache_location_override_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOWBUILD_CACHE", str(tmp_path / "env"))
    assert default_cache_root() == tmp_path / "env"
    assert default_cache_root(tmp_path / "flag") == tmp_path / "flag"
    monkeypatch.delenv("LOWBUILD_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_root() == tmp_path / "xdg" / "lowbuild"


def test_concurrent_admissions_of_one_digest_publish_one_complete_entry(tmp_path: Path) -> None:
    source = tmp_path / "f"
    source.write_bytes(DATA)
    cache = Cache(tmp_path / "c")
    errors: list[BaseException] = []

    def admit() -> None:
        try:
            cache.admit_file(source, sha256=SHA)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=admit) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert [p.name for p in (tmp_path / "c" / "sha256").iterdir()] == [SHA]
    assert cache.entry_path(SHA).read_bytes() == DATA


def test_admit_declared_refuses_everything_if_one_file_is_undeclared(tmp_path: Path) -> None:
    good = tmp_path / "good.tar.gz"
    good.write_bytes(DATA)
    bad = tmp_path / "nginx.tar.gz"
    bad.write_bytes(b"<html>login page</html>")
    artifacts = [
        Artifact(file="good.tar.gz", urls=("https://x.invalid/g",), sha256=SHA),
        Artifact(file="nginx.tar.gz", urls=("https://x.invalid/n",), sha256="e" * 64),
    ]
    cache = Cache(tmp_path / "c")
    with pytest.raises(VerificationError) as info:
        admit_declared(cache, [good, bad], artifacts=artifacts, project="lowbuild.yaml")
    assert "nothing was admitted" in str(info.value)
    assert f"{bad}: sha256 " in str(info.value) and "expects sha256 " + "e" * 64 in str(info.value)
    assert list(cache.entries()) == []

    [(_path, artifact)] = admit_declared(
        cache, [good], artifacts=artifacts, project="lowbuild.yaml"
    )
    assert artifact.file == "good.tar.gz" and cache.contains(SHA)


def test_verify_quarantines_a_tampered_entry(tmp_path: Path) -> None:
    source = tmp_path / "f"
    source.write_bytes(DATA)
    cache = Cache(tmp_path / "c")
    cache.admit_file(source, sha256=SHA)
    assert cache.verify() == []
    cache.entry_path(SHA).write_bytes(b"tampered")
    [bad] = cache.verify()
    assert bad.sha256 == SHA and bad.actual == hashlib.sha256(b"tampered").hexdigest()
    assert bad.quarantined_to.read_bytes() == b"tampered"
    assert not cache.contains(SHA)
