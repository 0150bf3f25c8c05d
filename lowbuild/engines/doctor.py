"""`lowbuild doctor`: can each engine build and run here, and if not, why and how to fix it.

For every engine: is it installed, what version, does a trivial build (`FROM` the local
busybox base image, one `RUN`) and a run of the result work? When a step fails, the
engine's own words are classified against what is known to break engines on Debian hosts
(crun on hybrid cgroups, podman's default rlimits above the host's hard limits, a missing
buildx plugin, dockerd not answering, rootless without subuid/subgid or /dev/net/tun,
storage driver trouble), and each diagnosis carries its fix.

The environment probes are pure functions over facts gathered once by `read_host_facts`,
so they are tested table-driven without an engine; only `examine_engine` runs engines.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import secrets
import shutil
import tempfile
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from rich.table import Table
from rich.text import Text

from lowbuild.engines.base import ENGINE_NAMES, OWNED_LABEL, Engine, EngineName
from lowbuild.engines.commands import run_command
from lowbuild.engines.detect import REQUIRED_BINARIES, check_version, engine_by_name
from lowbuild.errors import EngineError, EngineUnavailable, LowbuildError

PROBE_BASE_IMAGE = "localhost/lowbuild/busybox:latest"
PROVISION_FIX = "as root: `make provision` (or `bash scripts/provision.sh`)"
PROBE_MARKER = "lowbuild-doctor-ok"
PROBE_FILE = "/lowbuild-doctor"

# podman asks the runtime for these when containers.conf sets no default_ulimits (root).
PODMAN_DEFAULT_RLIMIT = 1048576
# Numbers runc prints in "error setting rlimit type N" (Linux RLIMIT_* on x86/arm).
RLIMIT_TYPES = {6: "NPROC", 7: "NOFILE"}

SYSTEM_CONTAINERS_CONFS = (
    Path("/usr/share/containers/containers.conf"),
    Path("/etc/containers/containers.conf"),
)
# containers/storage reads the first of these that exists (rootless: after the user's own).
SYSTEM_STORAGE_CONFS = (
    Path("/etc/containers/storage.conf"),
    Path("/usr/share/containers/storage.conf"),
)
# Linux mounts overlayfs inside a user namespace since 5.13, so rootless podman can use the
# overlay driver without fuse-overlayfs from then on.
ROOTLESS_OVERLAY_KERNEL = (5, 13)
# Where subordinate id ranges usually start, and the size podman's docs ask for.
SUBID_FIRST = 100000
SUBID_COUNT = 65536

CgroupLayout = Literal["unified", "hybrid", "legacy"]


# ---- what doctor reports ---------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    """One thing doctor looked at; `fix` says what to do when `ok` is False."""

    name: str
    ok: bool
    detail: str = ""
    fix: str = ""


@dataclass(frozen=True)
class EngineReport:
    """Everything doctor found for one engine; `ok` means a build and a run both worked."""

    engine: EngineName
    ok: bool
    version: str | None
    checks: tuple[Check, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "engine": self.engine,
            "ok": self.ok,
            "version": self.version,
            "checks": [
                {"name": c.name, "ok": c.ok, "detail": c.detail, "fix": c.fix} for c in self.checks
            ],
        }


# ---- facts about this host (gathered once, then only read) -------------------------------


@dataclass(frozen=True)
class ContainersConf:
    """The keys of containers.conf doctor cares about, merged as podman/buildah merge them."""

    runtime: str | None = None
    default_ulimits: tuple[str, ...] | None = None
    # The default network mode of containers and RUN steps ("host", "none", "slirp4netns"…).
    netns: str | None = None
    read_from: tuple[Path, ...] = ()
    # Where a fix belongs: $CONTAINERS_CONF when set (podman then reads only it), else the
    # system file for root and the user's own file for rootless.
    fix_path: Path = Path("/etc/containers/containers.conf")
    unreadable: tuple[str, ...] = ()


@dataclass(frozen=True)
class StorageConf:
    """The containers/storage settings doctor checks for a rootless user."""

    driver: str | None = None
    mount_program: str | None = None
    mount_program_installed: bool = True
    read_from: Path | None = None
    # Where a fix belongs: $CONTAINERS_STORAGE_CONF when set, else the user's own file.
    fix_path: Path = Path("/etc/containers/storage.conf")
    unreadable: str = ""


@dataclass(frozen=True)
class HostFacts:
    """What the diagnoses need to know about this host."""

    euid: int
    user: str
    cgroup_layout: CgroupLayout
    nofile_hard: int | None  # None: unlimited
    nproc_hard: int | None
    pid_max: int | None
    containers_conf: ContainersConf = field(default_factory=ContainersConf)
    installed_runtimes: frozenset[str] = frozenset()
    subuid_text: str = ""
    subgid_text: str = ""
    tun_usable: bool = True
    docker_host: str | None = None
    docker_socket_exists: bool = True
    # Rootless podman/buildah: the helpers they start, /dev/fuse, the kernel, storage.conf.
    slirp4netns_installed: bool = True
    uidmap_installed: bool = True
    fuse_usable: bool = True
    kernel_release: str = ""
    unprivileged_port_start: int | None = None
    storage: StorageConf = field(default_factory=StorageConf)

    @property
    def rootless(self) -> bool:
        return self.euid != 0


def cgroup_layout(cgroup_root: Path) -> CgroupLayout:
    """unified (v2 only), hybrid (v1 controllers plus a v2 tree under `unified/`) or legacy."""
    if (cgroup_root / "cgroup.controllers").exists():
        return "unified"
    if (cgroup_root / "unified").is_dir():
        return "hybrid"
    return "legacy"


def merge_containers_conf(
    documents: Iterable[tuple[Path, str]], *, fix_path: Path
) -> ContainersConf:
    """Merge containers.conf texts in reading order (later files win, key by key)."""
    runtime: str | None = None
    ulimits: tuple[str, ...] | None = None
    netns: str | None = None
    read_from: list[Path] = []
    unreadable: list[str] = []
    for path, text in documents:
        try:
            document = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            unreadable.append(f"{path}: {exc}")
            continue
        read_from.append(path)
        engine_table = document.get("engine") or {}
        if isinstance(engine_table.get("runtime"), str):
            runtime = engine_table["runtime"]
        containers_table = document.get("containers") or {}
        if isinstance(containers_table.get("default_ulimits"), list):
            ulimits = tuple(str(u) for u in containers_table["default_ulimits"])
        if isinstance(containers_table.get("netns"), str):
            netns = containers_table["netns"]
    return ContainersConf(
        runtime=runtime,
        default_ulimits=ulimits,
        netns=netns,
        read_from=tuple(read_from),
        fix_path=fix_path,
        unreadable=tuple(unreadable),
    )


def containers_conf_paths(
    *, environ: Mapping[str, str], euid: int, home: Path
) -> tuple[list[Path], Path]:
    """The files podman/buildah read, in order, and the file a fix should go into.

    $CONTAINERS_CONF replaces every other file; $CONTAINERS_CONF_OVERRIDE is read last.
    """
    user_conf = home / ".config/containers/containers.conf"
    if environ.get("CONTAINERS_CONF"):
        paths = [Path(environ["CONTAINERS_CONF"])]
        fix_path = paths[0]
    else:
        paths = list(SYSTEM_CONTAINERS_CONFS)
        fix_path = SYSTEM_CONTAINERS_CONFS[1]
        if euid != 0:
            paths.append(user_conf)
            fix_path = user_conf
    if environ.get("CONTAINERS_CONF_OVERRIDE"):
        paths.append(Path(environ["CONTAINERS_CONF_OVERRIDE"]))
    return paths, fix_path


def storage_conf_path(
    *, environ: Mapping[str, str], euid: int, home: Path
) -> tuple[Path | None, Path]:
    """The storage.conf containers/storage reads (None: none exists, built-in defaults) and
    the file a fix should go into. $CONTAINERS_STORAGE_CONF replaces every other file; a
    rootless user's own file comes before the system ones."""
    if environ.get("CONTAINERS_STORAGE_CONF"):
        path = Path(environ["CONTAINERS_STORAGE_CONF"])
        return path, path
    user_conf = home / ".config/containers/storage.conf"
    candidates = ([user_conf] if euid != 0 else []) + list(SYSTEM_STORAGE_CONFS)
    found = next((c for c in candidates if c.is_file()), None)
    return found, user_conf if euid != 0 else SYSTEM_STORAGE_CONFS[0]


