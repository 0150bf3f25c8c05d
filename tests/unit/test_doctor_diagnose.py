"""What `lowbuild doctor` concludes from an engine's error text and the host's facts."""

from __future__ import annotations

from pathlib import Path

import pytest

from lowbuild.doctor.checks import Check
from lowbuild.doctor.diagnosis import diagnose
from lowbuild.doctor.facts import ContainersConf, HostFacts
from lowbuild.doctor.probes import EngineReport, require_working
from lowbuild.errors import EngineUnavailable

FIX_PATH = Path("/etc/containers/containers.conf")


def host(**overrides: object) -> HostFacts:
    """This project's hosts as seen by root: hybrid cgroups, hard nofile 20000."""
    facts: dict[str, object] = {
        "euid": 0,
        "user": "root",
        "cgroup_layout": "hybrid",
        "nofile_hard": 20000,
        "nproc_hard": 96365,
        "pid_max": 32768,
        "containers_conf": ContainersConf(
            runtime="runc",
            default_ulimits=("nofile=20000:20000", "nproc=32768:32768"),
            fix_path=FIX_PATH,
        ),
        "installed_runtimes": frozenset({"runc", "crun"}),
    }
    facts.update(overrides)
    return HostFacts(**facts)  # type: ignore[arg-type]


def names(checks: list[Check]) -> list[str]:
    return [c.name for c in checks]


CRUN_HYBRID = (
    "Error: OCI runtime error: crun: cgroups in hybrid mode not supported, "
    "drop all controllers from cgroupv2"
)
CRUN_RLIMIT = (
    "Error: crun: setrlimit `RLIMIT_NOFILE`: Operation not permitted: OCI permission denied"
)
RUNC_RLIMIT_NPROC = (
    "Error: runc: runc create failed: unable to start container process: error during container "
    "init: error setting rlimits for ready process: error setting rlimit type 6: operation not "
    "permitted: OCI permission denied"
)
DOCKERD_GONE = (
    "Cannot connect to the Docker daemon at unix:///tmp/gone.sock. Is the docker daemon running?"
)
DOCKERD_REFUSED = (
    "error during connect: dial unix /var/run/docker.sock: connect: connection refused"
)
NO_BUILDX = "docker: 'buildx' is not a docker command.\nSee 'docker --help'"
NO_BUILDX_NEW_CLIENT = "unknown command: docker buildx\n\nRun 'docker --help' for more information"
NO_SUBUID = (
    'cannot find mappings for user builder: no subuid ranges found for user "builder" '
    "in /etc/subuid"
)
NO_TUN = 'Error: slirp4netns failed: "open("/dev/net/tun"): Permission denied"'
# What podman 4.3's build says when slirp4netns dies: no word of /dev/net/tun.
NO_TUN_BUILD = (
    'Error: building at STEP "RUN echo hi": failed to read from slirp4netns sync pipe: EOF'
)
NO_FUSE = (
    "fuse: failed to open /dev/fuse: Permission denied\n"
    "fuse-overlayfs: cannot mount: Permission denied\n: exit status 1"
)
UNMAPPED = (
    "Error: writing blob: adding layer: ApplyLayer exit status 1 stdout:  stderr: potentially "
    "insufficient UIDs or GIDs available in user namespace (requested 0:42 for /etc/shadow)"
)
OVERLAY = "Error: kernel does not support overlay fs: 'overlay' is not supported over extfs"


@pytest.mark.parametrize(
    ("engine", "message", "facts", "expected"),
    [
        ("podman", CRUN_HYBRID, host(), ["crun on hybrid/v1 cgroups"]),
        # crun stops at the rlimit before it reaches the cgroups: the host facts name both.
        (
            "podman",
            CRUN_RLIMIT,
            host(containers_conf=ContainersConf(runtime="crun", fix_path=FIX_PATH)),
            ["crun on hybrid/v1 cgroups", "rlimits above the host's hard limit"],
        ),
        (
            "buildah",
            RUNC_RLIMIT_NPROC,
            host(containers_conf=ContainersConf(runtime="runc", fix_path=FIX_PATH)),
            ["rlimits above the host's hard limit"],
        ),
        ("docker", DOCKERD_GONE, host(docker_socket_exists=False), ["dockerd"]),
        ("buildx", DOCKERD_REFUSED, host(), ["dockerd"]),
        ("buildx", NO_BUILDX, host(), ["buildx plugin"]),
        ("buildx", NO_BUILDX_NEW_CLIENT, host(), ["buildx plugin"]),
        ("podman", NO_SUBUID, host(euid=1000, user="builder"), ["subuid/subgid"]),
        ("podman", NO_TUN, host(euid=1000, user="builder"), ["rootless network"]),
        ("podman", NO_TUN_BUILD, host(euid=1000, user="builder"), ["rootless network"]),
        ("buildah", NO_FUSE, host(euid=1000, user="builder"), ["storage driver"]),
        ("podman", UNMAPPED, host(euid=1000, user="builder"), ["subuid/subgid"]),
        ("podman", OVERLAY, host(), ["storage driver"]),
        # runc with limits that fit: an unknown failure stays unexplained, not misexplained.
        ("podman", "Error: something nobody has seen before", host(), []),
        # docker's errors never blame podman's configuration, even on a crun host.
        (
            "docker",
            "Error response from daemon: something else",
            host(containers_conf=ContainersConf(runtime="crun", fix_path=FIX_PATH)),
            [],
        ),
    ],
)
def test_engine_error_is_explained(
    engine: str, message: str, facts: HostFacts, expected: list[str]
) -> None:
    assert names(diagnose(engine=engine, message=message, facts=facts)) == expected  # type: ignore[arg-type]


