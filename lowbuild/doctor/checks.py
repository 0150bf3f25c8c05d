"""The checks that turn host facts into findings: what a rootless user needs (subordinate
ids, uidmap, a network helper that can start, a storage driver that can mount), which
rlimits a rootful podman would ask for above the host's, and the fix text each one gives.

All are pure functions over `HostFacts`, tested table-driven without an engine.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lowbuild.doctor.facts import (
    ContainersConf,
    HostFacts,
    free_subid_range,
    has_subid_range,
    kernel_version,
)
from lowbuild.spec.platforms import QEMU_NAMES, architecture, native_platform

# podman asks the runtime for these when containers.conf sets no default_ulimits (root);
# above the host's hard limit the runtime's setrlimit fails
# (https://github.com/containers/podman/issues/7510).
PODMAN_DEFAULT_RLIMIT = 1048576
# Linux mounts overlayfs inside a user namespace since 5.13, so rootless podman can use the
# overlay driver without fuse-overlayfs from then on.
ROOTLESS_OVERLAY_KERNEL = (5, 13)
# containers.conf `netns` values that need no network helper (slirp4netns).
HOST_NETWORKS = ("host", "none")


@dataclass(frozen=True)
class Check:
    """One thing doctor looked at; `fix` says what to do when `ok` is False."""

    name: str
    ok: bool
    detail: str = ""
    fix: str = ""


# ---- rootless podman/buildah ---------------------------------------------------------------


def subid_fix(facts: HostFacts) -> str:
    """The command root runs to give this user subordinate ids that collide with nobody's."""
    first, last = free_subid_range(facts.subuid_text, facts.subgid_text)
    return (
        f"as root: `usermod --add-subuids {first}-{last} --add-subgids {first}-{last} "
        f"{facts.user}`, then as {facts.user}: `podman system migrate`"
    )


def network_fix(facts: HostFacts) -> str:
    """What a rootless user does when slirp4netns cannot give containers a network."""
    low = facts.unprivileged_port_start
    port_note = (
        f" (an HTTP smoke test's port must then be {low} or above: "
        "net.ipv4.ip_unprivileged_port_start)"
        if low
        else ""
    )
    return (
        f'put `netns = "host"` under `[containers]` in {facts.containers_conf.fix_path}: '
        "builds, runs and smoke tests then use the host's network"
        + port_note
        + " (images declaring `network: none` keep none); or, as root, let this user open "
        "/dev/net/tun"
        + ("" if facts.slirp4netns_installed else " and `apt-get install slirp4netns`")
    )


def rootless_network_works(facts: HostFacts) -> bool:
    """Whether a rootless podman's default network can start: slirp4netns on /dev/net/tun,
    unless containers.conf's `netns` makes the default the host's network (or none)."""
    if facts.containers_conf.netns in HOST_NETWORKS:
        return True
    return facts.tun_usable and facts.slirp4netns_installed


def storage_check(facts: HostFacts) -> Check:
    """Can containers/storage's configured driver work for this rootless user?"""
    conf = facts.storage
    where = f" (from {conf.read_from})" if conf.read_from else " (no storage.conf)"
    then_reset = (
        f", then as {facts.user}: `podman system reset` (it removes only this user's "
        "images and containers; their driver is recorded in the store)"
    )
    if conf.unreadable:
        return Check(
            "storage driver",
            False,
            f"{conf.read_from} is not valid TOML: {conf.unreadable}",
            f'fix {conf.read_from}; `driver = "vfs"` under `[storage]` always works',
        )
    kernel = kernel_version(facts.kernel_release)
    native_overlay = kernel is not None and kernel >= ROOTLESS_OVERLAY_KERNEL
    if conf.driver == "overlay" and conf.mount_program:
        program = conf.mount_program
        broken = ""
        if not conf.mount_program_installed:
            broken = f"its mount_program {program} is not installed"
        elif "fuse" in Path(program).name and not facts.fuse_usable:
            broken = f"its mount_program {program} needs /dev/fuse, which {facts.user} cannot open"
        if broken:
            alternative = (
                f"delete the mount_program line (kernel {facts.kernel_release} mounts overlay "
                "rootless by itself) or set"
                if native_overlay
                else "set"
            )
            return Check(
                "storage driver",
                False,
                f"driver overlay{where}: {broken}",
                f'{alternative} `driver = "vfs"` under `[storage]` in {conf.fix_path}' + then_reset,
            )
    elif conf.driver == "overlay" and not native_overlay:
        return Check(
            "storage driver",
            False,
            f"driver overlay{where} without a mount_program, and kernel "
            f"{facts.kernel_release or 'unknown'} cannot mount overlay rootless "
            f"(needs {'.'.join(map(str, ROOTLESS_OVERLAY_KERNEL))}+)",
            f'set `driver = "vfs"` under `[storage]` in {conf.fix_path}, or keep overlay '
            'with `mount_program = "/usr/bin/fuse-overlayfs"` under '
            "`[storage.options.overlay]` (needs a usable /dev/fuse)" + then_reset,
        )
    chosen = conf.driver or "not set: podman picks overlay or vfs itself"
    return Check("storage driver", True, f"driver {chosen}{where}")