def parse_storage_conf(
    text: str, *, read_from: Path | None, fix_path: Path, driver_override: str | None = None
) -> StorageConf:
    """The driver and overlay mount_program of a storage.conf text ($STORAGE_DRIVER, which
    containers/storage honours, wins over the file's driver)."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        return StorageConf(
            driver=driver_override, read_from=read_from, fix_path=fix_path, unreadable=str(exc)
        )
    storage = document.get("storage") or {}
    options = storage.get("options") or {}
    overlay = options.get("overlay") or {}
    # Older files put mount_program straight under [storage.options].
    program = overlay.get("mount_program") or options.get("mount_program")
    driver = driver_override or storage.get("driver") or None
    return StorageConf(
        driver=str(driver) if driver else None,
        mount_program=str(program) if program else None,
        read_from=read_from,
        fix_path=fix_path,
    )


def kernel_version(release: str) -> tuple[int, int] | None:
    """(major, minor) of a kernel release string like "6.1.0-18-amd64"; None if unreadable."""
    found = re.match(r"(\d+)\.(\d+)", release)
    return (int(found.group(1)), int(found.group(2))) if found else None


def effective_runtime(facts: HostFacts) -> str:
    """The OCI runtime podman/buildah will use: the configured one, else their default
    (crun when installed, runc otherwise)."""
    if facts.containers_conf.runtime:
        return facts.containers_conf.runtime
    return "crun" if "crun" in facts.installed_runtimes or not facts.installed_runtimes else "runc"


def _read_limit(text: str, label: str) -> int | None:
    """The hard value of `label` in /proc/self/limits text; None when unlimited/absent."""
    for line in text.splitlines():
        if line.startswith(label):
            hard = line[len(label) :].split()[1]
            return None if hard == "unlimited" else int(hard)
    return None


def parse_proc_limits(text: str) -> tuple[int | None, int | None]:
    """(hard RLIMIT_NOFILE, hard RLIMIT_NPROC) from /proc/self/limits; None = unlimited."""
    return _read_limit(text, "Max open files"), _read_limit(text, "Max processes")


def docker_socket_path(docker_host: str | None) -> Path | None:
    """The unix socket the docker CLI will dial (None when DOCKER_HOST is not a unix one)."""
    if not docker_host:
        return Path("/var/run/docker.sock")
    if docker_host.startswith("unix://"):
        return Path(docker_host.removeprefix("unix://"))
    return None


def _read_text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def read_host_facts(environ: Mapping[str, str] | None = None) -> HostFacts:
    """Gather the facts about this host (files under /proc, /sys, /etc; no engine runs)."""
    env = os.environ if environ is None else environ
    euid = os.geteuid()
    try:
        account = pwd.getpwuid(euid)
        user, home = account.pw_name, Path(account.pw_dir)
    except KeyError:  # a uid without a passwd entry (seen in CI containers)
        user, home = str(euid), Path(env.get("HOME", "/"))
    paths, fix_path = containers_conf_paths(environ=env, euid=euid, home=home)
    conf = merge_containers_conf(
        ((p, p.read_text(errors="replace")) for p in paths if p.is_file()), fix_path=fix_path
    )
    nofile, nproc = parse_proc_limits(_read_text(Path("/proc/self/limits")))
    pid_max_text = _read_text(Path("/proc/sys/kernel/pid_max")).strip()
    tun = Path("/dev/net/tun")
    fuse = Path("/dev/fuse")
    socket = docker_socket_path(env.get("DOCKER_HOST"))
    storage_path, storage_fix = storage_conf_path(environ=env, euid=euid, home=home)
    storage = parse_storage_conf(
        _read_text(storage_path) if storage_path else "",
        read_from=storage_path,
        fix_path=storage_fix,
        driver_override=env.get("STORAGE_DRIVER") or None,
    )
    if storage.mount_program:
        installed = os.access(storage.mount_program, os.X_OK) or bool(
            shutil.which(storage.mount_program)
        )
        storage = replace(storage, mount_program_installed=installed)
    port_start = _read_text(Path("/proc/sys/net/ipv4/ip_unprivileged_port_start")).strip()
    return HostFacts(
        euid=euid,
        user=user,
        cgroup_layout=cgroup_layout(Path("/sys/fs/cgroup")),
        nofile_hard=nofile,
        nproc_hard=nproc,
        pid_max=int(pid_max_text) if pid_max_text.isdigit() else None,
        containers_conf=conf,
        installed_runtimes=frozenset(r for r in ("crun", "runc") if shutil.which(r)),
        subuid_text=_read_text(Path("/etc/subuid")),
        subgid_text=_read_text(Path("/etc/subgid")),
        tun_usable=tun.exists() and os.access(tun, os.R_OK | os.W_OK),
        docker_host=env.get("DOCKER_HOST"),
        docker_socket_exists=socket is None or socket.exists(),
        slirp4netns_installed=shutil.which("slirp4netns") is not None,
        uidmap_installed=all(shutil.which(b) for b in ("newuidmap", "newgidmap")),
        fuse_usable=fuse.exists() and os.access(fuse, os.R_OK | os.W_OK),
        kernel_release=os.uname().release,
        unprivileged_port_start=int(port_start) if port_start.isdigit() else None,
        storage=storage,
    )


# ---- pure environment checks -------------------------------------------------------------


def has_subid_range(text: str, *, user: str, uid: int) -> bool:
    """Whether /etc/subuid (or subgid) text gives `user` (by name or uid) a non-empty range."""
    for line in text.splitlines():
        parts = line.strip().split(":")
        if len(parts) == 3 and parts[0] in (user, str(uid)) and parts[2].isdigit():
            return int(parts[2]) > 0
    return False


def free_subid_range(*texts: str, count: int = SUBID_COUNT) -> tuple[int, int]:
    """(first, last) of a range of `count` ids that overlaps no range in the given
    /etc/subuid and /etc/subgid texts: the first slot of the grid SUBID_FIRST + k * count
    (where useradd puts them) after the highest range in use."""
    end = SUBID_FIRST
    for text in texts:
        for line in text.splitlines():
            parts = line.strip().split(":")
            if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
                end = max(end, int(parts[1]) + int(parts[2]))
    first = SUBID_FIRST + -(-(end - SUBID_FIRST) // count) * count
    return first, first + count - 1


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


HOST_NETWORKS = ("host", "none")


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


def rootless_checks(facts: HostFacts) -> list[Check]:
    """What a non-root user needs for podman/buildah: subordinate ids and the helpers that
    map them, a network helper that can start, and a storage driver that can mount."""
    if not facts.rootless:
        return []
    checks = []
    missing = [
        name
        for name, text in (("/etc/subuid", facts.subuid_text), ("/etc/subgid", facts.subgid_text))
        if not has_subid_range(text, user=facts.user, uid=facts.euid)
    ]
    checks.append(
        Check(
            "subuid/subgid",
            not missing,
            f"no range for user {facts.user} in {' and '.join(missing)}: images whose files "
            "belong to users other than root cannot be used"
            if missing
            else f"{facts.user} has subordinate uid and gid ranges",
            subid_fix(facts) if missing else "",
        )
    )
    checks.append(
        Check(
            "newuidmap/newgidmap",
            facts.uidmap_installed,
            "installed"
            if facts.uidmap_installed
            else "not installed, so podman cannot map subordinate ids",
            "" if facts.uidmap_installed else "as root: `apt-get install uidmap`",
        )
    )
    checks.append(network_check(facts))
    checks.append(storage_check(facts))
    return checks


def suggested_ulimits(facts: HostFacts) -> str:
    """A default_ulimits line that fits under this host's hard limits."""
    parts = []
    for kind in ("NOFILE", "NPROC"):
        allowed = rlimit_allowed(facts, kind)
        if allowed is not None:
            parts.append(f'"{kind.lower()}={allowed}:{allowed}"')
    return f"default_ulimits = [{', '.join(parts)}]"


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
    if facts.rootless:  # rootless podman lowers its defaults to the current hard limits
        return []
    over = []
    for kind in ("NOFILE", "NPROC"):
        allowed = rlimit_allowed(facts, kind)
        if allowed is not None and rlimit_requested(facts.containers_conf, kind) > allowed:
            over.append(kind)
    return over


