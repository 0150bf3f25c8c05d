"""The command line: one thin function per command. Parse, call one function, print.

Logic lives in the pipeline packages; a command here only wires options to it.
"""

from __future__ import annotations

import sys

import typer
from rich.console import Console
from rich.markup import escape

from lowbuild import __version__
from lowbuild.errors import LowbuildError

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
err = Console(stderr=True)


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


def main() -> None:
    """Console entry point: LowbuildError becomes a message and its exit code, never a traceback."""
    try:
        app(standalone_mode=False)
    except LowbuildError as exc:
        err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        sys.exit(exc.exit_code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        err.print("aborted")
        sys.exit(130)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
    except Exception as exc:  # click usage errors arrive here with standalone_mode=False
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise
