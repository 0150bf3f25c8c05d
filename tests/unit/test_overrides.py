"""`--set` for one run: the override changes an image's inputs as an edit would (the plan
says so, the fingerprint follows), and a setting that cannot apply is bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
from fake_engine import FakeEngine
from test_plan_and_build import BASE, write_chain
from test_plan_and_build import build as build_family
from test_plan_and_build import plan as plan_family

from lowbuild.errors import EXIT_BAD_INPUT, UsageError
from lowbuild.run.report import RunLogs
from lowbuild.spec.load import load_project
from lowbuild.spec.model import Project
from lowbuild.spec.overrides import apply_overrides


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return load_project(write_chain(tmp_path / "family"))


def test_an_arg_set_for_one_run_rebuilds_that_image_and_its_descendants(
    project: Project, tmp_path: Path
) -> None:
    engine = FakeEngine()
    engine.add_image(BASE)
    with RunLogs(tmp_path / "logs") as logs:
        build_family(project, engine, logs, tmp_path)

    changed = apply_overrides(project, ["app.args.VERSION=2"])
    planned = {image.name: image for image in plan_family(changed, engine).images}

    assert planned["app"].reasons == ("build args changed: VERSION",)
    assert planned["worker"].action == "build"  # built from app
    assert planned["base"].action == planned["tool"].action == "up-to-date"
    # Without the override the family is still up to date: nothing was written.
    assert {i.action for i in plan_family(project, engine).images} == {"up-to-date"}


def test_star_sets_every_image_and_tags_are_replaced(project: Project) -> None:
    changed = apply_overrides(project, ["*.args.PROXY=http://p:3128", "app.tags=2.0,stable"])
    assert all(("PROXY", "http://p:3128") in spec.args for spec in changed.images)
    assert changed.image("app").tags == ("2.0", "stable")
    assert changed.refs(changed.image("app"))[-2:] == ("shop/app:2.0", "shop/app:stable")


@pytest.mark.parametrize(
    ("setting", "words"),
    [
        ("ap.args.X=1", "no image named 'ap' (did you mean 'app'?)"),
        ("app.arg.X=1", "cannot set 'arg' (did you mean 'args'?)"),
        ("app.args.1X=1", "is not a build arg name"),
        ("app.tags=ok,no way", "'no way' is not a valid image tag"),
        ("app.args.X", "expected TARGET.FIELD[.KEY]=VALUE"),
    ],
)
def test_a_setting_that_cannot_apply_is_bad_input(
    project: Project, setting: str, words: str
) -> None:
    with pytest.raises(UsageError) as caught:
        apply_overrides(project, [setting])
    assert words in str(caught.value)
    assert caught.value.exit_code == EXIT_BAD_INPUT