# ---- classifying what an engine said -------------------------------------------------------

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
_IMAGE_MISSING = re.compile(
    r"image not known|no such image|pull access denied|repository does not exist|"
    r"failed to resolve source metadata|manifest unknown|"
    r"initializing source docker://localhost/",
    re.IGNORECASE,
)
_SUBID_MISSING = re.compile(
    r"no subuid ranges found|no subgid ranges found|cannot find mappings for user|"
    r"not enough available ids|newuidmap|newgidmap|insufficient uids or gids",
    re.IGNORECASE,
)
# podman run names /dev/net/tun; a podman 4.3 build only says its slirp4netns died.
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


def diagnose(*, engine: EngineName, said: str, facts: HostFacts) -> list[Check]:
    """Every known cause found in what the engine `said` (plus the host facts that explain
    it), each as a failed Check with its fix. Empty when nothing known matches."""
    found: list[Check] = []
    conf = facts.containers_conf
    uses_containers_conf = engine in ("podman", "buildah")

    if uses_containers_conf:
        runtime = effective_runtime(facts)
        crun_said = "cgroups in hybrid mode not supported" in said or (
            "crun" in said and "cgroup" in said.lower()
        )
        # crun refuses anything but a unified (v2) cgroup tree; the run fails with it even
        # when an earlier error (an rlimit) hides its own message.
        if crun_said or (runtime == "crun" and facts.cgroup_layout != "unified"):
            found.append(
                Check(
                    "crun on hybrid/v1 cgroups",
                    False,
                    f"the OCI runtime is crun and this host's cgroups are {facts.cgroup_layout} "
                    "(v1 controllers mounted); crun supports only a unified cgroup v2 tree",
                    f'set `runtime = "runc"` under `[engine]` in {conf.fix_path} (install runc), '
                    "or boot with cgroup v2 only (systemd.unified_cgroup_hierarchy=1); "
                    + PROVISION_FIX
                    + " does the former",
                )
            )
        kinds = {m.upper() for m in _RLIMIT_NAMED.findall(said)}
        kinds |= {RLIMIT_TYPES.get(int(n), f"type {n}") for n in _RLIMIT_NUMBERED.findall(said)}
        # The message names only the first refused limit (and crun's build errors name
        # none), so the host facts add every limit that is over.
        kinds |= set(rlimits_over_host(facts))
        if kinds:
            described = ", ".join(
                f"RLIMIT_{kind} {rlimit_requested(conf, kind)} "
                f"(this host allows {rlimit_allowed(facts, kind) or 'unknown'})"
                for kind in sorted(kinds)
            )
            where = (
                "containers.conf's default_ulimits"
                if conf.default_ulimits is not None
                else "podman's defaults for root"
            )
            found.append(
                Check(
                    "rlimits above the host's hard limit",
                    False,
                    f"the runtime was refused {described}, asked for by {where}",
                    f"put `{suggested_ulimits(facts)}` under `[containers]` in {conf.fix_path}; "
                    + PROVISION_FIX
                    + " writes it",
                )
            )
        if _SUBID_MISSING.search(said):
            found.append(
                Check(
                    "subuid/subgid",
                    False,
                    f"user {facts.user} has no usable subordinate id range",
                    subid_fix(facts),
                )
            )
        if facts.rootless and _TUN.search(said):
            found.append(
                Check(
                    "rootless network",
                    False,
                    "podman's rootless network helper (slirp4netns) could not start "
                    "(it needs /dev/net/tun)",
                    network_fix(facts),
                )
            )
        if _STORAGE.search(said):
            found.append(
                Check(
                    "storage driver",
                    False,
                    "containers/storage could not use its driver: "
                    + _first_line_matching(said, _STORAGE),
                    f"set `driver` under `[storage]` in {facts.storage.fix_path} to one this "
                    "kernel supports (`vfs` always works; rootless overlay needs kernel 5.13+ "
                    "or fuse-overlayfs with a usable /dev/fuse as mount_program), then "
                    "`podman system reset` if the old driver's data is in the way (it removes "
                    "every image and container of "
                    + ("this user" if facts.rootless else "root")
                    + ")",
                )
            )
    else:
        if _DAEMON_DOWN.search(said):
            where = facts.docker_host or "unix:///var/run/docker.sock"
            state = "does not exist" if not facts.docker_socket_exists else "refuses connections"
            found.append(
                Check(
                    "dockerd",
                    False,
                    f"dockerd is not answering at {where} (the socket {state})",
                    "start it: `systemctl start docker`, or without systemd "
                    "`setsid dockerd >/var/log/dockerd.log 2>&1 &`; "
                    + PROVISION_FIX
                    + " starts it; check DOCKER_HOST if it points elsewhere",
                )
            )
        if _SOCKET_DENIED.search(said):
            found.append(
                Check(
                    "docker socket permission",
                    False,
                    f"user {facts.user} may not use dockerd's socket",
                    f"as root: `usermod -aG docker {facts.user}` (then log in again), or run as root",
                )
            )
        if engine == "buildx" and _BUILDX_MISSING.search(said):
            found.append(
                Check(
                    "buildx plugin",
                    False,
                    "the docker CLI has no buildx plugin",
                    "install `docker-buildx` (Debian 13+) or put the buildx binary at "
                    "/usr/libexec/docker/cli-plugins/docker-buildx; " + PROVISION_FIX + " does",
                )
            )
    if _IMAGE_MISSING.search(said) and PROBE_BASE_IMAGE.split(":")[0] in said:
        found.append(base_image_missing_check(engine))
    return found


