"""Staging a build context: files + verified artifacts + packs, atomically, with a digest."""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
from pathlib import Path

import pytest

from lowbuild.context.assemble import assemble_context, context_digest, take_inventory
from lowbuild.errors import Location, OfflineMissing, SpecError, VerificationError
from lowbuild.sources.cache import Cache
from lowbuild.spec.model import Artifact, ImageSpec, Pack

SOURCE = b"pretend this is nginx-1.22.1.tar.gz"
SOURCE_SHA = hashlib.sha256(SOURCE).hexdigest()


def make_context(root: Path) -> Path:
    context = root / "contexts" / "web"
    (context / "site" / "img").mkdir(parents=True)
    (context / "Dockerfile").write_text("FROM base\nADD code.tar.gz /srv/\nCOPY src/ /src/\n")
    (context / "image.yaml").write_text("name: web\n")
    (context / "site" / "index.html").write_text("<h1>welcome</h1>\n")
    (context / "site" / "img" / "logo.svg").write_text("<svg/>\n")
    (context / "entry.sh").write_text("#!/bin/sh\nexec nginx\n")
    (context / "entry.sh").chmod(0o755)
    (context / "notes.log").write_text("not for the image\n")
    (context / "cache").mkdir()
    (context / "cache" / "junk").write_text("x")
    (context / "cache" / "keep.txt").write_text("kept by an exception")
    (context / ".dockerignore").write_text("*.log\ncache\n!cache/keep.txt\nsite\n")
    return context


def web_image(
    context: Path,
    *,
    artifacts: tuple[Artifact, ...] | None = None,
    packs: tuple[Pack, ...] | None = None,
) -> ImageSpec:
    return ImageSpec(
        name="web",
        directory=context,
        artifacts=artifacts
        if artifacts is not None
        else (
            Artifact(
                file="nginx.tar.gz", urls=("https://example.invalid/n.tgz",), sha256=SOURCE_SHA
            ),
        ),
        packs=packs if packs is not None else (Pack(into="code.tar.gz", source="site"),),
        location=Location(context / "image.yaml", 1),
    )


@pytest.fixture
def cache(tmp_path: Path) -> Cache:
    cache = Cache(tmp_path / "cache")
    blob = tmp_path / "blob"
    blob.write_bytes(SOURCE)
    cache.admit_file(blob, sha256=SOURCE_SHA)
    return cache


def staged_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_context_is_staged_with_files_artifacts_and_packs(tmp_path: Path, cache: Cache) -> None:
    context = make_context(tmp_path)
    staged = assemble_context(web_image(context), cache=cache, stage_root=tmp_path / "stage")

    assert staged.path == tmp_path / "stage" / "web"
    assert staged_files(staged.path) == [
        "Dockerfile",
        "cache",
        "cache/keep.txt",
        "code.tar.gz",
        "entry.sh",
        "nginx.tar.gz",
    ]
    assert (staged.path / "nginx.tar.gz").read_bytes() == SOURCE
    # the stage's own verified copy: nothing done to the cache later can reach it
    assert (staged.path / "nginx.tar.gz").stat().st_ino != cache.entry_path(
        SOURCE_SHA
    ).stat().st_ino
    assert (staged.path / "entry.sh").stat().st_mode & 0o777 == 0o755
    assert (staged.path / "Dockerfile").stat().st_mode & 0o777 == 0o644
    with tarfile.open(staged.path / "code.tar.gz") as pack:
        assert pack.getnames() == ["img", "img/logo.svg", "index.html"]
    assert staged.artifact_digests == {"nginx.tar.gz": SOURCE_SHA}
    assert staged.digest.startswith("sha256:") and staged.digest == context_digest(
        web_image(context)
    )


def test_unchanged_inputs_are_not_staged_again(tmp_path: Path, cache: Cache) -> None:
    context = make_context(tmp_path)
    first = assemble_context(web_image(context), cache=cache, stage_root=tmp_path / "stage")
    marker = (first.path / "Dockerfile").stat()
    dir_inode = first.path.stat().st_ino

    second = assemble_context(web_image(context), cache=cache, stage_root=tmp_path / "stage")
    assert second.digest == first.digest
    assert first.path.stat().st_ino == dir_inode
    assert (second.path / "Dockerfile").stat().st_ctime_ns == marker.st_ctime_ns


def test_digest_ignores_mtimes_umask_and_owner_but_follows_content_and_exec_bit(
    tmp_path: Path,
) -> None:
    context = make_context(tmp_path)
    image = web_image(context)
    before = context_digest(image)
    for path in context.rglob("*"):
        os.utime(path, (1e9, 1e9))
        if os.geteuid() == 0:
            os.chown(path, 1234, 1234)
    (context / "Dockerfile").chmod(0o664)
    assert context_digest(image) == before

    (context / "Dockerfile").chmod(0o775)
    exec_bit = context_digest(image)
    assert exec_bit != before
    (context / "site" / "index.html").write_text("<h1>changed</h1>\n")  # inside the pack
    changed = context_digest(image)
    assert changed not in (before, exec_bit)
    (context / "notes.log").write_text("ignored, so it changes nothing")
    assert context_digest(image) == changed


