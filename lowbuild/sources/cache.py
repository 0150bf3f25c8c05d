"""The content-addressed store every verified input lives in.

Layout under the cache root (platformdirs' user cache dir "lowbuild", or
`--cache DIR`, or $LOWBUILD_CACHE):

    sha256/<hex>             one verified entry, mode 0644, never partial
    sha256/.<hex>.partial    a download in progress (only while its lock is held)
    locks/<hex>.lock         per-entry lock, so concurrent processes download once
    quarantine/<hex>.<n>     entries `verify` found corrupt, kept for inspection
    verified/<hex>           the entry's stat when its bytes last hashed right (StatRecord)

An entry only appears by `os.replace` of a fully written, fsynced and verified
partial file in the same directory, so a reader never sees partial or wrong bytes,
whatever happens to the writer (even SIGKILL).

Bytes can still rot or be edited in place afterwards, so an entry is never trusted
for being there: every use hashes it again (`copy_verified`), or finds its stat
unchanged since it last hashed right (`verified_entry`). A stat record keys on
dev, inode, size, mtime_ns and ctime_ns: rewriting the bytes changes mtime, and
putting mtime back (utime) changes ctime, which no process can set short of moving
the clock. File times advance in clock ticks, not nanoseconds, so a record is only
kept for a file last changed at least RACY_NS ago (as git does for its index): an
edit in the same tick as the recorded change would otherwise leave the stat as is.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

import platformdirs
from filelock import FileLock, Timeout

from lowbuild.errors import CacheWriteError, LowbuildError, UsageError, VerificationError
from lowbuild.spec.model import Artifact

ENTRY_MODE = 0o644
DIR_MODE = 0o755
# Big reads keep hashing near memory bandwidth without holding whole files in memory.
CHUNK = 1024 * 1024
# A stat record of a file changed less than this long ago is not kept (see above).
RACY_NS = 2_000_000_000
CACHE_ENV = "LOWBUILD_CACHE"

SHA256_HEX = re.compile(r"[0-9a-f]{64}")
"""A SHA-256 digest as the cache names its entries: 64 lower-case hex digits."""


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
class StatRecord:
    """What `stat` said about a file when its bytes were last hashed and found right.

    The same stat later means the same bytes (see the module docstring for why ctime
    is in it); anything else means "hash it again". Kept for cache entries here and
    for the files of a staged context (lowbuild.context.assemble).
    """

    dev: int
    ino: int
    size: int
    mtime_ns: int
    ctime_ns: int

    @classmethod
    def of(cls, path: Path) -> StatRecord:
        """The record of `path` as it is now (the link itself, never a symlink's target)."""
        st = path.lstat()
        return cls(
            dev=st.st_dev,
            ino=st.st_ino,
            size=st.st_size,
            mtime_ns=st.st_mtime_ns,
            ctime_ns=st.st_ctime_ns,
        )

    @classmethod
    def current(cls, path: Path) -> StatRecord | None:
        """`of(path)`, or None when `path` cannot be stat'ed."""
        try:
            return cls.of(path)
        except OSError:
            return None

    def to_list(self) -> list[int]:
        return [self.dev, self.ino, self.size, self.mtime_ns, self.ctime_ns]

    @classmethod
    def from_list(cls, values: object) -> StatRecord | None:
        """The inverse of `to_list`; None for anything that is not one."""
        if not isinstance(values, list) or len(values) != 5:
            return None
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            return None
        dev, ino, size, mtime_ns, ctime_ns = values
        return cls(dev=dev, ino=ino, size=size, mtime_ns=mtime_ns, ctime_ns=ctime_ns)


def write_atomically(path: Path, data: str) -> None:
    """Replace `path` with `data` through a uniquely named temp file in the same
    directory, so concurrent writers never collide and a reader sees old or new, whole."""
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(name)
    try:
        with os.fdopen(fd, "w") as out:
            out.write(data)
        tmp.chmod(ENTRY_MODE)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def corrupt_entry_message(*, path: Path, name: str, expected: str, actual: str) -> str:
    """How every command names a cache entry whose bytes no longer match, and the fix."""
    return (
        f"cache entry for {name} is corrupt: {path} hashes to sha256 {actual}, not the pinned "
        f"{expected}; run `lowbuild cache verify` (it quarantines the entry), then `lowbuild fetch`"
    )


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


def _cache_write_error(path: Path, exc: OSError) -> CacheWriteError:
    reason = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded"}.get(
        exc.errno or 0, exc.strerror or str(exc)
    )
    return CacheWriteError(f"cannot write to the cache: {path}: {reason}")


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
        try:
            _make_dir(self.partial_path.parent)
            # A partial left by a killed process: we hold the lock, so it is nobody's.
            self.partial_path.unlink(missing_ok=True)
            self._file = self.partial_path.open("wb")
        except OSError as exc:
            raise _cache_write_error(self.partial_path, exc) from None
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._file is not None:
            # Flushing the rest of a partial that is thrown away anyway may meet a full disk.
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None
        if not self.committed:
            self.partial_path.unlink(missing_ok=True)

    def write(self, data: bytes) -> None:
        """Append `data`; CacheWriteError (not OSError) when the cache cannot take it, so
        a caller never mistakes it for a failure to read the source."""
        assert self._file is not None, "EntryWriter used outside its `with` block"
        try:
            self._file.write(data)
        except OSError as exc:
            raise _cache_write_error(self.partial_path, exc) from None
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
            expected = self.expected_sha256
            return f"sha256 mismatch: expected {expected}, got {actual} ({self.size} bytes)"
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
        final = self._cache.entry_path(self.expected_sha256)
        try:
            # Buffered bytes meet a full disk here at the latest.
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self._file = None
            # chmod, not the umask: entries are shared with other users of the cache.
            self.partial_path.chmod(ENTRY_MODE)
            self.partial_path.replace(final)
        except OSError as exc:
            raise _cache_write_error(self.partial_path, exc) from None
        self.committed = True
        # Stat after the rename: a rename may update ctime.
        self._cache.remember(self.expected_sha256, StatRecord.of(final))
        return final


