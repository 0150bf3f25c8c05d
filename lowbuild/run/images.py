"""The family's images as the engine stores them: `lowbuild images` and `lowbuild prune`.

Everything here comes from the engine's own inspect data (IDs, tags, labels, sizes,
creation times), asked in one listing and one batched inspect:

- an image's *current* build is the image its ref (`<namespace>/<name>:<tag>`) names now;
- its *earlier* builds are the other images lowbuild labelled with the same ref
  (`org.opencontainers.image.ref.name`): untagged since a rebuild took the name, or
  left with a version tag the spec no longer gives;
- the change between two builds is read from their `lowbuild.inputs` labels, the way
  `plan` explains a rebuild.

`prune` removes earlier builds of this family only: images that carry this project's
name (`lowbuild.project`) and a ref in its namespace, that no ref of the family names
now, and that nobody else tagged. It never forces: an image a container uses, or that a
kept image builds on, stays, and is reported as kept with the engine's reason.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from lowbuild.engines.base import Engine, ImageInfo, short_id
from lowbuild.engines.parse import says_image_missing
from lowbuild.errors import EngineError
from lowbuild.plan.fingerprint import FINGERPRINT_LABEL, label_changes
from lowbuild.plan.graph import normalise_ref
from lowbuild.run.build import PROJECT_LABEL
from lowbuild.spec.model import Project
from lowbuild.spec.platforms import split_key

REF_LABEL = "org.opencontainers.image.ref.name"
BASE_LABEL = "org.opencontainers.image.base.name"


@dataclass(frozen=True)
class Earlier:
    """The previous build of an image still in the store."""

    id: str
    size: int | None
    created: str


@dataclass(frozen=True)
class FamilyImage:
    """One image of the family as `lowbuild images` shows it; `id` None: not built."""

    name: str
    ref: str
    id: str | None = None
    tags: tuple[str, ...] = ()
    size: int | None = None
    created: str = ""
    parent: str | None = None  # the family parent's name, or the external base's ref
    adds: int | None = None  # size over the parent's (or base's) current image
    previous: Earlier | None = None
    changes: tuple[str, ...] = ()  # what differs from `previous` (its inputs)

    @property
    def size_change(self) -> int | None:
        if self.previous is None or self.size is None or self.previous.size is None:
            return None
        return self.size - self.previous.size

    def to_json(self) -> dict[str, object]:
        previous = self.previous
        return {
            "image": self.name,
            "ref": self.ref,
            "built": self.id is not None,
            "id": self.id,
            "tags": list(self.tags),
            "size": self.size,
            "created": self.created or None,
            "parent": self.parent,
            "adds": self.adds,
            "previous": None
            if previous is None
            else {"id": previous.id, "size": previous.size, "created": previous.created or None},
            "changes": list(self.changes),
            "size_change": self.size_change,
        }


def _plain_tags(info: ImageInfo) -> set[str]:
    return {normalise_ref(tag) for tag in info.tags}


def builds(images: Iterable[ImageInfo]) -> list[ImageInfo]:
    """The images that are builds, without the other images that carry their labels.

    An image built FROM a family image inherits its labels, so the intermediate images a
    child's build leaves (podman's layer cache, docker's classic builder) carry the
    parent's fingerprint too, with more layers than it; so does an image somebody built
    FROM it by hand. docker's classic builder also leaves one image per label it sets,
    all with the build's layers, the last one being the build. So per fingerprint, the
    build is the image tagged in its own repository, else, among those with the fewest
    layers, the one made last."""
    groups: dict[str, list[ImageInfo]] = {}
    for image in images:
        groups.setdefault(image.labels.get(FINGERPRINT_LABEL, image.id), []).append(image)
    return [
        min(group, key=lambda i: (not _tagged_as_built(i), len(i.layers), _later_first(i)))
        for group in groups.values()
    ]


_FRACTION = re.compile(r"\.(\d+)")


def when(created: str) -> str:
    """An RFC 3339 time that sorts as text: nanoseconds always nine digits (the engines
    drop trailing zeros, so "…46.44Z" would sort after "…46.439Z")."""
    return _FRACTION.sub(lambda m: "." + m.group(1).ljust(9, "0")[:9], created, count=1)


def _later_first(image: ImageInfo) -> tuple[str, str]:
    inverted = "".join(chr(0x10FFFF - ord(c)) for c in when(image.created))
    return inverted, image.id


def _tagged_as_built(image: ImageInfo) -> bool:
    """Tagged in the repository it was built as (any tag of `ns/name`)."""
    repository = normalise_ref(image.labels.get(REF_LABEL, "")).rpartition(":")[0]
    return any(tag.rpartition(":")[0] == repository for tag in _plain_tags(image))


def _newest(images: Iterable[ImageInfo]) -> ImageInfo | None:
    return max(images, key=lambda info: (when(info.created), info.id), default=None)


def family_images(project: Project, engine: Engine) -> list[FamilyImage]:
    """Every image of the family, parents before children as the spec lists them, with
    its current build (if any) and the change since the previous one."""
    built = builds(engine.labelled_images(FINGERPRINT_LABEL))
    by_tag = {tag: info for info in built for tag in _plain_tags(info)}
    by_ref: dict[str, list[ImageInfo]] = {}
    for image in built:
        if REF_LABEL in image.labels:
            by_ref.setdefault(normalise_ref(image.labels[REF_LABEL]), []).append(image)
    # In a multi-platform family, a row per variant (`web@linux-arm64`, parent likewise).
    keys = {key: spec for spec in project.images for key in project.keys(spec)}
    current = {key: by_tag.get(normalise_ref(project.ref(key))) for key in keys}
    family = set(keys)
    bases = sorted(
        {
            info.labels[BASE_LABEL]
            for info in current.values()
            if info is not None and BASE_LABEL in info.labels
        }
        - {project.ref(name) for name in family}
    )
    base_sizes = {ref: found.size for ref, found in engine.inspect_sized(bases).items() if found}

    rows = []
    for key, spec in keys.items():
        info = current[key]
        platform = split_key(key)[1]
        family_parent = project.key(spec.parent, platform) if spec.parent else None
        if info is None:
            rows.append(FamilyImage(key, project.ref(key), parent=family_parent))
            continue
        base = info.labels.get(BASE_LABEL)
        parent = family_parent or base
        if family_parent is not None:
            parent_info = current.get(family_parent)
            parent_size = parent_info.size if parent_info is not None else None
        else:
            parent_size = base_sizes.get(base) if base else None
        adds = info.size - parent_size if info.size is not None and parent_size else None
        earlier = [
            other
            for other in by_ref.get(normalise_ref(project.ref(key)), ())
            if other.id != info.id
        ]
        previous = _newest(earlier)
        rows.append(
            FamilyImage(
                name=key,
                ref=project.ref(key),
                id=info.id,
                tags=tuple(sorted(info.tags)),
                size=info.size,
                created=info.created,
                parent=parent,
                adds=adds,
                previous=None
                if previous is None
                else Earlier(previous.id, previous.size, previous.created),
                changes=label_changes(previous.labels, info.labels) if previous else (),
            )
        )
    return rows


# ---- prune ----


@dataclass(frozen=True)
class PruneItem:
    """An earlier build of the family: removed (or, dry, to be), or kept and why."""

    id: str
    ref: str  # the family ref it was built as
    tags: tuple[str, ...]
    size: int | None
    created: str
    kept: str = ""  # why it stays; empty: removed

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "ref": self.ref,
            "tags": list(self.tags),
            "size": self.size,
            "created": self.created or None,
            "removed": not self.kept,
            "kept": self.kept or None,
        }


@dataclass
class PruneResult:
    items: list[PruneItem] = field(default_factory=list)
    dry_run: bool = False
    store_before: int | None = None
    store_after: int | None = None

    @property
    def removed(self) -> list[PruneItem]:
        return [item for item in self.items if not item.kept]

    @property
    def kept(self) -> list[PruneItem]:
        return [item for item in self.items if item.kept]

    @property
    def freed(self) -> int | None:
        """What the engine's image storage shrank by (None: dry run, or not measured)."""
        if self.store_before is None or self.store_after is None:
            return None
        return max(0, self.store_before - self.store_after)

    def to_json(self) -> dict[str, object]:
        return {
            "dry_run": self.dry_run,
            "removed": [item.to_json() for item in self.removed],
            "kept": [item.to_json() for item in self.kept],
            "freed": self.freed,
            "store_before": self.store_before,
            "store_after": self.store_after,
        }


