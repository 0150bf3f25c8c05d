"""Deterministic archives: the same tree gives the same bytes, on any machine.

What is normalised, and why each matters for byte-identical output:
  * entries in name order (bytewise, per directory, depth first — like `tar --sort=name`);
  * every mtime = SOURCE_DATE_EPOCH when set (reproducible-builds.org convention),
    else 0; the gzip header's mtime is always 0 and carries no file name;
  * uid/gid 0 with empty user/group names;
  * modes from the exec bit only: 0755 for directories and executable files, 0644 else;
  * GNU tar format: no pax headers (so no atime/ctime), long names via GNU records.
Symlinks stay symlinks; one whose target leaves the source tree (absolute, or
`..` past its root) is refused, as are devices, fifos and sockets.

Compression runs in a second thread (zlib releases the GIL), so reading and
tarring overlap with deflate like `tar | gzip` does. Level 6 is gzip's default.
"""

from __future__ import annotations

import os
import posixpath
import queue
import stat
import struct
import tarfile
import tempfile
import threading
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

from lowbuild.errors import SpecError
from lowbuild.spec.model import PackFormat

GZIP_LEVEL = 6
# Tar stream buffered to this size before deflate: few large zlib calls, GIL released.
_BLOCK = 1 << 20
_READ = 1 << 20
_RECORD = tarfile.RECORDSIZE  # 10240, what GNU tar pads the archive to


def default_mtime() -> int:
    """The mtime every entry gets: $SOURCE_DATE_EPOCH if it is an integer, else 0."""
    value = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    return int(value) if value.isdigit() else 0


@dataclass(frozen=True)
class TreeEntry:
    """One member of a packed tree, as it will be archived (relative POSIX path)."""

    path: str
    kind: Literal["file", "dir", "symlink"]
    mode: int  # normalised: 0o755 or 0o644 (symlinks: 0o777)
    size: int = 0
    target: str = ""  # symlink target


def _normalised_mode(st_mode: int) -> int:
    return 0o755 if stat.S_ISDIR(st_mode) or st_mode & 0o111 else 0o644


def _check_symlink(root: Path, rel: str, target: str) -> None:
    if posixpath.isabs(target):
        raise SpecError(f"{root / rel}: symlink to absolute path {target!r} leaves {root}")
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(rel), target))
    # Lexically inside is not enough: `d -> .` then `x -> d/../y` leaves the tree
    # once `d` is followed, so also resolve through the real filesystem.
    real_root = os.path.realpath(root)
    real = os.path.realpath(root / posixpath.dirname(rel) / target)
    if (
        resolved == ".."
        or resolved.startswith("../")
        or os.path.commonpath([real_root, real]) != real_root
    ):
        raise SpecError(f"{root / rel}: symlink target {target!r} leaves {root}")


def walk_tree(
    root: Path,
    *,
    keep: Callable[[str], bool] | None = None,
    may_descend: Callable[[str], bool] | None = None,
) -> Iterator[TreeEntry]:
    """Every entry under `root` (not `root` itself), in archive order, checked.

    `keep(rel)` may leave entries out (a left-out directory is only entered when
    `may_descend(rel)` says something below it may be kept; it is then listed
    only if something below it is). Raises SpecError naming the offending path for
    kept symlinks leaving the tree and kept special files.
    """
    if not root.is_dir():
        raise SpecError(f"{root}: not a directory")

    def walk(directory: Path, prefix: str) -> Iterator[TreeEntry]:
        with os.scandir(directory) as it:
            names = sorted(it, key=lambda e: os.fsencode(e.name))
        for entry in names:
            rel = prefix + entry.name
            st = entry.stat(follow_symlinks=False)
            kept = keep is None or keep(rel)
            if stat.S_ISDIR(st.st_mode):
                if kept:
                    yield TreeEntry(rel, "dir", 0o755)
                    yield from walk(Path(entry.path), rel + "/")
                elif may_descend is not None and may_descend(rel):
                    below = list(walk(Path(entry.path), rel + "/"))
                    if below:
                        yield TreeEntry(rel, "dir", 0o755)
                        yield from below
            elif not kept:
                continue
            elif stat.S_ISLNK(st.st_mode):
                target = str(Path(entry.path).readlink())
                _check_symlink(root, rel, target)
                yield TreeEntry(rel, "symlink", 0o777, target=target)
            elif stat.S_ISREG(st.st_mode):
                yield TreeEntry(rel, "file", _normalised_mode(st.st_mode), size=st.st_size)
            else:
                raise SpecError(f"{root / rel}: not a regular file, directory or symlink")

    yield from walk(root, "")


