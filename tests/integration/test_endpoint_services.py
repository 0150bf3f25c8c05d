"""Extra engine endpoints started inside a test (endpoint_services.py): two podman
services and two dockerds at once, each building, running and publishing on its own and
handing images over through a registry; and after each block, whatever ended it (a clean
exit, an exception, a Ctrl-C, the endpoint killed mid-build), nothing of them remains.

"Nothing remains" is checked here from the outside: the processes seen during the block
are gone from /proc, /proc/self/mountinfo names nothing under the endpoint's root, `ip
link` knows no bridge of it, its directory is gone, and so are its containers' network
namespaces and shim sockets; remains() adds runtime states, cgroups and iptables rules.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from endpoint_services import (
    Dockerd,
    Endpoint,
    PodmanService,
    dockerd_service,
    load_image,
    podman_service,
    processes_of,
    remains,
    shim_socket,
)
from live_services import BASE_IMAGE, Registry, wait_for_http

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="a dockerd and bridges need root"),
]

DOCKERFILE = f"""\
FROM {BASE_IMAGE}
ARG WHO
RUN mkdir -p /www && echo "built by RUN on $WHO" > /www/index.html
CMD ["busybox", "httpd", "-f", "-p", "80", "-h", "/www"]
"""
CLIENT_TIMEOUT = 120


@dataclass
class Traces:
    """What an endpoint was seen to have while it ran, to look for once it has ended."""

    endpoint: Endpoint
    processes: dict[int, str] = field(default_factory=dict)  # pid: its start time
    paths: set[Path] = field(default_factory=set)  # netns, shim sockets

    def record(self) -> None:
        for pid in {self.endpoint.pid, *processes_of(self.endpoint.root)}:
            self.processes[pid] = start_time(pid)

    def left(self) -> list[str]:
        root = self.endpoint.root
        found = [
            f"process {pid}"
            for pid, started in self.processes.items()
            if alive(pid) and start_time(pid) == started  # not a new one with a reused pid
        ]
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            point = line.split()[4]
            if point == str(root) or point.startswith(f"{root}/"):
                found.append(f"mount: {line}")
        link = subprocess.run(["ip", "link", "show", self.endpoint.bridge], capture_output=True)
        if link.returncode == 0:
            found.append(f"bridge {self.endpoint.bridge}")
        found += [f"path {path}" for path in sorted(self.paths) if os.path.lexists(path)]
        if root.exists():
            found.append(f"directory {root}")
        return found + remains(self.endpoint)


def start_time(pid: int) -> str:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat[stat.rindex(")") + 2 :].split()[19]


def alive(pid: int) -> bool:
    """Whether `pid` exists and is no zombie (one waiting for init to reap it is dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def client(endpoint: Endpoint, *args: str, **env: str) -> str:
    """stdout of a client command against `endpoint`; its stderr in the failure."""
    done = subprocess.run(
        [*endpoint.client, *args],
        capture_output=True,
        text=True,
        timeout=CLIENT_TIMEOUT,
        env={**os.environ, **env},
        check=False,
    )
    assert done.returncode == 0, f"{endpoint.client} {args} failed: {done.stderr}"
    return done.stdout.strip()


def image_id(endpoint: Endpoint, ref: str) -> str:
    return client(endpoint, "image", "inspect", "--format", "{{.Id}}", ref).removeprefix("sha256:")


def build(endpoint: Endpoint, context: Path, tag: str, *, classic: bool = False) -> str:
    """Build `context` as lowbuild's engines do (podman: its very flags; dockerd: BuildKit
    through buildx, or the classic builder); returns the image ID from --iidfile."""
    iidfile = context.parent / f"{uuid.uuid4().hex}.iid"
    who = ["--build-arg", f"WHO={endpoint.root.name}"]
    if isinstance(endpoint, PodmanService):
        client(endpoint, "build", "--pull=never", "--format", "docker", "--iidfile", str(iidfile),
               "--secret", "id=x,src=/dev/null", *who, "-t", tag, str(context))  # fmt: skip
    elif classic:
        client(endpoint, "build", "--iidfile", str(iidfile), *who, "-t", tag, str(context),
               DOCKER_BUILDKIT="0")  # fmt: skip
    else:
        client(endpoint, "buildx", "build", "--load", "--iidfile", str(iidfile),
               "--secret", "id=x,src=/dev/null", *who, "-t", tag, str(context))  # fmt: skip
    built = iidfile.read_text().strip().removeprefix("sha256:")
    assert built == image_id(endpoint, tag)
    return built


def serve(endpoint: Endpoint, image: str, traces: Traces) -> str:
    """Run `image` publishing its port 80 on 127.0.0.1; returns what it serves there."""
    container = client(endpoint, "run", "--detach", "--publish", "127.0.0.1::80", image)
    published = client(endpoint, "port", container, "80").splitlines()[0]
    assert published.startswith("127.0.0.1:"), published
    if isinstance(endpoint, Dockerd):
        traces.paths.add(shim_socket(endpoint, container))
    else:
        sandbox = client(
            endpoint, "inspect", "--format", "{{.NetworkSettings.SandboxKey}}", container
        )
        traces.paths.add(Path(sandbox))
    answer = wait_for_http(f"http://{published}/", timeout=30.0)
    answer.raise_for_status()
    return answer.text


@pytest.fixture
def roots(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """`make(name)`: a short, fresh path for an endpoint's root (unix socket paths are
    limited to 107 bytes, and containerd's lie deep under a dockerd's root)."""
    base = tmp_path_factory.mktemp("ep")
    return lambda name: base / name


@pytest.fixture
def context(tmp_path: Path) -> Path:
    directory = tmp_path / "context"
    directory.mkdir()
    (directory / "Dockerfile").write_text(DOCKERFILE)
    return directory


def test_two_podman_services_and_two_dockerds_at_once(
    roots: Callable[[str], Path], context: Path, registry: Registry
) -> None:
    """Each builds FROM the loaded busybox with a RUN step, serves the result on a port
    published on 127.0.0.1, and pushes it for the next one to pull, same image ID."""
    traces: list[Traces] = []
    with ExitStack() as stack:
        insecure = [registry.host]
        endpoints: list[Endpoint] = [
            stack.enter_context(podman_service(roots("p1"))),
            stack.enter_context(podman_service(roots("p2"))),
            stack.enter_context(dockerd_service(roots("d1"), insecure_registries=insecure)),
            stack.enter_context(dockerd_service(roots("d2"), insecure_registries=insecure)),
        ]
        assert len({e.subnet for e in endpoints}) == len({e.bridge for e in endpoints}) == 4
        traces = [Traces(endpoint) for endpoint in endpoints]
        built: dict[str, str] = {}  # endpoint's root name: tag of its image
        for endpoint, seen in zip(endpoints, traces, strict=True):
            name = endpoint.root.name
            load_image(endpoint.client, BASE_IMAGE)
            tag = f"localhost/lowbuild-test/endpoint-{name}:1"
            build(endpoint, context, tag)
            if isinstance(endpoint, Dockerd):
                build(endpoint, context, f"{tag}-classic", classic=True)
            assert serve(endpoint, tag, seen) == f"built by RUN on {name}\n"
            built[name] = tag
            seen.record()
        for giver, taker in zip(endpoints, endpoints[1:] + endpoints[:1], strict=True):
            remote = f"{registry.host}/lowbuild-test/{uuid.uuid4().hex[:12]}:1"
            client(giver, "tag", built[giver.root.name], remote)
            tls = ["--tls-verify=false"] if isinstance(giver, PodmanService) else []
            client(giver, "push", *tls, remote)
            tls = ["--tls-verify=false"] if isinstance(taker, PodmanService) else []
            client(taker, "pull", *tls, remote)
            assert image_id(taker, remote) == image_id(giver, remote)
        for seen in traces:
            seen.record()
            assert len(seen.processes) >= 3, seen.processes  # the daemon, a container, ...
    for seen in traces:
        assert seen.left() == [], seen.endpoint


@pytest.mark.parametrize("raised", [RuntimeError, KeyboardInterrupt])
def test_cleanup_holds_when_the_block_raises(
    roots: Callable[[str], Path], context: Path, raised: type[BaseException]
) -> None:
    traces: list[Traces] = []
    with pytest.raises(raised, match="the test body fails"), ExitStack() as stack:
        for endpoint in (
            stack.enter_context(podman_service(roots("p"))),
            stack.enter_context(dockerd_service(roots("d"))),
        ):
            seen = Traces(endpoint)
            traces.append(seen)
            load_image(endpoint.client, BASE_IMAGE)
            tag = f"localhost/lowbuild-test/raise-{endpoint.root.name}:1"
            build(endpoint, context, tag)
            serve(endpoint, tag, seen)
            seen.record()
        raise raised("the test body fails")
    assert len(traces) == 2
    for seen in traces:
        assert seen.left() == [], seen.endpoint


@contextmanager
def endpoint_of(kind: str, root: Path) -> Iterator[Endpoint]:
    if kind == "podman":
        with podman_service(root) as service:
            yield service
    else:
        with dockerd_service(root) as daemon:
            yield daemon


@pytest.mark.parametrize("kind", ["podman", "dockerd"])
def test_a_killed_endpoint_fails_its_clients_at_once(
    kind: str, roots: Callable[[str], Path], tmp_path: Path, context: Path
) -> None:
    """Killed mid-RUN: the build's client fails within seconds, so does any later
    command; the RUN step and a running container, orphaned, are cleaned up all the same."""
    marker = f"lowbuild-{uuid.uuid4().hex[:12]}"
    slow = tmp_path / "slow"
    slow.mkdir()
    (slow / "Dockerfile").write_text(f"FROM {BASE_IMAGE}\nRUN echo {marker} && sleep 300\n")
    with endpoint_of(kind, roots(kind)) as endpoint:
        seen = Traces(endpoint)
        load_image(endpoint.client, BASE_IMAGE)
        tag = f"localhost/lowbuild-test/killed-{kind}:1"
        build(endpoint, context, tag)
        serve(endpoint, tag, seen)
        argv = ["build", "-t", "slow", str(slow)]
        if isinstance(endpoint, Dockerd):
            argv = ["buildx", "build", "--load", "--progress=plain", "-t", "slow", str(slow)]
        building = subprocess.Popen(
            [*endpoint.client, *argv], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        try:
            assert building.stdout is not None
            for line in building.stdout:  # the RUN step's own output, not its command line
                if marker in line and "echo" not in line:
                    break
            seen.record()
            assert any("sleep" in command for command in commands(seen.processes))
            endpoint.kill()
            killed = time.monotonic()
            building.communicate(timeout=30)
            build_failed = time.monotonic() - killed
        finally:
            building.kill()
            building.wait()
        assert building.returncode != 0
        started = time.monotonic()
        later = subprocess.run([*endpoint.client, "images"], capture_output=True, timeout=30)
        later_failed = time.monotonic() - started
        assert later.returncode != 0
        assert build_failed < 5 and later_failed < 5, (build_failed, later_failed)
    assert seen.left() == [], endpoint
    assert not any(marker.encode() in cmdline(pid) for pid in all_pids())


def commands(pids: dict[int, str]) -> list[str]:
    return [cmdline(pid).decode(errors="replace") for pid in pids]


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def all_pids() -> list[int]:
    return [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()]