def _ours(project: Project, info: ImageInfo) -> bool:
    """Built by lowbuild for this project, as a ref of its namespace."""
    ref = normalise_ref(info.labels.get(REF_LABEL, ""))
    return (
        info.labels.get(PROJECT_LABEL) == project.name
        and FINGERPRINT_LABEL in info.labels
        and ref.startswith(project.namespace + "/")
    )


def prune_candidates(project: Project, engine: Engine) -> list[PruneItem]:
    """This family's earlier builds: each with `kept` set when it must stay (a ref of the
    family names it now, or a tag outside the family's namespace: somebody else's)."""
    current_refs = {
        normalise_ref(ref)
        for spec in project.images
        for key in project.keys(spec)
        for ref in project.refs_for(key)
    }
    items = []
    for info in builds(engine.labelled_images(f"{PROJECT_LABEL}={project.name}")):
        if not _ours(project, info):
            continue
        tags = _plain_tags(info)
        foreign = sorted(tag for tag in tags if not tag.startswith(project.namespace + "/"))
        kept = ""
        if tags & current_refs:
            kept = "current: " + ", ".join(sorted(tags & current_refs))
        elif foreign:
            kept = "also tagged outside the family: " + ", ".join(foreign)
        items.append(
            PruneItem(
                id=info.id,
                ref=normalise_ref(info.labels[REF_LABEL]),
                tags=tuple(sorted(info.tags)),
                size=info.size,
                created=info.created,
                kept=kept,
            )
        )
    return sorted(items, key=lambda item: (item.ref, when(item.created), item.id))


