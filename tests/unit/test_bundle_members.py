"""Bundle verification as pure logic: bundles are written here by hand (the real
deterministic tar writer for good ones, tarfile for malicious ones) and checked with
`verify_bundle`, which must refuse every kind of damage before anything is kept."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import pytest

from lowbuild.context.pack import pack_deterministic
from lowbuild.errors import UsageError, VerificationError
from lowbuild.export.bundle import (
    MANIFEST,
    MANIFEST_SUM,
    BundleMember,
    Manifest,
    archive_name,
    contents_for,
    list_bundle,
    verify_bundle,
)
from lowbuild.plan.graph import build_graph
from lowbuild.spec.load import load_project

DATA = b"artifact bytes\n"
SHA = hashlib.sha256(DATA).hexdigest()
ARTIFACT = f"artifacts/sha256/{SHA}"


def _manifest(members: list[BundleMember]) -> bytes:
    return Manifest(project="p", engine="podman", members=tuple(members), images=()).to_bytes()


def _stage(root: Path, *, manifest: bytes | None = None) -> Path:
    stage = root / "stage"
    (stage / "artifacts" / "sha256").mkdir(parents=True)
    (stage / ARTIFACT).write_bytes(DATA)
    data = manifest or _manifest([BundleMember(ARTIFACT, "artifact", "a.txt", SHA, len(DATA))])
    (stage / MANIFEST).write_bytes(data)
    (stage / MANIFEST_SUM).write_text(f"{hashlib.sha256(data).hexdigest()}  {MANIFEST}\n")
    return stage


def _good_bundle(tmp_path: Path) -> Path:
    out = tmp_path / "good.bundle"
    pack_deterministic(_stage(tmp_path), out, "tar")
    return out


def _with_extra(
    bundle: Path, out: Path, name: str, data: bytes = b"x", kind: bytes = tarfile.REGTYPE
) -> Path:
    with tarfile.open(bundle) as src, tarfile.open(out, "w", format=tarfile.GNU_FORMAT) as dst:
        for info in src.getmembers():
            dst.addfile(info, src.extractfile(info) if info.isfile() else None)
        extra = tarfile.TarInfo(name)
        extra.type = kind
        extra.size = len(data) if kind == tarfile.REGTYPE else 0
        if kind == tarfile.SYMTYPE:
            extra.linkname = "/etc/passwd"
        dst.addfile(extra, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
    return out


def test_an_intact_bundle_verifies_and_lists(tmp_path: Path) -> None:
    bundle = _good_bundle(tmp_path)
    manifest = verify_bundle(bundle)
    assert [m.path for m in manifest.members] == [ARTIFACT]
    listed = list_bundle(bundle)
    assert [(m.kind, m.name) for m in listed] == [
        ("manifest", MANIFEST),
        ("manifest", MANIFEST_SUM),
        ("artifact", "a.txt"),
    ]


def test_same_content_packs_to_the_same_bytes(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = _good_bundle(tmp_path / "a").read_bytes()
    second = _good_bundle(tmp_path / "b").read_bytes()
    assert first == second


@pytest.mark.parametrize(
    ("name", "kind", "why"),
    [
        ("artifacts/sha256/" + "0" * 64, tarfile.REGTYPE, "not listed in the manifest"),
        ("../escape.txt", tarfile.REGTYPE, "path escapes the bundle"),
        ("/etc/cron.d/evil", tarfile.REGTYPE, "path escapes the bundle"),
        ("images/link.tar", tarfile.SYMTYPE, "not a regular file"),
        ("notes.txt", tarfile.REGTYPE, "not a member a bundle may hold"),
        (ARTIFACT, tarfile.REGTYPE, "appears twice"),
    ],
)
def test_an_unexpected_member_refuses_the_bundle(
    tmp_path: Path, name: str, kind: bytes, why: str
) -> None:
    bundle = _with_extra(_good_bundle(tmp_path), tmp_path / "bad.bundle", name, kind=kind)
    with pytest.raises(VerificationError) as caught:
        verify_bundle(bundle)
    assert f"member {name}: {why}" in str(caught.value)
    assert "nothing was imported" in str(caught.value)


def test_a_member_the_manifest_lists_but_the_bundle_lacks_is_refused(tmp_path: Path) -> None:
    other = hashlib.sha256(b"other").hexdigest()
    manifest = _manifest(
        [
            BundleMember(ARTIFACT, "artifact", "a.txt", SHA, len(DATA)),
            BundleMember(f"artifacts/sha256/{other}", "artifact", "b.txt", other, 5),
        ]
    )
    bundle = tmp_path / "short.bundle"
    pack_deterministic(_stage(tmp_path, manifest=manifest), bundle, "tar")
    with pytest.raises(
        VerificationError,
        match=f"member artifacts/sha256/{other}: listed in the manifest but missing",
    ):
        verify_bundle(bundle)


def test_a_manifest_that_does_not_match_its_checksum_is_refused(tmp_path: Path) -> None:
    stage = _stage(tmp_path)
    (stage / MANIFEST_SUM).write_text(f"{'1' * 64}  {MANIFEST}\n")
    bundle = tmp_path / "bad.bundle"
    pack_deterministic(stage, bundle, "tar")
    with pytest.raises(VerificationError, match=f"member {MANIFEST} hashes to"):
        verify_bundle(bundle)


@pytest.mark.parametrize("where", ["header", "data"])
def test_one_flipped_byte_anywhere_in_a_member_is_refused(tmp_path: Path, where: str) -> None:
    bundle = _good_bundle(tmp_path)
    with tarfile.open(bundle) as tar:
        info = tar.getmember(ARTIFACT)
    data = bytearray(bundle.read_bytes())
    data[info.offset + 10 if where == "header" else info.offset_data + 2] ^= 0xFF
    bundle.write_bytes(bytes(data))
    with pytest.raises(VerificationError) as caught:
        verify_bundle(bundle)
    message = str(caught.value)
    assert "nothing was imported" in message
    if where == "header":  # the damaged header no longer names its member: its neighbour is
        assert "damaged tar header" in message and "after member artifacts/sha256" in message
    else:
        assert f"member {ARTIFACT}: sha256" in message


def test_a_file_that_is_not_a_tar_is_refused(tmp_path: Path) -> None:
    junk = tmp_path / "junk.bundle"
    junk.write_bytes(b"\x1f\x8b" + b"no tar here" * 100)
    with pytest.raises(VerificationError, match=r"junk\.bundle"):
        verify_bundle(junk)


def test_image_archive_names_are_file_safe_and_distinct() -> None:
    assert (
        archive_name("localhost/lowbuild/busybox:latest")
        == "images/localhost_lowbuild_busybox_latest.tar"
    )
    assert archive_name("lowbuild/base:1") != archive_name("lowbuild/base:2")


def _project(root: Path) -> Path:
    (root / "lowbuild.yaml").write_text('name: demo\nnamespace: ns\ncontexts: ["contexts/*"]\n')
    images = {
        "base": ("localhost/lowbuild/busybox:latest", None, "base.tar"),
        "app": ("ns/base:latest", "base", "app.tar"),
        "other": ("localhost/lowbuild/bookworm:latest", None, "other.tar"),
    }
    for name, (base, parent, artifact) in images.items():
        context = root / "contexts" / name
        context.mkdir(parents=True)
        sha = hashlib.sha256(artifact.encode()).hexdigest()
        (context / "image.yaml").write_text(
            f"name: {name}\n"
            + (f"parent: {parent}\n" if parent else "")
            + f'artifacts:\n  - file: {artifact}\n    urls: ["file:///nowhere/{artifact}"]\n'
            + f"    sha256: {sha}\n"
        )
        (context / "Dockerfile").write_text(f"FROM {base}\nCOPY {artifact} /\n")
    return root / "lowbuild.yaml"


def test_a_selection_carries_its_ancestors_artifacts_and_every_base_image(tmp_path: Path) -> None:
    project = load_project(_project(tmp_path))
    graph = build_graph(project)
    contents = contents_for(project, graph, names=["app"], with_built=["base"])
    carried = sorted(name for files in contents.artifacts.values() for name in files)
    assert carried == ["app.tar", "base.tar"]  # not other.tar
    # The planner checks every external image of the family, so all are carried.
    assert contents.base_refs == (
        "localhost/lowbuild/bookworm:latest",
        "localhost/lowbuild/busybox:latest",
    )
    assert dict(contents.built) == {"base": "ns/base:latest"}


def test_an_unknown_image_name_is_a_usage_error(tmp_path: Path) -> None:
    project = load_project(_project(tmp_path))
    with pytest.raises(UsageError, match="nope"):
        contents_for(project, build_graph(project), with_built=["nope"])
