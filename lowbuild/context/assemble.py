"""Stage one image's build context: its files, its verified artifacts, its packs.

The staged context is what the engine sees, and nothing else:
  * the files of the context directory, minus those its ignore file leaves out
    (`.dockerignore`, or `.containerignore`, see dockerignore.py), minus the
    ignore files themselves (an engine would apply them a second time, to the
    files lowbuild generated too) and minus `image.yaml` (lowbuild's own
    metadata, not a build input);
  * the Dockerfile, always, as a regular file: even when the ignore file lists it
    (engines always read it) or it is a symlink to another file of the context;
    the engine is given this copy, never the source;
  * each artifact, copied from the cache and hashed on the way (a mismatch is a
    VerificationError): the stage's own file, so nothing that later happens to the
    cache entry reaches a stage already made;
  * each pack, built deterministically from its source directory (which reads
    the source as it is: `.dockerignore` does not apply to it, so a pack's source
    can be kept out of the context with `.dockerignore` and still be packed).
Modes are normalised from the exec bit (0755/0644, dirs 0755) and every mtime is
set to the pack mtime (SOURCE_DATE_EPOCH or 0), so engines that copy metadata
into layers produce the same layers from the same inputs.

The context digest ("sha256:<hex>") covers, for every member in path order, its
kind, path, normalised mode and content: a file's sha256 (for artifacts, the
pinned sha256; for packs, a digest of the pack's inputs, since a pack is a pure
function of them, each of whose files is also recorded so a rebuild can name it),
a symlink's target. It is computed without staging, so the
planner can ask for it cheaply (`take_inventory`) and hand the inventory on.

Staging is atomic: the tree is built in a temp dir beside the final one and
renamed into place; assembling unchanged inputs again does not touch anything.
The state file `.<name>.digest` holds the digest and each staged file's stat
record; a stage is reused only when both still match, so a staged file changed
behind lowbuild's back is staged again, never trusted.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Literal

from filelock import FileLock

from lowbuild.context.dockerignore import (
    ignore_file_names,
    is_ignored,
    load_ignore_file,
    may_contain_included,
)
from lowbuild.context.pack import default_mtime, pack_deterministic, walk_tree
from lowbuild.errors import Location, OfflineMissing, SpecError
from lowbuild.sources.cache import Cache, StatRecord, hash_file, write_atomically
from lowbuild.sources.fetch import missing_artifact_lines
from lowbuild.spec.model import IMAGE_FILE, ImageSpec, Pack

_PACK_DIGEST_VERSION = "lowbuild-pack-v1"  # bump if pack_deterministic's output changes


@dataclass(frozen=True)
class StagedContext:
    """A staged build context: its directory, its digest, and each artifact's sha256."""

    path: Path
    digest: str
    artifact_digests: Mapping[str, str]


@dataclass(frozen=True)
class _Member:
    path: str
    kind: Literal["file", "dir", "symlink"]
    mode: int
    content: str  # sha256 hex for files, target for symlinks, "" for dirs
    origin: Literal["context", "artifact", "pack"] = "context"
    pack: Pack | None = None

    def record(self) -> bytes:
        return f"{self.kind}\0{self.path}\0{self.mode:o}\0{self.content}\n".encode(
            "utf-8", "surrogateescape"
        )


def _spec_location(image: ImageSpec, location: Location | None) -> Location:
    return location or image.location or Location(image.directory / IMAGE_FILE)


def _inside_context(
    image: ImageSpec, name: str, *, what: str, location: Location | None, root_ok: bool = False
) -> str:
    """`name` as a clean relative POSIX path, or a SpecError if it would leave the context."""
    where = _spec_location(image, location)
    if not name or "\\" in name or "\0" in name:
        raise SpecError(f"image {image.name}: {what} {name!r} is not a usable file name", where)
    posix = PurePosixPath(name)
    cleaned = os.path.normpath(name).replace(os.sep, "/")
    if cleaned == "." and root_ok:
        return cleaned
    if posix.is_absolute() or cleaned in ("..", ".") or cleaned.startswith("../"):
        raise SpecError(
            f"image {image.name}: {what} {name!r} would land outside the context "
            f"{image.directory} (use a relative path inside it)",
            where,
        )
    return cleaned


def _tree_digest(root: Path, hashes: dict[Path, str]) -> tuple[str, dict[str, str]]:
    """Digest of a tree as pack_deterministic sees it (every entry, no ignore rules),
    and the sha256 hex of each of its regular files by path relative to `root`."""
    digest = hashlib.sha256()
    files: dict[str, str] = {}
    for entry in walk_tree(root):
        content = entry.target if entry.kind == "symlink" else ""
        if entry.kind == "file":
            content = files[entry.path] = _hash_cached(root / entry.path, hashes)
        digest.update(_Member(entry.path, entry.kind, entry.mode, content).record())
    return digest.hexdigest(), files


