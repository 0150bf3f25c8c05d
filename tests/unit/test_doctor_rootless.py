"""What `lowbuild doctor` tells an unprivileged user about rootless podman/buildah:
subordinate ids, the network helper, the storage driver (pure checks over host facts)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lowbuild.doctor.checks import Check, rootless_checks
from lowbuild.doctor.facts import (
    ContainersConf,
    HostFacts,
    StorageConf,
    free_subid_range,
    kernel_version,
    merge_containers_conf,
    parse_storage_conf,
    storage_conf_path,
)
from lowbuild.doctor.probes import probe_network

HOME = Path("/home/ci")
USER_CONTAINERS_CONF = HOME / ".config/containers/containers.conf"
USER_STORAGE_CONF = HOME / ".config/containers/storage.conf"


def rootless(**overrides: object) -> HostFacts:
    """User `ci` (uid 1000) on a host like this project's: tun and fuse root-only."""
    facts: dict[str, object] = {
        "euid": 1000,
        "user": "ci",
        "cgroup_layout": "hybrid",
        "nofile_hard": 20000,
        "nproc_hard": 96365,
        "pid_max": 32768,
        "containers_conf": ContainersConf(runtime="runc", fix_path=USER_CONTAINERS_CONF),
        "subuid_text": "ci:100000:65536\n",
        "subgid_text": "ci:100000:65536\n",
        "tun_usable": False,
        "fuse_usable": False,
        "kernel_release": "6.1.0-18-amd64",
        "unprivileged_port_start": 1024,
        "storage": StorageConf(
            driver="vfs", read_from=USER_STORAGE_CONF, fix_path=USER_STORAGE_CONF
        ),
    }
    facts.update(overrides)
    return HostFacts(**facts)  # type: ignore[arg-type]


def check(facts: HostFacts, name: str) -> Check:
    return {c.name: c for c in rootless_checks(facts)}[name]


# ---- subordinate ids -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("subuid", "subgid", "expected"),
    [
        ("", "", (100000, 165535)),
        ("alice:100000:65536\n", "alice:100000:65536\n", (165536, 231071)),
        # The highest range in either file counts; the start stays on useradd's grid.
        ("a:100000:65536\nb:300000:1000\n", "a:100000:65536\n", (362144, 427679)),
        ("a:100000:65536\n", "a:100000:65536\ng:500000:65536\n", (624288, 689823)),
        ("# a comment\nbroken line\n", "", (100000, 165535)),
    ],
)
def test_proposed_subid_range_collides_with_no_one(
    subuid: str, subgid: str, expected: tuple[int, int]
) -> None:
    assert free_subid_range(subuid, subgid) == expected


def test_user_without_subids_is_given_the_usermod_command_with_a_free_range() -> None:
    facts = rootless(subuid_text="ci2:100000:65536\n", subgid_text="")
    subids = check(facts, "subuid/subgid")
    assert not subids.ok
    assert "/etc/subuid and /etc/subgid" in subids.detail
    assert "usermod --add-subuids 165536-231071 --add-subgids 165536-231071 ci" in subids.fix
    assert "podman system migrate" in subids.fix


def test_missing_newuidmap_says_which_package() -> None:
    helpers = check(rootless(uidmap_installed=False), "newuidmap/newgidmap")
    assert not helpers.ok and "apt-get install uidmap" in helpers.fix


# ---- network -----------------------------------------------------------------------------


def test_root_only_tun_is_explained_with_the_containers_conf_fix() -> None:
    network = check(rootless(), "rootless network")
    assert not network.ok
    assert "/dev/net/tun" in network.detail and "ci" in network.detail
    assert f'netns = "host"` under `[containers]` in {USER_CONTAINERS_CONF}' in network.fix
    assert "1024 or above" in network.fix  # the smoke test's port on the host's network


def test_missing_slirp4netns_is_named_with_its_package() -> None:
    network = check(rootless(tun_usable=True, slirp4netns_installed=False), "rootless network")
    assert not network.ok
    assert "slirp4netns is not installed" in network.detail
    assert "apt-get install slirp4netns" in network.fix


@pytest.mark.parametrize("netns", ["host", "none"])
def test_host_or_no_network_by_default_needs_no_slirp4netns(netns: str) -> None:
    conf = ContainersConf(runtime="runc", netns=netns, fix_path=USER_CONTAINERS_CONF)
    network = check(rootless(containers_conf=conf), "rootless network")
    assert network.ok and f'netns = "{netns}"' in network.detail


def test_usable_tun_and_slirp4netns_are_ok() -> None:
    assert check(rootless(tun_usable=True), "rootless network").ok


@pytest.mark.parametrize(
    ("engine", "facts", "expected"),
    [
        ("podman", rootless(), "none"),
        ("buildah", rootless(), "none"),
        ("podman", rootless(tun_usable=True), None),
        (
            "podman",
            rootless(containers_conf=ContainersConf(netns="host", fix_path=USER_CONTAINERS_CONF)),
            None,
        ),
        ("podman", rootless(euid=0, user="root"), None),
        ("docker", rootless(), None),
    ],
)
def test_doctor_probes_without_a_network_only_when_rootless_networking_cannot_start(
    engine: str, facts: HostFacts, expected: str | None
) -> None:
    assert probe_network(engine, facts) == expected  # type: ignore[arg-type]


