"""The command line: one thin function per command. Parse, call one function, print.

Logic lives in the pipeline packages; a command here only wires options to it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from lowbuild import __version__
from lowbuild.entry import (
    BUILD_DEFAULTS,
    PROGRESS_MODES,
    err_console,
    out_console,
    run_build_command,
)
from lowbuild.entry import (
    main as entry_main,
)
from lowbuild.run.output_schemas import OUTPUT_NAMES

app = typer.Typer(
    name="lowbuild",
    help=(
        "Build whole families of container images from verified inputs, on podman, "
        "docker, docker buildx or buildah, without a daemon SDK."
    ),
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion for bash, zsh, fish
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
# The consoles live with the entry point (lowbuild.entry), which prints a failure of
# any command; `build` may run from there without this module.
err = err_console()
_out = out_console


def _version(value: bool) -> None:
    if value:
        typer.echo(f"lowbuild {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False,
        "--version",
        callback=_version,
        is_eager=True,
        help="Print the version and exit.",
        metavar="",
    ),
) -> None:
    """lowbuild: declarative image families, verified inputs, any engine."""


# ---- options several commands share ----

_ENGINE_HELP = (
    "podman, docker, buildx or buildah (default: $LOWBUILD_ENGINE, lowbuild.yaml, "
    "first that works)."
)
ProjectFile = Annotated[
    Path | None,
    typer.Option(
        "-f",
        "--file",
        help="Project file (default: the nearest lowbuild.yaml here or above).",
        show_default=False,
    ),
]
CacheDir = Annotated[
    Path | None,
    typer.Option(
        "--cache",
        help="Cache directory (default: $LOWBUILD_CACHE, else the user cache dir).",
        show_default=False,
    ),
]
EngineName = Annotated[str | None, typer.Option("--engine", "-e", help=_ENGINE_HELP)]
AsJson = Annotated[
    bool,
    typer.Option(
        "--json", envvar="LOWBUILD_JSON", help="Print JSON instead of a table.", metavar=""
    ),
]
NoWait = Annotated[
    bool,
    typer.Option(
        "--no-wait",
        envvar="LOWBUILD_NO_WAIT",
        help="When another lowbuild run holds the project, exit 1 at once instead of waiting.",
        metavar="",
    ),
]
Offline = Annotated[
    bool,
    typer.Option(
        "--offline",
        envvar="LOWBUILD_OFFLINE",
        help="Open no network connection; only the cache and file:// URLs.",
        metavar="",
    ),
]


PushTo = Annotated[
    list[str] | None,
    typer.Option(
        "--to",
        help="A registry named in lowbuild.yaml, or HOST[:PORT]/PATH (repeatable; "
        "default: every registry lowbuild.yaml declares).",
        show_default=False,
    ),
]
NoTlsVerify = Annotated[
    bool,
    typer.Option(
        "--no-tls-verify",
        help="For a registry given as HOST[:PORT]/PATH on this command line: plain http, or "
        "a certificate not verified (a declared registry says so with `tls-verify: false`).",
        metavar="",
    ),
]


CacheFrom = Annotated[
    str | None,
    typer.Option(
        "--cache-from",
        help="Registry cache (a registry named in lowbuild.yaml, or HOST[:PORT]/PATH): an "
        "image it holds under its fingerprint tag is pulled instead of built; plan shows "
        "it as `pull`, asked with one manifest request per image (default: lowbuild.yaml's "
        "`cache:`; none with --offline).",
        show_default=False,
    ),
]


HostsFile = Annotated[
    Path | None,
    typer.Option(
        "--hosts",
        help="A hosts file (lowbuild-hosts.yaml; default: $LOWBUILD_HOSTS unless --endpoint "
        "is given): the engine endpoints to split the family over, each with its jobs, and "
        "the registry parents are handed over through.",
        show_default=False,
    ),
]
PlatformOption = Annotated[
    list[str] | None,
    typer.Option(
        "--platform",
        metavar="OS/ARCH",
        help="Only the variants for this platform (repeatable), of a family that declares "
        "`platforms:`, e.g. linux/arm64.",
        show_default=False,
    ),
]
EndpointOption = Annotated[
    list[str] | None,
    typer.Option(
        "--endpoint",
        metavar="NAME=ENGINE+URL",
        help="NAME=ENGINE+URL[,jobs=N] (repeatable), instead of --hosts: podman+unix:///… "
        "or +ssh://…, docker+tcp://… or +CONTEXT; the handover registry is then the "
        "registry cache (--cache-to, or lowbuild.yaml's `cache:`).",
        show_default=False,
    ),
]


SetOption = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        help="Override for this run, like bake's --set (repeatable): IMAGE.args.NAME=VALUE, "
        "'*.args.NAME=VALUE' for every image, IMAGE.tags=a,b. Changes the inputs (and so the "
        "fingerprint) as an edit of image.yaml would.",
        show_default=False,
    ),
]


def _images(help: str) -> Any:
    return typer.Argument(help=help, show_default=False)


# ---- one thin function per command ----


@app.command("graph")
def graph_command(
    file: ProjectFile = None,
    graph_format: Annotated[
        str,
        typer.Option(
            "--format",
            help="Output format: dot, mermaid, json, or html (a page to open in a browser).",
        ),
    ] = "dot",
    as_json: AsJson = False,
) -> None:
    """Print the family: images, what each builds on, and the images from outside it."""
    from lowbuild.run.workflow import run_graph

    chosen = "json" if as_json else graph_format
    raise typer.Exit(run_graph(file, graph_format=chosen, out=_out(as_json=as_json)))


_SPEC_SCHEMAS = ("project", "image")


@app.command("schema")
def schema_command(
    which: Annotated[
        str,
        typer.Argument(
            help="project (lowbuild.yaml), image (image.yaml), or the command whose --json "
            f"output to describe: {', '.join(OUTPUT_NAMES)} (error: what a failed run "
            "prints with --json).",
        ),
    ] = "project",
) -> None:
    """Print a JSON Schema (draft 2020-12): of lowbuild.yaml or image.yaml, for editors, or
    of what a command prints with --json, for scripts (`lowbuild schema plan`).

    Save a spec's schema and name it on the spec's first line for yaml-language-server
    (VS Code's YAML extension, neovim, helix): `# yaml-language-server: $schema=PATH`."""
    from lowbuild.run.output_schemas import output_schema
    from lowbuild.spec.schema import image_schema, project_schema

    if which in _SPEC_SCHEMAS:
        schema = project_schema() if which == "project" else image_schema()
    elif which in OUTPUT_NAMES:
        schema = output_schema(which)
    else:
        names = ", ".join((*_SPEC_SCHEMAS, *OUTPUT_NAMES))
        raise typer.BadParameter(f"{which!r} is not one of {names}", param_hint="WHICH")
    sys.stdout.write(json.dumps(schema, indent=2) + "\n")


@app.command("doctor")
def doctor_command(
    engine: Annotated[
        str | None,
        typer.Option(
            "--engine", "-e", help="Check only this engine: podman, docker, buildx or buildah."
        ),
    ] = None,
    as_json: AsJson = False,
    file: Annotated[
        Path | None,
        typer.Option(
            "-f",
            "--file",
            help="Project whose base images to look for (default: the nearest lowbuild.yaml "
            "here or above, if any).",
            show_default=False,
        ),
    ] = None,
    hosts: HostsFile = None,
    endpoint: EndpointOption = None,
) -> None:
    """Check each engine with a trivial build and run; say why one fails and how to fix it.

    The probe image is FROM scratch with a tiny static program doctor writes itself: no
    base image, no network needed. Inside a project, each working engine is also asked
    for the family's base images; a missing one is listed with how to bring it in, and
    does not make the engine fail. Exits 3 when no engine (or not the asked one) works.

    With --hosts or --endpoint, each endpoint instead: it answers, builds and runs the
    probe, has the family's bases, and reaches the handover registry; exits 3 unless
    every endpoint works."""
    from lowbuild.run.workflow import run_doctor

    out = _out(as_json=as_json)
    code = run_doctor(
        engine,
        as_json=as_json,
        out=out,
        err=err,
        project_file=file,
        hosts_file=hosts,
        endpoints=tuple(endpoint or ()),
    )
    raise typer.Exit(code)


@app.command("fetch")
def fetch_command(
    images: Annotated[
        list[str] | None, _images("Images whose artifacts to fetch (default: all).")
    ] = None,
    file: ProjectFile = None,
    cache_dir: CacheDir = None,
    offline: Offline = False,
    jobs: Annotated[int, typer.Option("--jobs", "-j", min=1, help="Parallel downloads.")] = 4,
    print_digests: Annotated[
        bool,
        typer.Option(
            "--print-digests",
            help="Download every URL and print `sha256  file  url` to pin; "
            "nothing enters the cache.",
            metavar="",
        ),
    ] = False,
    as_json: AsJson = False,
) -> None:
    """Download, verify and cache the declared artifacts.

    Exit 2 when --offline and some are missing."""
    from lowbuild.run.workflow import run_fetch

    code = run_fetch(
        project_file=file,
        names=tuple(images or ()),
        cache_dir=cache_dir,
        offline=offline,
        jobs=jobs,
        print_digests=print_digests,
        as_json=as_json,
        out=_out(as_json=as_json),
        err=err,
    )
    raise typer.Exit(code)


cache_app = typer.Typer(help="Inspect and fill the content-addressed cache.", no_args_is_help=True)
app.add_typer(cache_app, name="cache")


@cache_app.command("ls")
def cache_ls_command(
    file: ProjectFile = None, cache_dir: CacheDir = None, as_json: AsJson = False
) -> None:
    """List entries: sha256, size in bytes, and the artifact names the project gives them."""
    from lowbuild.run.workflow import run_cache_ls

    out = _out(as_json=as_json)
    raise typer.Exit(run_cache_ls(project_file=file, cache_dir=cache_dir, as_json=as_json, out=out))


@cache_app.command("verify")
def cache_verify_command(cache_dir: CacheDir = None, as_json: AsJson = False) -> None:
    """Rehash every entry; move bad ones to quarantine/. Exit 4 if any was bad."""
    from lowbuild.run.workflow import run_cache_verify

    out = _out(as_json=as_json)
    raise typer.Exit(run_cache_verify(cache_dir=cache_dir, as_json=as_json, out=out))


@cache_app.command("add")
def cache_add_command(
    files: Annotated[list[Path], _images("Files to admit (each must match a declared digest).")],
    file: ProjectFile = None,
    cache_dir: CacheDir = None,
    as_json: AsJson = False,
) -> None:
    """Admit files brought by other means, only when the project declares their digest."""
    from lowbuild.run.workflow import run_cache_add

    code = run_cache_add(
        project_file=file,
        files=files,
        cache_dir=cache_dir,
        as_json=as_json,
        out=_out(as_json=as_json),
    )
    raise typer.Exit(code)


@app.command("plan")
def plan_command(
    images: Annotated[list[str] | None, _images("Images to plan (default: all).")] = None,
    file: ProjectFile = None,
    engine: EngineName = None,
    overrides: SetOption = None,
    no_deps: Annotated[
        bool,
        typer.Option("--no-deps", help="Only the named images, not their ancestors.", metavar=""),
    ] = False,
    as_json: AsJson = False,
    cache_from: CacheFrom = None,
    offline: Annotated[
        bool,
        typer.Option(
            "--offline",
            envvar="LOWBUILD_OFFLINE",
            help="Ask no registry cache (open no connection).",
            metavar="",
        ),
    ] = False,
    no_tls_verify: NoTlsVerify = False,
    hosts: HostsFile = None,
    endpoint: EndpointOption = None,
    platform: PlatformOption = None,
) -> None:
    """Show what `build` would build and why (new, which input changed, which parent was
    rebuilt). With endpoints: an image is up to date when one endpoint holds it up to
    date, and the `endpoint` column says where each is held or meant to be built."""
    from lowbuild.run.workflow import RegistryCache, Selection, run_plan

    selection = Selection(
        project_file=file,
        names=tuple(images or ()),
        with_deps=not no_deps,
        engine=engine,
        overrides=tuple(overrides or ()),
        hosts_file=hosts,
        endpoints=tuple(endpoint or ()),
        over_hosts=True,
        platforms=tuple(platform or ()),
    )
    code = run_plan(
        selection,
        console=_out(as_json=as_json),
        as_json=as_json,
        err=err,
        cache=RegistryCache(pull_from=cache_from, tls_verify=not no_tls_verify),
        offline=offline,
    )
    raise typer.Exit(code)


@app.command("build")
def build_command(
    images: Annotated[
        list[str] | None,
        _images("Images to build, plus their out-of-date ancestors (default: all)."),
    ] = None,
    file: ProjectFile = None,
    engine: EngineName = None,
    overrides: SetOption = None,
    jobs: Annotated[
        int | None,
        typer.Option(
            "--jobs",
            "-j",
            envvar="LOWBUILD_JOBS",
            min=1,
            help="Images built (and smoke tests run) at once "
            "(default: CPU count, at least 2; tests: twice that, at least 4).",
        ),
    ] = None,
    no_deps: Annotated[
        bool,
        typer.Option("--no-deps", help="Only the named images; ancestors must exist.", metavar=""),
    ] = False,
    fail_fast: Annotated[
        bool,
        typer.Option("--fail-fast", help="Start nothing new after the first failure.", metavar=""),
    ] = False,
    test: Annotated[
        bool,
        typer.Option(
            "--test", help="Run each image's smoke test as soon as the image is ready.", metavar=""
        ),
    ] = False,
    offline: Annotated[
        bool,
        typer.Option(
            "--offline",
            envvar="LOWBUILD_OFFLINE",
            help="Open no network connection; missing inputs are an error up front.",
            metavar="",
        ),
    ] = False,
    cache_dir: CacheDir = None,
    as_json: AsJson = False,
    no_wait: NoWait = False,
    push: Annotated[
        bool,
        typer.Option(
            "--push",
            help="Then push what was built or is up to date (with --test: only what passed, "
            "and whose ancestors did) to the registries, parents first.",
            metavar="",
        ),
    ] = False,
    to: PushTo = None,
    cache_from: CacheFrom = None,
    cache_to: Annotated[
        str | None,
        typer.Option(
            "--cache-to",
            help="Registry cache to push each built image to under its fingerprint tag "
            "(default: lowbuild.yaml's `cache:`; none with --offline).",
            show_default=False,
        ),
    ] = None,
    no_tls_verify: NoTlsVerify = False,
    progress: Annotated[
        str,
        typer.Option(
            "--progress",
            envvar="LOWBUILD_PROGRESS",
            help="auto (a live table on a terminal, else a line per image start and end), "
            "tty (the live table), plain (lines, plus every log line of every image as it "
            "comes, prefixed [image]: for CI logs) or quiet (only the summary).",
        ),
    ] = "auto",
    hosts: HostsFile = None,
    endpoint: EndpointOption = None,
    platform: PlatformOption = None,
    no_sbom: Annotated[
        bool,
        typer.Option(
            "--no-sbom",
            envvar="LOWBUILD_NO_SBOM",
            help="Write no SBOM or provenance for the images built, and label none "
            "(saves a container run and a label step per image).",
            metavar="",
        ),
    ] = False,
) -> None:
    """Build the family in dependency order, in parallel, skipping what has not changed.

    Each image built gets a CycloneDX SBOM (.lowbuild/sbom/) whose digest it carries in
    its `lowbuild.sbom` label, and an in-toto provenance statement (.lowbuild/provenance/);
    `lowbuild sbom IMAGE` shows them.

    With --hosts or --endpoint, the family is split over those engines: each image is
    built on one endpoint (the one holding its parent when it has a free job), its
    parents handed over through a registry by digest, checked by image ID.

    Exit 0 when everything is built or up to date (and tests pass), 1 when something
    failed or was blocked (or, with --no-wait, another run holds the project), 2 for bad
    input, 3 when no engine works, 130 when interrupted (Ctrl-C, SIGTERM).
    """
    if to and not push:
        raise typer.BadParameter("--to goes with --push", param_hint="--to")
    if progress not in PROGRESS_MODES:
        raise typer.BadParameter(
            f"{progress!r} is not one of {', '.join(PROGRESS_MODES)}", param_hint="--progress"
        )
    raise typer.Exit(run_build_command(**_build_params(locals())))


@app.command("push")
def push_command(
    images: Annotated[
        list[str] | None, _images("Images to push, with their ancestors (default: all).")
    ] = None,
    to: PushTo = None,
    no_tls_verify: NoTlsVerify = False,
    file: ProjectFile = None,
    engine: EngineName = None,
    overrides: SetOption = None,
    no_deps: Annotated[
        bool,
        typer.Option("--no-deps", help="Only the named images, not their ancestors.", metavar=""),
    ] = False,
    as_json: AsJson = False,
    no_wait: NoWait = False,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Push every tag even when the registry already serves this very image "
            "at the digest .lowbuild/published.json recorded (skipped by default).",
            metavar="",
        ),
    ] = False,
    sign: Annotated[
        bool,
        typer.Option(
            "--sign",
            help="Sign each pushed manifest by digest (GPG simple signing, the key of "
            "--sign-by); signatures go where registries.d says (README: Signing).",
            metavar="",
        ),
    ] = False,
    sign_by: Annotated[
        str | None,
        typer.Option(
            "--sign-by",
            envvar="LOWBUILD_SIGN_BY",
            metavar="FINGERPRINT",
            help="The GPG key to sign with: a secret key of the keyring ($GNUPGHOME).",
            show_default=False,
        ),
    ] = None,
    sign_passphrase_file: Annotated[
        Path | None,
        typer.Option(
            "--sign-passphrase-file",
            envvar="LOWBUILD_SIGN_PASSPHRASE_FILE",
            help="A file holding the key's passphrase (read by the engine, never printed).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Push built images, every tag, to registries, parents first; print each by digest.

    With --sign, each pushed manifest is signed by digest: podman and buildah with their
    own --sign-by, docker and buildx (no signing of their own) and manifest lists with
    skopeo, in the registry. Everything is pushed again then, to be signed.

    Credentials are the engine's own (podman login, REGISTRY_AUTH_FILE, docker login).
    The pushed digests and fingerprints go to .lowbuild/published.json; an image the
    registry still serves under every tag at the recorded digest is not pushed again
    (one manifest request per tag). Exit 1 when an image was not pushed (each says why;
    the next run pushes it again)."""
    from lowbuild.engines.base import Signer
    from lowbuild.run.workflow import PushTargets, Selection, run_push

    selection = Selection(
        project_file=file,
        names=tuple(images or ()),
        with_deps=not no_deps,
        engine=engine,
        overrides=tuple(overrides or ()),
    )
    signer = None  # --sign-by alone (LOWBUILD_SIGN_BY in the environment) signs nothing
    if sign:
        if not sign_by:
            raise typer.BadParameter(
                "--sign needs the key: --sign-by FINGERPRINT or LOWBUILD_SIGN_BY",
                param_hint="--sign",
            )
        signer = Signer(key=sign_by, passphrase_file=sign_passphrase_file)
    targets = PushTargets(
        to=tuple(to or ()), tls_verify=not no_tls_verify, force=force, sign=signer
    )
    code = run_push(
        selection,
        targets,
        as_json=as_json,
        wait=not no_wait,
        console=_out(as_json=as_json),
        err=err,
    )
    raise typer.Exit(code)


@app.command("test")
def test_command(
    images: Annotated[list[str] | None, _images("Images to test (default: all).")] = None,
    file: ProjectFile = None,
    engine: EngineName = None,
    overrides: SetOption = None,
    jobs: Annotated[
        int | None,
        typer.Option(
            "--jobs",
            "-j",
            envvar="LOWBUILD_JOBS",
            min=1,
            help="Tests run at once (default: twice the CPU count, at least 4).",
        ),
    ] = None,
    as_json: AsJson = False,
) -> None:
    """Run the smoke tests of already built images (HTTP probe or command). Exit 1 if any fails."""
    from lowbuild.run.workflow import Selection, default_test_jobs, run_tests

    selection = Selection(
        project_file=file,
        names=tuple(images or ()),
        engine=engine,
        overrides=tuple(overrides or ()),
    )
    code = run_tests(
        selection,
        jobs=jobs or default_test_jobs(),
        console=_out(as_json=as_json),
        err=err,
        as_json=as_json,
    )
    raise typer.Exit(code)


@app.command("init")
def init_command(
    directory: Annotated[
        Path, typer.Argument(help="The tree of image directories (default: here).")
    ] = Path(),
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run", "-n", help="Print the files it would write; write none.", metavar=""
        ),
    ] = False,
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="Replace a lowbuild.yaml or image.yaml that differs.", metavar=""
        ),
    ] = False,
    tests: Annotated[
        bool,
        typer.Option(
            "--tests",
            help="Write the smoke test suggested from EXPOSE (an HTTP probe of the first "
            "port) instead of a comment.",
            metavar="",
        ),
    ] = False,
    engine: Annotated[
        str | None,
        typer.Option("--engine", "-e", help="The engine asked for the external bases' IDs to pin."),
    ] = None,
    no_pins: Annotated[
        bool,
        typer.Option(
            "--no-pins", help="Ask no engine; write the external bases unpinned.", metavar=""
        ),
    ] = False,
    cache_dir: CacheDir = None,
    as_json: AsJson = False,
) -> None:
    """Turn a tree of Dockerfiles and build scripts into a family: write lowbuild.yaml and
    an image.yaml beside each Dockerfile, changing no existing file.

    Names and tags come from the build scripts (docker/podman build -t, buildah bud -t),
    else the directory; a FROM that another directory builds becomes parent:, one nothing
    builds an external base (pinned when the engine has it). Tarballs a Dockerfile ADDs
    are pinned by sha256 and admitted to the cache. Findings (MAINTAINER, tail -f, ADD of
    a URL, unpinned packages, what scripts do besides building) are listed. A second run
    changes nothing; bad input is exit 2 with nothing written."""
    from lowbuild.run.adopt import init_family, print_init

    result = init_family(
        directory,
        dry_run=dry_run,
        force=force,
        tests=tests,
        engine_name=engine,
        pins=not no_pins,
        cache_dir=cache_dir,
    )
    print_init(result, out=_out(as_json=as_json), as_json=as_json)


@app.command("images")
def images_command(
    images: Annotated[list[str] | None, _images("Images to show (default: all).")] = None,
    file: ProjectFile = None,
    engine: EngineName = None,
    as_json: AsJson = False,
) -> None:
    """List the family's images as the engine stores them: tags, ID, size, what each adds
    over its parent, and what changed since its previous build (size, and which inputs,
    read from the labels of the earlier build still in the store)."""
    from lowbuild.run.workflow import Selection, run_images

    selection = Selection(project_file=file, names=tuple(images or ()), engine=engine)
    raise typer.Exit(run_images(selection, as_json=as_json, out=_out(as_json=as_json)))


@app.command("bump")
def bump_command(
    image: Annotated[
        str, typer.Argument(help="The image whose artifact moves.", show_default=False)
    ],
    version: Annotated[
        str | None,
        typer.Option(
            "--version",
            help="The new version of the image's one artifact with a version in its file name.",
            show_default=False,
        ),
    ] = None,
    sets: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            metavar="NAME=VERSION",
            help="The new version of the artifact NAME (its file name, or the name before "
            "the version), repeatable.",
            show_default=False,
        ),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run", "-n", help="Show the diff; change and download nothing.", metavar=""
        ),
    ] = False,
    file: ProjectFile = None,
    engine: EngineName = None,
    cache_dir: CacheDir = None,
) -> None:
    """Move a pinned artifact to a new version: its file name, URLs, sha256-url, the build
    args and tags that carry the version, and its sha256, together.

    The new file is downloaded and verified into the cache first: against the sha256
    upstream publishes when the artifact has `sha256-url:`, else its sha256 is computed
    from the download (and said). image.yaml is then edited in place, comments and
    formatting kept, and the plan shows what will be rebuilt.

    Exit 0; 2 for bad input; 1 when the download fails; 4 when the download is not what
    upstream's sha256 says (image.yaml is then left as it was).
    """
    from lowbuild.run.bump import run_bump

    code = run_bump(
        file,
        image,
        version=version,
        sets=tuple(sets or ()),
        dry_run=dry_run,
        cache_dir=cache_dir,
        engine=engine,
        out=_out(),
        err=err,
    )
    raise typer.Exit(code)


@app.command("outdated")
def outdated_command(
    images: Annotated[list[str] | None, _images("Images to check (default: all).")] = None,
    file: ProjectFile = None,
    offline: Annotated[
        bool,
        typer.Option(
            "--offline",
            envvar="LOWBUILD_OFFLINE",
            help="Open no network connection (nothing can be checked then).",
            metavar="",
        ),
    ] = False,
    pre_releases: Annotated[
        bool,
        typer.Option("--pre-releases", help="Also list pre-releases (rc, beta...).", metavar=""),
    ] = False,
    as_json: AsJson = False,
) -> None:
    """List the newer versions upstream offers of each pinned artifact that says where
    upstream lists its releases (`releases: {index: URL, pattern: REGEX}`).

    Exit 0 when every such artifact was checked (up to date or not), 1 when some could
    not be (offline, unreachable), 2 for bad input.
    """
    from lowbuild.run.bump import run_outdated

    code = run_outdated(
        file,
        tuple(images or ()),
        offline=offline,
        pre_releases=pre_releases,
        as_json=as_json,
        out=_out(as_json=as_json),
        err=err,
    )
    raise typer.Exit(code)


@app.command("sbom")
def sbom_command(
    image: Annotated[
        str,
        typer.Argument(help="A family image (or its variant, IMAGE@OS-ARCH).", show_default=False),
    ],
    file: ProjectFile = None,
    engine: EngineName = None,
    platform: PlatformOption = None,
    provenance: Annotated[
        bool,
        typer.Option(
            "--provenance",
            help="The build's provenance (an in-toto statement, SLSA provenance v1) instead.",
            metavar="",
        ),
    ] = False,
    output: Annotated[
        Path | None,
        typer.Option(
            "-o",
            "--output",
            help="Write it to this file (default: standard output).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Print the image's SBOM (CycloneDX 1.6 JSON) as its last build wrote it.

    The SBOM lists every artifact (URL, sha256, package URL), every pack (digest), the
    parent and base images (by ID, and by registry digest once published) and the OS
    packages installed in the image (dpkg, rpm or apk). When the image is here, the file
    is checked against the digest in its `lowbuild.sbom` label first.

    Exit 0, 2 when the image has no SBOM here, 4 when the file is not the one the image
    names.
    """
    from lowbuild.run.exports import run_sbom
    from lowbuild.run.workflow import Selection

    selection = Selection(
        project_file=file, names=(image,), engine=engine, platforms=tuple(platform or ())
    )
    raise typer.Exit(
        run_sbom(selection, provenance=provenance, output=output, out=_out(as_json=True), err=err)
    )


@app.command("report")
def report_command(
    run: Annotated[
        str | None,
        typer.Argument(
            help="A run: its directory name under .lowbuild/logs/ (default: the latest).",
            show_default=False,
        ),
    ] = None,
    file: ProjectFile = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "-o",
            "--output",
            help="Write the page here (default: report.html in the run's log directory).",
            show_default=False,
        ),
    ] = None,
    open_it: Annotated[
        bool,
        typer.Option("--open", help="Open the page in a browser, where there is one.", metavar=""),
    ] = False,
    sizes: Annotated[
        bool,
        typer.Option(
            "--sizes/--no-sizes",
            help="Ask the run's engine for each image's size (one inspect).",
        ),
    ] = True,
    as_json: AsJson = False,
) -> None:
    """Write a run's report: one self-contained HTML page to open from disk.

    It shows the family graph coloured by each image's state, a timeline of the run with
    its critical path, each image's time, size and size added over its parent, and the
    smoke tests with their details. Every build, test and push run also leaves a trace
    (trace.json, Chrome trace-event format) beside its logs: open it in Perfetto or
    chrome://tracing.

    Prints the page's path; with --json, the report's data instead.
    """
    from lowbuild.run.exports import run_report

    raise typer.Exit(
        run_report(
            file,
            run,
            output=output,
            open_it=open_it,
            as_json=as_json,
            sizes=sizes,
            out=_out(as_json=as_json),
            err=err,
        )
    )


