"""Facts about this host that decide whether an engine can work: the user, the cgroup
layout, hard rlimits, containers.conf and storage.conf, subordinate ids, the kernel, and the
devices and helpers rootless podman/buildah need.

`read_host_facts` gathers them once from files under /proc, /sys and /etc (no engine runs);
everything else here is a pure function over file texts, tested without the host.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

SYSTEM_CONTAINERS_CONFS = (
    Path("/usr/share/containers/containers.conf"),
    Path("/etc/containers/containers.conf"),
)
# containers/storage reads the first of these that exists (rootless: after the user's own).
SYSTEM_STORAGE_CONFS = (
    Path("/etc/containers/storage.conf"),
    Path("/usr/share/containers/storage.conf"),
)
# Where subordinate id ranges usually start, and the size podman's docs ask for.
SUBID_FIRST = 100000
SUBID_COUNT = 65536

CgroupLayout = Literal["unified", "hybrid", "legacy"]


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