def base_image_missing_check(engine: EngineName) -> Check:
    return Check(
        "base image",
        False,
        f"{PROBE_BASE_IMAGE} is not in {engine}'s image store (lowbuild never pulls it)",
        f"{PROVISION_FIX} imports it into podman/buildah storage and dockerd",
    )


def _first_line_matching(text: str, pattern: re.Pattern[str]) -> str:
    for line in text.splitlines():
        if pattern.search(line):
            return line.strip()[:300]
    return ""


def _tail(text: str, lines: int = 3) -> str:
    kept = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return " | ".join(kept[-lines:])[-600:]


# ---- running the engines ---------------------------------------------------------------------

PROBE_DOCKERFILE = f"FROM {PROBE_BASE_IMAGE}\nRUN echo {PROBE_MARKER} > {PROBE_FILE}\n"


@dataclass
class _Findings:
    """Checks collected while examining one engine (mutable only while it is being built)."""

    engine: EngineName
    facts: HostFacts
    checks: list[Check] = field(default_factory=list)

    def passed(self, name: str, detail: str) -> None:
        self.checks.append(Check(name, True, detail))

    def failed(self, name: str, said: str, *, fallback_fix: str) -> None:
        """A failed step: its last words, the fix of the first known cause (or the
        fallback), then one check per cause found."""
        causes = diagnose(engine=self.engine, said=said, facts=self.facts)
        fix = causes[0].fix if causes else fallback_fix
        self.checks.append(Check(name, False, _tail(said), fix))
        known = {c.name for c in self.checks}
        self.checks += [c for c in causes if c.name not in known]

    def report(self, *, ok: bool, version: str | None) -> EngineReport:
        return EngineReport(self.engine, ok, version, tuple(self.checks))