@app.command("prune")
def prune_command(
    file: ProjectFile = None,
    engine: EngineName = None,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", "-n", help="Only list what would be removed.", metavar=""),
    ] = False,
    as_json: AsJson = False,
    no_wait: NoWait = False,
) -> None:
    """Remove the images this family built earlier that no image of it is now.

    Only images lowbuild labelled with this project's name and a ref in its namespace;
    never a current one, never one somebody tagged outside the family, never another
    project's or a person's. Nothing is forced: an image a container uses, or that a kept
    image builds on, stays and is listed with the engine's reason (exit 1). Says the space
    freed, as the engine's image storage total went down."""
    from lowbuild.run.workflow import Selection, run_prune

    code = run_prune(
        Selection(project_file=file, engine=engine),
        dry_run=dry_run,
        as_json=as_json,
        wait=not no_wait,
        out=_out(as_json=as_json),
        err=err,
    )
    raise typer.Exit(code)


bundle_app = typer.Typer(
    help="Carry a family's inputs across an air gap in one verified file.", no_args_is_help=True
)
app.add_typer(bundle_app, name="bundle")


@bundle_app.command("export")
def bundle_export_command(
    out: Annotated[Path, typer.Argument(help="The bundle file to write (a plain tar).")],
    images: Annotated[
        list[str] | None,
        _images("Images whose inputs to carry, with their ancestors (default: all)."),
    ] = None,
    with_built: Annotated[
        list[str] | None,
        typer.Option("--with-built", help="Also carry this built family image (repeatable)."),
    ] = None,
    file: ProjectFile = None,
    engine: EngineName = None,
    cache_dir: CacheDir = None,
    no_wait: NoWait = False,
) -> None:
    """Write one file with the artifacts, the base images and (--with-built) built images
    the selection needs, plus a manifest of every member's sha256. Same content, same bytes."""
    from lowbuild.run.exports import run_bundle_export
    from lowbuild.run.workflow import Selection

    selection = Selection(project_file=file, names=tuple(images or ()), engine=engine)
    code = run_bundle_export(
        selection,
        out=out,
        with_built=with_built or (),
        cache_dir=cache_dir,
        wait=not no_wait,
        err=err,
    )
    raise typer.Exit(code)


