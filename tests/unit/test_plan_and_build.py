"""What the planner and the builder decide, with an engine in memory (fake_engine.py):
what is built, in which order, what is skipped and why, what a failure blocks.
The same decisions on real engines: tests/integration/test_family_build.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_engine import FakeEngine

from lowbuild.errors import UsageError
from lowbuild.plan.graph import build_graph
from lowbuild.plan.planner import Plan, make_plan
from lowbuild.run.build import FamilyBuilder
from lowbuild.run.report import RunLogs
from lowbuild.run.scheduler import Outcome
from lowbuild.sources.cache import Cache
from lowbuild.spec.load import load_project
from lowbuild.spec.model import Project

BASE = "localhost/lowbuild/busybox:latest"


def write_chain(root: Path) -> Path:
    """base (FROM an external image) → app → worker, and a sibling `tool` of app."""
    root.mkdir(parents=True)
    (root / "lowbuild.yaml").write_text("name: shop\nnamespace: shop\ntag: '1'\n")
    images = {
        "base": ("name: base\n", f"FROM {BASE}\nCOPY motd /etc/motd\n"),
        "app": ("name: app\nparent: base\n", "FROM shop/base:1\nCOPY motd /srv/motd\n"),
        "tool": ("name: tool\nparent: base\n", "FROM shop/base:1\nCOPY motd /opt/motd\n"),
        "worker": ("name: worker\nparent: app\n", "FROM shop/app:1\nCOPY motd /run/motd\n"),
    }
    for name, (image_yaml, dockerfile) in images.items():
        directory = root / "contexts" / name
        directory.mkdir(parents=True)
        (directory / "image.yaml").write_text(image_yaml)
        (directory / "Dockerfile").write_text(dockerfile)
        (directory / "motd").write_text(f"{name} v1\n")
    return root / "lowbuild.yaml"


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return load_project(write_chain(tmp_path / "family"))


@pytest.fixture
def engine() -> FakeEngine:
    fake = FakeEngine()
    fake.add_image(BASE)
    return fake


@pytest.fixture
def logs(tmp_path: Path) -> Iterator[RunLogs]:
    with RunLogs(tmp_path / "logs") as run_logs:
        yield run_logs


def plan(project: Project, engine: FakeEngine, *names: str, with_deps: bool = True) -> Plan:
    return make_plan(project, build_graph(project), engine, names=names, with_deps=with_deps)  # type: ignore[arg-type]


def build(
    project: Project, engine: FakeEngine, logs: RunLogs, tmp_path: Path, *names: str, **kw: object
) -> dict[str, Outcome]:
    builder = FamilyBuilder(
        project=project,
        engine=engine,  # type: ignore[arg-type]
        cache=Cache(tmp_path / "cache"),
        stage_root=tmp_path / "stage",
        logs=logs,
        jobs=2,
        **kw,  # type: ignore[arg-type]
    )
    return builder.build(plan(project, engine, *names))


def actions(planned: Plan) -> dict[str, tuple[str, tuple[str, ...]]]:
    return {image.name: (image.action, image.reasons) for image in planned.images}


def test_a_new_family_is_built_parents_first_and_then_is_up_to_date(
    project: Project, engine: FakeEngine, logs: RunLogs, tmp_path: Path
) -> None:
    first = plan(project, engine)
    assert {name: a for name, (a, _) in actions(first).items()} == dict.fromkeys(
        ["base", "app", "tool", "worker"], "build"
    )
    assert actions(first)["base"][1] == ("new image",)
    # One inspection for the whole family, not one per image.
    assert engine.inspections == 1

    outcomes = build(project, engine, logs, tmp_path)

    assert {n: o.state for n, o in outcomes.items()} == dict.fromkeys(outcomes, "built")
    order = engine.built
    assert order.index("shop/base:1") < order.index("shop/app:1") < order.index("shop/worker:1")
    assert order.index("shop/base:1") < order.index("shop/tool:1")
    again = plan(project, engine)
    assert {a for a, _ in actions(again).values()} == {"up-to-date"}
    assert build(project, engine, logs, tmp_path) and len(engine.built) == 4  # nothing rebuilt


def test_an_edit_rebuilds_the_image_and_its_descendants_only(
    project: Project, engine: FakeEngine, logs: RunLogs, tmp_path: Path
) -> None:
    build(project, engine, logs, tmp_path)
    (project.root / "contexts" / "app" / "motd").write_text("app v2\n")

    changed = actions(plan(project, engine))

    assert changed["base"][0] == changed["tool"][0] == "up-to-date"
    assert changed["app"][0] == "build"
    assert any("motd" in reason for reason in changed["app"][1]), changed["app"]
    assert changed["worker"] == ("build", ("parent rebuilt (app)",))
    engine.built.clear()
    outcomes = build(project, engine, logs, tmp_path)
    assert engine.built == ["shop/app:1", "shop/worker:1"]
    assert outcomes["tool"].state == "up-to-date"


def test_a_parent_rebuilt_to_the_same_id_leaves_its_child_up_to_date(
    project: Project, engine: FakeEngine, logs: RunLogs, tmp_path: Path
) -> None:
    build(project, engine, logs, tmp_path)
    del engine.images["shop/base:1"]  # removed by hand; its inputs have not changed

    assert actions(plan(project, engine))["app"] == ("build", ("parent rebuilt (base)",))
    engine.built.clear()
    outcomes = build(project, engine, logs, tmp_path)

    # base is rebuilt to the very same ID, so nothing built from it is out of date.
    assert engine.built == ["shop/base:1"]
    assert [outcomes[n].state for n in ("app", "tool", "worker")] == ["up-to-date"] * 3


def test_a_failed_build_blocks_its_descendants_and_nothing_else(
    project: Project, engine: FakeEngine, logs: RunLogs, tmp_path: Path
) -> None:
    engine.failing.add("shop/app:1")

    outcomes = build(project, engine, logs, tmp_path)

    assert outcomes["app"].state == "failed"
    assert "the build of shop/app:1 broke" in outcomes["app"].detail
    assert (outcomes["worker"].state, outcomes["worker"].blocked_by) == ("blocked", "app")
    assert outcomes["base"].state == outcomes["tool"].state == "built"
    assert "shop/worker:1" not in engine.images
    assert "the build of shop/app:1 broke" in logs.path("app").read_text()


def test_no_deps_plans_only_the_named_image_and_needs_its_parent_built(
    project: Project, engine: FakeEngine, logs: RunLogs, tmp_path: Path
) -> None:
    with pytest.raises(UsageError, match=r"built from app.*drop --no-deps"):
        plan(project, engine, "worker", with_deps=False)
    build(project, engine, logs, tmp_path)
    (project.root / "contexts" / "app" / "motd").write_text("app v2\n")

    only = plan(project, engine, "worker", with_deps=False)

    # app is out of date but not selected: worker is judged against app's existing image.
    assert [image.name for image in only.images] == ["worker"]
    assert only.images[0].action == "up-to-date"
    assert only.known_ids["app"] == engine.images["shop/app:1"].id


def test_naming_an_image_plans_its_ancestors_but_not_its_siblings(
    project: Project, engine: FakeEngine
) -> None:
    assert [image.name for image in plan(project, engine, "worker").images] == [
        "base",
        "app",
        "worker",
    ]


def test_a_missing_external_base_says_how_to_load_it(project: Project) -> None:
    with pytest.raises(UsageError, match=r"base image .*busybox.* never pulls"):
        plan(project, FakeEngine())
