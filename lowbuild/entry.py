"""The console entry point, and the one command that skips the CLI framework.

`lowbuild build` is what a user runs over and over, and on an unchanged family it has
almost nothing to do: one engine query. typer (with click and pydantic) costs about
0.15 s of such a run, importing and then building a parser for the command's options,
more than the query itself. So a `build` whose arguments are all plain (the options
below, spelled as click spells them) is parsed here and run at once; anything else
(help, a typo, an option written another way, any other command) goes to typer in
lowbuild.cli, which prints the usage error or runs the command as before.
tests/unit/test_entry.py checks that every option of `build` is known here with the
same flags, environment variable and default, and that both parsers agree.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lowbuild.errors import EXIT_INTERRUPTED, Interrupted, LowbuildError, error_kind
from lowbuild.redact import redact

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from rich.console import Console

WIDE = 200  # columns for tables when the output is not a terminal
PROGRESS_MODES = ("auto", "tty", "plain", "quiet")

# `build`'s options: parameter name → (flags, environment variable). typer's are the
# reference; test_entry.py fails when the two differ.
BUILD_FLAGS: dict[str, tuple[tuple[str, ...], str | None]] = {
    "no_deps": (("--no-deps",), None),
    "fail_fast": (("--fail-fast",), None),
    "test": (("--test",), None),
    "offline": (("--offline",), "LOWBUILD_OFFLINE"),
    "as_json": (("--json",), "LOWBUILD_JSON"),
    "no_wait": (("--no-wait",), "LOWBUILD_NO_WAIT"),
    "push": (("--push",), None),
    "no_tls_verify": (("--no-tls-verify",), None),
    "no_sbom": (("--no-sbom",), "LOWBUILD_NO_SBOM"),
}
BUILD_VALUES: dict[str, tuple[tuple[str, ...], str | None]] = {
    "file": (("-f", "--file"), None),
    "engine": (("--engine", "-e"), None),
    "jobs": (("--jobs", "-j"), "LOWBUILD_JOBS"),
    "cache_dir": (("--cache",), None),
    "cache_from": (("--cache-from",), None),
    "cache_to": (("--cache-to",), None),
    "progress": (("--progress",), "LOWBUILD_PROGRESS"),
    "hosts": (("--hosts",), None),
}
BUILD_LISTS: dict[str, tuple[tuple[str, ...], str | None]] = {
    "overrides": (("--set",), None),
    "to": (("--to",), None),
    "endpoint": (("--endpoint",), None),
    "platform": (("--platform",), None),
}
BUILD_PATHS = frozenset({"file", "cache_dir", "hosts"})
BUILD_DEFAULTS: dict[str, Any] = {
    **dict.fromkeys(BUILD_FLAGS, False),
    **dict.fromkeys(BUILD_VALUES),
    **dict.fromkeys(BUILD_LISTS),
    "images": None,
    "progress": "auto",
}
# What click reads as a boolean (its BoolParamType); anything else is typer's to refuse.
_TRUE = frozenset({"1", "true", "t", "yes", "y", "on"})
_FALSE = frozenset({"0", "false", "f", "no", "n", "off"})


class _NotPlain(Exception):
    """These arguments are typer's to parse (or to refuse)."""


def parse_build(
    argv: Sequence[str], environ: Mapping[str, str] | None = None
) -> dict[str, Any] | None:
    """`build`'s parameters as typer would pass them to build_command, or None when the
    arguments are not all plain (then typer parses them, and says what is wrong)."""
    try:
        return _parse_build(list(argv), os.environ if environ is None else environ)
    except _NotPlain:
        return None


def _parse_build(argv: list[str], environ: Mapping[str, str]) -> dict[str, Any]:
    if not argv or argv[0] != "build" or "_LOWBUILD_COMPLETE" in environ:
        raise _NotPlain  # (the last: shell completion asking typer)
    flags = {flag: name for name, (opts, _) in BUILD_FLAGS.items() for flag in opts}
    values = {opt: name for name, (opts, _) in BUILD_VALUES.items() for opt in opts}
    lists = {opt: name for name, (opts, _) in BUILD_LISTS.items() for opt in opts}
    params: dict[str, Any] = {}
    images: list[str] = []
    args = iter(argv[1:])
    for arg in args:
        if arg == "--":
            images.extend(args)
            break
        if not arg.startswith("-") or arg == "-":
            images.append(arg)
            continue
        if arg in flags:
            params[flags[arg]] = True
            continue
        opt, eq, value = arg.partition("=") if arg.startswith("--") else (arg[:2], "", arg[2:])
        name = values.get(opt) or lists.get(opt)
        if name is None or (eq and not value):
            raise _NotPlain  # unknown, or an empty value: typer's to judge
        if not eq and not value:
            value = next(args, None)  # type: ignore[assignment]
            if value is None or value.startswith("-"):
                raise _NotPlain  # a missing value, or one click might read otherwise
        if name in BUILD_LISTS:
            params.setdefault(name, []).append(value)
        else:
            params[name] = value
    for name, (_, envvar) in {**BUILD_FLAGS, **BUILD_VALUES}.items():
        if name in params or envvar is None or not environ.get(envvar):
            continue
        params[name] = environ[envvar]
        if name in BUILD_FLAGS:
            word = params[name].strip().lower()
            if word not in _TRUE | _FALSE:
                raise _NotPlain
            params[name] = word in _TRUE
    if "jobs" in params:
        try:
            params["jobs"] = int(params["jobs"])
        except ValueError:
            raise _NotPlain from None
        if params["jobs"] < 1:
            raise _NotPlain
    for name in BUILD_PATHS & params.keys():
        params[name] = Path(params[name])
    if params.get("progress", "auto") not in PROGRESS_MODES or (
        params.get("to") and not params.get("push")
    ):
        raise _NotPlain  # typer's error message says which
    if images:
        params["images"] = images
    return {**BUILD_DEFAULTS, **params}