def _hash_cached(path: Path, hashes: dict[Path, str]) -> str:
    if path not in hashes:
        hashes[path] = hash_file(path)
    return hashes[path]


PackFiles = dict[str, tuple[str, dict[str, str]]]  # pack into → (its source, files in it)


def _inventory(image: ImageSpec) -> tuple[list[_Member], PackFiles]:
    """Every member of the staged context, validated, sorted by path; and for each pack
    the sha256 hex of every file packed (by path relative to the pack's source)."""
    context = image.directory
    if not context.is_dir():
        raise SpecError(
            f"image {image.name}: context directory {context} does not exist",
            _spec_location(image, None),
        )
    dockerfile = image.dockerfile if image.kind == "dockerfile" else None
    rules = load_ignore_file(context, dockerfile=dockerfile).rules
    # Never staged: lowbuild applies the rules; the engine would apply them again, also
    # to the packs and artifacts lowbuild put in (`*.tar.gz` would drop them).
    left_out = {IMAGE_FILE, *ignore_file_names(dockerfile)}
    hashes: dict[Path, str] = {}

    def keep(rel: str) -> bool:
        return rel not in left_out and not is_ignored(rel, rules)

    members = _Members(image)
    for entry in walk_tree(
        context, keep=keep, may_descend=lambda rel: may_contain_included(rel, rules)
    ):
        content = entry.target if entry.kind == "symlink" else ""
        if entry.kind == "file":
            content = _hash_cached(context / entry.path, hashes)
        members.by_path[entry.path] = _Member(entry.path, entry.kind, entry.mode, content)
    if dockerfile is not None:
        _add_dockerfile(image, dockerfile, members.by_path, hashes, keep=keep, add=members.add)
    for artifact in image.artifacts:
        what, where = "artifact file", artifact.location
        name = _inside_context(image, artifact.file, what=what, location=where)
        members.add(name, _Member(name, "file", 0o644, artifact.sha256, "artifact"), what, where)
    pack_files: PackFiles = {}
    mtime = default_mtime()
    for pack in image.packs:
        member, source_rel, packed = _pack_member(image, pack, hashes, mtime=mtime)
        pack_files[member.path] = (source_rel, packed)
        members.add(member.path, member, "pack path", pack.location)
    return members.in_order(), pack_files


@dataclass
class _Members:
    """The members of one image's staged context, by path."""

    image: ImageSpec
    by_path: dict[str, _Member] = field(default_factory=dict)

    def add(self, name: str, member: _Member, what: str, location: Location | None) -> None:
        """Add a member lowbuild writes (`what`: artifact file, pack path, Dockerfile),
        with its parent directories; a SpecError when it would replace or go through a
        member already there."""
        image, clash = self.image, self.by_path.get(name)
        if (
            clash is not None
            and member.origin == "artifact"
            and (clash.origin, clash.kind, clash.content) == ("context", "file", member.content)
        ):
            # The pinned file already lies in the context (a tarball or a binary dropped
            # beside the Dockerfile, as `lowbuild init` finds them): the same bytes, staged
            # from the verified cache entry, with the context file's mode (an executable
            # stays one).
            self.by_path[name] = dataclasses.replace(member, mode=clash.mode)
            return
        if clash is not None:
            other = "the context file" if clash.origin == "context" else "another " + clash.origin
            raise SpecError(
                f"image {image.name}: {what} {name!r} clashes with {other} "
                f"{image.directory / name}",
                _spec_location(image, location),
            )
        parts = name.split("/")
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            existing = self.by_path.get(parent)
            if existing is None:
                self.by_path[parent] = _Member(parent, "dir", 0o755, "", origin=member.origin)
            elif existing.kind != "dir":
                raise SpecError(
                    f"image {image.name}: {what} {name!r} would be written through "
                    f"{existing.kind} {parent!r} of the context",
                    _spec_location(image, location),
                )
        self.by_path[name] = member

    def in_order(self) -> list[_Member]:
        ordered = sorted(self.by_path, key=lambda p: p.encode("utf-8", "surrogateescape"))
        return [self.by_path[k] for k in ordered]