def _refused_for_a_child(exc: EngineError) -> bool:
    """The engine would not remove an image another image builds on (yet)."""
    text = exc.stderr.lower()
    return "child" in text or "image has dependent" in text


def prune_family(
    project: Project,
    engine: Engine,
    *,
    dry_run: bool = False,
    notify: Callable[[str], None] = lambda line: None,
) -> PruneResult:
    """Remove this family's earlier builds (`dry_run`: only say which). Children before
    the images they build on: an image the engine refuses for a child is tried again
    after the others, and kept (with the engine's words) if it still cannot go."""
    items = prune_candidates(project, engine)
    result = PruneResult(dry_run=dry_run)
    current = [item for item in items if item.kept]
    todo = [item for item in items if not item.kept]
    if dry_run or not todo:
        result.items = items
        return result
    result.store_before = engine.image_store_bytes()
    done: list[PruneItem] = []
    while todo:
        waiting: list[tuple[PruneItem, EngineError]] = []
        for item in todo:
            try:
                _remove(engine, item)
                notify(f"removed {short_id(item.id)} ({item.ref}, built {item.created[:19]})")
                done.append(item)
            except EngineError as exc:
                # Gone already: an untagged parent goes with its last child (or somebody
                # else removed it).
                if says_image_missing(exc):
                    done.append(item)
                elif _refused_for_a_child(exc):
                    waiting.append((item, exc))
                else:
                    done.append(_kept(item, exc))
        if len(waiting) == len(todo):  # no progress: what is left stays
            done += [_kept(item, exc) for item, exc in waiting]
            break
        todo = [item for item, _ in waiting]
    result.items = current + done
    result.store_after = engine.image_store_bytes()
    return result


def _kept(item: PruneItem, exc: EngineError) -> PruneItem:
    words = " ".join(exc.stderr.split())[-300:] or str(exc)
    return PruneItem(item.id, item.ref, item.tags, item.size, item.created, f"engine: {words}")


def _remove(engine: Engine, item: PruneItem) -> None:
    """Untag each tag (the last one removes the image), or remove an untagged one by ID."""
    for tag in item.tags:
        engine.remove_image(tag)
    if not item.tags:
        engine.remove_image(item.id)
