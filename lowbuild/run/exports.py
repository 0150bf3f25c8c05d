"""The commands that write the family in other forms: `bundle export/import/ls` (the air
gap, lowbuild/export/bundle.py) and `export bake` (lowbuild/export/bake.py)."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console

from lowbuild.errors import UsageError
from lowbuild.run.sbom import provenance_path, sbom_digest, sbom_path
from lowbuild.run.workflow import STATE_DIR, Selection, project_session, resolve
from lowbuild.sources.cache import Cache, default_cache_root, write_atomically
from lowbuild.spec.load import nearest_project_file


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
    state_dir = resolved.project.root / STATE_DIR
    documents = {
        key: {"sbom": sbom_path(state_dir, key), "provenance": provenance_path(state_dir, key)}
        for key in contents.built
    }
    contents = dataclasses.replace(contents, documents=documents)
    cache = Cache(default_cache_root(cache_dir))
    with project_session(resolved.project, engine=resolved.engine, wait=wait, err=err):
        result = export_bundle(contents, engine=resolved.engine, cache=cache, out=out)
    for key in result.without_sbom:
        _say(err, f"note: {key}: its SBOM is not on this host (built elsewhere): not carried")
    _say(
        err,
        f"wrote {result.path}: {len(result.manifest.members)} member(s), {result.size} bytes, "
        f"sha256 {result.sha256}, in {time.monotonic() - started:.1f}s",
    )
    return 0


def run_bundle_import(
    bundle: Path,
    *,
    engine: str | None,
    cache_dir: Path | None,
    as_json: bool,
    out: Console,
    project_file: Path | None = None,
) -> int:
    """`lowbuild bundle import`: verify every member, then fill the cache and the engine
    (chosen only when the bundle holds images: artifacts alone need none), and give the
    project (`project_file`, else the nearest lowbuild.yaml, if any) the images' SBOMs."""
    from lowbuild.engines.detect import known_name, select_engine
    from lowbuild.export.bundle import import_bundle

    if engine:
        known_name(engine)  # a typo is bad input even for a bundle without images
    if project_file is None:
        project_file = nearest_project_file()
    if project_file is not None and not project_file.is_file():
        raise UsageError(f"{project_file}: no such project file")
    state_dir = project_file.absolute().parent / STATE_DIR if project_file else None
    cache = Cache(default_cache_root(cache_dir))
    result = import_bundle(
        bundle, engine=lambda: select_engine(engine), cache=cache, documents_dir=state_dir
    )
    if as_json:
        document = {
            "bundle": str(bundle.absolute()),
            "project": result.manifest.project,
            "engine": result.engine,
            "cache": str(cache.root),
            "artifacts": [a.to_json() for a in result.artifacts],
            "images": [i.to_json() for i in result.images],
            "documents": [str(path) for path in result.documents],
        }
        out.file.write(json.dumps(document, indent=2) + "\n")
        return 0
    for artifact in result.artifacts:
        _say(out, f"artifact sha256:{artifact.sha256} in {cache.root}")
    for image in result.images:
        _say(out, f"image {image.ref} {image.id}")
    for path in result.documents:
        _say(out, f"wrote {path}")
    if state_dir is None and any(m.kind == "sbom" for m in result.manifest.members):
        _say(out, "note: no project here (-f FILE): the SBOMs it carries were not kept")
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


def run_sbom(
    selection: Selection, *, provenance: bool, output: Path | None, out: Console, err: Console
) -> int:
    """`lowbuild sbom IMAGE`: the image's SBOM (or provenance statement) as its build
    wrote it, checked against the digest in the image's label when the image is here."""
    from lowbuild.engines.detect import select_engine
    from lowbuild.errors import EngineUnavailable, VerificationError
    from lowbuild.plan.fingerprint import SBOM_LABEL
    from lowbuild.plan.graph import build_graph, select
    from lowbuild.spec.load import load_project

    project = load_project(selection.project_file)
    graph = build_graph(project)
    keys = select(graph, selection.names, with_deps=False, platforms=selection.platforms)
    if len(keys) != 1:
        raise UsageError(
            f"{selection.names[0]} is built for {len(keys)} platforms ({', '.join(keys)}): "
            "name one with --platform, or give its variant (IMAGE@PLATFORM)"
        )
    key = keys[0]
    state_dir = project.root / STATE_DIR
    sbom_file = sbom_path(state_dir, key)
    if not sbom_file.is_file():
        raise UsageError(
            f"{key}: no SBOM at {sbom_file}: one is written when lowbuild builds the image "
            f"(`lowbuild build {key}`); an image pulled from a registry cache, imported "
            "without its project or built with --no-sbom has none here"
        )
    document = sbom_file.read_bytes()
    digest = sbom_digest(document)
    try:
        engine = select_engine(selection.engine or project.engine)
        info = engine.inspect_image(project.ref(key))
    except EngineUnavailable:
        info = None
    if info is None:
        _say(err, f"{key}: no local image to check {sbom_file} against")
    else:
        labelled = info.labels.get(SBOM_LABEL) or ""
        if labelled != digest:
            raise VerificationError(
                f"{key}: {sbom_file} is {digest}, but {project.ref(key)} carries "
                f"{SBOM_LABEL}={labelled or '(none)'}: it is not this image's SBOM; "
                f"rebuild it (lowbuild build {key})"
            )
        _say(err, f"{key}: {sbom_file} is the SBOM {project.ref(key)} names ({digest})")
    shown = sbom_file
    if provenance:
        shown = provenance_path(state_dir, key)
        if not shown.is_file():
            raise UsageError(f"{key}: no provenance statement at {shown}")
    data = shown.read_bytes()
    if output is not None:
        write_atomically(output, data.decode("utf-8"))
        _say(err, f"wrote {output}")
    else:
        out.file.write(data.decode("utf-8"))
    return 0


def run_report(
    project_file: Path | None,
    run: str | None,
    *,
    output: Path | None,
    open_it: bool,
    as_json: bool,
    sizes: bool,
    out: Console,
    err: Console,
) -> int:
    """`lowbuild report [RUN]`: the run's one-page HTML report (or its data as JSON)."""
    from lowbuild.engines.detect import engine_by_name
    from lowbuild.errors import LowbuildError
    from lowbuild.run.insight import find_run, image_sizes, report_data
    from lowbuild.spec.load import load_project

    project = load_project(project_file)
    files = find_run(project.root / STATE_DIR / "logs", run)
    measured = None
    if sizes:
        try:
            measured = image_sizes(engine_by_name(files.record["engine"]), files)
        except LowbuildError as exc:  # no engine here now: the report goes without sizes
            _say(err, f"no image sizes: {str(exc).splitlines()[0]}")
    data = report_data(files, measured)
    if as_json:
        out.file.write(json.dumps(data, indent=2) + "\n")
        return 0
    from lowbuild.run.pages import render_report

    target = output if output is not None else files.directory / "report.html"
    write_atomically(target, render_report(data))
    _say(err, f"report of run {files.record['run']}: {target}")
    out.file.write(f"{target}\n")
    if open_it:
        _open_in_browser(target, err)
    return 0


def _open_in_browser(path: Path, err: Console) -> None:
    """Open `path` in the user's browser, where there is one (a CI runner has none)."""
    import webbrowser

    try:
        opened = webbrowser.open(path.resolve().as_uri())
    except webbrowser.Error:
        opened = False
    if not opened:
        _say(err, f"no browser to open it here: open {path} where there is one")
