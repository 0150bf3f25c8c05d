"""The plan over several endpoints (make_plan `stores`) and where `plan --hosts` says
each image goes (hosts.intended_placement, placement.simulate): pure decisions, over
engines in memory. The real endpoints: tests/integration/test_hosts.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from fake_engine import FakeEngine
from test_plan_and_build import BASE, build, write_chain

from lowbuild.errors import UsageError, VerificationError
from lowbuild.plan.graph import build_graph
from lowbuild.plan.planner import make_plan
from lowbuild.run.hosts import intended_placement
from lowbuild.run.placement import critical_path, simulate
from lowbuild.run.report import RunLogs
from lowbuild.spec.load import load_project
from lowbuild.spec.model import Project


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return load_project(write_chain(tmp_path / "family"))


def built_on_one(project: Project, tmp_path: Path) -> FakeEngine:
    """An engine that built the whole family (base → app → worker, base → tool)."""
    engine = FakeEngine()
    engine.add_image(BASE)
    with RunLogs(tmp_path / "logs") as logs:
        build(project, engine, logs, tmp_path)
    return engine


def test_an_image_held_up_to_date_by_any_endpoint_is_up_to_date(
    project: Project, tmp_path: Path
) -> None:
    full = built_on_one(project, tmp_path)
    empty = FakeEngine()
    empty.add_image(BASE)
    full.inspections = 0  # what the build asked is not the plan's
    stores = {"a": empty, "b": full}
    planned = make_plan(project, build_graph(project), empty, stores=stores)  # type: ignore[arg-type,dict-item]
    assert planned.actions() == {"up-to-date"}
    assert planned.held["app"] == {"b": full.images["shop/app:1"].id}
    # One inspection per endpoint, not one per image.
    assert (empty.inspections, full.inspections) == (1, 1)


def test_a_child_held_on_one_endpoint_counts_only_on_the_parent_the_plan_keeps(
    project: Project, tmp_path: Path
) -> None:
    full = built_on_one(project, tmp_path)
    other = FakeEngine()
    other.add_image(BASE)
    # Another endpoint holds a different `base` (say, built from other inputs): the plan
    # keeps the one that is up to date, and the children built on it.
    other.add_image("shop/base:1", labels={"lowbuild.fingerprint": "sha256:" + "0" * 64})
    planned = make_plan(project, build_graph(project), other, stores={"x": other, "y": full})  # type: ignore[arg-type,dict-item]
    by_name = planned.by_name()
    assert by_name["base"].existing_id == full.images["shop/base:1"].id
    assert planned.actions() == {"up-to-date"}


def test_endpoints_with_different_bases_are_refused(project: Project) -> None:
    a, b = FakeEngine(), FakeEngine()
    a.add_image(BASE)
    b.images[BASE] = a.images[BASE].__class__(id="sha256:" + "1" * 64, tags=(BASE,))
    with pytest.raises(VerificationError, match=r"on endpoint a but .* on endpoint b"):
        make_plan(project, build_graph(project), a, stores={"a": a, "b": b})  # type: ignore[arg-type,dict-item]


def test_a_base_missing_on_one_endpoint_names_it(project: Project) -> None:
    a, b = FakeEngine(), FakeEngine()
    a.add_image(BASE)
    with pytest.raises(UsageError, match=rf"base image {BASE} .* not in endpoint b's"):
        make_plan(project, build_graph(project), a, stores={"a": a, "b": b})  # type: ignore[arg-type,dict-item]


def test_plan_places_new_images_where_their_parent_goes(project: Project) -> None:
    a, b = FakeEngine(), FakeEngine()
    for engine in (a, b):
        engine.add_image(BASE)
    planned = make_plan(project, build_graph(project), a, stores={"a": a, "b": b})  # type: ignore[arg-type,dict-item]
    placement = intended_placement(planned, {"a": 1, "b": 1}, planned.held)
    # base on a (first declared); app and tool ready together, one job each: they split;
    # worker follows app.
    assert placement["base"] == "a"
    assert {placement["app"], placement["tool"]} == {"a", "b"}
    assert placement["worker"] == placement["app"]


def test_up_to_date_images_are_placed_where_they_are_held(project: Project, tmp_path: Path) -> None:
    full = built_on_one(project, tmp_path)
    empty = FakeEngine()
    empty.add_image(BASE)
    planned = make_plan(project, build_graph(project), empty, stores={"e": empty, "f": full})  # type: ignore[arg-type,dict-item]
    placement = intended_placement(planned, {"e": 4, "f": 1}, planned.held)
    assert set(placement.values()) == {"f"}


# ---- the simulation itself ----

CHAIN = {"a": (), "b": ("a",), "c": ("b",)}
FAN = {"p": (), "c1": ("p",), "c2": ("p",), "c3": ("p",), "c4": ("p",)}


def test_a_chain_stays_on_its_endpoint_and_costs_its_length() -> None:
    run = simulate(list(CHAIN), CHAIN, dict.fromkeys(CHAIN, 2.0), {"x": 1, "y": 1}, handover_s=1.0)
    assert {p.endpoint for p in run.placed.values()} == {"x"}
    assert run.handovers == 0 and run.makespan == 6.0


def test_a_fan_out_hands_the_parent_over_once_per_endpoint() -> None:
    run = simulate(list(FAN), FAN, dict.fromkeys(FAN, 3.0), {"x": 1, "y": 1}, handover_s=1.0)
    # p on x (0-3); c1 on x (3-6), c2 on y after one handover (3-7); c3 on x (6-9);
    # c4 on y (7-10): y holds p already, no second handover.
    assert run.handovers == 1
    assert run.makespan == 10.0
    assert critical_path(list(FAN), FAN, dict.fromkeys(FAN, 3.0)) == 6.0


def test_with_enough_endpoints_and_free_handovers_the_makespan_is_the_critical_path() -> None:
    durations = {"p": 1.0, "c1": 5.0, "c2": 2.0, "c3": 2.0, "c4": 4.0}
    run = simulate(list(FAN), FAN, durations, dict.fromkeys("vwxyz", 1), handover_s=0.0)
    assert run.makespan == critical_path(list(FAN), FAN, durations) == 6.0


def test_the_endpoint_holding_more_of_what_an_image_needs_comes_first() -> None:
    from lowbuild.run.placement import preferred_endpoints

    # The parent is on x and y, a COPY --from source only on y: y saves a handover.
    assert preferred_endpoints([["x", "y"], ["y"]]) == ["y", "x"]
    # Ties keep the parent's order.
    assert preferred_endpoints([["x", "y"], ["z"]]) == ["x", "y", "z"]
    assert preferred_endpoints([]) == []
