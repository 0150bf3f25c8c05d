"""Extra engine endpoints on this one machine, started inside a test: a `podman system
service` or a dockerd of its own, each on a unix socket under a directory the test names,
with its own storage, bridge, subnet and cgroups, sharing nothing with the host's engines.
When the block ends, whatever happened, nothing of it remains: no process, no mount, no
network interface or namespace, no firewall rule, no runtime state or cgroup, no
directory. Needs root.

What was found by trying (podman 4.3, dockerd 20.10, netavark 1.4, cgroups v1):

- podman: a network of the service's own, made its default through a containers.conf of
  its own (CONTAINERS_CONF; 4.3 knows no CONTAINERS_CONF_OVERRIDE). netavark names its
  iptables chains after the network's NAME, so two services both on "podman" would share
  (and tear down) each other's chains, and the host's podman's too. TMPDIR under root,
  or buildah's RUN bundles go to /var/tmp.
- dockerd: `--iptables=false`. With iptables on, a starting dockerd deletes and re-creates
  the DOCKER and DOCKER-ISOLATION chains (libnetwork's bridge driver, removeIPChains), so
  the system dockerd's rules would go. A bridge made here (`--bridge`; never docker0, and
  not `--bridge=none`, under which BuildKit's RUN needs `--network none`) and docker-proxy
  publish ports on 127.0.0.1 without any rule. `--cgroup-parent` of its own (BuildKit's
  RUN steps go under it too), not the system dockerd's /docker.
- A killed endpoint leaves what only its daemon would have removed: conmon or shims and
  their containers, RUN steps (runc state in /run/runc with their cgroups), mounts, netns,
  containerd's shim sockets in /run/containerd/s, veths, netavark's rules. The cleanup
  finds each by what names `root`, the bridge, the subnet or the cgroup parent.
"""

from __future__ import annotations

import ctypes
import hashlib
import ipaddress
import json
import os
import random
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

START_TIMEOUT = 60.0  # seconds for an endpoint to answer (2 busy cores: usually < 1 s)
STOP_TIMEOUT = 15.0  # seconds a service gets after SIGTERM before SIGKILL
COMMAND_TIMEOUT = 60.0  # any one command of the cleanup
SOCKET_PATH_MAX = 107  # sun_path holds 108 bytes with the terminating NUL
RUNTIME_STATE_ROOTS = (Path("/run/runc"), Path("/run/crun"))  # of podman, buildah, BuildKit
SHIM_SOCKETS = Path("/run/containerd/s")  # containerd 1.6's, whatever its state directory


@dataclass(frozen=True)
class _Site:
    """Everything an endpoint may leave on the machine is named by one of these."""

    root: Path
    bridge: str
    subnet: ipaddress.IPv4Network
    chains: frozenset[str] = frozenset()  # iptables chains of its own
    cgroup: str | None = None  # a cgroup parent of its own, in every hierarchy
    containerd: Path | None = None  # its containerd's socket (names the shims' sockets)


@dataclass(frozen=True)
class Endpoint:
    """A running engine endpoint: `url` for a client's --url / -H, its process `pid`, the
    `root` all its files live under, the `bridge` its containers attach to (podman's
    netavark makes it with the first container) and that bridge's `subnet`."""

    url: str
    pid: int
    root: Path
    bridge: str
    subnet: str
    process: subprocess.Popen[bytes] = field(repr=False, compare=False)
    site: _Site = field(repr=False, compare=False)

    @property
    def client(self) -> list[str]:
        """The argv prefix of a client command against this endpoint."""
        raise NotImplementedError

    def kill(self) -> None:
        """SIGKILL the service (an endpoint dying mid-build) and reap it: once this returns,
        clients get "connection refused". What it ran is left to the cleanup."""
        self.process.kill()
        self.process.wait()


@dataclass(frozen=True)
class PodmanService(Endpoint):
    @property
    def client(self) -> list[str]:
        return ["podman", "--url", self.url]


@dataclass(frozen=True)
class Dockerd(Endpoint):
    @property
    def client(self) -> list[str]:
        return ["docker", "-H", self.url]