def _said(exc: LowbuildError) -> str:
    return exc.stderr if isinstance(exc, EngineError) else str(exc)


INSTALL_HINTS: dict[EngineName, str] = {
    "podman": "`apt-get install podman runc`",
    "docker": "`apt-get install docker.io`",
    "buildx": "`apt-get install docker.io` and the buildx plugin",
    "buildah": "`apt-get install buildah podman` (lowbuild runs buildah's images with podman)",
}


def examine_engine(
    name: EngineName,
    *,
    facts: HostFacts,
    make_engine: Callable[[str], Engine] = engine_by_name,
) -> EngineReport:
    """Check `name` step by step (installed, version, base image, build, run); stop at the
    first failing step, since every later one depends on it."""
    findings = _Findings(name, facts)
    missing = [b for b in REQUIRED_BINARIES[name] if shutil.which(b) is None]
    if missing:
        findings.checks.append(
            Check(
                "installed",
                False,
                f"{' and '.join(missing)} not found on PATH",
                f"{INSTALL_HINTS[name]}; {PROVISION_FIX} installs every engine",
            )
        )
        return findings.report(ok=False, version=None)
    findings.passed("installed", ", ".join(str(shutil.which(b)) for b in REQUIRED_BINARIES[name]))
    if name in ("podman", "buildah"):
        findings.checks += rootless_checks(facts)

    engine = make_engine(name)
    try:
        version = engine.version()
    except LowbuildError as exc:
        findings.failed("version", _said(exc), fallback_fix=PROVISION_FIX)
        return findings.report(ok=False, version=None)
    too_old = check_version(name, version)
    findings.checks.append(
        Check("version", not too_old, too_old or version, "upgrade it" if too_old else "")
    )
    if too_old:
        return findings.report(ok=False, version=version)
    if name == "buildx" and not _daemon_answers(findings):
        return findings.report(ok=False, version=version)

    try:
        base = engine.inspect_image(PROBE_BASE_IMAGE)
    except LowbuildError as exc:
        findings.failed("base image", _said(exc), fallback_fix=PROVISION_FIX)
        return findings.report(ok=False, version=version)
    if base is None:
        findings.checks.append(base_image_missing_check(name))
        return findings.report(ok=False, version=version)
    findings.passed("base image", f"{PROBE_BASE_IMAGE} ({base.id[:19]})")

    ok = _build_and_run(engine, findings, network=probe_network(name, facts))
    return findings.report(ok=ok, version=version)


