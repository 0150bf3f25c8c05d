"""The air gap: one file carrying every input a family build needs, verified on arrival.

A bundle is a plain (uncompressed) tar written by the one deterministic tar writer
(lowbuild.context.pack): sorted members, fixed mtime, uid/gid 0, no names. Layout:

    artifacts/sha256/<hex>     a cache entry, by digest
    images/<safe-ref>.tar      an image archive written by `engine.save` (docker-archive)
    sbom/<image>.<fmt>.json    a built image's SBOM: the file its `lowbuild.sbom` label names
    provenance/<image>.intoto.json  its provenance statement
    manifest.json              every other member's path, kind, name, sha256 and size;
                               the images' refs, IDs and (built ones) fingerprints
    manifest.json.sha256       `sha256sum` line of manifest.json (so `sha256sum -c` works)

Exporting the same content twice gives the same bytes, provided the engine's `save`
is byte-stable (podman's docker-archive is; see README).

Import verifies EVERY member against the manifest while streaming the bundle into a
temp dir inside the cache root (same filesystem), and refuses the bundle as a whole
(VerificationError naming each bad member) on any mismatch, missing, extra or unsafe
member, before anything reaches the cache or the engine.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tarfile
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Literal

from lowbuild import __version__
from lowbuild.context.pack import pack_deterministic
from lowbuild.engines.base import Engine
from lowbuild.errors import UsageError, VerificationError
from lowbuild.plan.fingerprint import FINGERPRINT_LABEL, SBOM_LABEL, labelled_sbom
from lowbuild.sources.cache import (
    CHUNK,
    SHA256_HEX,
    Cache,
    corrupt_entry_message,
    hash_file,
)

if TYPE_CHECKING:
    from lowbuild.plan.graph import FamilyGraph
    from lowbuild.spec.model import Project

BUNDLE_FORMAT = "lowbuild-bundle/1"
MANIFEST = "manifest.json"
MANIFEST_SUM = "manifest.json.sha256"
ARTIFACT_DIR = "artifacts/sha256"
IMAGE_DIR = "images"
# Each built image's SBOM and provenance, under the names and in the directories they
# have in a project's state directory (run/sbom.py).
DOCUMENT_DIRS = {"sbom": "sbom", "provenance": "provenance"}
# Directory entries the tar writer emits; any other directory is an unexpected member.
_DIRECTORIES = frozenset({"artifacts", ARTIFACT_DIR, IMAGE_DIR, *DOCUMENT_DIRS.values()})
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_DOCUMENT_NAME = re.compile(r"[A-Za-z0-9_@-][A-Za-z0-9._@-]*\.json")

MemberKind = Literal["artifact", "image", "manifest", "sbom", "provenance"]


@dataclass(frozen=True)
class BundleMember:
    """One file of the bundle as the manifest lists it."""

    path: str
    kind: MemberKind
    name: str  # artifact file name(s), comma-joined, or the image ref
    sha256: str
    size: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class BundledImage:
    """An image carried as an archive: the ref it is known by, its ID, and whether the
    family built it (then `image` names it and `fingerprint` is its label)."""

    ref: str
    id: str
    archive: str
    built: bool
    image: str | None = None
    fingerprint: str | None = None
    sbom: str | None = None  # its lowbuild.sbom label: the digest of its SBOM member

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Manifest:
    """What a bundle holds. `members` excludes manifest.json itself (it is checked
    against manifest.json.sha256)."""

    project: str
    engine: str
    members: tuple[BundleMember, ...]
    images: tuple[BundledImage, ...]
    lowbuild: str = __version__

    def to_bytes(self) -> bytes:
        document = {
            "format": BUNDLE_FORMAT,
            "lowbuild": self.lowbuild,
            "project": self.project,
            "engine": self.engine,
            "members": [m.to_json() for m in sorted(self.members, key=lambda m: m.path)],
            "images": [i.to_json() for i in sorted(self.images, key=lambda i: i.ref)],
        }
        return (json.dumps(document, sort_keys=True, indent=2) + "\n").encode()

    @classmethod
    def from_bytes(cls, data: bytes, *, origin: str) -> Manifest:
        """Parse a manifest; VerificationError naming `origin` when it is not one."""
        try:
            document = json.loads(data)
            if document.get("format") != BUNDLE_FORMAT:
                raise ValueError(f"format is {document.get('format')!r}, not {BUNDLE_FORMAT!r}")
            members = tuple(
                BundleMember(
                    path=str(m["path"]),
                    kind=m["kind"],
                    name=str(m["name"]),
                    sha256=str(m["sha256"]),
                    size=int(m["size"]),
                )
                for m in document["members"]
            )
            images = tuple(
                BundledImage(
                    ref=str(i["ref"]),
                    id=str(i["id"]),
                    archive=str(i["archive"]),
                    built=bool(i["built"]),
                    image=i.get("image"),
                    fingerprint=i.get("fingerprint"),
                    sbom=i.get("sbom"),
                )
                for i in document["images"]
            )
            return cls(
                project=str(document["project"]),
                engine=str(document["engine"]),
                members=members,
                images=images,
                lowbuild=str(document.get("lowbuild", "")),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise VerificationError(
                f"{origin}: {MANIFEST} is not a lowbuild bundle manifest: {exc}"
            ) from None


# ---------------------------------------------------------------------------
# What goes in


@dataclass(frozen=True)
class BundleContents:
    """Everything one export carries."""

    artifacts: Mapping[str, tuple[str, ...]]  # sha256 → artifact file names
    base_refs: tuple[str, ...]  # images from outside the family
    built: Mapping[str, str]  # family image name → its ref
    project: str = ""
    # family image name → {"sbom": file, "provenance": file}: what its build wrote
    documents: Mapping[str, Mapping[str, Path]] = field(default_factory=dict)


def contents_for(
    project: Project,
    graph: FamilyGraph,
    *,
    names: Sequence[str] = (),
    with_built: Sequence[str] = (),
) -> BundleContents:
    """What a bundle for `names` (all when empty; their ancestors too) must hold: their
    artifacts, every image the family takes from outside (the planner checks all of
    them, even for a selection), and the built family images `with_built` asks for."""
    unknown = [n for n in [*names, *with_built] if n not in graph.nodes]
    images = {node.spec.name for node in graph.nodes.values()}
    if unknown and graph.project.multi_platform:
        # An image's name stands for all its variants (each platform's), as in `build`.
        from lowbuild.plan.graph import select

        unknown = [n for n in unknown if n not in images]
        names = select(graph, names, with_deps=False) if names else ()
        with_built = select(graph, with_built, with_deps=False) if with_built else ()
    if unknown:
        raise UsageError(
            f"unknown image(s): {', '.join(unknown)}; the family has: {', '.join(sorted(images))}"
        )
    if names:
        selected = set(names) | {a for n in names for a in graph.ancestors(n)}
    else:
        selected = set(graph.nodes)
    artifacts: dict[str, list[str]] = {}
    for name in sorted(selected):
        for artifact in graph.nodes[name].spec.artifacts:
            files = artifacts.setdefault(artifact.sha256, [])
            if artifact.file not in files:
                files.append(artifact.file)
    return BundleContents(
        artifacts={sha: tuple(sorted(files)) for sha, files in sorted(artifacts.items())},
        base_refs=tuple(graph.external_images()),
        built={name: project.ref(name) for name in sorted(set(with_built))},
        project=project.name,
    )


def archive_name(ref: str) -> str:
    """The member an image's archive is stored as: `images/<ref, made file-safe>.tar`."""
    return f"{IMAGE_DIR}/{_UNSAFE.sub('_', ref).strip('_.')}.tar"