def test_changed_input_restages_atomically(tmp_path: Path, cache: Cache) -> None:
    context = make_context(tmp_path)
    first = assemble_context(web_image(context), cache=cache, stage_root=tmp_path / "stage")
    (context / "Dockerfile").write_text("FROM base\n")
    second = assemble_context(web_image(context), cache=cache, stage_root=tmp_path / "stage")
    assert second.digest != first.digest
    assert (second.path / "Dockerfile").read_text() == "FROM base\n"
    assert sorted(p.name for p in (tmp_path / "stage").iterdir()) == [
        ".web.digest",
        ".web.lock",
        "web",
    ]


@pytest.mark.parametrize("bad", ["../escape.tar.gz", "/etc/evil", "sub/../../x"])
def test_artifact_file_outside_the_context_is_rejected(
    tmp_path: Path, cache: Cache, bad: str
) -> None:
    context = make_context(tmp_path)
    image = web_image(
        context,
        artifacts=(Artifact(file=bad, urls=("https://example.invalid/x",), sha256=SOURCE_SHA),),
    )
    with pytest.raises(SpecError) as info:
        assemble_context(image, cache=cache, stage_root=tmp_path / "stage")
    message = str(info.value)
    assert (
        str(context / "image.yaml") in message
        and bad in message
        and "outside the context" in message
    )
    assert not (tmp_path / "stage").exists()
    assert not (tmp_path / "escape.tar.gz").exists()


@pytest.mark.parametrize(("into", "source"), [("../code.tar.gz", "site"), ("code.tar.gz", "../..")])
def test_pack_outside_the_context_is_rejected(
    tmp_path: Path, cache: Cache, into: str, source: str
) -> None:
    context = make_context(tmp_path)
    image = web_image(context, packs=(Pack(into=into, source=source),))
    with pytest.raises(SpecError, match=r"image\.yaml.*outside the context"):
        context_digest(image)


def test_missing_artifact_is_named_with_the_command_that_gets_it(tmp_path: Path) -> None:
    context = make_context(tmp_path)
    with pytest.raises(OfflineMissing) as info:
        assemble_context(
            web_image(context), cache=Cache(tmp_path / "empty"), stage_root=tmp_path / "stage"
        )
    message = str(info.value)
    assert f"nginx.tar.gz  sha256:{SOURCE_SHA}" in message
    assert "lowbuild fetch web" in message and "lowbuild cache add nginx.tar.gz" in message
    assert not (tmp_path / "stage" / "web").exists()


def test_failure_midway_leaves_previous_staging_and_no_temp_dirs(
    tmp_path: Path, cache: Cache
) -> None:
    context = make_context(tmp_path)
    first = assemble_context(web_image(context), cache=cache, stage_root=tmp_path / "stage")
    (context / "Dockerfile").write_text("FROM base\nRUN changed\n")
    # A real failure half way: the artifact's cache entry rotted since the first staging.
    entry = cache.entry_path(SOURCE_SHA)
    entry.write_bytes(entry.read_bytes()[::-1])
    with pytest.raises(VerificationError, match=r"nginx\.tar\.gz is corrupt"):
        assemble_context(web_image(context), cache=cache, stage_root=tmp_path / "stage")
    assert sorted(p.name for p in (tmp_path / "stage").iterdir()) == [
        ".web.digest",
        ".web.lock",
        "web",
    ]
    assert json.loads((tmp_path / "stage" / ".web.digest").read_text())["digest"] == first.digest
    assert "changed" not in (first.path / "Dockerfile").read_text()


def test_artifact_clashing_with_a_context_file_is_rejected(tmp_path: Path, cache: Cache) -> None:
    context = make_context(tmp_path)
    image = web_image(
        context,
        artifacts=(
            Artifact(file="entry.sh", urls=("https://example.invalid/x",), sha256=SOURCE_SHA),
        ),
    )
    with pytest.raises(SpecError, match="clashes with the context file"):
        context_digest(image)


def test_an_artifact_already_lying_in_the_context_with_its_bytes_is_staged_once(
    tmp_path: Path, cache: Cache
) -> None:
    context = make_context(tmp_path)
    (context / "dropped.tar.gz").write_bytes(SOURCE)  # the pinned bytes, beside the Dockerfile
    pinned = Artifact(file="dropped.tar.gz", urls=("https://example.invalid/x",), sha256=SOURCE_SHA)
    cache.admit_file(context / "dropped.tar.gz", sha256=SOURCE_SHA)
    staged = assemble_context(
        web_image(context, artifacts=(pinned,)), cache=cache, stage_root=tmp_path / "stage"
    )
    assert (staged.path / "dropped.tar.gz").read_bytes() == SOURCE
    assert staged.artifact_digests == {"dropped.tar.gz": SOURCE_SHA}

    (context / "dropped.tar.gz").write_bytes(SOURCE + b"edited")  # not the pinned bytes
    with pytest.raises(SpecError, match=r"dropped\.tar\.gz' clashes with the context file"):
        context_digest(web_image(context, artifacts=(pinned,)))


def test_inventory_gives_each_staged_file_its_content_digest(tmp_path: Path) -> None:
    context = make_context(tmp_path)
    inventory = take_inventory(web_image(context))
    digest, files = inventory.digest, inventory.files
    assert digest == context_digest(web_image(context))
    assert sorted(files) == [
        "Dockerfile",
        "cache/keep.txt",
        "code.tar.gz",
        "entry.sh",
        "nginx.tar.gz",
    ]
    assert files["nginx.tar.gz"] == SOURCE_SHA
    assert files["Dockerfile"] == hashlib.sha256((context / "Dockerfile").read_bytes()).hexdigest()