def probe_network(name: EngineName, facts: HostFacts) -> str | None:
    """The network doctor's probe build and run use: the engine's default, except for a
    rootless podman/buildah whose default network cannot start (the "rootless network" check
    says so). Then `none`, what such a user's builds run with, so that the probe still
    shows whether building and running work at all."""
    if name in ("podman", "buildah") and facts.rootless and not rootless_network_works(facts):
        return "none"
    return None


def _daemon_answers(findings: _Findings) -> bool:
    """buildx's version is the plugin's; whether dockerd answers is asked separately."""
    try:
        server = run_command(
            ["docker", "version", "--format", "{{.Server.Version}}"], timeout=30
        ).stdout.strip()
    except LowbuildError as exc:
        findings.failed("dockerd", _said(exc), fallback_fix=PROVISION_FIX)
        return False
    findings.passed("dockerd", f"dockerd {server}")
    return True


def _build_and_run(engine: Engine, findings: _Findings, *, network: str | None) -> bool:
    tag = f"localhost/lowbuild/doctor-probe:{findings.engine}-{secrets.token_hex(4)}"
    on = f" (with --network {network})" if network else ""
    with tempfile.TemporaryDirectory(prefix="lowbuild-doctor-") as scratch:
        context = Path(scratch)
        (context / "Dockerfile").write_text(PROBE_DOCKERFILE)
        try:
            image_id = engine.build(
                context=context, tags=[tag], labels={OWNED_LABEL: "true"}, network=network
            )
        except LowbuildError as exc:
            findings.failed("build", _said(exc), fallback_fix=_generic_fix(findings.engine))
            return False
    try:
        findings.passed("build", f"a RUN on {PROBE_BASE_IMAGE} built {image_id[:19]}{on}")
        try:
            code, output = engine.run_once(image=tag, command=["cat", PROBE_FILE], network=network)
        except LowbuildError as exc:
            findings.failed("run", _said(exc), fallback_fix=_generic_fix(findings.engine))
            return False
        if code != 0 or PROBE_MARKER not in output:
            findings.checks.append(
                Check(
                    "run",
                    False,
                    f"`cat {PROBE_FILE}` exited {code} and printed {_tail(output)!r}, "
                    f"expected {PROBE_MARKER!r}",
                    _generic_fix(findings.engine),
                )
            )
            return False
        findings.passed("run", f"`cat {PROBE_FILE}` printed what the RUN step wrote{on}")
        return True
    finally:
        # A leftover probe tag is harmless; the report matters more than its removal.
        with contextlib.suppress(LowbuildError):
            engine.remove_image(tag, force=True)