@contextmanager
def podman_service(root: Path) -> Iterator[PodmanService]:
    """`podman system service` on unix://ROOT/podman.sock, with storage, run and tmp
    directories, events log, network configuration and default network (a bridge and /24
    of its own) under `root`; yields once it answers. `root` must be absent or empty: it
    is removed, with all the rest, when the block ends."""
    root = _checked_root(root, "podman.sock")
    socket = root / "podman.sock"
    bridge = _bridge_name("p")
    network = f"lowbuild-{bridge}"
    argv, env = _podman_local(root)
    log = root / "service.log"
    site = _Site(root, bridge, _free_subnet(), chains=_netavark_chains(network))
    process: subprocess.Popen[bytes] | None = None
    failing = False
    try:
        root.mkdir(parents=True, exist_ok=True)
        _write_podman_config(root, network=network, bridge=bridge, subnet=site.subnet)
        with log.open("wb") as out:
            process = subprocess.Popen(
                [*argv, "system", "service", "--time=0", f"unix://{socket}"],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C at the terminal reaches the cleanup first
            )
        _wait_for_api(socket, process, log, "podman system service")
        yield PodmanService(
            url=f"unix://{socket}",
            pid=process.pid,
            root=root,
            bridge=bridge,
            subnet=str(site.subnet),
            process=process,
            site=site,
        )
    except BaseException:
        failing = True
        raise
    finally:
        with _interrupts_deferred():
            _report(_stop_podman(site, process), f"podman service at {root}", failing=failing)


@contextmanager
def dockerd_service(root: Path, *, insecure_registries: Sequence[str] = ()) -> Iterator[Dockerd]:
    """A dockerd on unix://ROOT/docker.sock with its data-root, exec-root, pidfile and
    managed containerd under `root`, containers on a bridge of its own (a private /24)
    under a cgroup parent of its own, `--iptables=false`, and each of
    `insecure_registries` ("host:port") allowed over plain http; yields once it answers.
    `root` must be absent or empty: it is removed, with all the rest, when the block ends."""
    containerd = "x/containerd/containerd.sock"  # the longest socket path under root
    root = _checked_root(root, f"{containerd}.ttrpc")
    socket = root / "docker.sock"
    bridge = _bridge_name("d")
    log = root / "dockerd.log"
    site = _Site(
        root, bridge, _free_subnet(), cgroup=f"lowbuild-{bridge}", containerd=root / containerd
    )
    process: subprocess.Popen[bytes] | None = None
    failing = False
    try:
        root.mkdir(parents=True, exist_ok=True)
        gateway = f"{next(site.subnet.hosts())}/{site.subnet.prefixlen}"
        _run(["ip", "link", "add", bridge, "type", "bridge"])
        _run(["ip", "addr", "add", gateway, "dev", bridge])
        _run(["ip", "link", "set", bridge, "up"])
        config = root / "daemon.json"  # so that the host's /etc/docker/daemon.json is not read
        config.write_text("{}\n")
        argv = [
            "dockerd",
            f"--config-file={config}",
            f"--data-root={root / 'data'}",
            f"--exec-root={root / 'x'}",  # short: containerd's sockets live under it
            f"--pidfile={root / 'docker.pid'}",
            f"--host=unix://{socket}",
            f"--bridge={bridge}",
            "--iptables=false",
            "--ip-masq=false",
            f"--cgroup-parent=/{site.cgroup}",
            "--shutdown-timeout=2",
            *(f"--insecure-registry={host}" for host in insecure_registries),
        ]
        with log.open("wb") as out:
            process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        _wait_for_api(socket, process, log, "dockerd")
        yield Dockerd(
            url=f"unix://{socket}",
            pid=process.pid,
            root=root,
            bridge=bridge,
            subnet=str(site.subnet),
            process=process,
            site=site,
        )
    except BaseException:
        failing = True
        raise
    finally:
        with _interrupts_deferred():
            _report(_stop_dockerd(site, process), f"dockerd at {root}", failing=failing)


