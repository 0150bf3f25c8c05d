"""The content-addressed store every verified input lives in.

Layout under the cache root (platformdirs' user cache dir "lowbuild", or
`--cache DIR`, or $LOWBUILD_CACHE):

    sha256/<hex>             one verified entry, mode 0644, never partial
    sha256/.<hex>.partial    a download in progress (only while its lock is held)
    locks/<hex>.lock         per-entry lock, so concurrent processes download once
    quarantine/<hex>.<n>     entries `verify` found corrupt, kept for inspection

An entry only appears by `os.replace` of a fully written, fsynced and verified
partial file in the same directory, so a reader never sees partial or wrong bytes,
whatever happens to the writer (even SIGKILL).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import BinaryIO

import platformdirs
from filelock import FileLock, Timeout

from lowbuild.errors import LowbuildError, VerificationError
from lowbuild.spec.model import Artifact

ENTRY_MODE = 0o644
DIR_MODE = 0o755
# Big reads keep hashing near memory bandwidth without holding whole files in memory.
CHUNK = 1024 * 1024
CACHE_ENV = "LOWBUILD_CACHE"

_HEX64 = re.compile(r"[0-9a-f]{64}")


def default_cache_root(override: Path | None = None) -> Path:
    """Where the cache lives: `override`, else $LOWBUILD_CACHE, else the user cache dir."""
    if override is not None:
        return override
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env)
    return Path(platformdirs.user_cache_dir("lowbuild"))


def hash_file(path: Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file, read in large chunks (constant memory)."""
    digest = hashlib.new(algorithm)
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _make_dir(path: Path) -> None:
    # mkdir's mode is filtered by the umask; chmod is not, and other users must be able to read.
    path.mkdir(parents=True, exist_ok=True)
    if path.stat().st_mode & 0o777 != DIR_MODE:
        path.chmod(DIR_MODE)


@dataclass(frozen=True)
class CacheEntry:
    """One stored entry: its sha256 hex, path and size in bytes."""

    sha256: str
    path: Path
    size: int


@dataclass(frozen=True)
class BadEntry:
    """An entry whose bytes no longer hash to its name; moved to `quarantined_to`."""

    sha256: str
    actual: str
    quarantined_to: Path


class EntryWriter:
    """Writes one entry through a partial file; `commit` verifies and publishes it.

    Hashes (sha256, plus sha512 when expected) are computed as bytes are written,
    so the data is read once. Leaving the context without `commit` removes the
    partial file. The caller must hold the entry lock (see `Cache.entry_lock`).
    """

    def __init__(self, *, cache: Cache, sha256: str, sha512: str | None) -> None:
        self._cache = cache
        self.expected_sha256 = sha256
        self.expected_sha512 = sha512
        self.partial_path = cache.root / "sha256" / f".{sha256}.partial"
        self._file: BinaryIO | None = None
        self.size = 0
        self._sha256 = hashlib.sha256()
        self._sha512 = hashlib.sha512() if sha512 else None
        self.committed = False

    def __enter__(self) -> EntryWriter:
        _make_dir(self.partial_path.parent)
        # A partial left by a killed process: we hold the lock, so it is nobody's.
        self.partial_path.unlink(missing_ok=True)
        self._file = self.partial_path.open("wb")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if not self.committed:
            self.partial_path.unlink(missing_ok=True)

    def write(self, data: bytes) -> None:
        assert self._file is not None, "EntryWriter used outside its `with` block"
        self._file.write(data)
        self._sha256.update(data)
        if self._sha512 is not None:
            self._sha512.update(data)
        self.size += len(data)

    def restart(self) -> None:
        """Discard everything written so far (a server restarted the body from byte 0)."""
        assert self._file is not None
        self._file.seek(0)
        self._file.truncate()
        self.size = 0
        self._sha256 = hashlib.sha256()
        self._sha512 = hashlib.sha512() if self.expected_sha512 else None

    @property
    def sha256(self) -> str:
        """The sha256 of the bytes written so far."""
        return self._sha256.hexdigest()

    def mismatch(self) -> str | None:
        """None when the bytes written match every expected digest, else why not."""
        actual = self._sha256.hexdigest()
        if actual != self.expected_sha256:
            return f"sha256 mismatch: expected {self.expected_sha256}, got {actual} ({self.size} bytes)"
        if self._sha512 is not None and self._sha512.hexdigest() != self.expected_sha512:
            return (
                f"sha512 mismatch: expected {self.expected_sha512}, "
                f"got {self._sha512.hexdigest()} ({self.size} bytes)"
            )
        return None

    def commit(self) -> Path:
        """Verify, fsync and atomically publish the entry; raise VerificationError on mismatch."""
        assert self._file is not None
        problem = self.mismatch()
        if problem is not None:
            raise VerificationError(problem)
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        self._file = None
        # chmod, not the umask: entries are shared with other users of the cache.
        self.partial_path.chmod(ENTRY_MODE)
        final = self._cache.entry_path(self.expected_sha256)
        self.partial_path.replace(final)
        self.committed = True
        return final


