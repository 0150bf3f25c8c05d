"""The command line: one thin function per command. Parse, call one function, print.

Logic lives in the pipeline packages; a command here only wires options to it.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from lowbuild import __version__
from lowbuild.errors import LowbuildError
from lowbuild.redact import redact

app = typer.Typer(
    name="lowbuild",
    help=(
        "Build whole families of container images from verified inputs, on podman, "
        "docker, docker buildx or buildah, without a daemon SDK."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True, soft_wrap=True)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"lowbuild {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """lowbuild: declarative image families, verified inputs, any engine."""


# ---- commands are registered below, one thin function each ----


@app.command("graph")
def graph_command(
    file: str | None = typer.Option(
        None, "-f", "--file", help="Project file (default: ./lowbuild.yaml)."
    ),
    graph_format: str = typer.Option("dot", "--format", help="Output format: dot or mermaid."),
) -> None:
    """Print the family: images, what each builds on, and the images from outside it."""
    from pathlib import Path

    from lowbuild.plan.graph import build_graph, render_graph
    from lowbuild.spec.load import load_project

    project = load_project(Path(file) if file else None)
    typer.echo(render_graph(build_graph(project), graph_format=graph_format))


@app.command("doctor")
def doctor_command(
    engine: str | None = typer.Option(
        None, "--engine", help="Check only this engine: podman, docker, buildx or buildah."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the reports as JSON."),
) -> None:
    """Check each engine with a trivial build and run; say why one fails and how to fix it.
    Exits 3 when no engine (or not the asked one) works."""
    import json

    from lowbuild.doctor import examine_engines, require_working
    from lowbuild.engines.detect import known_name
    from lowbuild.run.report import doctor_table

    names = [known_name(engine)] if engine else None
    reports = examine_engines(names) if names else examine_engines()
    if as_json:
        typer.echo(json.dumps([r.to_json() for r in reports], indent=2))
    else:
        Console().print(doctor_table(reports))
    require_working(reports, asked=engine)


_CACHE_HELP = "Cache directory (default: $LOWBUILD_CACHE, else the user cache dir)."


@app.command("fetch")
def fetch_command(
    images: Annotated[
        list[str] | None, typer.Argument(help="Images whose artifacts to fetch (default: all).")
    ] = None,
    file: str | None = typer.Option(None, "-f", "--file", help="Project file (default: ./lowbuild.yaml)."),
    cache_dir: str | None = typer.Option(None, "--cache", help=_CACHE_HELP),
    offline: bool = typer.Option(
        False, "--offline", help="Open no network connection; only the cache and file:// URLs."
    ),
    jobs: int = typer.Option(4, "--jobs", "-j", min=1, help="Parallel downloads."),
    print_digests: bool = typer.Option(
        False,
        "--print-digests",
        help="Download every URL and print `sha256  file  url` to pin; nothing enters the cache.",
    ),
) -> None:
    """Download, verify and cache the declared artifacts. Exit 2 when --offline and some are missing."""
    from lowbuild.run.workflow import run_fetch

    code = run_fetch(
        project_file=Path(file) if file else None,
        names=tuple(images or ()),
        cache_dir=Path(cache_dir) if cache_dir else None,
        offline=offline,
        jobs=jobs,
        print_digests=print_digests,
        out=Console(soft_wrap=True),
        err=err,
    )
    raise typer.Exit(code)


cache_app = typer.Typer(help="Inspect and fill the content-addressed cache.", no_args_is_help=True)
app.add_typer(cache_app, name="cache")


@cache_app.command("ls")
def cache_ls_command(
    file: str | None = typer.Option(None, "-f", "--file", help="Project file, to name entries."),
    cache_dir: str | None = typer.Option(None, "--cache", help=_CACHE_HELP),
) -> None:
    """List entries: sha256, size in bytes, and the artifact names the project gives them."""
    from lowbuild.run.workflow import run_cache_ls

    raise typer.Exit(
        run_cache_ls(
            project_file=Path(file) if file else None,
            cache_dir=Path(cache_dir) if cache_dir else None,
            out=Console(soft_wrap=True),
        )
    )


@cache_app.command("verify")
def cache_verify_command(
    cache_dir: str | None = typer.Option(None, "--cache", help=_CACHE_HELP),
) -> None:
    """Rehash every entry; move bad ones to quarantine/. Exit 4 if any was bad."""
    from lowbuild.run.workflow import run_cache_verify

    raise typer.Exit(
        run_cache_verify(
            cache_dir=Path(cache_dir) if cache_dir else None, out=Console(soft_wrap=True)
        )
    )


@cache_app.command("add")
def cache_add_command(
    files: Annotated[
        list[str], typer.Argument(help="Files to admit (each must match a declared digest).")
    ],
    file: str | None = typer.Option(None, "-f", "--file", help="Project file (default: ./lowbuild.yaml)."),
    cache_dir: str | None = typer.Option(None, "--cache", help=_CACHE_HELP),
) -> None:
    """Admit files brought by other means, only when the project declares their digest."""
    from lowbuild.run.workflow import run_cache_add

    raise typer.Exit(
        run_cache_add(
            project_file=Path(file) if file else None,
            files=[Path(f) for f in files],
            cache_dir=Path(cache_dir) if cache_dir else None,
            out=Console(soft_wrap=True),
        )
    )


_FILE_HELP = "Project file (default: ./lowbuild.yaml)."
_NO_WAIT_HELP = "When another lowbuild run holds the project, exit 1 at once instead of waiting."
_ENGINE_HELP = "podman, docker, buildx or buildah (default: $LOWBUILD_ENGINE, lowbuild.yaml, first that works)."


@app.command("plan")
def plan_command(
    images: Annotated[list[str] | None, typer.Argument(help="Images to plan (default: all).")] = None,
    file: str | None = typer.Option(None, "-f", "--file", help=_FILE_HELP),
    engine: str | None = typer.Option(None, "--engine", "-e", help=_ENGINE_HELP),
    no_deps: bool = typer.Option(False, "--no-deps", help="Only the named images, not their ancestors."),
    as_json: bool = typer.Option(False, "--json", help="Print the plan as JSON."),
) -> None:
    """Show what `build` would build and why (new, which input changed, which parent was rebuilt)."""
    from lowbuild.run.workflow import Selection, run_plan

    selection = Selection(
        project_file=Path(file) if file else None,
        names=tuple(images or ()),
        with_deps=not no_deps,
        engine=engine,
    )
    raise typer.Exit(run_plan(selection, console=Console(soft_wrap=as_json), as_json=as_json))


@app.command("build")
def build_command(
    images: Annotated[
        list[str] | None,
        typer.Argument(help="Images to build, plus their out-of-date ancestors (default: all)."),
    ] = None,
    file: str | None = typer.Option(None, "-f", "--file", help=_FILE_HELP),
    engine: str | None = typer.Option(None, "--engine", "-e", help=_ENGINE_HELP),
    jobs: int | None = typer.Option(None, "--jobs", "-j", min=1, help="Images built (and smoke tests run) at once (default: CPU count, at least 2; tests: twice that, at least 4)."),
    no_deps: bool = typer.Option(False, "--no-deps", help="Only the named images; ancestors must exist."),
    fail_fast: bool = typer.Option(False, "--fail-fast", help="Start nothing new after the first failure."),
    test: bool = typer.Option(False, "--test", help="Run each image's smoke test after the build."),
    offline: bool = typer.Option(False, "--offline", help="Open no network connection; missing inputs are an error up front."),
    cache_dir: str | None = typer.Option(None, "--cache", help=_CACHE_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
    no_wait: bool = typer.Option(False, "--no-wait", help=_NO_WAIT_HELP),
) -> None:
    """Build the family in dependency order, in parallel, skipping what has not changed.

    Exit 0 when everything is built or up to date (and tests pass), 1 when something
    failed or was blocked (or, with --no-wait, another run holds the project), 2 for bad
    input, 3 when no engine works, 130 when interrupted (Ctrl-C, SIGTERM).
    """
    from lowbuild.run.workflow import (
        BuildOptions,
        Selection,
        default_jobs,
        default_test_jobs,
        run_build,
    )

    selection = Selection(
        project_file=Path(file) if file else None,
        names=tuple(images or ()),
        with_deps=not no_deps,
        engine=engine,
    )
    options = BuildOptions(
        jobs=jobs or default_jobs(),
        fail_fast=fail_fast,
        test=test,
        test_jobs=jobs or default_test_jobs(),
        offline=offline,
        cache_dir=Path(cache_dir) if cache_dir else None,
        as_json=as_json,
        wait=not no_wait,
    )
    raise typer.Exit(run_build(selection, options, console=Console(soft_wrap=as_json), err=err))


@app.command("test")
def test_command(
    images: Annotated[list[str] | None, typer.Argument(help="Images to test (default: all).")] = None,
    file: str | None = typer.Option(None, "-f", "--file", help=_FILE_HELP),
    engine: str | None = typer.Option(None, "--engine", "-e", help=_ENGINE_HELP),
    jobs: int | None = typer.Option(None, "--jobs", "-j", min=1, help="Tests run at once (default: twice the CPU count, at least 4)."),
    as_json: bool = typer.Option(False, "--json", help="Print the results as JSON."),
) -> None:
    """Run the smoke tests of already built images (HTTP probe or command). Exit 1 if any fails."""
    from lowbuild.run.workflow import Selection, default_test_jobs, run_tests

    selection = Selection(
        project_file=Path(file) if file else None, names=tuple(images or ()), engine=engine
    )
    code = run_tests(
        selection,
        jobs=jobs or default_test_jobs(),
        console=Console(soft_wrap=as_json),
        err=err,
        as_json=as_json,
    )
    raise typer.Exit(code)


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


bundle_app = typer.Typer(
    help="Carry a family's inputs across an air gap in one verified file.", no_args_is_help=True
)
app.add_typer(bundle_app, name="bundle")


@bundle_app.command("export")
def bundle_export_command(
    out: Annotated[str, typer.Argument(help="The bundle file to write (a plain tar).")],
    images: Annotated[
        list[str] | None,
        typer.Argument(help="Images whose inputs to carry, with their ancestors (default: all)."),
    ] = None,
    with_built: Annotated[
        list[str] | None,
        typer.Option("--with-built", help="Also carry this built family image (repeatable)."),
    ] = None,
    file: str | None = typer.Option(None, "-f", "--file", help=_FILE_HELP),
    engine: str | None = typer.Option(None, "--engine", "-e", help=_ENGINE_HELP),
    cache_dir: str | None = typer.Option(None, "--cache", help=_CACHE_HELP),
    no_wait: bool = typer.Option(False, "--no-wait", help=_NO_WAIT_HELP),
) -> None:
    """Write one file with the artifacts, the base images and (--with-built) built images
    the selection needs, plus a manifest of every member's sha256. Same content, same bytes."""
    import time

    from lowbuild.export.bundle import contents_for, export_bundle
    from lowbuild.run.workflow import Selection, load, project_session
    from lowbuild.sources.cache import Cache, default_cache_root

    started = time.monotonic()
    loaded = load(
        Selection(project_file=Path(file) if file else None, names=tuple(images or ()), engine=engine)
    )
    contents = contents_for(
        loaded.project, loaded.graph, names=images or (), with_built=with_built or ()
    )
    cache = Cache(default_cache_root(Path(cache_dir) if cache_dir else None))
    with project_session(loaded.project, engine=loaded.engine, wait=not no_wait, err=err):
        result = export_bundle(contents, engine=loaded.engine, cache=cache, out=Path(out))
    err.print(
        f"wrote {result.path}: {len(result.manifest.members)} member(s), {result.size} bytes, "
        f"sha256 {result.sha256}, in {time.monotonic() - started:.1f}s",
        highlight=False,
        markup=False,
    )


