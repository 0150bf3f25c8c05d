"""What must be built, and why: the family graph, each image's inputs, and what the engine has.

An image is up to date when a local image with its reference carries the
fingerprint its inputs give now; then it is not built at all. An image one of
whose needs will be rebuilt must be rebuilt too ("parent rebuilt"), and its
final fingerprint is only known once that parent has its new ID, so the
builder recomputes it then (`current_inputs`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

from lowbuild.context.assemble import ContextInventory, take_inventory
from lowbuild.engines.base import MISSING_BASE_HINT, Engine, ImageInfo
from lowbuild.errors import UsageError, VerificationError
from lowbuild.plan.fingerprint import BuildInputs, fingerprint, inputs_for, rebuild_reasons
from lowbuild.plan.graph import FamilyGraph, Node, select
from lowbuild.spec.model import Project
from lowbuild.spec.platforms import architecture, native_platform

FOREIGN_BASE_HINT = (
    "a base for another platform is looked for under its platform's tag "
    "(`REF-linux-arm64`) unless `bases:` in lowbuild.yaml names it "
    "(`platforms: {linux/arm64: REF}`); `scripts/provision.sh` makes lowbuild's own "
    "busybox for linux/arm64"
)

Action = Literal["build", "pull", "up-to-date"]
"""build: out of date; pull: out of date, but the registry cache has the image built from
exactly these inputs; up-to-date: the local image has them."""

CacheLookup = Callable[[str, str], str | None]
"""(image name, fingerprint) → the ID of the image the registry cache holds, or None."""


@dataclass(frozen=True)
class PlannedImage:
    """One image of the plan: what will happen to it and why."""

    name: str
    ref: str
    action: Action
    reasons: tuple[str, ...]
    needs: tuple[str, ...]  # family images it is built from, within the plan
    existing_id: str | None
    # The inputs, final unless a need is rebuilt first (then None: known only once
    # that need has its new image ID).
    inputs: BuildInputs | None
    # The context as hashed for this plan (None for up-to-date images): the builder
    # stages from it instead of reading and hashing the context again.
    inventory: ContextInventory | None = field(default=None, compare=False, repr=False)

    @property
    def fingerprint(self) -> str | None:
        return fingerprint(self.inputs) if self.inputs is not None else None


@dataclass(frozen=True)
class Plan:
    project: Project
    graph: FamilyGraph
    engine: str
    images: tuple[PlannedImage, ...]  # in build order
    external_ids: Mapping[str, str]  # every external base → its local ID (pins checked)
    known_ids: Mapping[str, str]  # family images whose ID is final: up to date, or not selected
    # With several stores (make_plan `stores`): family image → store name → the ID of the
    # image that store holds under the image's ref (any version).
    held: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    def by_name(self) -> dict[str, PlannedImage]:
        return {image.name: image for image in self.images}

    def actions(self) -> set[Action]:
        return {image.action for image in self.images}

    def to_records(self) -> list[dict[str, Any]]:
        return [
            {
                "image": image.name,
                "ref": image.ref,
                "action": image.action,
                "reasons": list(image.reasons),
                "needs": list(image.needs),
                "existing_id": image.existing_id,
                "fingerprint": image.fingerprint,
            }
            for image in self.images
        ]


def external_image_ids(
    project: Project,
    graph: FamilyGraph,
    infos: Mapping[str, ImageInfo | None],
    engine: str,
    *,
    missing_ok: bool = False,
) -> dict[str, str]:
    """The local ID of every image from outside the family (`infos`: what `engine`
    has for each), checked against `bases:` pins.

    Nothing is pulled: a missing base is an error saying how to get it (with
    `missing_ok`, it is left out of the answer instead).
    """
    pins = {pin.ref: (pin.id, pin.location) for pin in project.bases if pin.id}
    for pin in project.bases:
        pins.update({each.ref: (each.id, pin.location) for each in pin.platforms if each.id})
    ids: dict[str, str] = {}
    for ref, users in graph.external_images().items():
        info = infos[ref]
        platforms = sorted({graph.nodes[user].platform or "" for user in users} - {""})
        if info is None:
            if missing_ok:
                continue
            hint = MISSING_BASE_HINT
            if platforms and platforms != [native_platform()]:
                hint = f"{FOREIGN_BASE_HINT}; {MISSING_BASE_HINT}"
            raise UsageError(
                f"base image {ref} (used by {', '.join(users)}) is not in {engine}'s "
                f"local storage, and {hint}."
            )
        pinned, where = pins.get(ref, ("", None))
        if pinned and pinned != info.id:
            raise VerificationError(
                f"base image {ref} is pinned to {pinned}"
                + (f" ({where})" if where else "")
                + f" but {engine} has {info.id}; load the pinned image or update the pin"
            )
        wrong = [p for p in platforms if info.architecture not in ("", architecture(p))]
        if wrong:
            raise VerificationError(
                f"base image {ref} (used by {', '.join(users)}) is built for "
                f"{info.architecture} in {engine}'s storage, not {architecture(wrong[0])}: "
                "building on it would make "
                f"a {wrong[0]} image of the wrong architecture; declare the right one under "
                "`bases:` (`platforms:`) in lowbuild.yaml"
            )
        ids[ref] = info.id
    return ids


def current_inputs(
    node: Node,
    *,
    engine: Engine,
    family_ids: Mapping[str, str],
    external_ids: Mapping[str, str],
    inventory: ContextInventory,
) -> BuildInputs:
    """The inputs of building `node` now, with its needs' image IDs known."""
    return inputs_for(
        node,
        options={"platform": node.platform} if node.platform else None,
        engine=engine.name,
        context_digest=inventory.digest,
        context_files=inventory.files,
        pack_files=inventory.pack_files,
        family_ids=family_ids,
        external_ids=external_ids,
    )