# ---------------------------------------------------------------------------
# Export


@dataclass(frozen=True)
class ExportResult:
    path: Path
    manifest: Manifest
    size: int
    sha256: str
    without_sbom: tuple[str, ...] = ()  # built images whose SBOM is not on this host


def export_bundle(
    contents: BundleContents, *, engine: Engine, cache: Cache, out: Path
) -> ExportResult:
    """Write the bundle `out` (atomically: a temp file beside it, then renamed).

    Every artifact must be in the cache (UsageError naming each and the `fetch` command
    otherwise); a cache entry whose bytes no longer match its digest is a
    VerificationError. Every image must exist in `engine`'s storage.
    """
    missing = [(sha, files) for sha, files in contents.artifacts.items() if not cache.contains(sha)]
    if missing:
        lines = [f"  {', '.join(files)}  sha256:{sha}" for sha, files in missing]
        raise UsageError(
            f"{len(missing)} artifact(s) to bundle are not in the cache {cache.root}:\n"
            + "\n".join(lines)
            + "\nfetch them first: lowbuild fetch"
        )
    images = _images_to_save(contents, engine)
    documents = _documents_to_carry(contents, images)
    out = out.absolute()
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".lowbuild-bundle-", dir=out.parent) as scratch:
        stage = Path(scratch)
        members: list[BundleMember] = []
        for sha, files in contents.artifacts.items():
            rel = f"{ARTIFACT_DIR}/{sha}"
            (stage / ARTIFACT_DIR).mkdir(parents=True, exist_ok=True)
            cache.place(sha, stage / rel)  # a hard link where possible: no copy of big tarballs
            actual = hash_file(stage / rel)
            if actual != sha:
                raise VerificationError(
                    corrupt_entry_message(
                        path=cache.entry_path(sha),
                        name=", ".join(files),
                        expected=sha,
                        actual=actual,
                    )
                )
            size = (stage / rel).stat().st_size
            members.append(BundleMember(rel, "artifact", ", ".join(files), sha, size))
        for image in images:
            (stage / IMAGE_DIR).mkdir(parents=True, exist_ok=True)
            engine.save([image.ref], stage / image.archive)
            target = stage / image.archive
            members.append(
                BundleMember(
                    image.archive, "image", image.ref, hash_file(target), target.stat().st_size
                )
            )
        for kind, key, source in documents:
            rel = f"{DOCUMENT_DIRS[kind]}/{source.name}"
            (stage / DOCUMENT_DIRS[kind]).mkdir(parents=True, exist_ok=True)
            data = source.read_bytes()
            (stage / rel).write_bytes(data)
            sha = hashlib.sha256(data).hexdigest()
            members.append(BundleMember(rel, kind, key, sha, len(data)))  # type: ignore[arg-type]
        manifest = Manifest(
            project=contents.project,
            engine=engine.name,
            members=tuple(members),
            images=tuple(images),
        )
        data = manifest.to_bytes()
        (stage / MANIFEST).write_bytes(data)
        (stage / MANIFEST_SUM).write_text(f"{hashlib.sha256(data).hexdigest()}  {MANIFEST}\n")
        pack_deterministic(stage, out, "tar")
    carried = {key for kind, key, _ in documents if kind == "sbom"}
    return ExportResult(
        path=out,
        manifest=manifest,
        size=out.stat().st_size,
        sha256=hash_file(out),
        without_sbom=tuple(
            i.image for i in images if i.image and i.sbom and i.image not in carried
        ),
    )


