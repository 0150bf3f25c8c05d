"""Fixtures for tests against real engines and a real registry; reusable by every
integration test.

- `engine`: parametrised over LOWBUILD_TEST_ENGINES (comma-separated; default all four).
  An engine that was asked for but does not work FAILS the test with the probe's reason:
  CI must notice a broken engine, not skip past it.
- `base_image`: the tiny busybox base that scripts/provision.sh imports into every engine.
- `image_refs`: makes unique image references for a test and removes them afterwards.
- `registry`: a real `docker-registry serve` on 127.0.0.1, one per session.
- `site_context`: a build context that ADDs a .tar.gz and serves it (live_services.py).
Plain helpers (wait_for_http, free_port, Registry, make_site_context) are in
live_services.py: `from live_services import wait_for_http`. Extra engine endpoints (a
podman service, a dockerd of its own) started inside a test are in endpoint_services.py.
"""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from containers import containers
from live_services import BASE_IMAGE, Registry, make_site_context, running_registry

from lowbuild.engines.base import ENGINE_NAMES, OWNED_LABEL, Engine
from lowbuild.engines.detect import engine_by_name, probe
from lowbuild.errors import EngineError

# The scripts under test (scripts/fetch_seed_sources.sh) run the `lowbuild` on PATH, as
# from a user's shell: put this interpreter's, the lowbuild under test, first.
os.environ["PATH"] = os.pathsep.join((str(Path(sys.executable).parent), os.environ["PATH"]))


def requested_engines() -> list[str]:
    """Engine names from LOWBUILD_TEST_ENGINES, in the order given (default: all four)."""
    raw = os.environ.get("LOWBUILD_TEST_ENGINES", ",".join(ENGINE_NAMES))
    return [name.strip() for name in raw.split(",") if name.strip()]


@pytest.fixture(scope="session", params=requested_engines())
def engine(request: pytest.FixtureRequest) -> Iterator[Engine]:
    """A working engine, one per requested name; fails (never skips) when it does not work.

    After the engine's tests, containers labelled lowbuild.owned that this session left
    behind are reported as a failure of the last test and removed.
    """
    name: str = request.param
    found = probe(name)
    if not found.ok:
        pytest.fail(
            f"engine {name!r} (LOWBUILD_TEST_ENGINES) is not usable: {found.reason}",
            pytrace=False,
        )
    chosen = engine_by_name(name)
    before = containers(chosen, label=OWNED_LABEL)
    yield chosen
    left = containers(chosen, label=OWNED_LABEL) - before
    if left:
        pytest.fail(f"{name} tests left containers behind: {sorted(left)}", pytrace=False)


@pytest.fixture(scope="session")
def base_image(engine: Engine) -> str:
    """The busybox base image; its absence is an environment failure with the fix named."""
    if engine.inspect_image(BASE_IMAGE) is None:
        pytest.fail(
            f"{BASE_IMAGE} is missing in {engine.name}'s storage: run `bash scripts/provision.sh`",
            pytrace=False,
        )
    return BASE_IMAGE


@pytest.fixture
def image_refs(engine: Engine) -> Iterator[Callable[[str], str]]:
    """`make(what)` returns a fresh `localhost/lowbuild-test/<engine>-<what>-<random>:1`;
    every image so named is removed after the test."""
    made: list[str] = []

    def make(what: str) -> str:
        ref = f"localhost/lowbuild-test/{engine.name}-{what}-{secrets.token_hex(4)}:1"
        made.append(ref)
        return ref

    yield make
    for ref in made:
        try:
            if engine.inspect_image(ref) is not None:
                engine.remove_image(ref, force=True)
        except EngineError:
            pass  # the test's own failure is the one worth seeing


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """A registry for the whole session (live_services.running_registry), plain http."""
    try:
        with running_registry(tmp_path_factory.mktemp("registry")) as running:
            yield running
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture
def site_context(tmp_path: Path) -> Path:
    """make_site_context in this test's tmp_path."""
    return make_site_context(tmp_path)
