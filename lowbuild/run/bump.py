"""`lowbuild bump` and `lowbuild outdated`: a pinned source moved to a new version with
its URL, file name, build args, tags and sha256 together, and the newer versions
upstream lists.

`bump` checks the new file against the sha256 upstream publishes when the artifact says
where (`sha256-url:`); otherwise it computes it from the download and says so. The new
file is verified into the cache before image.yaml changes, and image.yaml is edited in
place (spec/edit.py): on any failure it is left as it was.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from lowbuild.errors import (
    EXIT_FAILED,
    FetchError,
    LowbuildError,
    OfflineMissing,
    SpecError,
    UsageError,
    VerificationError,
)
from lowbuild.redact import redact
from lowbuild.sources.cache import Cache, default_cache_root, write_atomically
from lowbuild.sources.upstream import (
    fetch_text,
    listed_versions,
    newer_versions,
    published_sha256,
)
from lowbuild.spec.edit import Edit, apply_edits, unified_diff
from lowbuild.spec.load import load_project
from lowbuild.spec.model import IMAGE_FILE, Artifact, ImageSpec, Project
from lowbuild.spec.versions import name_and_version, replace_version


def _say(console: Console, line: str) -> None:
    console.print(line, highlight=False, markup=False, emoji=False)


@dataclass(frozen=True)
class _Target:
    index: int  # in the image's artifacts
    artifact: Artifact
    old: str
    new: str


def _image(project: Project, name: str) -> ImageSpec:
    try:
        return project.image(name)
    except KeyError:
        names = ", ".join(spec.name for spec in project.images)
        raise UsageError(f"unknown image {name!r}; the family has: {names}") from None


def _targets(spec: ImageSpec, version: str | None, sets: Sequence[str]) -> list[_Target]:
    """Which artifacts move to which version: `--version` for the image's one versioned
    artifact, or `--set NAME=VERSION` each (NAME: the file name, or its name part)."""
    versioned = [
        (index, artifact, name_and_version(artifact.file))
        for index, artifact in enumerate(spec.artifacts)
        if name_and_version(artifact.file)[1]
    ]
    if version is not None and sets:
        raise UsageError("give --version or --set, not both")
    if version is not None:
        if len(versioned) != 1:
            files = ", ".join(a.file for _, a, _ in versioned) or "none"
            raise UsageError(
                f"{spec.name} has {len(versioned)} artifacts with a version in their file name "
                f"({files}): say which with --set NAME=VERSION"
            )
        index, artifact, (_, old) = versioned[0]
        return [_Target(index, artifact, old, version)]
    if not sets:
        raise UsageError("say the new version: --version X, or --set NAME=VERSION")
    targets: list[_Target] = []
    for item in sets:
        name, sep, new = item.partition("=")
        if not sep or not name or not new:
            raise UsageError(f"--set {item!r}: expected NAME=VERSION")
        found = [(i, a, nv) for i, a, nv in versioned if name in (a.file, nv[0])]
        if len(found) != 1:
            files = ", ".join(a.file for _, a, _ in versioned) or "none"
            raise UsageError(f"--set {item!r}: no single artifact named {name!r} ({files})")
        index, artifact, (_, old) = found[0]
        targets.append(_Target(index, artifact, old, new))
    return targets


def _version_edits(spec: ImageSpec, target: _Target) -> tuple[list[Edit], Artifact]:
    """The edits moving one artifact to its new version (file, URLs, sha256-url), and
    the artifact as it will be (its sha256 still the old one)."""
    old, new, artifact = target.old, target.new, target.artifact
    where: tuple[str | int, ...] = ("artifacts", target.index)
    edits = [Edit((*where, "file"), artifact.file, replace_version(artifact.file, old, new))]
    urls = tuple(replace_version(url, old, new) for url in artifact.urls)
    edits += [
        Edit((*where, "urls", i), url, urls[i])
        for i, url in enumerate(artifact.urls)
        if urls[i] != url
    ]
    sha256_url = artifact.sha256_url
    if sha256_url is not None:
        sha256_url = replace_version(sha256_url, old, new)
        edits.append(Edit((*where, "sha256-url"), artifact.sha256_url or "", sha256_url))
    moved = dataclasses.replace(
        artifact, file=edits[0].new, urls=urls, sha256_url=sha256_url, location=None
    )
    return [e for e in edits if e.old != e.new], moved


def _follower_edits(spec: ImageSpec, old: str, new: str) -> list[Edit]:
    """Build args and tags that carry the old version."""
    edits = [
        Edit(("args", key), value, replace_version(value, old, new)) for key, value in spec.args
    ]
    edits += [
        Edit(("tags", i), tag, replace_version(tag, old, new)) for i, tag in enumerate(spec.tags)
    ]
    return [e for e in edits if e.old != e.new]


def run_bump(
    project_file: Path | None,
    image: str,
    *,
    version: str | None,
    sets: Sequence[str],
    dry_run: bool,
    cache_dir: Path | None,
    engine: str | None,
    out: Console,
    err: Console,
) -> int:
    """`lowbuild bump IMAGE`: see the module docstring."""
    from lowbuild.sources.fetch import FetchPolicy, compute_digests, fetch_artifacts

    project = load_project(project_file)
    spec = _image(project, image)
    targets = _targets(spec, version, sets)
    path = spec.location.path if spec.location else spec.directory / IMAGE_FILE
    before = path.read_text(encoding="utf-8")
    policy = FetchPolicy(max_download=project.max_download)
    cache = Cache(default_cache_root(cache_dir))
    edits: list[Edit] = []
    for target in targets:
        if target.old == target.new:
            raise UsageError(f"{target.artifact.file} is already at {target.new}")
        moved_edits, moved = _version_edits(spec, target)
        edits += moved_edits + _follower_edits(spec, target.old, target.new)
        expected = None
        if moved.sha256_url:
            page = fetch_text(moved.sha256_url, rewrites=project.rewrites)
            expected = published_sha256(page, moved.file)
            if expected is None:
                raise FetchError(
                    f"{redact(moved.sha256_url)} names no sha256 for {moved.file}: "
                    "is that version published?"
                )
            _say(err, f"{moved.file}: upstream publishes sha256 {expected}")
        if dry_run:
            if expected is not None:
                edits.append(
                    Edit(("artifacts", target.index, "sha256"), target.artifact.sha256, expected)
                )
            else:
                _say(err, f"{moved.file}: its sha256 is computed from the download (no --dry-run)")
            continue
        new_spec = dataclasses.replace(spec, artifacts=(dataclasses.replace(moved, sha256=""),))
        if expected is None:
            computed = compute_digests([new_spec], rewrites=project.rewrites, policy=policy)
            got = next((c.sha256 for c in computed if c.sha256), None)
            if got is None:
                reasons = "; ".join(f"{redact(c.url)}: {c.error}" for c in computed)
                raise FetchError(f"{moved.file}: could not download it: {reasons or 'no URL'}")
            _say(
                err,
                f"{moved.file}: sha256 {got}, computed from the download "
                "(no sha256-url: nothing upstream to check it against)",
            )
            expected = got
        checked = dataclasses.replace(moved, sha256=expected)
        try:
            fetch_artifacts(
                [dataclasses.replace(spec, artifacts=(checked,))],
                cache=cache,
                rewrites=project.rewrites,
                policy=policy,
            )
        except VerificationError as exc:
            raise VerificationError(
                f"{moved.file} is not what upstream's sha256 says ({expected}): {path} left "
                f"as it was\n{exc}"
            ) from None
        _say(err, f"{moved.file}: verified into the cache {cache.root}")
        edits.append(Edit(("artifacts", target.index, "sha256"), target.artifact.sha256, expected))
    after = apply_edits(before, edits, origin=path)
    changes = [(path, before, after)]
    dockerfile = _dockerfile_defaults(spec, edits)
    if dockerfile is not None:
        changes.append(dockerfile)
    for changed, old_text, new_text in changes:
        shown = (
            changed.relative_to(project.root) if changed.is_relative_to(project.root) else changed
        )
        out.file.write(unified_diff(old_text, new_text, path=str(shown)))
    if dry_run:
        _say(err, f"dry run: {path} not changed, nothing downloaded")
        return 0
    for changed, _, new_text in changes:
        write_atomically(changed, new_text)
    try:
        load_project(project_file)
    except SpecError:
        for changed, old_text, _ in changes:  # what they were: the edit made them wrong
            write_atomically(changed, old_text)
        raise
    for changed, _, _ in changes:
        _say(err, f"wrote {changed}")
    return _show_plan(project_file, engine, out=out, err=err)


def _dockerfile_defaults(spec: ImageSpec, edits: Sequence[Edit]) -> tuple[Path, str, str] | None:
    """The Dockerfile with the defaults of the build args bumped (`ARG NAME=old`) moved
    too, so that they do not go stale: (path, before, after), or None when none is."""
    if spec.kind != "dockerfile":
        return None
    path = spec.directory / spec.dockerfile
    try:
        before = path.read_text(encoding="utf-8")
    except OSError:
        return None
    after = before
    for edit in edits:
        if len(edit.path) == 2 and edit.path[0] == "args":
            name = re.escape(str(edit.path[1]))
            line = re.compile(rf"(?mi)^(\s*ARG\s+{name}=)([\"']?){re.escape(edit.old)}\2(\s*)$")
            new = edit.new.replace("\\", "\\\\")  # a replacement template: no group refs
            after = line.sub(rf"\g<1>\g<2>{new}\g<2>\g<3>", after)
    return (path, before, after) if after != before else None


def _show_plan(project_file: Path | None, engine: str | None, *, out: Console, err: Console) -> int:
    """The plan after the bump: which images will be built again."""
    from lowbuild.errors import EngineUnavailable
    from lowbuild.run.workflow import Selection, run_plan

    try:
        run_plan(
            Selection(project_file=project_file, engine=engine), console=out, as_json=False, err=err
        )
    except EngineUnavailable as exc:
        _say(err, f"no engine to plan with ({exc}): `lowbuild plan` shows what will be rebuilt")
    return 0


@dataclass(frozen=True)
class OutdatedRecord:
    image: str
    file: str
    pinned: str
    newer: tuple[str, ...]
    index: str
    error: str | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "image": self.image,
            "file": self.file,
            "pinned": self.pinned,
            "newer": list(self.newer),
            "latest": self.newer[-1] if self.newer else None,
            "index": redact(self.index),
            "error": self.error,
        }


def run_outdated(
    project_file: Path | None,
    images: Sequence[str],
    *,
    offline: bool,
    pre_releases: bool,
    as_json: bool,
    out: Console,
    err: Console,
) -> int:
    """`lowbuild outdated`: for each artifact that says where upstream lists releases,
    the versions newer than the pinned one. Exit 1 when some could not be checked."""
    project = load_project(project_file)
    specs = [_image(project, name) for name in images] if images else list(project.images)
    records: list[OutdatedRecord] = []
    unlisted = 0
    pages: dict[str, str | LowbuildError] = {}
    for spec in specs:
        for artifact in spec.artifacts:
            if artifact.releases is None:
                unlisted += 1
                continue
            pinned = name_and_version(artifact.file)[1]
            index = artifact.releases.index
            if index not in pages:
                try:
                    pages[index] = fetch_text(index, offline=offline, rewrites=project.rewrites)
                except (FetchError, OfflineMissing) as exc:
                    pages[index] = exc
            page = pages[index]
            if isinstance(page, LowbuildError):
                why = f"cannot check: {page}"
                records.append(OutdatedRecord(spec.name, artifact.file, pinned, (), index, why))
                continue
            found = listed_versions(page, artifact.releases.pattern)
            newer = newer_versions(pinned, found, pre_releases=pre_releases)
            records.append(OutdatedRecord(spec.name, artifact.file, pinned, tuple(newer), index))
    if as_json:
        out.file.write(json.dumps([r.to_json() for r in records], indent=2) + "\n")
    else:
        table = Table(title="outdated")
        for column in ("image", "artifact", "pinned", "newer", "latest"):
            table.add_column(column)
        for r in records:
            said = r.error or (", ".join(r.newer) if r.newer else "up to date")
            table.add_row(r.image, r.file, r.pinned, said, r.newer[-1] if r.newer else "")
        out.print(table)
    if unlisted:
        _say(err, f"{unlisted} artifact(s) declare no `releases:`: not checked")
    return EXIT_FAILED if any(r.error for r in records) else 0
