"""The same user stories against every engine: build, serve, inspect, commit, exec, fail,
save/load, push. Real engines, a real registry, real HTTP; no mocks."""

from __future__ import annotations

import contextlib
import re
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from containers import containers
from live_services import SITE_TEXT, Registry, make_site_context, wait_for_http

from lowbuild.engines.base import (
    OWNED_LABEL,
    BuildRequest,
    CommitRequest,
    CopyStep,
    Engine,
    RecipeRequest,
    ShellStep,
)
from lowbuild.engines.detect import select_engine
from lowbuild.errors import EngineError, UsageError

pytestmark = pytest.mark.engine

FULL_ID = re.compile(r"sha256:[0-9a-f]{64}")


@dataclass(frozen=True)
class BuiltSite:
    ref: str
    id: str
    log: tuple[str, ...]


@pytest.fixture(scope="session")
def site_image(
    engine: Engine, base_image: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BuiltSite]:
    """The site image, built once per engine (network none, with a build label)."""
    context = make_site_context(tmp_path_factory.mktemp(f"site-{engine.name}"))
    ref = f"localhost/lowbuild-test/{engine.name}-site:1"
    lines: list[str] = []
    request = BuildRequest(
        context=context, tags=[ref], labels={"org.lowbuild.test.build": "yes"}, network="none"
    )
    image_id = engine.build(request, log=lines.append)
    yield BuiltSite(ref=ref, id=image_id, log=tuple(lines))
    with contextlib.suppress(EngineError):
        engine.remove_image(ref, force=True)


def test_build_returns_the_full_id_of_the_tagged_image_and_streams_its_log(
    engine: Engine, site_image: BuiltSite
) -> None:
    assert FULL_ID.fullmatch(site_image.id), site_image.id
    info = engine.inspect_image(site_image.ref)
    assert info is not None
    assert info.id == site_image.id
    assert site_image.ref in info.tags
    assert any("RUN echo" in line for line in site_image.log), site_image.log


def test_built_image_serves_the_added_tarball_over_http(
    engine: Engine, site_image: BuiltSite
) -> None:
    with engine.run(image=site_image.ref, publish=[8080]) as container:
        port = container.ports[8080]
        page = wait_for_http(f"http://127.0.0.1:{port}/index.html")
        assert page.status_code == 200
        assert page.text == SITE_TEXT
        made_by_run = wait_for_http(f"http://127.0.0.1:{port}/run.txt")
        assert made_by_run.text.strip() == "built by RUN"


def test_inspect_shows_env_expose_cmd_and_both_kinds_of_labels(
    engine: Engine, site_image: BuiltSite
) -> None:
    info = engine.inspect_image(site_image.ref)
    assert info is not None
    assert "GREETING=hello" in info.env
    assert "8080/tcp" in info.exposed_ports
    assert info.cmd == ("busybox", "httpd", "-f", "-p", "8080", "-h", "/www")
    assert info.labels["org.lowbuild.test.kind"] == "site"  # LABEL in the Dockerfile
    assert info.labels["org.lowbuild.test.build"] == "yes"  # label given to build()


def test_missing_image_inspects_as_none(engine: Engine) -> None:
    assert engine.inspect_image(f"localhost/lowbuild-test/absent-{secrets.token_hex(4)}:1") is None


def test_exec_returns_the_commands_output(engine: Engine, site_image: BuiltSite) -> None:
    with engine.run(image=site_image.ref) as container:
        assert engine.exec(container, ["cat", "/www/run.txt"]).strip() == "built by RUN"
        assert engine.exec(container, ["sh", "-c", "echo $GREETING"]).strip() == "hello"


def test_run_once_reports_exit_code_and_output(engine: Engine, site_image: BuiltSite) -> None:
    code, output = engine.run_once(
        image=site_image.ref, command=["sh", "-c", "echo to-stdout; echo to-stderr >&2; exit 3"]
    )
    assert code == 3
    assert "to-stdout" in output
    assert "to-stderr" in output