def _pack_member(
    image: ImageSpec, pack: Pack, hashes: dict[Path, str], *, mtime: int
) -> tuple[_Member, str, dict[str, str]]:
    """The member `pack` becomes (its content: a digest of what goes in and how), the
    pack's source relative to the context, and the sha256 of each file it packs."""
    context = image.directory
    into = _inside_context(image, pack.into, what="pack path", location=pack.location)
    source_rel = _inside_context(
        image, pack.source, what="pack source", location=pack.location, root_ok=True
    )
    source = context / source_rel
    if not source.resolve().is_relative_to(context.resolve()) or not source.is_dir():
        raise SpecError(
            f"image {image.name}: pack source {pack.source!r} is not a directory inside "
            f"the context {context}",
            _spec_location(image, pack.location),
        )
    try:
        inputs, packed = _tree_digest(source, hashes)
    except SpecError as exc:
        raise SpecError(
            f"image {image.name}: pack {pack.into!r}: {exc}", _spec_location(image, pack.location)
        ) from None
    content = hashlib.sha256(
        f"{_PACK_DIGEST_VERSION}\0{pack.format}\0{mtime}\0{inputs}".encode()
    ).hexdigest()
    return _Member(into, "file", 0o644, content, origin="pack", pack=pack), source_rel, packed


def _add_dockerfile(
    image: ImageSpec,
    dockerfile: str,
    members: dict[str, _Member],
    hashes: dict[Path, str],
    *,
    keep: Callable[[str], bool],
    add: Callable[[str, _Member, str, Location | None], None],
) -> None:
    """Make sure the Dockerfile is in the context as a regular file: add it when the
    ignore file lists it (engines read it all the same), and put the file a symlink
    leads to in the symlink's place, if that file is itself part of the context."""
    name = _inside_context(image, dockerfile, what="dockerfile", location=None)
    present = members.get(name)
    if present is not None and present.kind == "file":
        return
    context = image.directory.resolve()
    real = (image.directory / name).resolve()
    if not real.is_relative_to(context) or not real.is_file():
        raise SpecError(
            f"image {image.name}: dockerfile {dockerfile!r} must be a file inside the "
            f"context {image.directory}",
            _spec_location(image, None),
        )
    if real != context / name and not keep(real.relative_to(context).as_posix()):
        # A link to a file kept out of the context (a key, an .env) is no Dockerfile.
        raise SpecError(
            f"image {image.name}: dockerfile {dockerfile!r} is a link to "
            f"{real.relative_to(context)}, which is not part of the context (ignored)",
            _spec_location(image, None),
        )
    members.pop(name, None)  # a symlink: staged as the file it leads to
    add(name, _Member(name, "file", 0o644, _hash_cached(real, hashes)), "dockerfile", None)


def _digest(members: Sequence[_Member]) -> str:
    digest = hashlib.sha256()
    for member in members:
        digest.update(member.record())
    return f"sha256:{digest.hexdigest()}"


@dataclass(frozen=True)
class ContextInventory:
    """What `image`'s staged context will hold, each file hashed once: taken by the
    planner (for fingerprints and per-file rebuild reasons) and handed to
    `assemble_context`, so a context is read and hashed once per build, not twice."""

    members: tuple[_Member, ...]
    digest: str  # "sha256:<hex>", what StagedContext.digest will be
    # pack into → (source directory, {path in the source: sha256 hex}): what each pack holds
    pack_files: Mapping[str, tuple[str, Mapping[str, str]]] = field(default_factory=dict)

    @property
    def files(self) -> dict[str, str]:
        """Relative POSIX path → sha256 hex of every regular file: the file's content for
        context files, the pinned digest for artifacts, the digest of a pack's inputs."""
        return {m.path: m.content for m in self.members if m.kind == "file"}


def take_inventory(image: ImageSpec) -> ContextInventory:
    """The inventory of `image`'s context, computed without staging (needs neither the
    cache nor the network)."""
    members, pack_files = _inventory(image)
    return ContextInventory(members=tuple(members), digest=_digest(members), pack_files=pack_files)


def context_digest(image: ImageSpec) -> str:
    """The digest `assemble_context` would report for `image`, without staging anything."""
    return take_inventory(image).digest


def _missing_message(image: ImageSpec, missing: list[str], *, offline: bool) -> str:
    why = " (and --offline forbids downloading)" if offline else ""
    lines = [f"image {image.name}: {len(missing)} artifact(s) not in the cache{why}:"]
    for artifact in image.artifacts:
        if artifact.file in missing:
            lines += missing_artifact_lines(artifact, [image.name])
    return "\n".join(lines)