class Cache:
    """A content-addressed store of verified files, safe to share between processes."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def entry_path(self, sha256: str) -> Path:
        """Where the entry for `sha256` lives (whether or not it exists)."""
        if not SHA256_HEX.fullmatch(sha256):
            raise LowbuildError(f"not a sha256 hex digest: {sha256!r}")
        return self.root / "sha256" / sha256

    def contains(self, sha256: str) -> bool:
        return self.entry_path(sha256).is_file()

    def _record_path(self, sha256: str) -> Path:
        return self.root / "verified" / sha256

    def remember(self, sha256: str, record: StatRecord) -> None:
        """Record that the entry, with this stat, hashed to `sha256` just now.

        Best effort: a cache this user cannot write to only costs a hash per use, and
        so does an entry changed too recently for its stat to be trusted (RACY_NS)."""
        if time.time_ns() - record.ctime_ns < RACY_NS:
            return
        try:
            _make_dir(self.root / "verified")
            write_atomically(self._record_path(sha256), json.dumps(record.to_list()) + "\n")
        except OSError:
            pass

    def _recorded(self, sha256: str) -> StatRecord | None:
        try:
            return StatRecord.from_list(json.loads(self._record_path(sha256).read_text()))
        except (OSError, ValueError):
            return None

    def verified_entry(self, sha256: str, *, name: str) -> Path:
        """The entry's path, once its bytes are known to hash to `sha256`: its stat matches
        the record of its last good hash, or it is hashed again now (and recorded).

        Raises VerificationError naming `name`, the entry and the fix when they do not
        (and FileNotFoundError when there is no entry: check `contains` first)."""
        path = self.entry_path(sha256)
        before = StatRecord.of(path)
        if self._recorded(sha256) == before:
            return path
        actual = hash_file(path)
        if actual != sha256:
            raise VerificationError(
                corrupt_entry_message(path=path, name=name, expected=sha256, actual=actual)
            )
        if StatRecord.current(path) == before:  # unchanged while we read it
            self.remember(sha256, before)
        return path

    def copy_verified(self, sha256: str, dest: Path, *, name: str) -> None:
        """Copy the entry to `dest` (a new file, mode 0644), hashing exactly the bytes
        written; VerificationError (and no `dest`) when they do not hash to `sha256`.

        A copy, not a hard link: the copy is a file of its own, so nothing done to the
        cache later (rot, an edit, a quarantine and a refetch) can change what was
        staged, and staging's own metadata changes (utime) never touch the entry."""
        path = self.entry_path(sha256)
        digest = hashlib.sha256()
        try:
            with path.open("rb") as src, dest.open("xb") as out:
                before = StatRecord.of(path)
                while chunk := src.read(CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
            dest.chmod(ENTRY_MODE)
            actual = digest.hexdigest()
            if actual != sha256:
                raise VerificationError(
                    corrupt_entry_message(path=path, name=name, expected=sha256, actual=actual)
                )
        except BaseException:
            dest.unlink(missing_ok=True)
            raise
        if StatRecord.current(path) == before:
            self.remember(sha256, before)

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
        """Copy `source` into the cache as `sha256`, verifying it; a no-op if an entry whose
        bytes still verify is already there (a corrupt one is replaced)."""
        return self.admit(source, sha256=sha256, sha512=sha512)[0]

    def admit(self, source: Path, *, sha256: str, sha512: str | None = None) -> tuple[Path, bool]:
        """`admit_file`, also saying whether the entry was written now (False: an entry
        whose bytes still verify was already there)."""
        with self.entry_lock(sha256):
            if self.contains(sha256):
                try:
                    return self.verified_entry(sha256, name=source.name), False
                except VerificationError:
                    pass  # rotted: the verified bytes from `source` replace it below
            with self.writer(sha256=sha256, sha512=sha512) as w, source.open("rb") as f:
                while chunk := f.read(CHUNK):
                    w.write(chunk)
                try:
                    return w.commit(), True
                except VerificationError as exc:
                    raise VerificationError(f"{source}: {exc}") from None

    def entries(self) -> Iterator[CacheEntry]:
        """Every published entry, sorted by digest (partial files are not entries)."""
        directory = self.root / "sha256"
        if not directory.is_dir():
            return
        for path in sorted(directory.iterdir()):
            if SHA256_HEX.fullmatch(path.name) and path.is_file():
                yield CacheEntry(sha256=path.name, path=path, size=path.stat().st_size)

    def remove_stale_partials(self) -> list[Path]:
        """Delete partial files left by killed writers (those whose entry lock is free)."""
        directory = self.root / "sha256"
        removed = []
        for partial in sorted(directory.glob(".*.partial")) if directory.is_dir() else []:
            digest = partial.name[1 : -len(".partial")]
            if not SHA256_HEX.fullmatch(digest):
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
            before = StatRecord.of(entry.path)
            actual = hash_file(entry.path)
            if actual == entry.sha256:
                if StatRecord.current(entry.path) == before:
                    self.remember(entry.sha256, before)
                continue
            with self.entry_lock(entry.sha256):
                self._record_path(entry.sha256).unlink(missing_ok=True)
                quarantine = self.root / "quarantine"
                _make_dir(quarantine)
                n = 0
                while (target := quarantine / f"{entry.sha256}.{n}").exists():
                    n += 1
                entry.path.replace(target)
            bad.append(BadEntry(sha256=entry.sha256, actual=actual, quarantined_to=target))
        return bad

    def place(self, sha256: str, dest: Path) -> None:
        """Put the entry at `dest`: a hard link where the filesystem allows, else a copy.

        For `bundle export` only, which hashes what it placed. Contexts get
        `copy_verified` instead. A link (and its later removal) changes the entry's
        ctime, so the entry's stat record no longer matches and its next use hashes
        it again: a cost, never a wrong "verified". Refreshing the record here would
        not help, since the scratch link is removed (ctime again) right after."""
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
    absent = [path for path in files if not path.is_file()]
    if absent:  # bad input (exit 2), not a verification failure: nothing was checked
        raise UsageError(
            "nothing was admitted to the cache: "
            + ", ".join(f"{path}: no such file" for path in absent)
        )
    matched: list[tuple[Path, Artifact]] = []
    problems: list[str] = []
    for path in files:
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