def test_crun_is_no_problem_on_a_cgroup_v2_host() -> None:
    facts = host(
        cgroup_layout="unified",
        containers_conf=ContainersConf(
            runtime="crun", default_ulimits=("nofile=20000:20000", "nproc=32768:32768")
        ),
    )
    assert diagnose(engine="podman", message="Error: exit status 1", facts=facts) == []


def test_crun_fix_names_the_file_podman_reads() -> None:
    conf = ContainersConf(
        runtime="crun",
        default_ulimits=("nofile=20000:20000", "nproc=32768:32768"),
        fix_path=Path("/tmp/my-containers.conf"),
    )
    (check,) = diagnose(engine="podman", message=CRUN_HYBRID, facts=host(containers_conf=conf))
    assert 'runtime = "runc"' in check.fix
    assert "/tmp/my-containers.conf" in check.fix
    assert "hybrid" in check.detail


def test_rlimit_fix_fits_under_the_host_limits() -> None:
    facts = host(containers_conf=ContainersConf(runtime="runc", fix_path=FIX_PATH))
    causes = diagnose(engine="podman", message=CRUN_RLIMIT, facts=facts)
    (rlimit,) = [c for c in causes if c.name.startswith("rlimits")]
    # nproc is capped by kernel.pid_max (32768), below the hard limit 96365.
    assert 'default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]' in rlimit.fix
    assert "RLIMIT_NOFILE 1048576 (this host allows 20000)" in rlimit.detail
    assert not rlimit.ok


def test_configured_ulimits_above_the_host_are_blamed_on_the_config() -> None:
    conf = ContainersConf(
        runtime="runc", default_ulimits=("nofile=65536:65536",), fix_path=FIX_PATH
    )
    causes = diagnose(engine="podman", message=RUNC_RLIMIT_NPROC, facts=host(containers_conf=conf))
    (rlimit,) = causes
    assert "RLIMIT_NOFILE 65536" in rlimit.detail
    assert "RLIMIT_NPROC 1048576" in rlimit.detail
    assert "default_ulimits" in rlimit.detail


def test_dockerd_fix_says_the_socket_is_missing() -> None:
    facts = host(docker_host="unix:///tmp/gone.sock", docker_socket_exists=False)
    (check,) = diagnose(engine="docker", message=DOCKERD_GONE, facts=facts)
    assert "unix:///tmp/gone.sock" in check.detail
    assert "does not exist" in check.detail
    assert "dockerd" in check.fix


def report(engine: str, *, ok: bool) -> EngineReport:
    return EngineReport(
        engine,  # type: ignore[arg-type]
        ok,
        "1.0",
        (Check("build", ok, "" if ok else "exit status 1", "" if ok else "fix it"),),
    )


def test_doctor_passes_when_one_engine_works() -> None:
    require_working([report("podman", ok=False), report("docker", ok=True)], asked=None)


def test_doctor_fails_with_exit_3_when_no_engine_works() -> None:
    with pytest.raises(EngineUnavailable) as raised:
        require_working([report("podman", ok=False), report("docker", ok=False)], asked=None)
    assert raised.value.exit_code == 3
    assert "podman: build: exit status 1" in str(raised.value)


def test_doctor_fails_when_the_asked_engine_does_not_work() -> None:
    with pytest.raises(EngineUnavailable, match="engine 'buildx' does not work"):
        require_working([report("buildx", ok=False)], asked="buildx")
