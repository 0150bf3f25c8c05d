"""The host facts `lowbuild doctor` reads: cgroup layout, rlimits, containers.conf, subids."""

from __future__ import annotations

from pathlib import Path

import pytest

from lowbuild.doctor.checks import rlimits_over_host, rootless_checks
from lowbuild.doctor.facts import (
    ContainersConf,
    HostFacts,
    cgroup_layout,
    containers_conf_paths,
    docker_socket_path,
    effective_runtime,
    has_subid_range,
    merge_containers_conf,
    parse_proc_limits,
)


@pytest.mark.parametrize(
    ("entries", "expected"),
    [
        (["cgroup.controllers", "cgroup.subtree_control"], "unified"),
        (["cpu/", "memory/", "unified/", "systemd/"], "hybrid"),
        (["cpu/", "memory/", "systemd/"], "legacy"),
    ],
)
def test_cgroup_layout_is_read_from_the_mount(
    tmp_path: Path, entries: list[str], expected: str
) -> None:
    for entry in entries:
        if entry.endswith("/"):
            (tmp_path / entry).mkdir()
        else:
            (tmp_path / entry).write_text("")
    assert cgroup_layout(tmp_path) == expected


PROC_LIMITS = """\
Limit                     Soft Limit           Hard Limit           Units
Max cpu time              unlimited            unlimited            seconds
Max processes             96365                96365                processes
Max open files            1024                 20000                files
"""


def test_hard_limits_come_from_proc_self_limits() -> None:
    assert parse_proc_limits(PROC_LIMITS) == (20000, 96365)
    unlimited = PROC_LIMITS.replace("96365                96365", "unlimited unlimited")
    assert parse_proc_limits(unlimited) == (20000, None)


def test_later_containers_conf_files_win_key_by_key() -> None:
    vendor = '[engine]\nruntime = "crun"\n[containers]\ndefault_ulimits = ["nofile=1280:2560"]\n'
    system = '[engine]\nruntime = "runc"\n'
    conf = merge_containers_conf(
        [(Path("/usr/share/c.conf"), vendor), (Path("/etc/c.conf"), system)],
        fix_path=Path("/etc/c.conf"),
    )
    assert conf.runtime == "runc"
    assert conf.default_ulimits == ("nofile=1280:2560",)
    assert conf.read_from == (Path("/usr/share/c.conf"), Path("/etc/c.conf"))


def test_a_broken_containers_conf_is_named_not_fatal() -> None:
    conf = merge_containers_conf([(Path("/etc/c.conf"), "[engine\n")], fix_path=Path("/x"))
    assert conf.runtime is None
    assert conf.unreadable and conf.unreadable[0].startswith("/etc/c.conf")


def test_containers_conf_env_replaces_every_other_file() -> None:
    paths, fix = containers_conf_paths(
        environ={"CONTAINERS_CONF": "/tmp/only.conf"}, euid=0, home=Path("/root")
    )
    assert paths == [Path("/tmp/only.conf")]
    assert fix == Path("/tmp/only.conf")


def test_rootless_fix_goes_into_the_users_own_file() -> None:
    paths, fix = containers_conf_paths(environ={}, euid=1000, home=Path("/home/b"))
    assert paths[-1] == fix == Path("/home/b/.config/containers/containers.conf")
    assert Path("/etc/containers/containers.conf") in paths


@pytest.mark.parametrize(
    ("configured", "installed", "expected"),
    [
        ("runc", {"crun", "runc"}, "runc"),
        (None, {"crun", "runc"}, "crun"),  # podman's own default once crun is installed
        (None, {"runc"}, "runc"),
    ],
)
def test_runtime_podman_will_use(
    configured: str | None, installed: set[str], expected: str
) -> None:
    facts = HostFacts(
        euid=0,
        user="root",
        cgroup_layout="hybrid",
        nofile_hard=None,
        nproc_hard=None,
        pid_max=None,
        containers_conf=ContainersConf(runtime=configured),
        installed_runtimes=frozenset(installed),
    )
    assert effective_runtime(facts) == expected


def limits_host(*, euid: int = 0, ulimits: tuple[str, ...] | None = None) -> HostFacts:
    return HostFacts(
        euid=euid,
        user="root" if euid == 0 else "builder",
        cgroup_layout="hybrid",
        nofile_hard=20000,
        nproc_hard=96365,
        pid_max=32768,
        containers_conf=ContainersConf(default_ulimits=ulimits),
    )


@pytest.mark.parametrize(
    ("facts", "over"),
    [
        (limits_host(), ["NOFILE", "NPROC"]),  # podman's root defaults: 1048576 each
        (limits_host(ulimits=("nofile=20000:20000", "nproc=32768:32768")), []),
        (limits_host(ulimits=("nofile=10000:10000",)), ["NPROC"]),
        (limits_host(ulimits=("nofile=20000:20000", "nproc=96365:96365")), ["NPROC"]),
        (limits_host(euid=1000), []),  # rootless podman clamps to the current limits itself
    ],
)
def test_rlimits_podman_would_ask_above_the_host(facts: HostFacts, over: list[str]) -> None:
    assert rlimits_over_host(facts) == over


SUBUID = "alice:100000:65536\n1001:165536:65536\nempty:231072:0\n"


@pytest.mark.parametrize(
    ("user", "uid", "expected"),
    [("alice", 1000, True), ("bob", 1001, True), ("carol", 1002, False), ("empty", 1003, False)],
)
def test_subordinate_ids_by_name_or_uid(user: str, uid: int, expected: bool) -> None:
    assert has_subid_range(SUBUID, user=user, uid=uid) is expected


def test_rootless_user_without_subids_or_tun_is_told_both_fixes() -> None:
    facts = HostFacts(
        euid=1002,
        user="carol",
        cgroup_layout="hybrid",
        nofile_hard=None,
        nproc_hard=None,
        pid_max=None,
        subuid_text=SUBUID,
        subgid_text=SUBUID,
        tun_usable=False,
    )
    checks = {check.name: check for check in rootless_checks(facts)}
    subids, network = checks["subuid/subgid"], checks["rootless network"]
    assert not subids.ok and "usermod --add-subuids" in subids.fix and "carol" in subids.fix
    assert not network.ok and 'netns = "host"' in network.fix


def test_root_needs_no_rootless_checks() -> None:
    facts = HostFacts(
        euid=0,
        user="root",
        cgroup_layout="unified",
        nofile_hard=None,
        nproc_hard=None,
        pid_max=None,
    )
    assert rootless_checks(facts) == []


@pytest.mark.parametrize(
    ("docker_host", "socket"),
    [
        (None, Path("/var/run/docker.sock")),
        ("unix:///tmp/x.sock", Path("/tmp/x.sock")),
        ("tcp://127.0.0.1:2375", None),
    ],
)
def test_docker_socket_follows_docker_host(docker_host: str | None, socket: Path | None) -> None:
    assert docker_socket_path(docker_host) == socket