def _header(entry: TreeEntry, mtime: int) -> bytes:
    info = tarfile.TarInfo(entry.path)
    info.mtime = mtime
    info.mode = entry.mode
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    if entry.kind == "dir":
        info.type = tarfile.DIRTYPE
    elif entry.kind == "symlink":
        info.type = tarfile.SYMTYPE
        info.linkname = entry.target
    else:
        info.type = tarfile.REGTYPE
        info.size = entry.size
    return info.tobuf(tarfile.GNU_FORMAT, "utf-8", "surrogateescape")


class _GzipWriter:
    """gzip framing (RFC 1952) around raw deflate, deflating in a worker thread.

    The header has mtime 0, no file name and OS "unknown", so it depends on nothing
    but the data.
    """

    def __init__(self, out: BinaryIO, level: int) -> None:
        self._out = out
        self._deflate = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS, 9)
        self._crc = 0
        self._size = 0
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=4)
        self._error: BaseException | None = None
        # ID1 ID2 CM=deflate FLG=0 MTIME=0 XFL=0 OS=255
        out.write(b"\x1f\x8b\x08\x00" + struct.pack("<I", 0) + b"\x00\xff")
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while (block := self._queue.get()) is not None:
                self._crc = zlib.crc32(block, self._crc)
                self._size += len(block)
                self._out.write(self._deflate.compress(block))
            self._out.write(self._deflate.flush())
            self._out.write(struct.pack("<II", self._crc, self._size & 0xFFFFFFFF))
        except BaseException as exc:  # surfaced in write()/close()
            self._error = exc
            while self._queue.get() is not None:  # drain so the producer never blocks
                pass

    def write(self, block: bytes) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(block)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error


class _Blocks:
    """Collects small writes into large blocks for the sink."""

    def __init__(self, sink: _GzipWriter | BinaryIO) -> None:
        self._sink = sink
        self._parts: list[bytes] = []
        self._pending = 0
        self.total = 0

    def write(self, data: bytes) -> None:
        self._parts.append(data)
        self._pending += len(data)
        self.total += len(data)
        if self._pending >= _BLOCK:
            self.flush()

    def flush(self) -> None:
        if self._parts:
            self._sink.write(b"".join(self._parts))
            self._parts = []
            self._pending = 0


def pack_deterministic(
    source_dir: Path, out_path: Path, fmt: PackFormat = "tar.gz", *, mtime: int | None = None
) -> None:
    """Archive the tree under `source_dir` into `out_path` (tar or tar.gz), reproducibly.

    `mtime` defaults to `default_mtime()`. The archive is written to a temp file
    beside `out_path` and renamed, so a failure leaves no half archive. Raises
    SpecError for symlinks leaving the tree and special files; files that change
    size while being read are an error too (the archive would be wrong).
    """
    stamp = default_mtime() if mtime is None else mtime
    entries = list(walk_tree(source_dir))  # walk fully first: refuse before writing anything
    # A unique name, not one per pid: two threads may pack to the same place at once.
    fd, name = tempfile.mkstemp(prefix=f".{out_path.name}.", suffix=".tmp", dir=out_path.parent)
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as raw:
            gz = _GzipWriter(raw, GZIP_LEVEL) if fmt == "tar.gz" else None
            blocks = _Blocks(gz if gz is not None else raw)
            try:
                _write_tar(source_dir, entries, blocks, stamp)
                blocks.flush()
            finally:
                if gz is not None:
                    gz.close()
        tmp.chmod(0o644)
        tmp.replace(out_path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _write_tar(root: Path, entries: list[TreeEntry], out: _Blocks, mtime: int) -> None:
    for entry in entries:
        out.write(_header(entry, mtime))
        if entry.kind != "file":
            continue
        remaining = entry.size
        with (root / entry.path).open("rb") as f:
            while remaining > 0:
                chunk = f.read(min(_READ, remaining))
                if not chunk:
                    break
                out.write(chunk)
                remaining -= len(chunk)
            if remaining or f.read(1):
                raise SpecError(f"{root / entry.path}: file changed size while being packed")
        if entry.size % tarfile.BLOCKSIZE:
            out.write(tarfile.NUL * (tarfile.BLOCKSIZE - entry.size % tarfile.BLOCKSIZE))
    # End of archive: two zero blocks, then pad to a whole record like GNU tar.
    out.write(tarfile.NUL * (2 * tarfile.BLOCKSIZE))
    if out.total % _RECORD:
        out.write(tarfile.NUL * (_RECORD - out.total % _RECORD))