def _documents_to_carry(
    contents: BundleContents, images: Sequence[BundledImage]
) -> list[tuple[str, str, Path]]:
    """(kind, image, file) of each SBOM and provenance statement to carry: those of the
    built images whose SBOM is here. An SBOM file that is not the one the image's label
    names is a VerificationError (it would travel as the image's when it is not)."""
    carried: list[tuple[str, str, Path]] = []
    for image in images:
        if not image.image or not image.sbom:
            continue
        files = contents.documents.get(image.image, {})
        sbom = files.get("sbom")
        if sbom is None or not sbom.is_file():
            continue
        actual = "sha256:" + hash_file(sbom)
        if actual != image.sbom:
            raise VerificationError(
                f"{image.image}: its SBOM {sbom} hashes to {actual}, but the image's "
                f"{SBOM_LABEL} label says {image.sbom}: rebuild it (lowbuild build "
                f"{image.image}) or remove that file"
            )
        carried.append(("sbom", image.image, sbom))
        provenance = files.get("provenance")
        if provenance is not None and provenance.is_file():
            carried.append(("provenance", image.image, provenance))
    return carried


def _images_to_save(contents: BundleContents, engine: Engine) -> list[BundledImage]:
    images: list[BundledImage] = []
    absent: list[str] = []
    wanted = [(ref, None) for ref in contents.base_refs] + [
        (ref, name) for name, ref in contents.built.items()
    ]
    for ref, name in wanted:
        info = engine.inspect_image(ref)
        if info is None:
            absent.append(f"  {ref}" + (f" (build it: lowbuild build {name})" if name else ""))
            continue
        images.append(
            BundledImage(
                ref=ref,
                id=info.id,
                archive=archive_name(ref),
                built=name is not None,
                image=name,
                fingerprint=info.labels.get(FINGERPRINT_LABEL) if name else None,
                sbom=labelled_sbom(info.labels) if name else None,
            )
        )
    if absent:
        raise UsageError(
            f"image(s) to bundle are not in {engine.name}'s storage:\n" + "\n".join(absent)
        )
    archives = [i.archive for i in images]
    clash = sorted({a for a in archives if archives.count(a) > 1})
    if clash:
        raise UsageError(f"two image refs map to the same archive name: {', '.join(clash)}")
    return images