def run_build_command(
    *,
    images: list[str] | None,
    file: Path | None,
    engine: str | None,
    overrides: list[str] | None,
    jobs: int | None,
    no_deps: bool,
    fail_fast: bool,
    test: bool,
    offline: bool,
    cache_dir: Path | None,
    as_json: bool,
    no_wait: bool,
    push: bool,
    to: list[str] | None,
    cache_from: str | None,
    cache_to: str | None,
    no_tls_verify: bool,
    progress: str,
    hosts: Path | None,
    endpoint: list[str] | None,
    platform: list[str] | None,
    no_sbom: bool,
) -> int:
    """`lowbuild build` once its options are parsed (by typer or by parse_build): the
    exit code."""
    from lowbuild.run.workflow import (
        BuildOptions,
        PushTargets,
        RegistryCache,
        Selection,
        default_jobs,
        default_test_jobs,
        run_build,
    )

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
    options = BuildOptions(
        jobs=jobs or default_jobs(),
        fail_fast=fail_fast,
        test=test,
        test_jobs=jobs or default_test_jobs(),
        offline=offline,
        cache_dir=cache_dir,
        as_json=as_json,
        wait=not no_wait,
        push=PushTargets(to=tuple(to or ()), tls_verify=not no_tls_verify) if push else None,
        cache=RegistryCache(pull_from=cache_from, push_to=cache_to, tls_verify=not no_tls_verify),
        progress=progress,
        sbom=not no_sbom,
    )
    return run_build(selection, options, console=out_console(as_json=as_json), err=err_console())


# ---- the consoles every command prints to ----


def _wide(console: Console) -> Console:
    """Not a terminal (a CI log, a pipe): WIDE columns instead of rich's 80, so that tables
    do not wrap into unreadable narrow columns (COLUMNS still wins)."""
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = WIDE
    return console


_ERR: list[Console] = []


def err_console() -> Console:
    """Standard error, made once (rich is imported only when something is printed)."""
    if not _ERR:
        from rich.console import Console

        _ERR.append(_wide(Console(stderr=True, soft_wrap=True)))
    return _ERR[0]


def out_console(*, as_json: bool = False) -> Console:
    """Standard output: never wrapped (lines are copied and grepped); JSON unhighlighted."""
    from rich.console import Console

    return _wide(Console(soft_wrap=True, highlight=not as_json))


# ---- the entry point ----


def main() -> None:
    """Console entry point: LowbuildError becomes a message and its exit code, never a
    traceback. typer runs in standalone mode, so usage errors print themselves and exit 2."""
    # SIGTERM (a CI runner cancelling the job) stops cleanly, like Ctrl-C.
    signal.signal(signal.SIGTERM, _terminate)
    try:
        params = parse_build(sys.argv[1:])
        if params is None:
            from lowbuild.cli import app

            app()
        else:
            sys.exit(run_build_command(**params))
    except LowbuildError as exc:
        from rich.markup import escape

        # Messages redact URLs where they are made; this is the last line of defence.
        err_console().print(f"[bold red]error:[/] {escape(redact(str(exc)))}", highlight=False)
        if json_asked():
            sys.stdout.write(json.dumps(error_record(exc), indent=2) + "\n")
        sys.exit(exc.exit_code)
    except SystemExit as exc:
        # typer turns a KeyboardInterrupt (Ctrl-C, or SIGTERM through _terminate) that
        # no command turned into an Interrupted error into a silent exit 130: say it.
        if exc.code == EXIT_INTERRUPTED:
            _say_interrupted()
        raise
    except KeyboardInterrupt:  # (the fast path, and older typer, let it through)
        _say_interrupted()
        sys.exit(EXIT_INTERRUPTED)


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _say_interrupted() -> None:
    err_console().print("interrupted")
    if json_asked():
        sys.stdout.write(json.dumps(error_record(Interrupted("interrupted")), indent=2) + "\n")


def json_asked() -> bool:
    """Whether this run was asked for JSON (--json, or LOWBUILD_JSON): then a failure
    still gives stdout a JSON object a script can parse."""
    value = os.environ.get("LOWBUILD_JSON", "").strip().lower()
    return "--json" in sys.argv[1:] or value in ("1", "true", "yes", "on")


def error_record(exc: LowbuildError) -> dict[str, object]:
    """`{"error": {kind, message, file, line, column, exit_code}}` for a failed run
    (its JSON Schema: `lowbuild schema error`)."""
    location = getattr(exc, "location", None)
    return {
        "error": {
            "kind": error_kind(type(exc)),  # SpecError → "spec"
            "message": redact(str(exc)),
            "file": str(location.path) if location is not None else None,
            "line": location.line if location is not None else None,
            "column": location.column if location is not None else None,
            "exit_code": exc.exit_code,
        }
    }