@bundle_app.command("import")
def bundle_import_command(
    bundle: Annotated[Path, typer.Argument(help="A bundle written by `lowbuild bundle export`.")],
    engine: EngineName = None,
    cache_dir: CacheDir = None,
    as_json: AsJson = False,
    file: ProjectFile = None,
) -> None:
    """Verify every member against the manifest, then admit the artifacts to the cache and
    load the images. Exit 4, with nothing imported, if any member does not match.

    The built images' SBOMs and provenance statements it carries go to the project's
    .lowbuild/ (the project of -f, else the nearest lowbuild.yaml, if any)."""
    from lowbuild.run.exports import run_bundle_import

    code = run_bundle_import(
        bundle,
        engine=engine,
        cache_dir=cache_dir,
        as_json=as_json,
        out=_out(as_json=as_json),
        project_file=file,
    )
    raise typer.Exit(code)


@bundle_app.command("ls")
def bundle_ls_command(
    bundle: Annotated[Path, typer.Argument(help="A bundle file.")],
    as_json: AsJson = False,
) -> None:
    """List the members (kind, name, size, sha256) as the manifest records them."""
    from lowbuild.run.exports import run_bundle_ls

    raise typer.Exit(run_bundle_ls(bundle, as_json=as_json, out=_out(as_json=as_json)))


