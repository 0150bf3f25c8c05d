"""`plan` on a host that has none of the family's images, not even its external base:
every image gets a row and a reason, where `build` refuses before building anything."""

from __future__ import annotations

from pathlib import Path

import pytest
from fake_engine import FakeEngine
from test_plan_and_build import BASE, write_chain

from lowbuild.errors import UsageError
from lowbuild.plan.graph import build_graph
from lowbuild.plan.planner import make_plan
from lowbuild.spec.load import load_project


def test_a_missing_base_is_a_row_and_the_rest_are_new(tmp_path: Path) -> None:
    project = load_project(write_chain(tmp_path / "family"))
    empty = FakeEngine()  # not even BASE

    planned = make_plan(project, build_graph(project), empty, missing_bases_ok=True)  # type: ignore[arg-type]

    reasons = {image.name: (image.action, image.reasons) for image in planned.images}
    action, [why] = reasons.pop("base")
    assert action == "build"
    assert why.startswith(f"base image {BASE} missing") and "podman load" in why
    assert "make provision" not in why
    assert reasons == dict.fromkeys(["app", "tool", "worker"], ("build", ("new image",)))
    with pytest.raises(UsageError, match=f"base image {BASE}"):
        make_plan(project, build_graph(project), empty)  # type: ignore[arg-type]


def test_a_never_built_child_is_new_not_parent_rebuilt(tmp_path: Path) -> None:
    project = load_project(write_chain(tmp_path / "family"))
    engine = FakeEngine()
    engine.add_image(BASE)

    planned = make_plan(project, build_graph(project), engine)  # type: ignore[arg-type]

    assert {image.name: image.reasons for image in planned.images} == dict.fromkeys(
        ["base", "app", "tool", "worker"], ("new image",)
    )
