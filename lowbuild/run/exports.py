"""The commands that write the family in other forms: `bundle export/import/ls` (the air
gap, lowbuild/export/bundle.py) and `export bake` (lowbuild/export/bake.py)."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console

from lowbuild.run.workflow import STATE_DIR, Selection, project_session, resolve
from lowbuild.sources.cache import Cache, default_cache_root


def _say(err: Console, line: str) -> None:
    err.print(line, highlight=False, markup=False, emoji=False)


def run_bundle_export(
    selection: Selection,
    *,
    out: Path,
    with_built: Sequence[str],
    cache_dir: Path | None,
    wait: bool,
    err: Console,
) -> int:
    """`lowbuild bundle export`: one file with what the selection needs to build offline."""
    from lowbuild.export.bundle import contents_for, export_bundle

    started = time.monotonic()
    resolved = resolve(selection)
    contents = contents_for(
        resolved.project, resolved.graph, names=selection.names, with_built=with_built
    )
    cache = Cache(default_cache_root(cache_dir))
    with project_session(resolved.project, engine=resolved.engine, wait=wait, err=err):
        result = export_bundle(contents, engine=resolved.engine, cache=cache, out=out)
    _say(
        err,
        f"wrote {result.path}: {len(result.manifest.members)} member(s), {result.size} bytes, "
        f"sha256 {result.sha256}, in {time.monotonic() - started:.1f}s",
    )
    return 0


def run_bundle_import(
    bundle: Path, *, engine: str | None, cache_dir: Path | None, as_json: bool, out: Console
) -> int:
    """`lowbuild bundle import`: verify every member, then fill the cache and the engine
    (chosen only when the bundle holds images: artifacts alone need none)."""
    from lowbuild.engines.detect import known_name, select_engine
    from lowbuild.export.bundle import import_bundle

    if engine:
        known_name(engine)  # a typo is bad input even for a bundle without images
    cache = Cache(default_cache_root(cache_dir))
    result = import_bundle(bundle, engine=lambda: select_engine(engine), cache=cache)
    if as_json:
        document = {
            "bundle": str(bundle.absolute()),
            "project": result.manifest.project,
            "engine": result.engine,
            "cache": str(cache.root),
            "artifacts": [a.to_json() for a in result.artifacts],
            "images": [i.to_json() for i in result.images],
        }
        out.file.write(json.dumps(document, indent=2) + "\n")
        return 0
    for artifact in result.artifacts:
        _say(out, f"artifact sha256:{artifact.sha256} in {cache.root}")
    for image in result.images:
        _say(out, f"image {image.ref} {image.id}")
    return 0


def run_bundle_ls(bundle: Path, *, as_json: bool, out: Console) -> int:
    """`lowbuild bundle ls`: the members as the bundle's manifest records them."""
    from lowbuild.export.bundle import list_bundle

    members = list_bundle(bundle)
    if as_json:
        out.file.write(json.dumps([m.to_json() for m in members], indent=2) + "\n")
    else:
        for m in members:
            _say(out, f"{m.kind:<9} {m.size:>12}  sha256:{m.sha256}  {m.name}")
    return 0


def run_export_bake(
    project_file: Path | None,
    *,
    names: Sequence[str],
    out: Path,
    stage: Path | None,
    offline: bool,
    cache_dir: Path | None,
    wait: bool,
    err: Console,
    as_json: bool,
    console: Console,
) -> int:
    """`lowbuild export bake`: stage the contexts and write a bake file building them;
    with `as_json`, say what was written on `console` (stdout) as one JSON document."""
    from lowbuild.export.bake import export_bake
    from lowbuild.plan.graph import build_graph
    from lowbuild.sources.progress import reporter_for
    from lowbuild.spec.load import load_project

    project = load_project(project_file)
    cache = Cache(default_cache_root(cache_dir))
    # Absolute: the bake file's contexts then do not depend on where bake runs.
    stage_root = (stage or project.root / STATE_DIR / "bake-stage").absolute()
    with (
        project_session(project, engine=None, wait=wait, err=err),
        reporter_for(err) as reporter,
    ):
        bake = export_bake(
            project,
            build_graph(project),
            names=names,
            cache=cache,
            stage_root=stage_root,
            out=out,
            offline=offline,
            reporter=reporter,
        )
    waves = " then ".join(bake.wave_groups())
    _say(err, f"wrote {out}: {len(bake.targets)} target(s); build with bake {waves}")
    if bake.skipped:
        _say(err, f"left out (commit recipes, no bake equivalent): {', '.join(bake.skipped)}")
    if as_json:
        document = bake.summary(file=out.absolute(), stage=stage_root)
        console.file.write(json.dumps(document, indent=2) + "\n")
    return 0