def _generic_fix(engine: EngineName) -> str:
    what = "dockerd's log" if engine in ("docker", "buildx") else "`podman info`"
    return f"no known cause matched; read the engine's message above and {what}"


def examine_engines(
    engines: Sequence[EngineName] = ENGINE_NAMES,
    *,
    facts: HostFacts | None = None,
    make_engine: Callable[[str], Engine] = engine_by_name,
) -> list[EngineReport]:
    """One report per engine, in the order asked."""
    host = facts or read_host_facts()
    return [examine_engine(name, facts=host, make_engine=make_engine) for name in engines]


def require_working(reports: Sequence[EngineReport], *, asked: str | None) -> None:
    """Raise EngineUnavailable when the asked engine (or, if none was asked, every engine)
    does not work; the message names each failed engine's first failing check."""
    if any(r.ok for r in reports):
        return
    reasons = []
    for report in reports:
        first = next((c for c in report.checks if not c.ok), None)
        reasons.append(
            f"{report.engine}: {first.name + ': ' + first.detail if first else 'not ok'}"
        )
    subject = f"engine {asked!r} does not work here" if asked else "no engine works here"
    raise EngineUnavailable(subject + ":\n  " + "\n  ".join(reasons))


def reports_table(reports: Sequence[EngineReport]) -> Table:
    """The rich table `lowbuild doctor` prints: one block of rows per engine."""
    table = Table(title="lowbuild doctor")
    table.add_column("engine", style="bold")
    table.add_column("check")
    table.add_column("ok")
    table.add_column("detail", overflow="fold")
    table.add_column("fix", overflow="fold")
    for report in reports:
        table.add_section()
        verdict = Text("works", style="green") if report.ok else Text("BROKEN", style="bold red")
        table.add_row(report.engine, Text(report.version or "-"), verdict, "", "")
        for check in report.checks:
            mark = Text("ok", style="green") if check.ok else Text("FAIL", style="red")
            table.add_row("", check.name, mark, Text(check.detail), Text(check.fix))
    return table
