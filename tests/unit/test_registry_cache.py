"""The registry cache, with an engine in memory: a fresh runner pulls what a registry
holds under each image's fingerprint tag instead of building it, checks it, and builds
only what changed. Against a real registry on podman: tests/integration/test_publish.py."""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path

import pytest
from fake_engine import FakeEngine
from test_plan_and_build import BASE, write_chain
from test_plan_and_build import build as build_family

from lowbuild.engines.base import LogSink
from lowbuild.errors import EXIT_VERIFY
from lowbuild.plan.fingerprint import FINGERPRINT_LABEL
from lowbuild.plan.graph import build_graph
from lowbuild.plan.planner import Plan, make_plan
from lowbuild.run.build import FamilyBuilder
from lowbuild.run.report import RunLogs, run_exit_code
from lowbuild.run.scheduler import Outcome
from lowbuild.sources.cache import Cache
from lowbuild.sources.fetch import fetch_artifacts
from lowbuild.sources.registry import cache_ref
from lowbuild.spec.load import load_project
from lowbuild.spec.model import ImageSpec, Project, Registry

CACHE = Registry("cache", "127.0.0.1:5000/cache", tls_verify=False)
ORDER = ["base", "app", "tool", "worker"]


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return load_project(write_chain(tmp_path / "family"))


def runner(registry: dict[str, object] | None = None) -> FakeEngine:
    """A runner with empty storage (but the external base), sharing `registry`."""
    fake = FakeEngine()
    fake.add_image(BASE)
    if registry is not None:
        fake.registry = registry  # type: ignore[assignment]
    return fake


def build(
    project: Project, engine: FakeEngine, tmp_path: Path, **cache: Registry
) -> dict[str, Outcome]:
    """test_plan_and_build's build, in a run of its own, with a registry cache."""
    with RunLogs(tmp_path / "logs") as logs:
        return build_family(project, engine, logs, tmp_path, **cache)


def warm_cache(project: Project, tmp_path: Path) -> FakeEngine:
    """A runner that built the family and filled the registry cache with it."""
    first = runner()
    build(project, first, tmp_path, cache_to=CACHE)
    return first


def test_a_fresh_runner_pulls_the_whole_family_and_builds_nothing(
    project: Project, tmp_path: Path
) -> None:
    first = warm_cache(project, tmp_path)
    assert sorted(first.registry) == sorted(
        cache_ref(CACHE, name, first.images[project.ref(name)].labels[FINGERPRINT_LABEL])
        for name in ORDER
    )

    fresh = runner(first.registry)  # type: ignore[arg-type]
    outcomes = build(project, fresh, tmp_path, cache_from=CACHE)

    assert {n: o.state for n, o in outcomes.items()} == dict.fromkeys(ORDER, "pulled")
    assert fresh.built == []
    for name in ORDER:  # tagged as if built, with the very same image
        assert fresh.images[project.ref(name)].id == first.images[project.ref(name)].id
    # And then it is simply up to date.
    assert {o.state for o in build(project, fresh, tmp_path).values()} == {"up-to-date"}


def lookup_in(engine: FakeEngine):  # type: ignore[no-untyped-def]
    """The planner's registry question, answered from the fake registry."""

    def lookup(name: str, fingerprint: str) -> str | None:
        info = engine.registry.get(cache_ref(CACHE, name, fingerprint))
        return info.id if info else None

    return lookup


def plan_with_cache(project: Project, engine: FakeEngine) -> Plan:
    return make_plan(
        project,
        build_graph(project),
        engine,  # type: ignore[arg-type]
        cache_lookup=lookup_in(engine),
    )


def test_the_plan_says_what_the_cache_provides_down_the_whole_chain(
    project: Project, tmp_path: Path
) -> None:
    first = warm_cache(project, tmp_path)
    (project.root / "contexts" / "tool" / "motd").write_text("tool v2\n")
    fresh = runner(first.registry)  # type: ignore[arg-type]

    planned = plan_with_cache(project, fresh)

    actions = {image.name: image.action for image in planned.images}
    # worker's parent is not there yet, but the cache says which ID it will have.
    assert actions == {"base": "pull", "app": "pull", "tool": "build", "worker": "pull"}
    assert "the registry cache has it" in planned.by_name()["worker"].reasons
    assert fresh.pulls == []  # asking is not pulling


def test_a_changed_image_is_built_and_cached_and_the_rest_pulled(
    project: Project, tmp_path: Path
) -> None:
    first = warm_cache(project, tmp_path)
    (project.root / "contexts" / "worker" / "motd").write_text("worker v2\n")

    fresh = runner(first.registry)  # type: ignore[arg-type]
    outcomes = build(project, fresh, tmp_path, cache_from=CACHE, cache_to=CACHE)

    assert {n: o.state for n, o in outcomes.items()} == {
        "base": "pulled",
        "app": "pulled",
        "tool": "pulled",
        "worker": "built",
    }
    assert fresh.built == ["shop/worker:1"]
    new = fresh.images["shop/worker:1"].labels[FINGERPRINT_LABEL]
    assert cache_ref(CACHE, "worker", new) in fresh.registry