LOOKUP_JOBS = 8
"""Registry cache questions in flight at once while planning."""


def make_plan(
    project: Project,
    graph: FamilyGraph,
    engine: Engine,
    *,
    names: Iterable[str] = (),
    with_deps: bool = True,
    cache_lookup: CacheLookup | None = None,
    missing_bases_ok: bool = False,
    stores: Mapping[str, Engine] | None = None,
    platforms: Iterable[str] = (),
) -> Plan:
    """Decide, for the selected images (all when `names` is empty), what to build and why.

    `stores`: several engines the family is split over (run/hosts.py), the first being
    `engine`: an image is up to date when any of them holds it built from exactly its
    inputs, and each must have every external base as the same image.

    `missing_bases_ok` (for `plan`, which only shows): an image whose external base is
    not in local storage is planned "build" with that as its reason, instead of an
    error before any plan (what `build` wants: it could not build it).

    With `with_deps`, ancestors are part of the plan (built only if out of date);
    without, an ancestor outside the selection must already exist locally.
    `cache_lookup`: a registry cache; an out-of-date image it holds (under the
    fingerprint its inputs give) is planned "pull", and its children's inputs follow
    from the ID it will have. The questions run concurrently (LOOKUP_JOBS): an image
    waits only for its own parents' answers, so a family costs about one round trip
    per generation, not one per image.
    """
    selected = select(graph, names, with_deps=with_deps, platforms=platforms)
    # Every image the plan may ask about, external bases and family images, inspected
    # at once (one engine call, not one per image: that dominated planning a large family).
    wanted = {*selected, *(need for name in selected for need in graph.nodes[name].needs)}
    external = list(graph.external_images())
    refs = [*external, *(project.ref(name) for name in sorted(wanted))]
    views = {store: held.inspect_images(refs) for store, held in (stores or {"": engine}).items()}
    external_ids = _same_external_ids(project, graph, views, engine, missing_ok=missing_bases_ok)
    # The first store holding each ref; one up to date is chosen per image below.
    local = {
        ref: next((view[ref] for view in views.values() if view[ref] is not None), None)
        for ref in refs
    }
    planned: dict[str, PlannedImage] = {}
    known_ids: dict[str, str] = {}  # family images whose ID is final: existing and not rebuilt
    asked: dict[str, Future[str | None]] = {}  # out of date: what the cache holds, on its way
    with ThreadPoolExecutor(max_workers=LOOKUP_JOBS, thread_name_prefix="lookup") as pool:

        def settle(name: str) -> PlannedImage:
            """`name`'s final plan: "pull" when the cache answered with an ID."""
            image = planned[name]
            future = asked.pop(name, None)
            cached = future.result() if future is not None else None
            if cached is not None:
                known_ids[name] = cached
                reasons = (*image.reasons, "the registry cache has it")
                planned[name] = dataclasses.replace(image, action="pull", reasons=reasons)
            return planned[name]

        for name in selected:
            node = graph.nodes[name]
            known_ids.update(_unselected_needs(project, node, planned, known_ids, local))
            existing = local[project.ref(name)]
            held = [view[project.ref(name)] for view in views.values()]
            inventory = take_inventory(node.spec)
            rebuilt = [
                need for need in node.needs if need in planned and settle(need).action == "build"
            ]
            inputs: BuildInputs | None = None
            absent = [ref for ref in node.external if ref not in external_ids]
            if absent:  # only with missing_bases_ok
                reasons = tuple(f"base image {ref} missing: {MISSING_BASE_HINT}" for ref in absent)
            elif rebuilt and existing is None:
                reasons = ("new image",)
            elif rebuilt:  # the inputs are final only once the parent has its new ID
                reasons = tuple(f"parent rebuilt ({need})" for need in rebuilt)
            else:
                inputs = current_inputs(
                    node,
                    engine=engine,
                    family_ids=known_ids,
                    external_ids=external_ids,
                    inventory=inventory,
                )
                reasons = rebuild_reasons(existing.labels if existing else None, inputs)
                for other in held:  # another store may hold it up to date
                    if reasons and other is not None and not rebuild_reasons(other.labels, inputs):
                        existing, reasons = other, ()
            action: Action = "build" if reasons else "up-to-date"
            if action == "up-to-date" and existing is not None:
                known_ids[name] = existing.id
            elif inputs is not None and cache_lookup is not None:
                asked[name] = pool.submit(cache_lookup, name, fingerprint(inputs))
            planned[name] = PlannedImage(
                name=name,
                ref=project.ref(name),
                action=action,
                reasons=reasons,
                needs=tuple(need for need in node.needs if need in selected),
                existing_id=existing.id if existing else None,
                inputs=inputs,
                inventory=inventory if action != "up-to-date" else None,
            )
        for name in list(asked):
            settle(name)
    held_ids: dict[str, dict[str, str]] = {}
    if stores:
        for name in wanted:
            for store, view in views.items():
                info = view[project.ref(name)]
                if info is not None:
                    held_ids.setdefault(name, {})[store] = info.id
    return Plan(
        project=project,
        graph=graph,
        engine=engine.name,
        images=tuple(planned[name] for name in selected),
        external_ids=external_ids,
        known_ids=known_ids,
        held=held_ids,
    )


