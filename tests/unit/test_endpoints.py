"""Endpoints as users write them: --endpoint options and hosts files, and the commands
each one turns into. Bad input names the file and line, or the option."""

from __future__ import annotations

from pathlib import Path

import pytest

from lowbuild.engines.endpoints import (
    Endpoint,
    Hosts,
    check_hosts,
    endpoint_engine,
    find_hosts,
    load_hosts,
    parse_endpoint,
)
from lowbuild.errors import SpecError, UsageError


def test_an_endpoint_option_names_engine_url_and_jobs() -> None:
    found = parse_endpoint("a=podman+unix:///run/a/podman.sock,jobs=3")
    assert (found.name, found.engine, found.url, found.jobs) == (
        "a",
        "podman",
        "unix:///run/a/podman.sock",
        3,
    )
    assert parse_endpoint("local=docker") == Endpoint("local", "docker", "", 2, "--endpoint")


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("a=podman+unix:///s.sock", ("podman", "--url", "unix:///s.sock")),
        ("a=podman+builder-1", ("podman", "--connection", "builder-1")),
        ("a=docker+tcp://10.0.0.2:2376", ("docker", "--host", "tcp://10.0.0.2:2376")),
        ("a=buildx+ssh://me@b", ("docker", "--host", "ssh://me@b")),
        ("a=docker+remote", ("docker", "--context", "remote")),
        ("a=podman", ("podman",)),
    ],
)
def test_each_endpoint_drives_the_engine_client_with_its_own_flags(
    text: str, words: tuple[str, ...]
) -> None:
    engine = endpoint_engine(parse_endpoint(text))
    assert engine.cli == words  # type: ignore[attr-defined]


def test_published_ports_are_probed_on_the_endpoint_host() -> None:
    assert parse_endpoint("a=podman+unix:///s.sock").address == "127.0.0.1"
    assert parse_endpoint("a=docker+ssh://me@build-2.example:22").address == "build-2.example"
    assert parse_endpoint("a=docker+tcp://10.1.2.3:2376").address == "10.1.2.3"
    assert parse_endpoint("a=docker+remote").address == "127.0.0.1"


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("podman+unix:///s", "expected NAME=ENGINE+URL"),
        ("a=buildah+unix:///s", "buildah has no remote API"),
        ("a=podmn+unix:///s", "did you mean 'podman'"),
        ("a=podman+http://h", "must start with unix://, tcp://, ssh://"),
        ("a=podman+unix:///s,jobs=0", "jobs must be a whole number from 1"),
        ("a=podman+unix:///s,jobs=many", "jobs must be a whole number"),
        ("A b=podman", "endpoint name"),
        ("a=docker+bad name", "neither a URL nor a docker context name"),
    ],
)
def test_a_bad_endpoint_option_says_what_is_wrong(text: str, says: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_endpoint(text)
    assert says in str(caught.value)
    assert text in str(caught.value)


def test_a_hosts_file_gives_endpoints_and_the_handover_registry(tmp_path: Path) -> None:
    path = tmp_path / "lowbuild-hosts.yaml"
    path.write_text(
        "registry: 127.0.0.1:5000/handover\n"
        "tls-verify: false\n"
        "endpoints:\n"
        "  - name: a\n"
        "    engine: podman\n"
        "    url: unix:///run/a.sock\n"
        "    jobs: 4\n"
        "  - {name: b, engine: docker}\n"
    )
    hosts = load_hosts(path)
    assert hosts.registry == "127.0.0.1:5000/handover" and hosts.tls_verify is False
    assert [(e.name, e.engine, e.url, e.jobs) for e in hosts.endpoints] == [
        ("a", "podman", "unix:///run/a.sock", 4),
        ("b", "docker", "", 2),
    ]
    assert hosts.endpoints[0].declared == f"{path}:4:5"


@pytest.mark.parametrize(
    ("text", "line", "says"),
    [
        ("endpoints:\n  - name: a\n    engine: podman\n    jbos: 2\n", 4, "did you mean 'jobs'"),
        ("endpoints:\n  - name: a\n", 2, "needs `engine:`"),
        ("endpoints: []\n", 1, "at least one endpoint"),
        ("registry: x\n", 1, "needs `endpoints:`"),
        ("endpoints:\n  - name: a\n    engine: podman\n    jobs: -1\n", 2, "jobs must be"),
        ("endpoints:\n  - name: a\n    engine: [podman]\n", 3, "a single value"),
        ("endpoints:\n  - name: a\n   engine: podman\n", 3, "not valid YAML"),
        ("tls-verify: maybe\nendpoints:\n  - {name: a, engine: podman}\n", 1, "true or false"),
    ],
)
def test_a_bad_hosts_file_names_file_and_line(
    tmp_path: Path, text: str, line: int, says: str
) -> None:
    path = tmp_path / "hosts.yaml"
    path.write_text(text)
    with pytest.raises(SpecError) as caught:
        load_hosts(path)
    assert says in str(caught.value)
    assert caught.value.location is not None
    assert (caught.value.location.path, caught.value.location.line) == (path, line)


def test_a_missing_hosts_file_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        load_hosts(tmp_path / "nowhere.yaml")


def test_two_endpoints_may_not_share_a_name_or_an_engine() -> None:
    a = parse_endpoint("a=podman+unix:///s")
    with pytest.raises(UsageError, match="declared twice"):
        check_hosts(Hosts((a, parse_endpoint("a=docker"))))
    # docker and buildx on one daemon are one image store
    with pytest.raises(UsageError, match="reach the same engine"):
        check_hosts(
            Hosts((parse_endpoint("d=docker+tcp://h:1"), parse_endpoint("x=buildx+tcp://h:1")))
        )


def test_options_win_over_the_environment_and_both_flags_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "hosts.yaml"
    path.write_text("endpoints:\n  - {name: f, engine: podman}\n")
    monkeypatch.setenv("LOWBUILD_HOSTS", str(path))
    assert [e.name for e in find_hosts(None, ()).endpoints] == ["f"]  # type: ignore[union-attr]
    assert [e.name for e in find_hosts(None, ("o=docker",)).endpoints] == ["o"]  # type: ignore[union-attr]
    with pytest.raises(UsageError, match="not both"):
        find_hosts(path, ("o=docker",))
    monkeypatch.delenv("LOWBUILD_HOSTS")
    assert find_hosts(None, ()) is None
