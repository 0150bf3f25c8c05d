"""Classifying what an engine printed when a step failed.

`RULES` is a table of the causes known to break engines on Debian hosts (crun on hybrid
cgroups, podman's default rlimits above the host's hard limits, a missing buildx plugin,
dockerd not answering, rootless without subuid/subgid or /dev/net/tun, storage driver
trouble): each rule names the engines it concerns, tells
from the message (and the host facts) whether a failure shows its cause, and explains that
cause as a failed Check carrying the fix. `diagnose` applies the table in order.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from lowbuild.doctor.checks import (
    Check,
    network_fix,
    rlimit_allowed,
    rlimit_requested,
    rlimits_over_host,
    subid_fix,
    suggested_ulimits,
)
from lowbuild.doctor.facts import HostFacts, effective_runtime
from lowbuild.engines.base import EngineName

# Numbers runc prints in "error setting rlimit type N" (Linux RLIMIT_* on x86/arm).
RLIMIT_TYPES = {6: "NPROC", 7: "NOFILE"}

_RLIMIT_NAMED = re.compile(r"setrlimit\W+RLIMIT_(\w+)", re.IGNORECASE)
_RLIMIT_NUMBERED = re.compile(r"error setting rlimit type (\d+)", re.IGNORECASE)
_DAEMON_DOWN = re.compile(
    r"cannot connect to the docker daemon|is the docker daemon running|"
    r"dial unix [^:]+: connect: (no such file or directory|connection refused)",
    re.IGNORECASE,
)
_SOCKET_DENIED = re.compile(r"permission denied while trying to connect to the docker daemon")
_BUILDX_MISSING = re.compile(
    r"'buildx' is not a docker command|unknown command: docker buildx|unknown flag: --load",
    re.IGNORECASE,
)
_SUBID_MISSING = re.compile(
    r"no subuid ranges found|no subgid ranges found|cannot find mappings for user|"
    r"not enough available ids|newuidmap|newgidmap|insufficient uids or gids",
    re.IGNORECASE,
)
# podman run names /dev/net/tun; a podman 4.3 build only says its slirp4netns died
# (https://github.com/containers/podman/issues/16809).
_TUN = re.compile(
    r"/dev/net/tun|slirp4netns failed|failed to open tun|slirp4netns sync pipe|"
    r"could not find slirp4netns|slirp4netns.: executable file not found",
    re.IGNORECASE,
)
_STORAGE = re.compile(
    r"overlay is not supported|driver not supported|kernel does not support overlay|"
    r"error creating overlay mount|'overlay' is not supported over|"
    r"graph driver .* overwritten by graph driver|database .* does not match our|"
    r"mount_program|fuse-overlayfs|failed to open /dev/fuse|no space left on device",
    re.IGNORECASE,
)

# podman and buildah read containers.conf and storage.conf; docker and buildx talk to dockerd.
CONTAINERS_CONF_ENGINES: frozenset[EngineName] = frozenset({"podman", "buildah"})
DOCKERD_ENGINES: frozenset[EngineName] = frozenset({"docker", "buildx"})


@dataclass(frozen=True)
class Failure:
    """What a rule looks at: the engine whose step failed, the message it printed, and the
    facts of the host it ran on (they explain some messages and stand in for missing ones)."""

    engine: EngineName
    message: str
    facts: HostFacts


@dataclass(frozen=True)
class Rule:
    """One known cause: the engines it concerns, whether a failure `shows` it, and the
    failed Check that `explain`s it with its fix."""

    engines: frozenset[EngineName]
    shows: Callable[[Failure], bool]
    explain: Callable[[Failure], Check]


def _mentions(pattern: re.Pattern[str]) -> Callable[[Failure], bool]:
    """A rule condition: the engine's message matches `pattern`."""
    return lambda failure: pattern.search(failure.message) is not None


def _first_line_matching(text: str, pattern: re.Pattern[str]) -> str:
    for line in text.splitlines():
        if pattern.search(line):
            return line.strip()[:300]
    return ""


def _crun_on_v1_cgroups(failure: Failure) -> bool:
    """crun says so, or the host facts show crun on a tree that is not unified: crun
    refuses anything but a unified (v2) cgroup tree, and the run fails with it even when an
    earlier error (an rlimit) hides crun's own message
    (https://github.com/containers/podman/issues/3439)."""
    message, facts = failure.message, failure.facts
    crun_said = "cgroups in hybrid mode not supported" in message or (
        "crun" in message and "cgroup" in message.lower()
    )
    return crun_said or (effective_runtime(facts) == "crun" and facts.cgroup_layout != "unified")


def _crun_cause(failure: Failure) -> Check:
    facts = failure.facts
    return Check(
        "crun on hybrid/v1 cgroups",
        False,
        f"the OCI runtime is crun and this host's cgroups are {facts.cgroup_layout} "
        "(v1 controllers mounted); crun supports only a unified cgroup v2 tree",
        f'set `runtime = "runc"` under `[engine]` in {facts.containers_conf.fix_path} '
        "(install runc), or boot with cgroup v2 only (systemd.unified_cgroup_hierarchy=1)",
    )