def _same_external_ids(
    project: Project,
    graph: FamilyGraph,
    views: Mapping[str, Mapping[str, ImageInfo | None]],
    engine: Engine,
    *,
    missing_ok: bool,
) -> dict[str, str]:
    """external_image_ids of every store; they must agree (several stores: the same family
    would otherwise be built from different bases depending on where it lands)."""
    found: dict[str, str] = {}
    first: dict[str, str] = {}
    for store, view in views.items():
        where = f"endpoint {store}" if store else engine.name
        ids = external_image_ids(project, graph, view, where, missing_ok=missing_ok)
        for ref, image_id in ids.items():
            if ref in found and found[ref] != image_id:
                raise VerificationError(
                    f"base image {ref} is {found[ref]} on endpoint {first[ref]} but {image_id} "
                    f"on endpoint {store}: load the same image on every endpoint, or pin it "
                    "(`bases:` in lowbuild.yaml)"
                )
            found.setdefault(ref, image_id)
            first.setdefault(ref, store)
    return found


def _unselected_needs(
    project: Project,
    node: Node,
    planned: Mapping[str, PlannedImage],
    known_ids: Mapping[str, str],
    local: Mapping[str, ImageInfo | None],
) -> dict[str, str]:
    """The IDs of `node`'s needs that are outside the plan (--no-deps): each must exist."""
    found: dict[str, str] = {}
    for need in node.needs:
        if need in planned or need in known_ids:
            continue
        info = local[project.ref(need)]
        if info is None:
            raise UsageError(
                f"{node.name} is built from {need}, which is not selected and has no image "
                f"({project.ref(need)}); build it first or drop --no-deps"
            )
        found[need] = info.id
    return found