def test_containers_carry_the_owned_label_and_vanish_after_the_block(
    engine: Engine, site_image: BuiltSite
) -> None:
    with engine.run(image=site_image.ref) as container:
        assert container.id in containers(engine, label=f"{OWNED_LABEL}=true")
    assert container.id not in containers(engine)


def test_container_is_removed_even_when_the_block_fails(
    engine: Engine, site_image: BuiltSite
) -> None:
    with pytest.raises(RuntimeError), engine.run(image=site_image.ref) as container:
        raise RuntimeError("the smoke test failed")
    assert container.id not in containers(engine)


def test_commit_keeps_author_message_and_each_change(
    engine: Engine, site_image: BuiltSite, image_refs: Callable[[str], str]
) -> None:
    ref = image_refs("committed")
    with engine.run(image=site_image.ref) as container:
        engine.exec(container, ["sh", "-c", "mkdir -p /srv && echo committed > /srv/state.txt"])
        image_id = engine.commit(
            container,
            CommitRequest(
                ref=ref,
                author="Lowbuild Tests <tests@lowbuild.invalid>",
                message="committed by the engine tests",
                changes=[
                    'CMD ["cat", "state.txt"]',
                    "EXPOSE 9090/tcp",
                    "ENV COMMITTED=yes",
                    "USER 1000",
                    "WORKDIR /srv",
                    "LABEL org.lowbuild.test.committed=true",
                ],
            ),
        )
    assert FULL_ID.fullmatch(image_id), image_id
    info = engine.inspect_image(ref)
    assert info is not None
    assert info.id == image_id
    assert info.author == "Lowbuild Tests <tests@lowbuild.invalid>"
    assert info.comment == "committed by the engine tests"
    assert info.cmd == ("cat", "state.txt")
    assert "9090/tcp" in info.exposed_ports
    assert "COMMITTED=yes" in info.env
    assert info.user == "1000"
    assert info.workdir == "/srv"
    assert info.labels["org.lowbuild.test.committed"] == "true"
    # The committed filesystem and config work together: CMD reads the file from WORKDIR.
    assert engine.run_once(image=ref, command=["cat", "state.txt"]) == (0, "committed\n")


def test_commit_recipe_runs_steps_copies_files_and_commits(
    engine: Engine, base_image: str, tmp_path: Path, image_refs: Callable[[str], str]
) -> None:
    ref = image_refs("recipe")
    greeting = tmp_path / "greeting.txt"
    greeting.write_text("copied in\n")
    lines: list[str] = []
    commit = CommitRequest(
        ref=ref,
        author="Recipe Author <recipe@lowbuild.invalid>",
        message="made by a commit recipe",
        changes=[
            'CMD ["cat", "state.txt", "greeting.txt"]',
            "WORKDIR /srv",
            "ENV STEPPED=yes",
            "EXPOSE 9090",
            "USER 1000",
            "LABEL org.lowbuild.test.recipe=commit",
        ],
    )
    steps = [
        ShellStep("mkdir -p /srv && echo stepped > /srv/state.txt && echo visible-in-log"),
        CopyStep(greeting, "/srv/greeting.txt"),
    ]
    recipe = RecipeRequest(base=base_image, steps=steps, commit=commit, network="none")
    image_id = engine.commit_steps(recipe, log=lines.append)
    info = engine.inspect_image(ref)
    assert info is not None
    assert info.id == image_id
    assert info.author == "Recipe Author <recipe@lowbuild.invalid>"
    assert info.comment == "made by a commit recipe"
    assert info.cmd == ("cat", "state.txt", "greeting.txt")
    assert info.workdir == "/srv"
    assert "STEPPED=yes" in info.env
    assert "9090/tcp" in info.exposed_ports
    assert info.user == "1000"
    assert info.labels["org.lowbuild.test.recipe"] == "commit"
    assert any("visible-in-log" in line for line in lines), lines
    code, output = engine.run_once(image=ref, command=["cat", "state.txt", "greeting.txt"])
    assert (code, output) == (0, "stepped\ncopied in\n")