def test_netns_is_read_from_containers_conf_and_later_files_win() -> None:
    conf = merge_containers_conf(
        [
            (Path("/etc/containers/containers.conf"), '[containers]\nnetns = "slirp4netns"\n'),
            (USER_CONTAINERS_CONF, '[containers]\nnetns = "host"\n'),
        ],
        fix_path=USER_CONTAINERS_CONF,
    )
    assert conf.netns == "host"


# ---- storage -------------------------------------------------------------------------------

FUSE_OVERLAY = StorageConf(
    driver="overlay",
    mount_program="/usr/bin/fuse-overlayfs",
    read_from=USER_STORAGE_CONF,
    fix_path=USER_STORAGE_CONF,
)


@pytest.mark.parametrize(
    ("facts", "ok", "in_detail", "in_fix"),
    [
        (rootless(), True, "driver vfs", ""),
        (rootless(storage=StorageConf(fix_path=USER_STORAGE_CONF)), True, "not set", ""),
        # Native rootless overlay needs Linux 5.13+.
        (
            rootless(storage=StorageConf(driver="overlay", fix_path=USER_STORAGE_CONF)),
            True,
            "driver overlay",
            "",
        ),
        (
            rootless(
                kernel_release="5.10.0-28-amd64",
                storage=StorageConf(driver="overlay", fix_path=USER_STORAGE_CONF),
            ),
            False,
            "needs 5.13+",
            'driver = "vfs"',
        ),
        # fuse-overlayfs cannot open a root-only /dev/fuse.
        (rootless(storage=FUSE_OVERLAY), False, "/dev/fuse", 'driver = "vfs"'),
        (rootless(storage=FUSE_OVERLAY, fuse_usable=True), True, "driver overlay", ""),
        (
            rootless(
                storage=StorageConf(
                    driver="overlay",
                    mount_program="/usr/bin/fuse-overlayfs",
                    mount_program_installed=False,
                    fix_path=USER_STORAGE_CONF,
                ),
                fuse_usable=True,
            ),
            False,
            "is not installed",
            'driver = "vfs"',
        ),
    ],
)
def test_storage_driver_is_judged_for_this_user_and_kernel(
    facts: HostFacts, ok: bool, in_detail: str, in_fix: str
) -> None:
    storage = check(facts, "storage driver")
    assert storage.ok is ok, storage
    assert in_detail in storage.detail
    assert in_fix in storage.fix
    if not ok:
        assert str(USER_STORAGE_CONF) in storage.fix
        assert "podman system reset" in storage.fix


def test_fuse_fix_offers_native_overlay_on_a_new_kernel() -> None:
    storage = check(rootless(storage=FUSE_OVERLAY), "storage driver")
    assert "delete the mount_program line" in storage.fix
    assert "6.1.0-18-amd64" in storage.fix


def test_storage_conf_driver_and_mount_program_are_read() -> None:
    text = (
        '[storage]\ndriver = "overlay"\n'
        '[storage.options.overlay]\nmount_program = "/usr/bin/fuse-overlayfs"\n'
    )
    conf = parse_storage_conf(text, read_from=USER_STORAGE_CONF, fix_path=USER_STORAGE_CONF)
    assert (conf.driver, conf.mount_program) == ("overlay", "/usr/bin/fuse-overlayfs")
    # $STORAGE_DRIVER wins over the file, as it does for containers/storage.
    overridden = parse_storage_conf(
        text, read_from=USER_STORAGE_CONF, fix_path=USER_STORAGE_CONF, driver_override="vfs"
    )
    assert overridden.driver == "vfs"


def test_unreadable_storage_conf_is_a_failed_check() -> None:
    conf = parse_storage_conf("[storage\n", read_from=USER_STORAGE_CONF, fix_path=USER_STORAGE_CONF)
    storage = check(rootless(storage=conf), "storage driver")
    assert not storage.ok and "not valid TOML" in storage.detail


def test_storage_conf_podman_reads(tmp_path: Path) -> None:
    home = tmp_path / "home"
    # No file anywhere under this home: the fix goes into the user's own file.
    found, fix = storage_conf_path(environ={}, euid=1000, home=home)
    assert fix == home / ".config/containers/storage.conf"
    assert found != fix
    (home / ".config/containers").mkdir(parents=True)
    fix.write_text('[storage]\ndriver = "vfs"\n')
    assert storage_conf_path(environ={}, euid=1000, home=home) == (fix, fix)
    only = tmp_path / "only.conf"
    assert storage_conf_path(
        environ={"CONTAINERS_STORAGE_CONF": str(only)}, euid=1000, home=home
    ) == (only, only)


@pytest.mark.parametrize(
    ("release", "expected"),
    [("6.1.0-18-amd64", (6, 1)), ("5.13.0", (5, 13)), ("6.18.44-fc-v669", (6, 18)), ("", None)],
)
def test_kernel_version_is_read_from_the_release(
    release: str, expected: tuple[int, int] | None
) -> None:
    assert kernel_version(release) == expected


def test_root_gets_none_of_these_checks() -> None:
    assert rootless_checks(rootless(euid=0, user="root")) == []