def test_a_cache_entry_with_another_fingerprint_is_refused_and_tags_nothing(
    project: Project, tmp_path: Path
) -> None:
    first = warm_cache(project, tmp_path)
    app_ref = cache_ref(CACHE, "app", first.images["shop/app:1"].labels[FINGERPRINT_LABEL])
    first.registry[app_ref] = first.images["shop/tool:1"]  # someone pushed tool as app

    fresh = runner(first.registry)  # type: ignore[arg-type]
    outcomes = build(project, fresh, tmp_path, cache_from=CACHE)

    assert outcomes["app"].state == "failed"
    assert "nothing tagged: its fingerprint is" in outcomes["app"].detail
    assert outcomes["worker"].state == "blocked"
    assert "shop/app:1" not in fresh.images and app_ref not in fresh.images
    assert outcomes["tool"].state == "pulled"
    assert run_exit_code(outcomes) == EXIT_VERIFY


def test_an_unreachable_cache_means_building(project: Project, tmp_path: Path) -> None:
    fresh = runner()
    fresh.pull_failures = ["dial tcp 127.0.0.1:5000: connect: connection refused"] * 4

    outcomes = build(project, fresh, tmp_path, cache_from=CACHE)

    assert {o.state for o in outcomes.values()} == {"built"}
    assert len(fresh.pulls) == 4  # looked once per image, then built


def test_an_image_planned_pull_that_the_cache_lost_is_built_with_its_inputs_fetched(
    project: Project, tmp_path: Path
) -> None:
    """The run fetches artifacts up front only for what it plans to build; an image the
    cache no longer gives at build time gets its inputs fetched then, and is built."""
    tool = tmp_path / "served" / "tool.txt"
    tool.parent.mkdir()
    tool.write_bytes(b"a tool\n")
    digest = hashlib.sha256(tool.read_bytes()).hexdigest()
    spec = project.root / "contexts" / "app" / "image.yaml"
    spec.write_text(
        spec.read_text() + "artifacts:\n  - file: tool.txt\n"
        f"    urls: ['{tool.as_uri()}']\n    sha256: {digest}\n"
    )
    project = load_project(project.root / "lowbuild.yaml")
    fetch_artifacts([project.image("app")], cache=Cache(tmp_path / "cache"))  # build's cache
    first = warm_cache(project, tmp_path)
    fresh = runner(first.registry)  # type: ignore[arg-type]
    planned = plan_with_cache(project, fresh)
    assert planned.actions() == {"pull"}
    app = first.images[project.ref("app")].labels[FINGERPRINT_LABEL]
    del fresh.registry[cache_ref(CACHE, "app", app)]  # lost between the plan and the build
    fetched: list[str] = []
    empty = Cache(tmp_path / "fresh-cache")

    def fetch(spec: ImageSpec, log: LogSink) -> None:
        fetched.append(spec.name)
        fetch_artifacts([spec], cache=empty)

    with RunLogs(tmp_path / "logs") as logs:
        outcomes = FamilyBuilder(
            project=project,
            engine=fresh,  # type: ignore[arg-type]
            cache=empty,
            stage_root=tmp_path / "stage",
            logs=logs,
            jobs=2,
            cache_from=CACHE,
            fetch_inputs=fetch,
        ).build(planned)

    assert {n: o.state for n, o in outcomes.items()} == {
        "base": "pulled",
        "app": "built",
        "tool": "pulled",
        "worker": "pulled",  # the same inputs: app was built as it was before
    }
    assert fetched == ["app"]
    assert fresh.built == ["shop/app:1"]


def test_the_plan_asks_the_cache_about_siblings_at_once(project: Project, tmp_path: Path) -> None:
    """One round trip per generation: app and tool (both children of base) are asked
    about together; worker waits for app's answer only."""
    first = warm_cache(project, tmp_path)
    fresh = runner(first.registry)  # type: ignore[arg-type]
    answer = lookup_in(fresh)
    lock = threading.Lock()
    in_flight, most = 0, 0

    def slow_lookup(name: str, fingerprint: str) -> str | None:
        nonlocal in_flight, most
        with lock:
            in_flight += 1
            most = max(most, in_flight)
        time.sleep(0.3)
        with lock:
            in_flight -= 1
        found: str | None = answer(name, fingerprint)
        return found

    planned = make_plan(
        project,
        build_graph(project),
        fresh,  # type: ignore[arg-type]
        cache_lookup=slow_lookup,
    )

    assert planned.actions() == {"pull"}
    assert most == 2  # app and tool
