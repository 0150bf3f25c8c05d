"""The family as a `docker buildx bake` file, for users (and benchmarks) that want bake.

Each Dockerfile image becomes a bake target whose context is the context lowbuild
stages (files, verified artifacts, packs), so bake builds exactly what lowbuild
would. Commit recipes have no bake equivalent and are left out (listed in
`BakeFile.skipped`).

Ordering: bake's own way to feed one target into another's FROM is a named context
(`contexts = {"ns/base:latest" = "target:base"}`), which needs a Dockerfile frontend
newer than the one built into older daemons (20.10) and pulled from a registry. So
the file also carries one group per dependency wave (`wave-0`, `wave-1`, ...):
`docker buildx bake wave-0`, then `wave-1`, ... builds every image after its parent
is loaded into the image store, where the child's FROM finds it without a pull.
The `default` group lists every target.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from lowbuild.context.assemble import assemble_context
from lowbuild.errors import UsageError
from lowbuild.plan.graph import FamilyGraph, select
from lowbuild.sources.cache import Cache, write_atomically
from lowbuild.sources.fetch import FetchPolicy, FetchReporter, fetch_artifacts
from lowbuild.spec.model import ImageSpec, Project


@dataclass(frozen=True)
class BakeTarget:
    """One `target` of the bake file."""

    name: str
    context: Path
    dockerfile: Path
    tags: tuple[str, ...]
    args: tuple[tuple[str, str], ...] = ()
    labels: tuple[tuple[str, str], ...] = ()
    network: str | None = None  # None: the engine's default

    def to_json(self) -> dict[str, object]:
        record: dict[str, object] = {
            "context": str(self.context),
            "dockerfile": str(self.dockerfile),
            "tags": list(self.tags),
        }
        if self.args:
            record["args"] = dict(self.args)
        if self.labels:
            record["labels"] = dict(self.labels)
        if self.network is not None:
            record["network"] = self.network
        return record


@dataclass(frozen=True)
class BakeFile:
    """The targets in build order, their dependency waves, and the images left out."""

    targets: tuple[BakeTarget, ...]
    waves: tuple[tuple[str, ...], ...]
    skipped: tuple[str, ...] = ()  # commit recipes: bake cannot express them

    def target(self, name: str) -> BakeTarget:
        for each in self.targets:
            if each.name == name:
                return each
        raise KeyError(name)

    def wave_groups(self) -> tuple[str, ...]:
        """The bake groups to build in turn: `wave-0`, `wave-1`, ..."""
        return tuple(f"wave-{index}" for index in range(len(self.waves)))

    def render(self) -> str:
        """The bake file as JSON (bake reads `.json` files; keys sorted, stable bytes)."""
        groups: dict[str, dict[str, list[str]]] = {
            "default": {"targets": [t.name for t in self.targets]}
        }
        for group, wave in zip(self.wave_groups(), self.waves, strict=True):
            groups[group] = {"targets": list(wave)}
        document = {
            "group": groups,
            "target": {t.name: t.to_json() for t in self.targets},
        }
        return json.dumps(document, indent=2, sort_keys=True) + "\n"

    def summary(self, *, file: Path, stage: Path) -> dict[str, object]:
        """What `export bake --json` prints: the bake file written to `file`, the stage
        dir, the waves to build in turn, each image's target, and the images left out."""
        return {
            "file": str(file),
            "stage": str(stage),
            "waves": [
                {"group": group, "targets": list(wave)}
                for group, wave in zip(self.wave_groups(), self.waves, strict=True)
            ],
            "targets": [
                {
                    "image": t.name,
                    "target": t.name,
                    "context": str(t.context),
                    "dockerfile": str(t.dockerfile),
                    "tags": list(t.tags),
                }
                for t in self.targets
            ],
            "skipped": list(self.skipped),
        }


def _refuse_platforms(project: Project) -> None:
    if project.multi_platform:
        raise UsageError(
            "a family that declares `platforms:` has no bake file yet: each platform's "
            "variant builds from its parent's variant, through a FROM lowbuild points at "
            "it, which bake cannot do; build it with `lowbuild build --engine buildx`"
        )


def bake_file(
    project: Project,
    graph: FamilyGraph,
    *,
    names: Iterable[str] = (),
    context_for: Callable[[ImageSpec], Path],
) -> BakeFile:
    """The bake file for the selected images (all when `names` is empty) and their
    ancestors. `context_for(spec)` gives the directory bake should send as the context
    (the staged one); pure apart from what `context_for` does."""
    _refuse_platforms(project)
    selected = select(graph, names, with_deps=True)
    targets: list[BakeTarget] = []
    skipped: list[str] = []
    for name in selected:
        spec = graph.nodes[name].spec
        if spec.kind != "dockerfile":
            skipped.append(name)
            continue
        context = context_for(spec)
        targets.append(
            BakeTarget(
                name=name,
                context=context,
                # The staged copy, never the source: the staged context is what is built.
                dockerfile=context / spec.dockerfile,
                tags=project.refs(spec),
                args=spec.args,
                labels=spec.labels,
                network=spec.engine_network,
            )
        )
    kept = {t.name for t in targets}
    waves = tuple(
        wave
        for wave in (tuple(n for n in level if n in kept) for level in graph.levels(selected))
        if wave
    )
    return BakeFile(targets=tuple(targets), waves=waves, skipped=tuple(skipped))


def export_bake(
    project: Project,
    graph: FamilyGraph,
    *,
    names: Iterable[str] = (),
    cache: Cache,
    stage_root: Path,
    out: Path,
    offline: bool = False,
    reporter: FetchReporter | None = None,
) -> BakeFile:
    """Fetch (unless cached) and verify the selected images' artifacts, stage each
    Dockerfile image's context under `stage_root/<name>`, and write the bake file to
    `out` (through a temp file and a rename). Returns what was written."""
    _refuse_platforms(project)
    selected = select(graph, names, with_deps=True)
    specs = [graph.nodes[name].spec for name in selected]
    fetch_artifacts(
        [spec for spec in specs if spec.kind == "dockerfile"],
        cache=cache,
        rewrites=project.rewrites,
        offline=offline,
        policy=FetchPolicy(max_download=project.max_download),
        reporter=reporter,
    )

    # Staged with the present as the files' mtime, not the fixed one builds use: bake
    # sends a context directory, and BuildKit's incremental sync takes a file whose size
    # and mtime match its last copy (under the same source name, whatever the path) as
    # unchanged without reading it, so an edit that kept a file's size would not reach
    # the image (lowbuild's own buildx engine sends a tar instead; engines/buildx.py).
    # A stage whose inputs did not change is reused as it is, old mtimes and all.
    now = int(time.time())

    def staged(spec: ImageSpec) -> Path:
        return assemble_context(
            spec, cache=cache, stage_root=stage_root, offline=offline, mtime=now
        ).path

    bake = bake_file(project, graph, names=selected, context_for=staged)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(out, bake.render())
    return bake