def load_image(client_argv: Sequence[str], ref: str) -> None:
    """Copy image `ref` from the host's default podman storage into an endpoint, under the
    same tag: `podman save | CLIENT load`, client_argv e.g. ["podman", "--url", url] or
    ["docker", "-H", url] (Endpoint.client)."""
    if subprocess.run(["podman", "image", "exists", ref], check=False).returncode != 0:
        raise RuntimeError(f"{ref} is not in podman's storage: run `bash scripts/provision.sh`")
    with tempfile.TemporaryFile() as errors:
        save = subprocess.Popen(
            ["podman", "save", "--quiet", "--format", "docker-archive", ref],
            stdout=subprocess.PIPE,
            stderr=errors,
        )
        assert save.stdout is not None
        try:
            load = subprocess.run(
                [*client_argv, "load"],
                stdin=save.stdout,
                capture_output=True,
                text=True,
                timeout=COMMAND_TIMEOUT,
                check=False,
            )
        finally:
            save.stdout.close()
            try:
                save.wait(timeout=COMMAND_TIMEOUT)
            except subprocess.TimeoutExpired:
                save.kill()
                save.wait()
        if save.returncode != 0:
            errors.seek(0)
            raise RuntimeError(
                f"podman save {ref} failed: {errors.read().decode(errors='replace')}"
            )
    if load.returncode != 0:
        raise RuntimeError(f"{shlex.join(client_argv)} load failed: {load.stderr.strip()}")
    inspect = [*client_argv, "image", "inspect", "--format", "{{.Id}}", ref]
    if subprocess.run(inspect, capture_output=True, check=False).returncode != 0:
        raise RuntimeError(f"{ref} was loaded, but the endpoint knows no image by that name")


def remains(endpoint: Endpoint) -> list[str]:
    """What of `endpoint` is still on the machine, one line each: empty once its block has
    ended. (Shim sockets, named after container IDs, are not looked for: see shim_socket.)"""
    return _remains(endpoint.site)


def shim_socket(endpoint: Dockerd, container_id: str) -> Path:
    """Where containerd 1.6 puts the socket of the shim of container `container_id` (full
    ID) of `endpoint`: a hash of its containerd's address, namespace and the ID."""
    assert endpoint.site.containerd is not None
    return _shim_socket(endpoint.site.containerd, "moby", container_id)


def processes_of(root: Path) -> set[int]:
    """Live (not zombie) processes of the endpoint under `root`: those whose command line
    names a path under it (the service, conmon, containerd, shims), those whose mount
    namespace has something under it mounted (containers, RUN steps), and the descendants
    of all of these. Never this process or its ancestors."""
    prefix = f"{root}/"
    own_mnt = os.readlink("/proc/self/ns/mnt")
    spared = _ancestors(os.getpid())
    parents: dict[int, int] = {}
    chosen: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        stat = _stat(pid)
        if stat is None or stat[0] == "Z" or pid in spared:
            continue
        parents[pid] = stat[1]
        try:
            words = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
            if any(prefix in word or word == str(root) for word in words) or (
                os.readlink(entry / "ns" / "mnt") != own_mnt
                and prefix in (entry / "mountinfo").read_text(errors="replace")
            ):
                chosen.add(pid)
        except OSError:
            continue  # gone meanwhile, or a kernel thread
    grew = True
    while grew:
        more = {pid for pid, parent in parents.items() if parent in chosen} - chosen
        chosen |= more
        grew = bool(more)
    return chosen


def mounts_under(root: Path) -> list[str]:
    """Mount points at or under `root` in this mount namespace, deepest first."""
    prefix = f"{root}/"
    points = set()
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), line.split()[4])
        if point == str(root) or point.startswith(prefix):
            points.add(point)
    return sorted(points, key=lambda p: (-p.count("/"), p))


def firewall_rules_of(endpoint: Endpoint) -> list[str]:
    """iptables-save lines, each after its table, of `endpoint`: naming its bridge, an
    address in its subnet, or a chain of its own."""
    return _firewall_rules(endpoint.site)