def test_commit_recipe_keeps_the_base_command_unless_changed(
    engine: Engine, site_image: BuiltSite, image_refs: Callable[[str], str]
) -> None:
    ref = image_refs("recipe-keeps-cmd")
    steps = [ShellStep("touch /www/extra")]
    engine.commit_steps(RecipeRequest(site_image.ref, steps, CommitRequest(ref=ref)))
    info = engine.inspect_image(ref)
    assert info is not None
    assert info.cmd == ("busybox", "httpd", "-f", "-p", "8080", "-h", "/www")
    assert info.entrypoint is None


def test_failing_commit_step_raises_with_its_message(
    engine: Engine, base_image: str, image_refs: Callable[[str], str]
) -> None:
    ref = image_refs("recipe-broken")
    with pytest.raises(EngineError) as raised:
        steps = [ShellStep("echo 'recipe step broke' >&2; exit 4")]
        engine.commit_steps(RecipeRequest(base_image, steps, CommitRequest(ref=ref)))
    assert raised.value.returncode != 0
    assert "recipe step broke" in raised.value.stderr
    assert engine.inspect_image(ref) is None


def test_failing_run_raises_engine_error_with_the_commands_message(
    engine: Engine, base_image: str, tmp_path: Path, image_refs: Callable[[str], str]
) -> None:
    (tmp_path / "Dockerfile").write_text(
        f"FROM {base_image}\nRUN echo 'lowbuild-test: the step broke' >&2; exit 7\n"
    )
    lines: list[str] = []
    with pytest.raises(EngineError) as raised:
        engine.build(BuildRequest(context=tmp_path, tags=[image_refs("broken")]), log=lines.append)
    assert raised.value.returncode != 0
    assert "lowbuild-test: the step broke" in raised.value.stderr
    assert any("lowbuild-test: the step broke" in line for line in lines)


def test_save_then_load_after_removal_restores_the_same_image(
    engine: Engine,
    base_image: str,
    tmp_path: Path,
    image_refs: Callable[[str], str],
) -> None:
    context = make_site_context(tmp_path)
    ref = image_refs("saved")
    marker = secrets.token_hex(8)  # a config no other image has, so removal really removes
    image_id = engine.build(
        BuildRequest(context=context, tags=[ref], labels={"org.lowbuild.test.marker": marker})
    )
    archive = tmp_path / "image.tar"
    engine.save([ref], archive)
    assert archive.stat().st_size > 0
    engine.remove_image(ref, force=True)
    assert engine.inspect_image(image_id) is None

    loaded = engine.load(archive)

    assert loaded, "load reported nothing"
    info = engine.inspect_image(ref)
    assert info is not None, f"{ref} not back after load (load said {loaded})"
    assert info.id == image_id
    assert info.labels["org.lowbuild.test.marker"] == marker


def test_push_names_the_digest_the_registry_stores(
    engine: Engine, site_image: BuiltSite, registry: Registry
) -> None:
    repository = f"lowbuild-test/{engine.name}-site"
    lines: list[str] = []
    destination = f"{registry.host}/{repository}:pushed"

    digest = engine.push(site_image.ref, destination, tls_verify=False, log=lines.append)

    assert "pushed" in registry.tags(repository)
    assert digest == registry.manifest_digest(repository, "pushed")
    # Pushed under its own name only: no destination tag is left in the local store.
    assert engine.inspect_image(destination) is None
    assert engine.inspect_image(site_image.ref) is not None
    # Again: the registry has every blob, and the manifest is the same.
    assert engine.push(site_image.ref, destination, tls_verify=False) == digest


def test_select_engine_by_name_and_by_environment(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert select_engine(engine.name).name == engine.name
    monkeypatch.setenv("LOWBUILD_ENGINE", engine.name)
    assert select_engine().name == engine.name


def test_unknown_engine_is_bad_input_naming_the_known_ones() -> None:
    with pytest.raises(UsageError) as raised:  # a typo is not a broken engine: exit 2
        select_engine("podmn")
    assert "unknown engine 'podmn' (did you mean 'podman'?)" in str(raised.value)
    assert "podman, docker, buildx, buildah" in str(raised.value)