class Cache:
    """A content-addressed store of verified files, safe to share between processes."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def entry_path(self, sha256: str) -> Path:
        """Where the entry for `sha256` lives (whether or not it exists)."""
        if not _HEX64.fullmatch(sha256):
            raise LowbuildError(f"not a sha256 hex digest: {sha256!r}")
        return self.root / "sha256" / sha256

    def contains(self, sha256: str) -> bool:
        return self.entry_path(sha256).is_file()

    def entry_lock(self, sha256: str) -> FileLock:
        """An inter-process lock for one entry: hold it while creating that entry."""
        locks = self.root / "locks"
        _make_dir(locks)
        # Lock files are shared with other users of the cache; 0666 lets them lock too.
        return FileLock(locks / f"{sha256}.lock", mode=0o666)

    def writer(self, *, sha256: str, sha512: str | None = None) -> EntryWriter:
        """A writer for the entry `sha256`; use as a context manager, under `entry_lock`."""
        self.entry_path(sha256)  # validates the digest
        _make_dir(self.root)
        return EntryWriter(cache=self, sha256=sha256, sha512=sha512)

    def admit_file(self, source: Path, *, sha256: str, sha512: str | None = None) -> Path:
        """Copy `source` into the cache as `sha256`, verifying it; a no-op if already present."""
        with self.entry_lock(sha256):
            if self.contains(sha256):
                return self.entry_path(sha256)
            with self.writer(sha256=sha256, sha512=sha512) as w, source.open("rb") as f:
                while chunk := f.read(CHUNK):
                    w.write(chunk)
                try:
                    return w.commit()
                except VerificationError as exc:
                    raise VerificationError(f"{source}: {exc}") from None

    def entries(self) -> Iterator[CacheEntry]:
        """Every published entry, sorted by digest (partial files are not entries)."""
        directory = self.root / "sha256"
        if not directory.is_dir():
            return
        for path in sorted(directory.iterdir()):
            if _HEX64.fullmatch(path.name) and path.is_file():
                yield CacheEntry(sha256=path.name, path=path, size=path.stat().st_size)

    def remove_stale_partials(self) -> list[Path]:
        """Delete partial files left by killed writers (those whose entry lock is free)."""
        directory = self.root / "sha256"
        removed = []
        for partial in sorted(directory.glob(".*.partial")) if directory.is_dir() else []:
            digest = partial.name[1 : -len(".partial")]
            if not _HEX64.fullmatch(digest):
                continue
            lock = self.entry_lock(digest)
            try:
                lock.acquire(timeout=0)
            except Timeout:
                continue  # a live writer owns it
            try:
                partial.unlink(missing_ok=True)
                removed.append(partial)
            finally:
                lock.release()
        return removed

    def verify(self) -> list[BadEntry]:
        """Rehash every entry; move each bad one to quarantine/ and return them.

        Also removes partial files left behind by killed downloads.
        """
        self.remove_stale_partials()
        bad: list[BadEntry] = []
        for entry in self.entries():
            actual = hash_file(entry.path)
            if actual == entry.sha256:
                continue
            with self.entry_lock(entry.sha256):
                quarantine = self.root / "quarantine"
                _make_dir(quarantine)
                n = 0
                while (target := quarantine / f"{entry.sha256}.{n}").exists():
                    n += 1
                entry.path.replace(target)
            bad.append(BadEntry(sha256=entry.sha256, actual=actual, quarantined_to=target))
        return bad

    def place(self, sha256: str, dest: Path) -> None:
        """Put the entry at `dest`: a hard link where the filesystem allows, else a copy."""
        source = self.entry_path(sha256)
        dest.unlink(missing_ok=True)
        try:
            os.link(source, dest)
        except OSError:
            # Another filesystem, or links forbidden (e.g. protected_hardlinks): copy.
            shutil.copyfile(source, dest)
            dest.chmod(ENTRY_MODE)


def admit_declared(
    cache: Cache, files: Sequence[Path], *, artifacts: Sequence[Artifact], project: str
) -> list[tuple[Path, Artifact]]:
    """`cache add`: admit files brought by other means, only if the spec declares their digest.

    Every file is hashed first; if any matches no declared artifact (or its pinned
    sha512), VerificationError names each such file and nothing at all is admitted.
    `project` names the spec in messages. Returns (file, the artifact it satisfies).
    """
    by_sha256 = {a.sha256: a for a in artifacts if a.sha256}
    by_name: dict[str, list[Artifact]] = {}
    for declared in artifacts:
        by_name.setdefault(PurePosixPath(declared.file).name, []).append(declared)
    matched: list[tuple[Path, Artifact]] = []
    problems: list[str] = []
    for path in files:
        if not path.is_file():
            problems.append(f"{path}: no such file")
            continue
        actual = hash_file(path)
        found = by_sha256.get(actual)
        if found is None:
            hint = "".join(
                f"\n      the artifact named {a.file!r} expects sha256 {a.sha256}"
                for a in by_name.get(path.name, [])
            )
            problems.append(
                f"{path}: sha256 {actual} matches no artifact declared in {project}{hint}"
            )
        elif found.sha512 and hash_file(path, "sha512") != found.sha512:
            problems.append(f"{path}: sha256 matches {found.file!r} but its pinned sha512 does not")
        else:
            matched.append((path, found))
    if problems:
        raise VerificationError("nothing was admitted to the cache:\n  " + "\n  ".join(problems))
    for path, artifact in matched:
        cache.admit_file(path, sha256=artifact.sha256, sha512=artifact.sha512)
    return matched