# ---- starting ----------------------------------------------------------------------

_subnets_taken: set[ipaddress.IPv4Network] = set()


def _checked_root(root: Path, longest_socket: str) -> Path:
    """`root` made absolute, once known to be absent or empty (all of it is removed at the
    end) and short enough for the unix sockets under it."""
    root = root.absolute()
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise ValueError(f"{root} exists and is not an empty directory (it would be removed)")
    if len(str(root / longest_socket).encode()) > SOCKET_PATH_MAX:
        raise ValueError(f"{root} is too long a path for the unix sockets under it")
    return root


def _bridge_name(kind: str) -> str:
    return f"lb{kind}{secrets.token_hex(4)}"  # 11 characters: IFNAMSIZ allows 15


def _free_subnet() -> ipaddress.IPv4Network:
    """A /24 in 10.128.0.0/9 that no route or address of this host overlaps, and that no
    other endpoint of this process holds (until its cleanup gives it back)."""
    used: list[ipaddress.IPv4Network] = []
    for argv in (["ip", "-4", "-o", "route", "show", "table", "all"], ["ip", "-4", "-o", "addr"]):
        listed = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
        for word in listed.split():
            if re.fullmatch(r"\d+\.\d+\.\d+\.\d+(/\d+)?", word):
                used.append(ipaddress.IPv4Network(word, strict=False))
    for _ in range(1000):
        candidate = ipaddress.IPv4Network(
            f"10.{random.randint(128, 254)}.{random.randint(0, 255)}.0/24"
        )
        if candidate not in _subnets_taken and not any(candidate.overlaps(u) for u in used):
            _subnets_taken.add(candidate)
            return candidate
    raise RuntimeError("no free /24 in 10.128.0.0/9")


def _podman_local(root: Path) -> tuple[list[str], dict[str, str]]:
    """The argv prefix and environment of a podman on `root`'s storage and configuration:
    the service's, and the cleanup's after it."""
    argv = [
        "podman",
        f"--root={root / 'storage'}",
        f"--runroot={root / 'run'}",
        f"--tmpdir={root / 'tmp'}",
        f"--network-config-dir={root / 'networks'}",
        "--events-backend=file",  # under --tmpdir; journald would mix the services' events
        "--cgroup-manager=cgroupfs",  # no systemd here, and no scope units left behind
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONTAINER")}
    env["CONTAINERS_CONF"] = str(root / "containers.conf")
    env["TMPDIR"] = str(root / "tmp")  # buildah's RUN bundles, else in /var/tmp
    return argv, env


def _netavark_chains(network: str) -> frozenset[str]:
    """netavark's chains of `network`: named after a hash of the network's name."""
    digest = hashlib.sha512(network.encode()).hexdigest()[:13].upper()
    return frozenset({f"NETAVARK-{digest}", f"NETAVARK-DN-{digest}"})


def _write_podman_config(
    root: Path, *, network: str, bridge: str, subnet: ipaddress.IPv4Network
) -> None:
    """containers.conf: all the host's podman reads (CONTAINERS_CONF replaces all of it),
    with `network` as the default network; and that network's definition."""
    merged: dict[str, Any] = {}
    for base in (Path("/usr/share/containers"), Path("/etc/containers")):
        for path in [base / "containers.conf", *sorted(base.glob("containers.conf.d/*.conf"))]:
            if path.is_file():
                _merge(merged, tomllib.loads(path.read_text()))
    merged.setdefault("network", {})["default_network"] = network
    (root / "containers.conf").write_text(_toml(merged))
    networks = root / "networks"
    networks.mkdir()
    definition = {
        "name": network,
        "id": secrets.token_hex(32),
        "driver": "bridge",
        "network_interface": bridge,
        "created": "2024-01-01T00:00:00Z",
        "subnets": [{"subnet": str(subnet), "gateway": str(next(subnet.hosts()))}],
        "ipv6_enabled": False,
        "internal": False,
        "dns_enabled": False,  # no aardvark-dns to start and stop
        "ipam_options": {"driver": "host-local"},
    }
    (networks / f"{network}.json").write_text(json.dumps(definition, indent=2) + "\n")


def _merge(into: dict[str, Any], more: dict[str, Any]) -> None:
    for key, value in more.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def _toml(tables: dict[str, Any], prefix: str = "") -> str:
    """TOML for what containers.conf holds: tables of strings, numbers, booleans, lists."""

    def key(name: str) -> str:
        return name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else json.dumps(name)

    def value(item: Any) -> str:
        if isinstance(item, bool):
            return "true" if item else "false"
        if isinstance(item, int | float):
            return repr(item)
        if isinstance(item, str):
            return json.dumps(item)
        if isinstance(item, list):
            return "[" + ", ".join(value(element) for element in item) + "]"
        raise TypeError(f"a containers.conf value of an unexpected type: {item!r}")

    lines = [f"{key(k)} = {value(v)}" for k, v in tables.items() if not isinstance(v, dict)]
    text = "".join(f"{line}\n" for line in lines)
    for name, table in tables.items():
        if isinstance(table, dict):
            full = f"{prefix}.{key(name)}" if prefix else key(name)
            text += f"\n[{full}]\n" + _toml(table, full)
    return text


def _wait_for_api(socket: Path, process: subprocess.Popen[bytes], log: Path, what: str) -> None:
    """Until GET /_ping on `socket` answers 200 (podman and dockerd both serve it)."""
    deadline = time.monotonic() + START_TIMEOUT
    transport = httpx.HTTPTransport(uds=str(socket))
    with httpx.Client(transport=transport, base_url="http://endpoint", timeout=2.0) as api:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{what} exited ({process.returncode}): {_tail(log)}")
            try:
                if api.get("/_ping").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not answer in {START_TIMEOUT:.0f} s: {_tail(log)}")
            time.sleep(0.05)


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-1500:] if log.exists() else "(no log)"