def assemble_context(
    image: ImageSpec,
    *,
    cache: Cache,
    stage_root: Path,
    offline: bool = False,
    inventory: ContextInventory | None = None,
    mtime: int | None = None,
) -> StagedContext:
    """Stage `image`'s context at `stage_root/<name>` and return it with its digest.

    Artifacts must already be in `cache` (run `fetch_artifacts` first): assembly
    never downloads, online or not (`offline` only shapes the message). A missing
    one raises OfflineMissing naming it, its digest and the command that gets it; a
    cache entry whose bytes do not hash to its digest raises VerificationError
    naming it and the fix. A SpecError names the image.yaml for names leaving the
    context or clashing. Unchanged inputs and an untouched stage: nothing is
    rewritten. A failure leaves the previous staging (or nothing) in place, never a
    half-built context. Safe to call from several processes at once (one stages,
    the others then find its stage). `inventory`: the one the plan took (else it is
    taken here). `mtime`: the staged files' mtime (default: the pack mtime, so layers
    are reproducible; see export/bake.py for why a bake stage takes the present).
    """
    inventory = inventory or take_inventory(image)
    members, digest = inventory.members, inventory.digest
    artifact_digests = {a.file: a.sha256 for a in image.artifacts}
    final = stage_root / image.name
    state = stage_root / f".{image.name}.digest"
    if _stage_is_current(final, state, digest):
        return StagedContext(final, digest, artifact_digests)

    missing = [a.file for a in image.artifacts if not cache.contains(a.sha256)]
    if missing:
        raise OfflineMissing(_missing_message(image, missing, offline=offline))

    stage_root.mkdir(parents=True, exist_ok=True)
    # One stager per image at a time, whichever process or thread: the swap below
    # renames `final` twice, which two stagers interleaving would break.
    with FileLock(stage_root / f".{image.name}.lock"):
        if _stage_is_current(final, state, digest):
            return StagedContext(final, digest, artifact_digests)
        tmp = Path(tempfile.mkdtemp(prefix=f".{image.name}.", suffix=".tmp", dir=stage_root))
        old: Path | None = None
        try:
            _materialise(image, members, tmp, cache, mtime=mtime)
            files = _file_records(tmp, members)
            # Drop the state first: a crash from here on must not leave a stale "unchanged".
            state.unlink(missing_ok=True)
            if final.exists():
                # A fresh empty dir reserves a unique name; rename replaces an empty dir.
                old = Path(
                    tempfile.mkdtemp(prefix=f".{image.name}.", suffix=".old", dir=stage_root)
                )
                final.rename(old)
            tmp.rename(final)
            write_atomically(state, json.dumps({"digest": digest, "files": files}) + "\n")
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        finally:
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
    return StagedContext(final, digest, artifact_digests)


def _file_records(root: Path, members: Sequence[_Member]) -> dict[str, list[int]]:
    """The stat record of every regular file just staged (after its mtime was fixed).

    Unlike the cache's records these are kept although the files changed a moment ago
    (see RACY_NS in lowbuild.sources.cache): every staged file carries the fixed pack
    mtime, so any write moves its mtime to the present, whatever the clock tick, and
    only a write followed by putting the mtime back within the same tick as the
    staging itself would go unseen."""
    return {m.path: StatRecord.of(root / m.path).to_list() for m in members if m.kind == "file"}


def _stage_is_current(final: Path, state: Path, digest: str) -> bool:
    """Whether the stage at `final` holds exactly what `digest` describes: its state
    says so, and every staged file still has the stat it had when it was staged (a
    file edited, replaced or swapped for another inode since is not trusted)."""
    try:
        recorded = json.loads(state.read_text())
    except (OSError, ValueError):
        return False  # no state, or one from an older lowbuild: stage again
    if not isinstance(recorded, dict) or recorded.get("digest") != digest:
        return False
    files = recorded.get("files")
    if not isinstance(files, dict) or not final.is_dir():
        return False
    for rel, values in files.items():
        expected = StatRecord.from_list(values)
        if expected is None or StatRecord.current(final / rel) != expected:
            return False
    return True


def _materialise(
    image: ImageSpec, members: Sequence[_Member], root: Path, cache: Cache, *, mtime: int | None
) -> None:
    root.chmod(0o755)
    for member in members:
        dest = root / member.path
        if member.kind == "dir":
            dest.mkdir(mode=0o755, exist_ok=True)
            dest.chmod(0o755)  # not the umask
        elif member.kind == "symlink":
            dest.symlink_to(member.content)
        elif member.origin == "artifact":
            # Hashed on every placement: a stage never holds bytes it did not verify.
            cache.copy_verified(member.content, dest, name=member.path)
            dest.chmod(member.mode)  # as the digest records it, not the cache entry's
        elif member.origin == "pack":
            assert member.pack is not None
            pack_deterministic(image.directory / member.pack.source, dest, member.pack.format)
        else:
            shutil.copyfile(image.directory / member.path, dest)
            dest.chmod(member.mode)
    # Fixed mtimes, deepest first so setting a file's time never disturbs its directory's.
    stamp = default_mtime() if mtime is None else mtime
    for member in reversed(members):
        os.utime(root / member.path, (stamp, stamp), follow_symlinks=False)
    os.utime(root, (stamp, stamp))
