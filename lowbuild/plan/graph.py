"""The family as a dependency graph: who builds on whom, checked, ordered, selected.

Dependencies are declared (`parent:` in image.yaml) and checked against what the
recipe really builds on: the final stage's FROM of the Dockerfile (global ARGs
substituted with the image's `args`), or `commit.base`. lowbuild passes no magic
build arg for the parent: the Dockerfile names the parent's reference itself,
`<namespace>/<parent>:<tag>` (optionally `localhost/`-prefixed), so the file
builds the same way by hand. Other family images a Dockerfile uses (earlier
stages, `COPY --from=<image>`) are dependencies too, found without declaring.
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from itertools import pairwise
from typing import Literal

from lowbuild.context.dockerfile import parse_dockerfile
from lowbuild.errors import Location, SpecError, UsageError, did_you_mean
from lowbuild.spec.model import ImageSpec, Project

GraphFormat = Literal["dot", "mermaid", "json"]
GRAPH_FORMATS: tuple[GraphFormat, ...] = ("dot", "mermaid", "json")

_Edges = Callable[[str], Iterable[str]]  # a name → the names it points at


@dataclass(frozen=True)
class Node:
    """One image and what it needs.

    `parent` is the family image it is built on; `base` the image from outside the
    family it stands on instead (None for `scratch` or a family parent). `needs`
    lists every family image that must exist first, parent first; `external` every
    image from outside the family it uses (bases of any stage, `COPY --from`).
    """

    name: str
    spec: ImageSpec
    parent: str | None
    base: str | None
    needs: tuple[str, ...]
    external: tuple[str, ...]
    # A variant (multi-platform family): the platform it is built for, and each image
    # its recipe names (as written, ARGs substituted) → the one to use for that platform.
    platform: str | None = None
    retarget: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class FamilyGraph:
    """The checked, acyclic family. Every listing it returns is deterministic."""

    project: Project
    nodes: Mapping[str, Node]  # by name, in name order

    def names(self) -> tuple[str, ...]:
        return tuple(self.nodes)

    def children(self, name: str) -> tuple[str, ...]:
        """Images that need `name` directly, by name."""
        return tuple(other for other, node in self.nodes.items() if name in node.needs)

    def ancestors(self, name: str) -> tuple[str, ...]:
        """Every family image `name` needs, directly or not, in build order."""
        return self.order(_closure([name], lambda each: self.nodes[each].needs) - {name})

    def descendants(self, name: str) -> tuple[str, ...]:
        """Every image that needs `name`, directly or not, in build order."""
        return self.order(_closure([name], self.children) - {name})

    def order(self, names: Iterable[str] | None = None) -> tuple[str, ...]:
        """`names` (default: all) in build order: every image after what it needs
        among them; ties broken by name, so the order is stable."""
        return tuple(name for level in self.levels(names) for name in level)

    def levels(self, names: Iterable[str] | None = None) -> tuple[tuple[str, ...], ...]:
        """`names` (default: all) in waves: each image of a wave needs only images of
        earlier waves, so a wave's images can build in parallel."""
        chosen = set(self.nodes if names is None else names)
        depth: dict[str, int] = {}
        for name in _topological(chosen, lambda each: self.nodes[each].needs):
            inside = [depth[need] + 1 for need in self.nodes[name].needs if need in chosen]
            depth[name] = max(inside, default=0)
        waves: list[list[str]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
        for name in sorted(depth):
            waves[depth[name]].append(name)
        return tuple(tuple(wave) for wave in waves)

    def external_images(self) -> dict[str, tuple[str, ...]]:
        """Each image from outside the family → the images that use it, by ref."""
        users: dict[str, list[str]] = {}
        for name, node in self.nodes.items():
            for ref in node.external:
                users.setdefault(ref, []).append(name)
        return {ref: tuple(users[ref]) for ref in sorted(users)}


def build_graph(project: Project) -> FamilyGraph:
    """Check every image's parent against its recipe and the family for cycles.

    Raises SpecError naming both places for a parent/FROM disagreement, and every
    image of a cycle with its image.yaml location.
    """
    family = _family_refs(project)
    names = frozenset(image.name for image in project.images)
    nodes = {
        spec.name: _node(project, spec, family, names)
        for spec in sorted(project.images, key=lambda image: image.name)
    }
    _check_acyclic(nodes)
    if project.multi_platform:
        nodes = _variants(project, nodes, family)
    return FamilyGraph(project=project, nodes=nodes)


def _variants(
    project: Project, nodes: Mapping[str, Node], family: Mapping[str, str]
) -> dict[str, Node]:
    """Each image once per platform it is built for (a variant, named by project.key),
    standing on its needs' variants for that platform and on each base's image for it.
    An image asking for a platform a family image it needs lacks is a SpecError."""
    variants: dict[str, Node] = {}
    for name, node in nodes.items():
        platforms = project.platforms_of(node.spec)
        for need in node.needs:
            theirs = project.platforms_of(nodes[need].spec)
            lacking = [platform for platform in platforms if platform not in theirs]
            if lacking:
                raise SpecError(
                    f"image {name!r} is built for {', '.join(lacking)}, which "
                    f"{'its parent' if need == node.parent else 'family image'} {need!r} "
                    f"({nodes[need].spec.location}) is not built for (it has "
                    f"{', '.join(theirs)}); an image's platforms must be among its "
                    "parent's: narrow its `platforms:` or widen the parent's",
                    node.spec.platforms_location or node.spec.location,
                )
        written = _written_uses(node, family)
        for platform in platforms:
            key = project.key(name, platform)
            targets = {
                use: project.ref(project.key(need, platform))
                if need
                else project.base_for(use, platform)[0]
                for use, need in written.items()
            }
            variants[key] = Node(
                name=key,
                spec=node.spec,
                parent=project.key(node.parent, platform) if node.parent else None,
                base=project.base_for(node.base, platform)[0] if node.base else None,
                needs=tuple(project.key(need, platform) for need in node.needs),
                external=tuple(
                    sorted({project.base_for(ref, platform)[0] for ref in node.external})
                ),
                platform=platform,
                retarget=tuple(sorted(targets.items())),
            )
    return dict(sorted(variants.items()))


def _written_uses(node: Node, family: Mapping[str, str]) -> dict[str, str | None]:
    """Every image `node`'s recipe names as written (ARGs substituted) → the family image
    it is (None: from outside the family; `family`: _family_refs)."""
    spec = node.spec
    if spec.commit is not None:
        base = spec.commit.base
        return {base: node.parent}
    parsed = parse_dockerfile(spec.dockerfile_path, build_args=dict(spec.args))
    return {use.ref: family.get(normalise_ref(use.ref)) for use in parsed.images}


def select(
    graph: FamilyGraph,
    names: Iterable[str],
    *,
    with_deps: bool = True,
    platforms: Iterable[str] = (),
) -> tuple[str, ...]:
    """The images to consider, in build order: `names` (all when empty) and, with
    `with_deps`, every family image they need (the planner decides which of those
    are out of date). Unknown names are a UsageError listing the known ones.

    In a multi-platform family an image's name stands for all its variants, and
    `platforms` (none: all) keeps only the variants for those."""
    images = sorted({node.spec.name for node in graph.nodes.values()})
    known = list(dict.fromkeys([*images, *graph.nodes]))
    wanted: list[str] = []
    for name in dict.fromkeys(names):
        if name in graph.nodes:
            wanted.append(name)
        elif name in images:
            wanted += [key for key, node in graph.nodes.items() if node.spec.name == name]
        else:
            hint = did_you_mean(name, known)
            raise UsageError(f"unknown image {name!r}{hint}; the family has: {', '.join(images)}")
    wanted = wanted or list(graph.nodes)
    narrowed = set(platforms)
    if narrowed:
        declared = {node.platform for node in graph.nodes.values()}
        unknown = sorted(narrowed - declared)
        if unknown:
            have = ", ".join(sorted(p for p in declared if p)) or "none declared"
            raise UsageError(
                f"--platform {', '.join(unknown)}: the family is not built for it "
                f"(its platforms: {have})"
            )
        wanted = [key for key in wanted if graph.nodes[key].platform in narrowed]
        if not wanted:
            raise UsageError(
                f"none of the selected images is built for {', '.join(sorted(narrowed))}"
            )
    chosen = set(wanted)
    if with_deps:
        chosen = _closure(wanted, lambda each: graph.nodes[each].needs)
    return graph.order(chosen)


# ---- checking each image's parent ----


def _family_refs(project: Project) -> dict[str, str]:
    """Every reference a family image is built as (normalised) → its name. Two images
    built as the same reference (through `refs:`) are a SpecError: a FROM naming it
    could mean either."""
    owners: dict[str, str] = {}
    for spec in project.images:
        for ref in project.refs(spec):
            owner = owners.setdefault(normalise_ref(ref), spec.name)
            if owner != spec.name:
                raise SpecError(
                    f"images {owner!r} and {spec.name!r} are both built as {ref}: a FROM "
                    "naming it could mean either; drop it from one's refs:",
                    spec.location,
                )
    return owners


def normalise_ref(ref: str) -> str:
    """`localhost/x/y` is how podman names local `x/y`; no tag means `:latest`."""
    ref = ref.removeprefix("localhost/")
    last = ref.rsplit("/", 1)[-1]
    if ":" not in last and "@" not in last:
        ref += ":latest"
    return ref


def _node(
    project: Project, spec: ImageSpec, family: Mapping[str, str], names: frozenset[str]
) -> Node:
    if spec.parent is not None and spec.parent not in names:
        known = sorted(names)
        hint = did_you_mean(spec.parent, known)
        raise SpecError(
            f"parent {spec.parent!r} is not an image of the family{hint}; "
            f"the family has: {', '.join(known)}",
            spec.parent_location or spec.location,
        )
    if spec.commit is not None:
        return _commit_node(project, spec, family)
    return _dockerfile_node(project, spec, family)


def _dockerfile_node(project: Project, spec: ImageSpec, family: Mapping[str, str]) -> Node:
    parsed = parse_dockerfile(spec.dockerfile_path, build_args=dict(spec.args))
    final = parsed.final_base
    final_family = family.get(normalise_ref(final.ref)) if final is not None else None
    if final is not None and final_family == spec.name:
        raise SpecError(
            f"FROM {final.ref}: image {spec.name!r} cannot build on itself",
            Location(parsed.path, final.line),
        )
    if final_family != spec.parent:
        line = final.line if final is not None else parsed.stages[-1].line
        written = f"FROM {final.ref}" if final is not None else "FROM scratch"
        raise SpecError(
            _parent_mismatch(project, spec, Location(parsed.path, line), written, final_family)
        )
    used = [family.get(normalise_ref(use.ref)) for use in parsed.images]
    needs = [*([spec.parent] if spec.parent else []), *(name for name in used if name)]
    external = sorted({use.ref for use, name in zip(parsed.images, used, strict=True) if not name})
    return Node(
        name=spec.name,
        spec=spec,
        parent=spec.parent,
        base=final.ref if final is not None and final_family is None else None,
        needs=tuple(dict.fromkeys(needs)),
        external=tuple(external),
    )


def _commit_node(project: Project, spec: ImageSpec, family: Mapping[str, str]) -> Node:
    assert spec.commit is not None
    base = spec.commit.base
    names = {image.name for image in project.images}
    base_family = base if base in names else family.get(normalise_ref(base))
    if spec.parent is not None and base_family != spec.parent:
        raise SpecError(
            _parent_mismatch(
                project, spec, spec.commit.location, f"commit.base {base}", base_family
            )
        )
    parent = spec.parent or base_family
    return Node(
        name=spec.name,
        spec=spec,
        parent=parent,
        base=None if parent else base,
        needs=(parent,) if parent else (),
        external=() if parent else (base,),
    )


def _parent_mismatch(
    project: Project,
    spec: ImageSpec,
    recipe_at: Location | None,
    written: str,
    recipe_family: str | None,
) -> str:
    """Both places: what image.yaml declares and what the recipe builds on."""
    what = f"family image {recipe_family!r}" if recipe_family else "no family image"
    if spec.parent is None:
        declared = f"{spec.location}: image {spec.name!r} declares no parent"
        fix = f"add `parent: {recipe_family}` to its image.yaml"
    else:
        where = spec.parent_location or spec.location
        declared = f"{where}: image {spec.name!r} declares parent: {spec.parent}"
        refs = project.refs(project.image(spec.parent))
        fix = f"build FROM {' or '.join(refs)} (the tags lowbuild gives it), or change parent:"
    return f"{declared}, but {recipe_at}: {written} builds on {what}; {fix}"


# ---- order and cycles ----


def _closure(start: Iterable[str], edges: _Edges) -> set[str]:
    seen: set[str] = set()
    todo = list(start)
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(edges(name))
    return seen


def _topological(chosen: set[str], needs: _Edges) -> list[str]:
    """Kahn's algorithm over `chosen`, smallest name first among the ready ones."""
    waiting = {name: {need for need in needs(name) if need in chosen} for name in chosen}
    waited_by: dict[str, list[str]] = {name: [] for name in chosen}
    for name, pending in waiting.items():
        for need in pending:
            waited_by[need].append(name)
    ready = [name for name, pending in waiting.items() if not pending]
    heapq.heapify(ready)
    ordered: list[str] = []
    while ready:
        name = heapq.heappop(ready)
        ordered.append(name)
        for other in waited_by[name]:  # (linear: 2,000 images took 0.4 s scanning all)
            pending = waiting[other]
            pending.discard(name)
            if not pending:
                heapq.heappush(ready, other)
    return ordered


def _check_acyclic(nodes: Mapping[str, Node]) -> None:
    """Depth-first search; the first cycle found (stable: by name) is the error."""
    state: dict[str, Literal["open", "done"]] = {}
    path: list[str] = []

    def visit(name: str) -> None:
        state[name] = "open"
        path.append(name)
        for need in sorted(nodes[name].needs):
            if state.get(need) == "open":
                cycle = [*path[path.index(need) :], need]
                raise SpecError(_cycle_message(nodes, cycle), nodes[need].spec.location)
            if need not in state:
                visit(need)
        path.pop()
        state[name] = "done"

    for name in sorted(nodes):
        if name not in state:
            visit(name)


def _cycle_message(nodes: Mapping[str, Node], cycle: list[str]) -> str:
    lines = [f"dependency cycle: {' → '.join(cycle)}"]
    for name, need in pairwise(cycle):
        how = "parent" if nodes[name].parent == need else "COPY --from or a build stage"
        lines.append(f"  {name} ({nodes[name].spec.location}) needs {need} ({how})")
    return "\n".join(lines)


# ---- drawing ----


def render_graph(graph: FamilyGraph, *, graph_format: str = "dot") -> str:
    """The family as Graphviz dot or Mermaid text: family images as boxes, images
    from outside the family as distinct nodes; arrows point from what is needed to
    what needs it (solid: parent, dashed: other uses)."""
    if graph_format == "dot":
        return _render_dot(graph)
    if graph_format == "mermaid":
        return _render_mermaid(graph)
    if graph_format == "json":
        return json.dumps(_graph_record(graph), indent=2)
    raise UsageError(
        f"--format must be one of {', '.join(GRAPH_FORMATS)} or html, not {graph_format!r}"
    )


def _graph_record(graph: FamilyGraph) -> dict[str, object]:
    """The family as data: each image (parent, every need, external bases, references),
    the external images and every edge (`parent`: the edge FROM builds on)."""
    project = graph.project
    return {
        "project": project.name,
        "images": [
            {
                "name": name,
                "parent": node.parent,
                "needs": list(node.needs),
                "external": list(node.external),
                "refs": list(project.refs(node.spec)),
            }
            for name, node in graph.nodes.items()
        ],
        "external": sorted(graph.external_images()),
        "edges": [
            {"from": needed, "to": needing, "parent": primary}
            for needed, needing, primary in _edges(graph)
        ],
    }


def _edges(graph: FamilyGraph) -> list[tuple[str, str, bool]]:
    """(needed, needing, is the parent/base edge), family and external alike."""
    edges: list[tuple[str, str, bool]] = []
    for name, node in graph.nodes.items():
        edges.extend((need, name, need == node.parent) for need in node.needs)
        edges.extend((ref, name, ref == node.base) for ref in node.external)
    return edges


def _render_dot(graph: FamilyGraph) -> str:
    lines = [f"digraph {_quoted(graph.project.name)} {{", "  rankdir=LR;"]
    lines += [f"  {_quoted(name)} [shape=box];" for name in graph.nodes]
    lines += [f"  {_quoted(ref)} [shape=ellipse, style=dashed];" for ref in graph.external_images()]
    for needed, needing, primary in _edges(graph):
        style = "" if primary else " [style=dashed]"
        lines.append(f"  {_quoted(needed)} -> {_quoted(needing)}{style};")
    lines.append("}")
    return "\n".join(lines)


def _render_mermaid(graph: FamilyGraph) -> str:
    ids = {name: f"img{index}" for index, name in enumerate(graph.nodes)}
    ids |= {ref: f"ext{index}" for index, ref in enumerate(graph.external_images())}
    lines = ["graph LR"]
    lines += [f'  {ids[name]}["{name}"]' for name in graph.nodes]
    lines += [f'  {ids[ref]}(["{ref}"])' for ref in graph.external_images()]
    for needed, needing, primary in _edges(graph):
        lines.append(f"  {ids[needed]} {'-->' if primary else '-.->'} {ids[needing]}")
    return "\n".join(lines)


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