# ---- stopping ----------------------------------------------------------------------


def _stop_podman(site: _Site, process: subprocess.Popen[bytes] | None) -> list[str]:
    """The service stopped; then its containers removed by a podman of our own on the same
    storage, which does netavark's teardown (veths, netns, rules, the bridge) even after a
    kill; then the sweep. Returns what remains."""
    _terminate(process)
    argv, env = _podman_local(site.root)
    netns: list[str] = []
    if (site.root / "storage").is_dir():
        ids = _quietly([*argv, "ps", "--all", "--quiet", "--no-trunc"], env=env)
        if ids:
            keys = "{{.NetworkSettings.SandboxKey}}"
            found = _quietly([*argv, "inspect", "--format", keys, *ids.split()], env=env)
            netns = [line for line in (found or "").split() if line.startswith("/")]
            _quietly([*argv, "rm", "--all", "--force", "--time=0"], env=env)
    return _sweep(site, netns=netns)


def _stop_dockerd(site: _Site, process: subprocess.Popen[bytes] | None) -> list[str]:
    """Its containers removed while it still answers (they would outlive it), dockerd
    stopped (it stops its containerd), then the sweep. Returns what remains."""
    if process is not None and process.poll() is None:
        client = ["docker", "-H", f"unix://{site.root / 'docker.sock'}"]
        ids = _quietly([*client, "ps", "--all", "--quiet", "--no-trunc"])
        if ids:
            _quietly([*client, "rm", "--force", "--volumes", *ids.split()])
    _terminate(process)
    return _sweep(site, netns=[])


def _terminate(process: subprocess.Popen[bytes] | None) -> None:
    if process is None:
        return
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=STOP_TIMEOUT)
            return
        except subprocess.TimeoutExpired:
            process.kill()
    process.wait()