@bundle_app.command("import")
def bundle_import_command(
    bundle: Annotated[str, typer.Argument(help="A bundle written by `lowbuild bundle export`.")],
    engine: str | None = typer.Option(None, "--engine", "-e", help=_ENGINE_HELP),
    cache_dir: str | None = typer.Option(None, "--cache", help=_CACHE_HELP),
) -> None:
    """Verify every member against the manifest, then admit the artifacts to the cache and
    load the images. Exit 4, with nothing imported, if any member does not match."""
    from lowbuild.engines.detect import select_engine
    from lowbuild.export.bundle import import_bundle
    from lowbuild.sources.cache import Cache, default_cache_root

    cache = Cache(default_cache_root(Path(cache_dir) if cache_dir else None))
    result = import_bundle(Path(bundle), engine=select_engine(engine), cache=cache)
    for sha in result.artifacts:
        typer.echo(f"artifact sha256:{sha} in {cache.root}")
    for ref, image_id in result.images:
        typer.echo(f"image {ref} {image_id}")


@bundle_app.command("ls")
def bundle_ls_command(
    bundle: Annotated[str, typer.Argument(help="A bundle file.")],
    as_json: bool = typer.Option(False, "--json", help="Print the members as JSON."),
) -> None:
    """List the members (kind, name, size, sha256) as the manifest records them."""
    import json

    from lowbuild.export.bundle import list_bundle

    members = list_bundle(Path(bundle))
    if as_json:
        typer.echo(json.dumps([m.to_json() for m in members], indent=2))
        return
    for m in members:
        typer.echo(f"{m.kind:<9} {m.size:>12}  sha256:{m.sha256}  {m.name}")