# ---------------------------------------------------------------------------
# Reading and verifying


def _checked_manifest(bundle: Path, data: bytes | None, sum_data: bytes | None) -> Manifest:
    if data is None:
        raise VerificationError(f"{bundle}: refused: member {MANIFEST} is missing")
    if sum_data is None:
        raise VerificationError(f"{bundle}: refused: member {MANIFEST_SUM} is missing")
    expected = sum_data.decode(errors="replace").split()[:1]
    actual = hashlib.sha256(data).hexdigest()
    if expected != [actual]:
        raise VerificationError(
            f"{bundle}: refused: member {MANIFEST} hashes to {actual}, "
            f"but {MANIFEST_SUM} says {expected[0] if expected else 'nothing'}"
        )
    return Manifest.from_bytes(data, origin=str(bundle))


def _open_tar(bundle: Path) -> tarfile.TarFile:
    if not bundle.is_file():
        raise UsageError(f"{bundle}: no such bundle file")
    try:
        # "r:" (plain tar) only: a bundle is never compressed, so nothing is guessed.
        return tarfile.open(bundle, "r:")
    except tarfile.TarError as exc:
        raise VerificationError(f"{bundle}: refused: not a readable tar archive ({exc})") from None


def _members(tar: tarfile.TarFile, bundle: Path) -> Iterable[tarfile.TarInfo]:
    """The tar's members in order; a damaged header is a VerificationError naming the
    last good member (tarfile checks every header's checksum)."""
    last = "the start"
    while True:
        try:
            info = tar.next()
        except tarfile.TarError as exc:
            raise _refusal(bundle, [f"damaged tar header after member {last} ({exc})"]) from None
        if info is None:
            break
        last = info.name
        yield info
    # tarfile takes a damaged header after the first one for the end of the archive; the
    # real end is zero blocks only, so anything else there is damage, not an ending.
    fileobj = tar.fileobj
    assert fileobj is not None
    fileobj.seek(tar.offset)
    while chunk := fileobj.read(CHUNK):
        if chunk.strip(b"\0"):
            raise _refusal(
                bundle, [f"damaged tar header at byte {tar.offset}, after member {last}"]
            )


def _unsafe_reason(info: tarfile.TarInfo) -> str | None:
    """Why a member may not be extracted, or None. Only plain files and the known
    directories, at normalised relative paths, are allowed."""
    name = info.name
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or str(path) != name.rstrip("/") or not name:
        return "path escapes the bundle"
    if info.isdir():
        return None if name.rstrip("/") in _DIRECTORIES else "unexpected directory"
    if not info.isfile():
        return "not a regular file"
    if name in {MANIFEST, MANIFEST_SUM}:
        return None
    parent = str(path.parent)
    if parent == ARTIFACT_DIR and SHA256_HEX.fullmatch(path.name):
        return None
    if parent == IMAGE_DIR and path.name.endswith(".tar") and not path.name.startswith("."):
        return None
    if parent in DOCUMENT_DIRS.values() and _DOCUMENT_NAME.fullmatch(path.name):
        return None
    return "not a member a bundle may hold"


@dataclass(frozen=True)
class _Staged:
    path: Path
    sha256: str
    size: int


@dataclass(frozen=True)
class ImportedArtifact:
    """An artifact of the bundle, now in the cache: `name` is the manifest's (the file
    name(s) the project gives these bytes, comma-joined); `already_present` when the
    cache held an entry with these bytes before the import."""

    name: str
    sha256: str
    size: int
    path: Path
    already_present: bool

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "path": str(self.path)}