def _sweep(site: _Site, *, netns: list[str]) -> list[str]:
    """Whatever the orderly stop left, removed: processes, runtime states and their
    cgroups, shim sockets, mounts, network namespaces, interfaces, firewall rules, the
    cgroup parent, then root itself. Returns what remains (empty when all went)."""
    _subnets_taken.discard(site.subnet)
    _kill_processes(site.root)
    for state_root, container, runtime in _runtime_states(site.root):
        # what a daemon does after its container exits: cgroups removed, state dropped
        _quietly([runtime, "--root", str(state_root), "delete", "--force", container])
    if site.containerd is not None:
        tasks = site.containerd.parent / "daemon" / "io.containerd.runtime.v2.task"
        for task in tasks.glob("*/*"):
            _shim_socket(site.containerd, task.parent.name, task.name).unlink(missing_ok=True)
    _unmount(site.root, netns)
    for path in netns:
        if path not in _mounted():
            Path(path).unlink(missing_ok=True)
    _remove_links(site.bridge)
    _remove_iptables_rules(site)
    for cgroup in _cgroups(site.cgroup):
        for directory, _dirs, _files in os.walk(cgroup, topdown=False):
            with suppress(OSError):  # reported by _remains
                os.rmdir(directory)
    if site.root.exists() and not mounts_under(site.root):  # never into a mounted fs
        shutil.rmtree(site.root, ignore_errors=True)
    return _remains(site)


def _remains(site: _Site) -> list[str]:
    left = [f"process {pid}: {_cmdline(pid)}" for pid in sorted(processes_of(site.root))]
    left += [f"mount {point}" for point in mounts_under(site.root)]
    left += [f"runtime state {root / name}" for root, name, _ in _runtime_states(site.root)]
    left += [f"cgroup {path}" for path in _cgroups(site.cgroup)]
    if Path(f"/sys/class/net/{site.bridge}").exists():
        left.append(f"interface {site.bridge}")
    left += [f"iptables {rule}" for rule in _firewall_rules(site)]
    if site.root.exists():
        left.append(f"directory {site.root}")
    return left


def _kill_processes(root: Path) -> None:
    """SIGKILL every process of the endpoint until none is left (or 10 s have passed)."""
    deadline = time.monotonic() + 10.0
    while (found := processes_of(root)) and time.monotonic() < deadline:
        for pid in found:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)


def _runtime_states(root: Path) -> list[tuple[Path, str, str]]:
    """(state root, container, runtime) of each runc or crun container whose state names a
    path under `root` (its rootfs or bundle): in the runtimes' default state roots, where
    podman, buildah's RUN and BuildKit's RUN keep them, and in dockerd's exec-root."""
    prefix = f"{root}/"
    found = []
    for state_root in [*RUNTIME_STATE_ROOTS, *root.glob("x/runtime-*/*")]:
        for state in [*state_root.glob("*/state.json"), *state_root.glob("*/status")]:
            try:
                named = prefix in state.read_text(errors="replace")
            except OSError:
                continue
            if named:
                runtime = "runc" if state.name == "state.json" else "crun"
                found.append((state_root, state.parent.name, runtime))
    return found


def _shim_socket(containerd: Path, namespace: str, container: str) -> Path:
    digest = hashlib.sha256(f"{containerd}/{namespace}/{container}".encode()).hexdigest()
    return SHIM_SOCKETS / digest


def _cgroups(name: str | None) -> list[Path]:
    """The directories of cgroup `name` (a top-level parent) in every hierarchy mounted
    under /sys/fs/cgroup, also where a hierarchy nests it under this process's cgroup."""
    if name is None:
        return []
    base = Path("/sys/fs/cgroup")
    found = [*base.glob(name), *base.glob(f"*/{name}")]
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        controllers, _, own = line.split(":", 2)
        for controller in controllers.split(","):
            found += (base / controller.removeprefix("name=") / own.lstrip("/")).glob(name)
    return sorted({path for path in found if path.is_dir()})


def _mounted() -> set[str]:
    return {line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()}


def _unmount(root: Path, extra: list[str]) -> None:
    """Every mount under `root` and at the `extra` points detached, deepest first."""
    libc = ctypes.CDLL(None, use_errno=True)
    mnt_detach = 2
    for _ in range(5):
        mounted = _mounted()
        points = mounts_under(root) + [point for point in extra if point in mounted]
        if not points:
            return
        for point in points:
            libc.umount2(point.encode(), mnt_detach)