def _refused_rlimits(failure: Failure) -> set[str]:
    """The RLIMIT kinds the runtime was (or will be) refused. The message names only the
    first refused limit (and crun's build errors name none), so the host facts add every
    limit that is over."""
    message = failure.message
    kinds = {m.upper() for m in _RLIMIT_NAMED.findall(message)}
    kinds |= {RLIMIT_TYPES.get(int(n), f"type {n}") for n in _RLIMIT_NUMBERED.findall(message)}
    return kinds | set(rlimits_over_host(failure.facts))


def _rlimit_cause(failure: Failure) -> Check:
    facts = failure.facts
    conf = facts.containers_conf
    described = ", ".join(
        f"RLIMIT_{kind} {rlimit_requested(conf, kind)} "
        f"(this host allows {rlimit_allowed(facts, kind) or 'unknown'})"
        for kind in sorted(_refused_rlimits(failure))
    )
    where = (
        "containers.conf's default_ulimits"
        if conf.default_ulimits is not None
        else "podman's defaults for root"
    )
    return Check(
        "rlimits above the host's hard limit",
        False,
        f"the runtime was refused {described}, asked for by {where}",
        f"put `{suggested_ulimits(facts)}` under `[containers]` in {conf.fix_path}",
    )


def _subid_cause(failure: Failure) -> Check:
    facts = failure.facts
    return Check(
        "subuid/subgid",
        False,
        f"user {facts.user} has no usable subordinate id range",
        subid_fix(facts),
    )


def _tun_cause(failure: Failure) -> Check:
    return Check(
        "rootless network",
        False,
        "podman's rootless network helper (slirp4netns) could not start (it needs /dev/net/tun)",
        network_fix(failure.facts),
    )


def _storage_cause(failure: Failure) -> Check:
    facts = failure.facts
    return Check(
        "storage driver",
        False,
        "containers/storage could not use its driver: "
        + _first_line_matching(failure.message, _STORAGE),
        f"set `driver` under `[storage]` in {facts.storage.fix_path} to one this "
        "kernel supports (`vfs` always works; rootless overlay needs kernel 5.13+ "
        "or fuse-overlayfs with a usable /dev/fuse as mount_program), then "
        "`podman system reset` if the old driver's data is in the way (it removes "
        "every image and container of " + ("this user" if facts.rootless else "root") + ")",
    )


def _dockerd_cause(failure: Failure) -> Check:
    facts = failure.facts
    where = facts.docker_host or "unix:///var/run/docker.sock"
    state = "does not exist" if not facts.docker_socket_exists else "refuses connections"
    return Check(
        "dockerd",
        False,
        f"dockerd is not answering at {where} (the socket {state})",
        "start it: `systemctl start docker`, or without systemd "
        "`setsid dockerd >/var/log/dockerd.log 2>&1 &`; "
        "check DOCKER_HOST if it points elsewhere",
    )


def _socket_cause(failure: Failure) -> Check:
    user = failure.facts.user
    return Check(
        "docker socket permission",
        False,
        f"user {user} may not use dockerd's socket",
        f"as root: `usermod -aG docker {user}` (then log in again), or run as root",
    )


def _buildx_cause(failure: Failure) -> Check:
    return Check(
        "buildx plugin",
        False,
        "the docker CLI has no buildx plugin",
        "install `docker-buildx` (Debian 13+) or put the buildx binary at "
        "/usr/libexec/docker/cli-plugins/docker-buildx",
    )


# In the order their checks are listed (the first one's fix heads the failed step).
RULES: tuple[Rule, ...] = (
    Rule(CONTAINERS_CONF_ENGINES, _crun_on_v1_cgroups, _crun_cause),
    Rule(CONTAINERS_CONF_ENGINES, lambda f: bool(_refused_rlimits(f)), _rlimit_cause),
    Rule(CONTAINERS_CONF_ENGINES, _mentions(_SUBID_MISSING), _subid_cause),
    Rule(
        CONTAINERS_CONF_ENGINES,
        lambda f: f.facts.rootless and _TUN.search(f.message) is not None,
        _tun_cause,
    ),
    Rule(CONTAINERS_CONF_ENGINES, _mentions(_STORAGE), _storage_cause),
    Rule(DOCKERD_ENGINES, _mentions(_DAEMON_DOWN), _dockerd_cause),
    Rule(DOCKERD_ENGINES, _mentions(_SOCKET_DENIED), _socket_cause),
    Rule(frozenset({"buildx"}), _mentions(_BUILDX_MISSING), _buildx_cause),
)


def diagnose(*, engine: EngineName, message: str, facts: HostFacts) -> list[Check]:
    """Every known cause found in the engine's `message` (plus the host facts that explain
    it), each as a failed Check with its fix. Empty when nothing known matches."""
    failure = Failure(engine, message, facts)
    return [
        rule.explain(failure) for rule in RULES if engine in rule.engines and rule.shows(failure)
    ]