@dataclass(frozen=True)
class ImportedImage:
    """An image of the bundle, now in the engine under `ref` with ID `id`;
    `already_present` when the engine had `ref` at the manifest's ID before the load."""

    ref: str
    id: str
    built: bool
    image: str | None
    fingerprint: str | None
    already_present: bool

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ImportResult:
    manifest: Manifest
    artifacts: tuple[ImportedArtifact, ...]  # admitted (or already present)
    images: tuple[ImportedImage, ...]  # now in the engine
    engine: str | None  # the engine loaded into (None: the bundle held no image)
    documents: tuple[Path, ...] = ()  # SBOMs and provenance written to `documents_dir`


def import_bundle(
    bundle: Path,
    *,
    engine: Callable[[], Engine],
    cache: Cache,
    documents_dir: Path | None = None,
) -> ImportResult:
    """Verify every member of `bundle`, then admit its artifacts to `cache` and load its
    images into `engine()` (re-tagging refs a load did not restore), and write the
    images' SBOMs and provenance statements under `documents_dir` (a project's state
    directory: `sbom/`, `provenance/`) when given.

    Verification comes first and covers everything: any problem is one
    VerificationError listing every bad member, and nothing is admitted or loaded.
    The engine is asked for (`engine()`, which may raise EngineUnavailable) after
    verification and before anything is admitted, and only when the bundle holds images:
    a bundle of artifacts alone needs no engine.
    """
    cache.root.mkdir(parents=True, exist_ok=True)
    # Inside the cache root: the same filesystem, and away from the entries (a dot dir).
    with tempfile.TemporaryDirectory(prefix=".bundle-import-", dir=cache.root) as scratch:
        manifest, staged = _verify_into(bundle, Path(scratch))
        chosen = engine() if manifest.images else None
        admitted: list[ImportedArtifact] = []
        for member in manifest.members:
            if member.kind == "artifact":
                path, added = cache.admit(staged[member.path].path, sha256=member.sha256)
                admitted.append(
                    ImportedArtifact(member.name, member.sha256, member.size, path, not added)
                )
        loaded: list[ImportedImage] = []
        if chosen is not None:
            before = chosen.inspect_images([image.ref for image in manifest.images])
            for image in manifest.images:
                chosen.load(staged[image.archive].path)
                info = chosen.inspect_image(image.ref)
                if info is None:
                    # A load that keeps only the ID (no RepoTags): name it as the manifest does.
                    chosen.tag(image.id, image.ref)
                    info = chosen.inspect_image(image.ref)
                had = before.get(image.ref)
                loaded.append(
                    ImportedImage(
                        ref=image.ref,
                        id=info.id if info else image.id,
                        built=image.built,
                        image=image.image,
                        fingerprint=image.fingerprint,
                        already_present=had is not None and had.id == image.id,
                    )
                )
        written: list[Path] = []
        for member in manifest.members:
            if member.kind in DOCUMENT_DIRS and documents_dir is not None:
                target = documents_dir / member.path
                target.parent.mkdir(parents=True, exist_ok=True)
                part = target.with_name(f".{target.name}.{os.getpid()}.tmp")
                shutil.copyfile(staged[member.path].path, part)
                part.replace(target)  # whole or not at all
                written.append(target)
    return ImportResult(
        manifest=manifest,
        artifacts=tuple(admitted),
        images=tuple(loaded),
        engine=chosen.name if chosen is not None else None,
        documents=tuple(written),
    )


def verify_bundle(bundle: Path) -> Manifest:
    """Check every member of `bundle` against its manifest without keeping anything."""
    with tempfile.TemporaryDirectory(prefix="lowbuild-bundle-verify-") as scratch:
        manifest, _ = _verify_into(bundle, Path(scratch))
    return manifest


def _verify_into(bundle: Path, scratch: Path) -> tuple[Manifest, dict[str, _Staged]]:
    """Stream every member into `scratch` while hashing it; then hold the result against
    the manifest. Returns the manifest and the staged files by member path."""
    staged, own, problems = _stream_members(bundle, scratch)
    try:
        manifest = _checked_manifest(bundle, own.get(MANIFEST), own.get(MANIFEST_SUM))
    except VerificationError as exc:
        problems.append(str(exc).removeprefix(f"{bundle}: refused: "))
        raise _refusal(bundle, problems) from None
    problems += _disagreements(manifest, staged)
    if problems:
        raise _refusal(bundle, problems)
    return manifest, staged