def _remove_links(bridge: str) -> None:
    """The bridge deleted, and before it any veth still enslaved to it."""
    for port in Path(f"/sys/class/net/{bridge}/brif").glob("*"):
        _quietly(["ip", "link", "delete", port.name])
    if Path(f"/sys/class/net/{bridge}").exists():
        _quietly(["ip", "link", "delete", bridge])


def _remove_iptables_rules(site: _Site) -> None:
    """Rules naming the bridge or an address in the subnet deleted, and the chains of the
    endpoint's own flushed and deleted: what a killed podman never tore down."""
    for table, lines in _iptables_tables().items():
        declared = {line[1:].split()[0] for line in lines if line.startswith(":")}
        own = site.chains & declared
        for line in lines:
            words = shlex.split(line)
            if words[0] == "-A" and words[1] not in own and _names(line, site, own):
                _quietly(["iptables", "-w", "-t", table, "-D", *words[1:]])
        for chain in own:
            _quietly(["iptables", "-w", "-t", table, "-F", chain])
            _quietly(["iptables", "-w", "-t", table, "-X", chain])


def _firewall_rules(site: _Site) -> list[str]:
    return [
        f"{table}: {line}"
        for table, lines in _iptables_tables().items()
        for line in lines
        if _names(line, site, site.chains)
    ]


def _iptables_tables() -> dict[str, list[str]]:
    """Chain declarations (":NAME ...") and rules ("-A ...") of iptables-save, by table."""
    if shutil.which("iptables-save") is None:
        return {}
    tables: dict[str, list[str]] = {}
    current: list[str] = []
    for line in (_quietly(["iptables-save"]) or "").splitlines():
        if line.startswith("*"):
            current = tables.setdefault(line[1:], [])
        elif line.startswith((":", "-A ")):
            current.append(line)
    return tables


def _names(line: str, site: _Site, chains: frozenset[str] | set[str]) -> bool:
    """Whether an iptables-save line names the bridge, a chain of `chains` or an address
    (or network) within the subnet."""
    words = set(re.split(r"[\s\":]+", line))
    if site.bridge in words or chains & words:
        return True
    for address, length in re.findall(r"(?<![\d.])(\d{1,3}(?:\.\d{1,3}){3})(?:/(\d{1,2}))?", line):
        try:
            network = ipaddress.IPv4Network(f"{address}/{length or 32}", strict=False)
        except ValueError:
            continue
        if network.subnet_of(site.subnet):
            return True
    return False


# ---- small helpers -----------------------------------------------------------------


def _run(argv: list[str]) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{shlex.join(argv)} failed: {done.stderr.strip()}")


def _quietly(argv: list[str], *, env: dict[str, str] | None = None) -> str | None:
    """A cleanup command's stdout, or None when it failed: cleanup goes on regardless. In a
    session of its own, so that a Ctrl-C at the terminal does not cut it short."""
    try:
        done = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            env=env,
            timeout=COMMAND_TIMEOUT,
            start_new_session=True,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of `pid`, or None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return fields[0], int(fields[1])


def _ancestors(pid: int) -> set[int]:
    found = set()
    while pid > 0 and pid not in found:
        found.add(pid)
        stat = _stat(pid)
        pid = stat[1] if stat else 0
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:200]
    except OSError:
        return "(gone)"


@contextmanager
def _interrupts_deferred() -> Iterator[None]:
    """SIGINT held back while the block runs, then raised: a second Ctrl-C must not cut a
    cleanup short and leave half an endpoint behind."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, _frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt


def _report(left: list[str], what: str, *, failing: bool) -> None:
    """Leftovers fail the block, unless it is failing already: that error stays the one
    seen, and the leftovers go to stderr."""
    if not left:
        return
    message = f"{what} left behind: " + "; ".join(left)
    if failing:
        print(message, file=sys.stderr)
        return
    raise RuntimeError(message)
