"""Publishing decisions, with an engine in memory: which images go, in which order, what
a failure holds back, what is retried, what is recorded. The pushes themselves, to a
real registry on every engine: tests/integration/test_publish.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fake_engine import FakeEngine
from test_plan_and_build import BASE, write_chain

from lowbuild.engines.parse import pushed_digest
from lowbuild.errors import EngineError, SpecError, UsageError
from lowbuild.plan.fingerprint import FINGERPRINT_LABEL
from lowbuild.plan.graph import build_graph
from lowbuild.run.publish import (
    PublishedRecord,
    PushOutcome,
    chosen_registries,
    is_transient,
    push_family,
)
from lowbuild.spec.load import load_project
from lowbuild.spec.model import Project, Registry

DIGEST = "sha256:" + "d" * 64
IMAGE = "sha256:" + "1" * 64  # a local image ID
ORDER = ["base", "app", "tool", "worker"]


@pytest.fixture
def project(tmp_path: Path) -> Project:
    path = write_chain(tmp_path / "family")
    with path.open("a") as out:
        out.write(
            "registries:\n"
            "  - name: main\n    prefix: registry.example.com/team\n"
            "  - name: local\n    prefix: 127.0.0.1:5000/lb\n    tls-verify: false\n"
        )
    return load_project(path)


@pytest.fixture
def engine(project: Project) -> FakeEngine:
    fake = FakeEngine()
    fake.add_image(BASE)
    for name in ORDER:
        fake.add_image(project.ref(name), labels={FINGERPRINT_LABEL: f"fp-{name}"})
    return fake


def push(project: Project, engine: FakeEngine, **kw: object) -> list[PushOutcome]:
    local = project.registry("local")
    slept: list[float] = []
    outcomes = push_family(
        project, build_graph(project), engine, ORDER, [local], sleep=slept.append, **kw
    )  # type: ignore[arg-type]
    push.slept = slept  # type: ignore[attr-defined]
    return outcomes


def test_registries_are_read_with_their_tls_setting(project: Project) -> None:
    assert [(r.name, r.prefix, r.tls_verify) for r in project.registries] == [
        ("main", "registry.example.com/team", True),
        ("local", "127.0.0.1:5000/lb", False),
    ]
    assert project.registry("local").ref("app", "1") == "127.0.0.1:5000/lb/app:1"


@pytest.mark.parametrize(
    ("entry", "line", "says"),
    [
        ("  - name: a\n    prefix: https://r.example.com/x\n", 5, "has a scheme"),
        ("  - name: a\n    prefix: team\n", 5, "is not host[:port][/path]"),
        ("  - name: a\n    prefix: r.example.com/Team\n", 5, "lowercase"),
        ("  - name: a\n    prefix: r.example.com\n    tls-verify: no\n", 6, "true or false"),
        ("  - name: a\n    prefix: r.example.com\n  - name: a\n    prefix: s.example.com\n", 6,
         "declared twice"),
        ("  - name: a\n    url: r.example.com\n", 5, "unknown key 'url'"),
    ],
)  # fmt: skip
def test_a_bad_registry_names_the_file_and_line(
    tmp_path: Path, entry: str, line: int, says: str
) -> None:
    (tmp_path / "lowbuild.yaml").write_text("name: shop\ncontexts: []\nregistries:\n" + entry)
    with pytest.raises(SpecError) as raised:
        load_project(tmp_path / "lowbuild.yaml")
    assert f"lowbuild.yaml:{line}" in str(raised.value)
    assert says in str(raised.value)


def test_to_takes_a_declared_name_or_a_prefix(project: Project) -> None:
    assert chosen_registries(project, []) == project.registries
    assert chosen_registries(project, ["local"]) == (project.registry("local"),)
    [given] = chosen_registries(project, ["10.0.0.7:5000/ci/"], tls_verify=False)
    assert (given.prefix, given.tls_verify) == ("10.0.0.7:5000/ci", False)
    with pytest.raises(UsageError, match=r"no registry named 'lokal' \(did you mean 'local'"):
        chosen_registries(project, ["lokal"])
    with pytest.raises(UsageError, match="has a scheme"):
        chosen_registries(project, ["http://10.0.0.7:5000/ci"])
    bare = Project(name="p", root=project.root)
    with pytest.raises(UsageError, match="declare `registries:`"):
        chosen_registries(bare, [])


def test_every_tag_is_pushed_parents_first_and_recorded_by_digest(
    project: Project, engine: FakeEngine
) -> None:
    outcomes = push(project, engine)

    assert [o.image for o in outcomes] == ORDER
    assert all(o.pushed for o in outcomes)
    assert list(engine.pushed) == [f"127.0.0.1:5000/lb/{name}:1" for name in ORDER]
    app = outcomes[1]
    assert app.by_digest == f"127.0.0.1:5000/lb/app@{engine.pushed['127.0.0.1:5000/lb/app:1']}"
    assert app.fingerprint == "fp-app"


def test_a_refused_image_holds_back_its_descendants_only(
    project: Project, engine: FakeEngine
) -> None:
    outcomes = {o.image: o for o in push(project, engine, refused={"app": "its smoke test failed"})}

    assert not outcomes["app"].pushed and outcomes["app"].error == "its smoke test failed"
    assert outcomes["worker"].error == "its parent app was not pushed"
    assert outcomes["base"].pushed and outcomes["tool"].pushed
    assert "127.0.0.1:5000/lb/worker:1" not in engine.pushed


def test_a_transient_failure_is_retried_with_backoff(project: Project, engine: FakeEngine) -> None:
    engine.push_failures = ["dial tcp 127.0.0.1:5000: connect: connection refused"] * 2

    outcomes = push(project, engine)

    assert all(o.pushed for o in outcomes)
    assert push.slept == [1.0, 2.0]  # type: ignore[attr-defined]


def test_a_refusal_is_not_retried_and_says_why_without_secrets(
    project: Project, engine: FakeEngine
) -> None:
    engine.push_failures = [
        "Error: writing blob: https://user:hunter2@127.0.0.1:5000/v2/: unauthorized: "
        "authentication required"
    ]

    outcomes = {o.image: o for o in push(project, engine)}

    assert push.slept == []  # type: ignore[attr-defined]
    assert not outcomes["base"].pushed
    assert "unauthorized" in outcomes["base"].error
    assert "hunter2" not in outcomes["base"].error
    assert {o.error for n, o in outcomes.items() if n != "base"} <= {
        "its parent base was not pushed",
        "its parent app was not pushed",
    }
    assert engine.pushed == {}


def test_an_image_never_built_is_not_pushed_and_says_how_to_build_it(
    project: Project, engine: FakeEngine
) -> None:
    del engine.images[project.ref("tool")]
    outcomes = {o.image: o for o in push(project, engine)}
    assert (
        outcomes["tool"].error == "no local image shop/tool:1: build it first (lowbuild build tool)"
    )
    assert outcomes["worker"].pushed


def test_transient_or_not() -> None:
    def error(text: str) -> EngineError:
        return EngineError(["push"], 125, text)

    assert is_transient(error("received unexpected HTTP status: 503 Service Unavailable"))
    assert is_transient(error("Put ...: read tcp: connection reset by peer"))
    assert is_transient(error("writing blob: ... EOF"))
    assert not is_transient(error("unauthorized: authentication required"))
    assert not is_transient(error("denied: requested access to the resource is denied"))
    assert not is_transient(error("manifest invalid"))


def test_pushed_digest_from_a_digestfile_or_docker_output() -> None:
    assert pushed_digest(DIGEST + "\n", "r/x:1") == DIGEST
    docker = (
        "The push refers to repository [127.0.0.1:5000/lb/app]\n"
        "5f70bf18a086: Layer already exists\n"
        f"1: digest: {DIGEST} size: 735\n"
    )
    assert pushed_digest(docker, "r/x:1") == DIGEST
    with pytest.raises(EngineError, match="no manifest digest"):
        pushed_digest("Pushed\n", "r/x:1")


def test_the_record_keeps_other_images_and_forgets_an_old_build(tmp_path: Path) -> None:
    path = tmp_path / "published.json"
    local = Registry("local", "127.0.0.1:5000/lb", tls_verify=False)
    first = PublishedRecord.read(path)  # no file yet: empty
    first.add(
        [
            PushOutcome("app", "main", "r.example.com/t", ("1",), DIGEST, "fp-1"),
            PushOutcome("app", local.name, local.prefix, ("1",), DIGEST, "fp-1"),
            PushOutcome("db", "main", "r.example.com/t", ("1",), DIGEST, "fp-db"),
            PushOutcome("web", "main", "r.example.com/t", ("1",), error="its smoke test failed"),
        ]
    )
    first.write()
    second = PublishedRecord.read(path)
    other = "sha256:" + "e" * 64
    second.add(
        [PushOutcome("app", "main", "r.example.com/t", ("1", "2"), other, "fp-2", image_id=IMAGE)]
    )
    second.write()

    images = json.loads(path.read_text())["images"]
    assert set(images) == {"app", "db"}  # web was never pushed
    assert images["app"] == {
        "fingerprint": "fp-2",
        "registries": {
            "main": {
                "ref": f"r.example.com/t/app@{other}",
                "tags": ["r.example.com/t/app:1", "r.example.com/t/app:2"],
                "image_id": IMAGE,
            }
        },
    }
    assert images["db"]["registries"]["main"]["ref"] == f"r.example.com/t/db@{DIGEST}"


def test_the_record_names_a_digest_only_for_the_same_local_image_and_tags(
    tmp_path: Path,
) -> None:
    """A push is skipped only for what the record says this very image was pushed as."""
    main = Registry("main", "r.example.com/t")
    record = PublishedRecord.read(tmp_path / "published.json")
    record.add(
        [PushOutcome("app", "main", main.prefix, ("1", "latest"), DIGEST, "fp", image_id=IMAGE)]
    )
    record.write()
    record = PublishedRecord.read(tmp_path / "published.json")

    assert record.recorded_digest(main, "app", IMAGE, ("1", "latest")) == DIGEST
    assert record.recorded_digest(main, "app", IMAGE, ("1",)) == DIGEST
    assert record.recorded_digest(main, "app", IMAGE, ("1", "2")) is None  # a new tag
    assert record.recorded_digest(main, "app", "sha256:" + "9" * 64, ("1",)) is None  # rebuilt
    assert record.recorded_digest(main, "db", IMAGE, ("1",)) is None  # never pushed
    moved = Registry("main", "r.example.com/elsewhere")  # the same name, another prefix
    assert record.recorded_digest(moved, "app", IMAGE, ("1",)) is None
    other = Registry("other", "r.example.com/t")
    assert record.recorded_digest(other, "app", IMAGE, ("1",)) is None
