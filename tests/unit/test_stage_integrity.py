"""A staged context holds only bytes lowbuild verified: an artifact is hashed each time
it is placed, a stage whose files changed since they were staged is staged again, and
two processes staging the same image at once both end with a correct stage."""

from __future__ import annotations

import hashlib
import multiprocessing
from pathlib import Path

import pytest

from lowbuild.context.assemble import assemble_context
from lowbuild.errors import VerificationError
from lowbuild.sources.cache import Cache
from lowbuild.spec.model import Artifact, ImageSpec

GOOD = b"the pinned artifact bytes\n" * 1000
SHA = hashlib.sha256(GOOD).hexdigest()


def flip_byte(path: Path, offset: int = 100) -> None:
    """Change one byte in place (same inode), as disk rot or a stray write would."""
    with path.open("r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))


def image_in(context: Path) -> ImageSpec:
    return ImageSpec(
        name="web",
        directory=context,
        artifacts=(Artifact(file="payload.bin", urls=("https://example.invalid/p",), sha256=SHA),),
    )


@pytest.fixture
def context(tmp_path: Path) -> Path:
    directory = tmp_path / "contexts" / "web"
    directory.mkdir(parents=True)
    (directory / "Dockerfile").write_text("FROM scratch\nCOPY payload.bin /\n")
    return directory


@pytest.fixture
def cache(tmp_path: Path) -> Cache:
    cache = Cache(tmp_path / "cache")
    source = tmp_path / "payload.bin"
    source.write_bytes(GOOD)
    cache.admit_file(source, sha256=SHA)
    return cache


def test_corrupt_cache_entry_is_refused_when_placed_into_a_context(
    tmp_path: Path, context: Path, cache: Cache
) -> None:
    flip_byte(cache.entry_path(SHA))
    with pytest.raises(VerificationError) as caught:
        assemble_context(image_in(context), cache=cache, stage_root=tmp_path / "stage")
    message = str(caught.value)
    assert "payload.bin" in message and str(cache.entry_path(SHA)) in message
    assert "lowbuild cache verify" in message and "lowbuild fetch" in message
    assert "\n" not in message
    # nothing staged, no temp dir left: only the stage's lock file
    assert sorted(p.name for p in (tmp_path / "stage").iterdir()) == [".web.lock"]


def test_stage_made_before_the_cache_rotted_keeps_the_good_bytes(
    tmp_path: Path, context: Path, cache: Cache
) -> None:
    staged = assemble_context(image_in(context), cache=cache, stage_root=tmp_path / "stage")
    flip_byte(cache.entry_path(SHA))
    # The stage holds its own verified copy, not a link to the entry's inode.
    assert (staged.path / "payload.bin").read_bytes() == GOOD
    # The fix the message names: quarantine, fetch again; the stage stays right.
    assert [bad.sha256 for bad in cache.verify()] == [SHA]
    refetched = tmp_path / "refetched.bin"
    refetched.write_bytes(GOOD)
    cache.admit_file(refetched, sha256=SHA)
    again = assemble_context(image_in(context), cache=cache, stage_root=tmp_path / "stage")
    assert (again.path / "payload.bin").read_bytes() == GOOD


@pytest.mark.parametrize("member", ["payload.bin", "Dockerfile"])
def test_a_staged_file_changed_behind_lowbuilds_back_is_staged_again(
    tmp_path: Path, context: Path, cache: Cache, member: str
) -> None:
    staged = assemble_context(image_in(context), cache=cache, stage_root=tmp_path / "stage")
    before = (staged.path / member).read_bytes()
    flip_byte(staged.path / member, offset=3)
    again = assemble_context(image_in(context), cache=cache, stage_root=tmp_path / "stage")
    assert again.digest == staged.digest
    assert (again.path / member).read_bytes() == before


def test_unchanged_stage_is_reused_without_rewriting(
    tmp_path: Path, context: Path, cache: Cache
) -> None:
    staged = assemble_context(image_in(context), cache=cache, stage_root=tmp_path / "stage")
    inode = (staged.path / "payload.bin").stat().st_ino
    again = assemble_context(image_in(context), cache=cache, stage_root=tmp_path / "stage")
    assert (again.path / "payload.bin").stat().st_ino == inode


def _stage_in_child(context: str, cache_root: str, stage_root: str, start: object) -> None:
    start.wait()  # type: ignore[attr-defined]  # a multiprocessing Barrier
    assemble_context(
        image_in(Path(context)), cache=Cache(Path(cache_root)), stage_root=Path(stage_root)
    )


def test_two_processes_staging_the_same_image_at_once_both_succeed(
    tmp_path: Path, context: Path, cache: Cache
) -> None:
    stage_root = tmp_path / "stage"
    forked = multiprocessing.get_context("fork")
    for round_no in range(20):
        # New inputs each round, so both processes really stage (nothing to reuse).
        (context / "round.txt").write_text(f"round {round_no}\n")
        start = forked.Barrier(2)
        children = [
            forked.Process(
                target=_stage_in_child, args=(str(context), str(cache.root), str(stage_root), start)
            )
            for _ in range(2)
        ]
        for child in children:
            child.start()
        for child in children:
            child.join(timeout=60)
        assert [child.exitcode for child in children] == [0, 0], f"round {round_no}"
        staged = stage_root / "web"
        assert (staged / "round.txt").read_text() == f"round {round_no}\n"
        assert (staged / "payload.bin").read_bytes() == GOOD
        # No temp or old dir left behind (the lock file may stay, it is not a stage).
        leftovers = sorted(p.name for p in stage_root.iterdir() if p.name != ".web.lock")
        assert leftovers == [".web.digest", "web"], leftovers