export_app = typer.Typer(help="Write the family in other tools' formats.", no_args_is_help=True)
app.add_typer(export_app, name="export")


@export_app.command("bake")
def export_bake_command(
    images: Annotated[
        list[str] | None, _images("Images to export, with their ancestors (default: all).")
    ] = None,
    out: Annotated[Path, typer.Option("-o", "--out", help="The bake file to write.")] = Path(
        "docker-bake.json"
    ),
    file: ProjectFile = None,
    stage: Annotated[
        Path | None,
        typer.Option(
            "--stage",
            help="Where to stage the contexts "
            "(default: .lowbuild/bake-stage beside lowbuild.yaml).",
            show_default=False,
        ),
    ] = None,
    offline: Annotated[
        bool,
        typer.Option(
            "--offline",
            envvar="LOWBUILD_OFFLINE",
            help="Open no network connection; only the cache.",
            metavar="",
        ),
    ] = False,
    cache_dir: CacheDir = None,
    no_wait: NoWait = False,
    as_json: AsJson = False,
) -> None:
    """Stage the contexts and write a `docker buildx bake` file for them. Build in waves
    (`bake wave-0`, `bake wave-1`, ...) so each FROM finds its parent locally."""
    from lowbuild.run.exports import run_export_bake

    code = run_export_bake(
        file,
        names=images or (),
        out=out,
        stage=stage,
        offline=offline,
        cache_dir=cache_dir,
        wait=not no_wait,
        err=err,
        as_json=as_json,
        console=_out(as_json=as_json),
    )
    raise typer.Exit(code)


@app.command("clean")
def clean_command(file: ProjectFile = None, no_wait: NoWait = False) -> None:
    """Remove what killed lowbuild runs of this project left behind.

    Their containers, the untagged images of their builds, their temp dirs
    and half-staged contexts, found through the records in .lowbuild/runs/.
    build, export bake and bundle export do this first anyway. Never touches
    a live run's containers nor anything another program made."""
    from lowbuild.run.workflow import run_clean

    raise typer.Exit(run_clean(file, wait=not no_wait, err=err))


def _build_params(params: dict[str, Any]) -> dict[str, Any]:
    """build_command's parameters, as run_build_command takes them."""
    return {name: params[name] for name in BUILD_DEFAULTS}


def main() -> None:
    """Console entry point (the installed `lowbuild` runs lowbuild.entry.main, which may
    run `build` without typer)."""
    entry_main()