def network_check(facts: HostFacts) -> Check:
    """Can this rootless user's containers and RUN steps get their default network?"""
    netns = facts.containers_conf.netns
    if netns in HOST_NETWORKS:
        return Check(
            "rootless network",
            True,
            f'containers.conf sets netns = "{netns}": containers use '
            + ("the host's network" if netns == "host" else "no network")
            + " by default (slirp4netns is not needed)",
        )
    problems = []
    if not facts.slirp4netns_installed:
        problems.append("slirp4netns is not installed")
    if not facts.tun_usable:
        problems.append(f"/dev/net/tun is missing or not readable+writable by {facts.user}")
    if not problems:
        return Check("rootless network", True, "slirp4netns and /dev/net/tun are usable")
    return Check(
        "rootless network",
        False,
        " and ".join(problems) + ", so podman's default rootless network (slirp4netns) "
        "cannot start: builds and runs on the default network fail",
        network_fix(facts),
    )


def subid_check(facts: HostFacts) -> Check:
    """Has this user subordinate uid and gid ranges in /etc/subuid and /etc/subgid?"""
    missing = [
        name
        for name, text in (("/etc/subuid", facts.subuid_text), ("/etc/subgid", facts.subgid_text))
        if not has_subid_range(text, user=facts.user, uid=facts.euid)
    ]
    return Check(
        "subuid/subgid",
        not missing,
        f"no range for user {facts.user} in {' and '.join(missing)}: images whose files "
        "belong to users other than root cannot be used"
        if missing
        else f"{facts.user} has subordinate uid and gid ranges",
        subid_fix(facts) if missing else "",
    )


def uidmap_check(facts: HostFacts) -> Check:
    """Are the setuid helpers that map subordinate ids installed?"""
    return Check(
        "newuidmap/newgidmap",
        facts.uidmap_installed,
        "installed"
        if facts.uidmap_installed
        else "not installed, so podman cannot map subordinate ids",
        "" if facts.uidmap_installed else "as root: `apt-get install uidmap`",
    )


def rootless_checks(facts: HostFacts) -> list[Check]:
    """What a non-root user needs for podman/buildah: subordinate ids and the helpers that
    map them, a network helper that can start, and a storage driver that can mount."""
    if not facts.rootless:
        return []
    return [subid_check(facts), uidmap_check(facts), network_check(facts), storage_check(facts)]


# ---- rlimits of a rootful podman/buildah ---------------------------------------------------


def rlimit_requested(conf: ContainersConf, kind: str) -> int:
    """What podman asks the runtime for as the hard RLIMIT_<kind> ('NOFILE'/'NPROC')."""
    for entry in conf.default_ulimits or ():
        name, _, values = entry.partition("=")
        if name.strip().upper() == kind:
            hard = values.rpartition(":")[2]
            if hard.lstrip("-").isdigit():
                return int(hard)
    return PODMAN_DEFAULT_RLIMIT


