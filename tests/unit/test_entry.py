"""`lowbuild build` parsed without typer (lowbuild.entry) must mean exactly what typer
would make of the same arguments, and hand anything else to typer."""

from __future__ import annotations

import functools
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

from lowbuild.cli import app, build_command
from lowbuild.entry import BUILD_DEFAULTS, BUILD_FLAGS, BUILD_LISTS, BUILD_VALUES, parse_build

BUILD = typer.main.get_command(app).commands["build"]  # type: ignore[attr-defined]
ENVVARS = (
    "LOWBUILD_JOBS",
    "LOWBUILD_OFFLINE",
    "LOWBUILD_JSON",
    "LOWBUILD_NO_WAIT",
    "LOWBUILD_PROGRESS",
    "LOWBUILD_NO_SBOM",
)


def _typer_params(argv: list[str]) -> dict[str, Any]:
    """What typer hands build_command for these arguments: a one-command app whose
    command has build_command's very signature, and records what it is called with."""
    received: list[dict[str, Any]] = []

    @functools.wraps(build_command)
    def record(**params: Any) -> None:
        received.append(params)

    probe = typer.Typer()
    probe.command()(record)
    result = CliRunner().invoke(probe, argv)
    assert result.exit_code == 0, result.output
    [params] = received
    return _lists_as_tuples(params)


def _lists_as_tuples(params: dict[str, Any]) -> dict[str, Any]:
    """A list option not given is None or () depending on typer's version; both mean
    none (run_build_command reads each as `tuple(x or ())`)."""
    return {
        name: tuple(value or ()) if name in BUILD_LISTS or name == "images" else value
        for name, value in params.items()
    }


@pytest.fixture(autouse=True)
def _no_lowbuild_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENVVARS:
        monkeypatch.delenv(name, raising=False)


def test_every_option_of_build_is_known_with_typers_flags_variable_and_default() -> None:
    known = {**BUILD_FLAGS, **BUILD_VALUES, **BUILD_LISTS}
    names = {param.name for param in BUILD.params}
    assert names == set(known) | {"images"}, "an option of build is missing in lowbuild.entry"
    for param in BUILD.params:
        many = param.multiple or param.nargs == -1
        default = tuple(param.default or ()) if many else param.default
        expected = _lists_as_tuples({param.name: BUILD_DEFAULTS[param.name]})[param.name]
        assert default == expected, param.name
        if param.name == "images":
            continue
        opts, envvar = known[param.name]
        assert set(param.opts) == set(opts), param.name
        assert param.envvar == envvar, param.name
        assert bool(param.is_flag) == (param.name in BUILD_FLAGS), param.name
        assert bool(param.multiple) == (param.name in BUILD_LISTS), param.name


AGREED = [
    ["build"],
    ["build", "tomcat", "jdk"],
    ["build", "-f", "x/lowbuild.yaml", "-e", "podman", "--jobs", "3", "--json"],
    ["build", "--file=x.yaml", "--engine=buildx", "-j4", "-fy.yaml", "tomcat"],
    ["build", "--set", "a.args.X=1", "--set=*.tags=a,b", "base", "--no-deps", "--fail-fast"],
    ["build", "--test", "--offline", "--no-wait", "--no-sbom", "--progress", "plain"],
    ["build", "--push", "--to", "local", "--to", "127.0.0.1:5000/x", "--no-tls-verify"],
    ["build", "--cache-from", "c", "--cache-to", "127.0.0.1:5000/cache", "--cache", "/tmp/c"],
    ["build", "--hosts", "h.yaml", "--endpoint", "a=podman+unix:///x", "--platform", "linux/arm64"],
    ["build", "--engine", "podman", "--engine", "docker"],  # the last one wins
    ["build", "--", "odd-name"],
    ["build", "-", "name"],
]


@pytest.mark.parametrize("argv", AGREED, ids=" ".join)
def test_plain_arguments_parse_as_typer_parses_them(argv: list[str]) -> None:
    ours = parse_build(argv, {})
    assert ours is not None, "plain arguments fell back to typer"
    assert _lists_as_tuples(ours) == _typer_params(argv[1:])


@pytest.mark.parametrize(
    "env",
    [
        {"LOWBUILD_JOBS": "5", "LOWBUILD_NO_SBOM": "yes", "LOWBUILD_PROGRESS": "quiet"},
        {"LOWBUILD_JSON": "1", "LOWBUILD_OFFLINE": "off", "LOWBUILD_NO_WAIT": "TRUE"},
        {"LOWBUILD_JOBS": ""},
    ],
    ids=str,
)
def test_environment_variables_count_as_typer_counts_them(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    for argv in (["build"], ["build", "--no-sbom", "-j", "2", "--progress", "tty"]):
        ours = parse_build(argv, env)
        assert ours is not None
        assert _lists_as_tuples(ours) == _typer_params(argv[1:])


@pytest.mark.parametrize(
    ("argv", "env"),
    [
        (["build", "-h"], {}),
        (["build", "--help"], {}),
        (["build", "--jbos", "2"], {}),  # a typo: typer says which option
        (["build", "-j", "0"], {}),
        (["build", "-j", "two"], {}),
        (["build", "--to", "local"], {}),  # --to without --push
        (["build", "--progress", "fancy"], {}),
        (["build", "--json=1"], {}),
        (["build", "--engine"], {}),  # no value
        (["build", "--engine="], {}),
        (["build", "--set", "--json"], {}),
        (["build"], {"LOWBUILD_NO_SBOM": "maybe"}),
        (["build"], {"LOWBUILD_JOBS": "-1"}),
        (["build", "-"], {"_LOWBUILD_COMPLETE": "bash_complete"}),
        (["plan"], {}),
        ([], {}),
    ],
)
def test_anything_else_goes_to_typer(argv: list[str], env: dict[str, str]) -> None:
    assert parse_build(argv, env) is None


def test_a_build_runs_without_importing_typer(tmp_path: Path) -> None:
    project = tmp_path / "lowbuild.yaml"
    project.write_text("images: [\n")
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "lowbuild", "build", "-f", str(project)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "lowbuild.yaml" in result.stderr  # the error names the file, as it did
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines()}
    assert "lowbuild.run.workflow" in imported
    assert not {"typer", "click", "pydantic", "lowbuild.cli"} & imported