export_app = typer.Typer(help="Write the family in other tools' formats.", no_args_is_help=True)
app.add_typer(export_app, name="export")


@export_app.command("bake")
def export_bake_command(
    images: Annotated[
        list[str] | None,
        typer.Argument(help="Images to export, with their ancestors (default: all)."),
    ] = None,
    out: str = typer.Option("docker-bake.json", "-o", "--out", help="The bake file to write."),
    file: str | None = typer.Option(None, "-f", "--file", help=_FILE_HELP),
    stage: str | None = typer.Option(
        None, "--stage", help="Where to stage the contexts (default: .lowbuild/bake-stage beside lowbuild.yaml)."
    ),
    offline: bool = typer.Option(False, "--offline", help="Open no network connection; only the cache."),
    cache_dir: str | None = typer.Option(None, "--cache", help=_CACHE_HELP),
    no_wait: bool = typer.Option(False, "--no-wait", help=_NO_WAIT_HELP),
) -> None:
    """Stage the contexts and write a `docker buildx bake` file for them. Build in waves
    (`bake wave-0`, `bake wave-1`, ...) so each FROM finds its parent locally."""
    from lowbuild.export.bake import export_bake
    from lowbuild.plan.graph import build_graph
    from lowbuild.run.workflow import STATE_DIR, project_session
    from lowbuild.sources.cache import Cache, default_cache_root
    from lowbuild.sources.progress import reporter_for
    from lowbuild.spec.load import load_project

    project = load_project(Path(file) if file else None)
    cache = Cache(default_cache_root(Path(cache_dir) if cache_dir else None))
    with project_session(project, engine=None, wait=not no_wait, err=err), reporter_for(
        err
    ) as reporter:
        bake = export_bake(
            project,
            build_graph(project),
            names=images or (),
            cache=cache,
            stage_root=Path(stage) if stage else project.root / STATE_DIR / "bake-stage",
            out=Path(out),
            offline=offline,
            reporter=reporter,
        )
    waves = " then ".join(f"wave-{i}" for i in range(len(bake.waves)))
    err.print(f"wrote {out}: {len(bake.targets)} target(s); build with bake {waves}", highlight=False, markup=False)
    if bake.skipped:
        err.print(f"left out (commit recipes, no bake equivalent): {', '.join(bake.skipped)}", highlight=False, markup=False)


@app.command("clean")
def clean_command(
    file: str | None = typer.Option(None, "-f", "--file", help=_FILE_HELP),
    no_wait: bool = typer.Option(False, "--no-wait", help=_NO_WAIT_HELP),
) -> None:
    """Remove what killed lowbuild runs of this project left behind.

    Their containers, the untagged images of their builds, their temp dirs
    and half-staged contexts, found through the records in .lowbuild/runs/.
    build, export bake and bundle export do this first anyway. Never touches
    a live run's containers nor anything another program made."""
    from lowbuild.run.workflow import run_clean

    raise typer.Exit(run_clean(Path(file) if file else None, wait=not no_wait, err=err))


def main() -> None:
    """Console entry point: LowbuildError becomes a message and its exit code, never a traceback.

    typer runs in standalone mode, so usage errors print themselves and exit 2.
    """
    # SIGTERM (a CI runner cancelling the job) stops cleanly, like Ctrl-C.
    signal.signal(signal.SIGTERM, _terminate)
    try:
        app()
    except LowbuildError as exc:
        # Messages redact URLs where they are made; this is the last line of defence.
        err.print(f"[bold red]error:[/] {escape(redact(str(exc)))}", highlight=False)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