def rlimit_allowed(facts: HostFacts, kind: str) -> int | None:
    """The highest hard RLIMIT_<kind> a runtime started by podman can set; None = no limit."""
    if kind == "NOFILE":
        return facts.nofile_hard
    # podman itself runs with nproc lowered to kernel.pid_max (seen on 4.3), so the
    # runtime cannot grant more than that either.
    values = [v for v in (facts.nproc_hard, facts.pid_max) if v is not None]
    return min(values) if values else None


def rlimits_over_host(facts: HostFacts) -> list[str]:
    """RLIMIT kinds a rootful podman/buildah would ask for above what this host allows."""
    # Rootless podman lowers its defaults to the current hard limits
    # (https://github.com/containers/podman/pull/6004).
    if facts.rootless:
        return []
    over = []
    for kind in ("NOFILE", "NPROC"):
        allowed = rlimit_allowed(facts, kind)
        if allowed is not None and rlimit_requested(facts.containers_conf, kind) > allowed:
            over.append(kind)
    return over


def suggested_ulimits(facts: HostFacts) -> str:
    """A default_ulimits line that fits under this host's hard limits."""
    parts = []
    for kind in ("NOFILE", "NPROC"):
        allowed = rlimit_allowed(facts, kind)
        if allowed is not None:
            parts.append(f'"{kind.lower()}={allowed}:{allowed}"')
    return f"default_ulimits = [{', '.join(parts)}]"


# ---- emulation of foreign platforms ---------------------------------------------------------

BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")


def emulation_checks(
    platforms: Sequence[str],
    *,
    binfmt_dir: Path = BINFMT_DIR,
    native: str | None = None,
    rootless: bool = False,
) -> list[Check]:
    """Whether this host can run each foreign platform of `platforms` (a build's RUN
    steps and smoke tests need to): binfmt_misc mounted, and a qemu handler registered and
    enabled for the architecture with flag F (the interpreter opened at registration, so
    it works inside containers, whose root has no qemu). Read from `binfmt_dir`."""
    native = native or native_platform()
    foreign = [p for p in dict.fromkeys(platforms) if architecture(p) != architecture(native)]
    if not foreign:
        return []
    as_root = "as root: " if rootless else ""
    mount = "mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc"
    if not (binfmt_dir / "register").exists():
        return [
            Check(
                "binfmt_misc",
                False,
                f"{binfmt_dir} is not mounted: {', '.join(foreign)} cannot run here",
                f"{as_root}`apt-get install qemu-user-static binfmt-support && {mount}`"
                " (in a container: run it on the host, or with --privileged)",
            )
        ]
    checks = [Check("binfmt_misc", True, f"mounted at {binfmt_dir}")]
    for platform in foreign:
        qemu = QEMU_NAMES.get(architecture(platform), architecture(platform))
        handler = binfmt_dir / f"qemu-{qemu}"
        register = (
            f"{as_root}`apt-get install qemu-user-static binfmt-support && "
            f"update-binfmts --enable qemu-{qemu}` (or `cat /usr/lib/binfmt.d/qemu-{qemu}.conf "
            f"> {binfmt_dir}/register`)"
        )
        name = f"emulation {platform}"
        try:
            text = handler.read_text()
        except OSError:
            detail = f"no qemu-{qemu} handler in {binfmt_dir}: RUN steps and tests of "
            checks.append(
                Check(name, False, detail + f"{platform} fail (exec format error)", register)
            )
            continue
        fields = dict(line.split(" ", 1) for line in text.splitlines()[1:] if " " in line)
        interpreter, flags = fields.get("interpreter", "?"), fields.get("flags:", "")
        if text.splitlines()[:1] != ["enabled"]:
            fix = f"{as_root}`echo 1 > {handler}`"
            checks.append(Check(name, False, f"qemu-{qemu} is registered but disabled", fix))
        elif "F" not in flags:
            detail = (
                f"qemu-{qemu} ({interpreter}) has no F flag: containers, which have no "
                f"{interpreter}, cannot use it"
            )
            fix = f"{as_root}`echo -1 > {handler}` then register it again with flags F"
            checks.append(Check(name, False, detail, fix))
        else:
            checks.append(Check(name, True, f"qemu-{qemu} → {interpreter} (flags {flags})"))
    return checks