def _stream_members(
    bundle: Path, scratch: Path
) -> tuple[dict[str, _Staged], dict[str, bytes], list[str]]:
    """Each file member hashed into `scratch` (by member path), the manifest files' bytes
    (by name), and the members refused on sight (unsafe, or twice)."""
    problems: list[str] = []
    staged: dict[str, _Staged] = {}
    own: dict[str, bytes] = {}
    seen: set[str] = set()
    with _open_tar(bundle) as tar:
        for info in _members(tar, bundle):
            reason = _unsafe_reason(info)
            if reason is not None:
                problems.append(f"member {info.name}: {reason}")
                continue
            if info.name in seen:
                problems.append(f"member {info.name}: appears twice")
                continue
            seen.add(info.name)
            if info.isdir():
                continue
            if info.name in {MANIFEST, MANIFEST_SUM}:
                own[info.name] = _read_member(tar, info, bundle)
                continue
            source = tar.extractfile(info)
            assert source is not None  # a regular file, checked above
            # Flat names in scratch: member paths were checked, but nothing is created
            # from them beyond one file name of our own choosing.
            target = scratch / f"{len(staged):06d}"
            digest = hashlib.sha256()
            try:
                with target.open("wb") as out:
                    while chunk := source.read(CHUNK):
                        digest.update(chunk)
                        out.write(chunk)
            except tarfile.TarError:
                raise _cut_short(bundle, info.name) from None
            staged[info.name] = _Staged(target, digest.hexdigest(), target.stat().st_size)
    return staged, own, problems


def _disagreements(manifest: Manifest, staged: Mapping[str, _Staged]) -> list[str]:
    """Where the streamed members and the manifest disagree: missing, different, extra,
    misnamed members, and images whose archive is not a listed image member."""
    problems: list[str] = []
    listed = {m.path: m for m in manifest.members}
    for path, member in sorted(listed.items()):
        got = staged.get(path)
        if got is None:
            problems.append(f"member {path}: listed in the manifest but missing")
        elif got.sha256 != member.sha256 or got.size != member.size:
            problems.append(
                f"member {path}: sha256 {got.sha256} ({got.size} bytes), "
                f"manifest says {member.sha256} ({member.size} bytes)"
            )
        elif member.kind == "artifact" and PurePosixPath(path).name != member.sha256:
            problems.append(f"member {path}: stored under a name that is not its digest")
    problems.extend(
        f"member {path}: not listed in the manifest" for path in sorted(set(staged) - set(listed))
    )
    for image in manifest.images:
        if listed.get(image.archive) is None or listed[image.archive].kind != "image":
            problems.append(
                f"image {image.ref}: its archive {image.archive} is not a listed member"
            )
    return problems


def _read_member(tar: tarfile.TarFile, info: tarfile.TarInfo, bundle: Path) -> bytes:
    """A small member's bytes (the manifest files); a copy cut short inside it is refused."""
    source = tar.extractfile(info)
    assert source is not None  # a regular file: the callers checked
    try:
        return source.read()
    except tarfile.TarError:
        raise _cut_short(bundle, info.name) from None


def _cut_short(bundle: Path, member: str) -> VerificationError:
    """The file ends inside `member` (a copy cut short): nothing after it can be read,
    so this one fact is the whole refusal, on one line."""
    return VerificationError(
        f"bundle {bundle} refused, nothing was imported: it ends inside member {member} "
        "(the file is cut short; copy it again)"
    )


def _refusal(bundle: Path, problems: Sequence[str]) -> VerificationError:
    return VerificationError(
        f"bundle {bundle} refused, nothing was imported:\n  " + "\n  ".join(problems)
    )


def list_bundle(bundle: Path) -> list[BundleMember]:
    """Every member of `bundle` as its manifest lists it, the manifest files first
    (read, not verified: `import` verifies)."""
    own: dict[str, bytes] = {}
    with _open_tar(bundle) as tar:
        for info in _members(tar, bundle):
            if info.name in {MANIFEST, MANIFEST_SUM} and info.isfile():
                own[info.name] = _read_member(tar, info, bundle)
    manifest = _checked_manifest(bundle, own.get(MANIFEST), own.get(MANIFEST_SUM))
    files = [
        BundleMember(name, "manifest", name, hashlib.sha256(own[name]).hexdigest(), len(own[name]))
        for name in (MANIFEST, MANIFEST_SUM)
    ]
    return files + sorted(manifest.members, key=lambda m: m.path)
