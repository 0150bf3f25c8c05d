"""Deterministic packs: same tree, same bytes — whatever the mtimes, umask or owner."""

from __future__ import annotations

import io
import os
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest

from lowbuild.context.pack import pack_deterministic
from lowbuild.errors import SpecError

LONG = "a-rather-long-directory-name-that-goes-on/" * 3 + "and-a-file-name-past-the-ustar-limit.txt"


def make_tree(root: Path, umask: int = 0o022) -> Path:
    old = os.umask(umask)
    try:
        (root / "bin").mkdir(parents=True)
        (root / "bin" / "run.sh").write_text("#!/bin/sh\necho hi\n")
        (root / "bin" / "run.sh").chmod(0o777 & ~umask)
        (root / "conf").mkdir()
        (root / "conf" / "app.conf").write_text("listen 80;\n" * 100)
        (root / "empty").mkdir()
        (root / "Zeta.txt").write_text("capital letters sort first\n")
        (root / "ünïcode.txt").write_text("ok\n")
        (root / "big.bin").write_bytes(os.urandom(3 * 1024 * 1024 + 7))
        (root / "link-to-conf").symlink_to("conf/app.conf")
        long_path = root / LONG
        long_path.parent.mkdir(parents=True)
        long_path.write_text("deep\n")
    finally:
        os.umask(old)
    return root


def disturb(root: Path) -> None:
    """Everything that must not matter: mtimes, group-writable modes, the owner."""
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            if path.is_symlink():
                os.utime(path, (1e9, 1e9), follow_symlinks=False)
                if os.geteuid() == 0:
                    os.lchown(path, 1234, 1234)
                continue
            mode = path.stat().st_mode
            path.chmod(stat.S_IMODE(mode) | 0o020)
            os.utime(path, (1.5e9, 1.5e9))
            if os.geteuid() == 0:
                os.chown(path, 1234, 1234)


def test_same_tree_packs_to_identical_bytes_after_touch_umask_and_chown(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    first = tmp_path / "first.tar.gz"
    pack_deterministic(tree, first)

    disturb(tree)
    old = os.umask(0o077)
    try:
        second = tmp_path / "second.tar.gz"
        pack_deterministic(tree, second)
    finally:
        os.umask(old)
    assert first.read_bytes() == second.read_bytes()

    # The same content created afresh under another umask packs the same too.
    other = make_tree(tmp_path / "other", umask=0o002)
    (other / "big.bin").write_bytes((tree / "big.bin").read_bytes())
    third = tmp_path / "third.tar.gz"
    pack_deterministic(other, third)
    assert first.read_bytes() == third.read_bytes()


def test_members_are_normalised_and_sorted(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    disturb(tree)
    out = tmp_path / "out.tar.gz"
    pack_deterministic(tree, out, mtime=0)
    with tarfile.open(out) as archive:
        members = archive.getmembers()
    names = [m.name for m in members]
    # The same order GNU `tar --sort=name` gives.
    listing = subprocess.run(
        f"tar --sort=name -C {tree} -cf - . | tar -tf -",
        shell=True,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split("\n")
    expected = [n.removeprefix("./").rstrip("/") for n in listing if n not in ("", "./")]
    assert names == expected
    by_name = {m.name: m for m in members}
    for member in members:
        assert (member.uid, member.gid, member.uname, member.gname, member.mtime) == (
            0,
            0,
            "",
            "",
            0,
        )
        assert member.pax_headers == {}
    assert by_name["bin/run.sh"].mode == 0o755
    assert by_name["conf/app.conf"].mode == 0o644
    assert by_name["empty"].isdir() and by_name["empty"].mode == 0o755
    assert by_name["link-to-conf"].issym() and by_name["link-to-conf"].linkname == "conf/app.conf"
    assert LONG in by_name

    header = out.read_bytes()[:10]
    assert header[:3] == b"\x1f\x8b\x08"
    assert header[3] == 0, "no FNAME (or any other) flag"
    assert header[4:8] == b"\0\0\0\0", "gzip mtime is 0"


def test_gnu_tar_extracts_exactly_the_tree(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    out = tmp_path / "out.tar.gz"
    pack_deterministic(tree, out)
    dest = tmp_path / "x"
    dest.mkdir()
    subprocess.run(["tar", "-xzf", str(out), "-C", str(dest)], check=True)
    for path in tree.rglob("*"):
        twin = dest / path.relative_to(tree)
        if path.is_symlink():
            assert twin.readlink() == path.readlink()
        elif path.is_file():
            assert twin.read_bytes() == path.read_bytes()
        else:
            assert twin.is_dir()


def test_plain_tar_format_and_source_date_epoch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tree = make_tree(tmp_path / "tree")
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    out = tmp_path / "out.tar"
    pack_deterministic(tree, out, "tar")
    data = out.read_bytes()
    assert len(data) % 10240 == 0
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as archive:
        assert {m.mtime for m in archive.getmembers()} == {1700000000}


@pytest.mark.parametrize(
    "target", ["../../outside", "/etc/passwd", "../sub/../../x", "dot/../../x"]
)
def test_symlink_leaving_the_source_is_refused(tmp_path: Path, target: str) -> None:
    tree = make_tree(tmp_path / "tree")
    (tree / "sub").mkdir()
    (tree / "sub" / "dot").symlink_to(".")  # harmless alone; `dot/../..` is not
    (tree / "sub" / "escape").symlink_to(target)
    out = tmp_path / "out.tar.gz"
    with pytest.raises(SpecError) as info:
        pack_deterministic(tree, out)
    assert "sub/escape" in str(info.value) and target in str(info.value)
    assert not out.exists()
    assert list(tmp_path.glob(".out.tar.gz*")) == []


def test_special_files_are_refused(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    os.mkfifo(tree / "pipe")
    with pytest.raises(SpecError, match="pipe: not a regular file"):
        pack_deterministic(tree, tmp_path / "out.tar.gz")


def test_symlink_inside_the_tree_pointing_up_but_not_out_is_kept(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    (tree / "conf" / "up").symlink_to("../bin/run.sh")
    out = tmp_path / "out.tar"
    pack_deterministic(tree, out, "tar")
    with tarfile.open(out) as archive:
        assert archive.getmember("conf/up").linkname == "../bin/run.sh"
