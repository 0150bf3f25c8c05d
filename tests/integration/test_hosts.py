"""Several build hosts, for real: a family split over `podman system service` endpoints
and an extra dockerd, all started here (endpoint_services.py), parents handed over
through a loopback registry, as the product would run over several machines.

What a user would check: every image built once, on one endpoint; a child's first
layers are its parent's; each endpoint's own `plan` sees what it holds as up to date;
the digests lowbuild reports are the registry's; a podman-built parent serves a docker
endpoint; an endpoint killed mid-build costs only a retry elsewhere; a registry that
takes nothing blocks what needed a handover, with a clear error.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from endpoint_services import PodmanService, dockerd_service, load_image, podman_service
from json_outputs import conforming
from live_services import BASE_IMAGE, Registry, free_port

from lowbuild.doctor.checks import emulation_checks

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="starts engine services as root")

HTTP_TEST = "test:\n  http: {port: 8080, path: /index.html, expect: leaf}\n"
SERVE = 'CMD ["httpd", "-f", "-p", "8080", "-h", "/www"]\n'


@dataclass
class Family:
    """A family on disk; `lowbuild(...)` runs the CLI in it."""

    root: Path

    @property
    def env(self) -> dict[str, str]:
        """This environment with a cache of the family's own, and no hosts file of the
        caller's (each run names its endpoints)."""
        env = {k: v for k, v in os.environ.items() if k != "LOWBUILD_HOSTS"}
        return {**env, "LOWBUILD_CACHE": str(self.root / ".cache")}

    def lowbuild(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "lowbuild", *args]
        return subprocess.run(
            argv, cwd=self.root, env=self.env, capture_output=True, text=True, timeout=timeout
        )

    def popen(self, *args: str) -> subprocess.Popen[str]:
        """The same, running on: its stdout and stderr are pipes."""
        argv = [sys.executable, "-m", "lowbuild", *args]
        pipe = subprocess.PIPE
        return subprocess.Popen(
            argv, cwd=self.root, env=self.env, stdout=pipe, stderr=pipe, text=True
        )


def write_family(root: Path, images: dict[str, tuple[str | None, str, str]]) -> Family:
    """`images`: name → (parent or None for the busybox base, Dockerfile body, image.yaml
    extra lines)."""
    root.mkdir(parents=True)
    (root / "lowbuild.yaml").write_text(f"name: {root.name}\nnamespace: hosts\n")
    for name, (parent, body, extra) in images.items():
        context = root / "contexts" / name
        context.mkdir(parents=True)
        # As the seed family spells it: a name every engine resolves to the local image.
        source = f"hosts/{parent}:latest" if parent else BASE_IMAGE
        (context / "Dockerfile").write_text(f"FROM {source}\n{body}")
        spec = f"name: {name}\n" + (f"parent: {parent}\n" if parent else "") + extra
        (context / "image.yaml").write_text(spec)
    return Family(root)


def chain_family(root: Path) -> Family:
    """base → mid → (leafa: served over HTTP, leafb: a command test)."""
    return write_family(
        root,
        {
            "base": (None, "RUN echo base > /base\n", ""),
            "mid": ("base", "RUN echo mid > /mid\n", ""),
            "leafa": (
                "mid",
                f"RUN mkdir -p /www && echo leaf > /www/index.html\n{SERVE}",
                HTTP_TEST,
            ),
            "leafb": ("mid", "RUN echo b > /b\n", "test:\n  command: [cat, /mid, /b]\n"),
        },
    )


def endpoint_arg(name: str, kind: str, url: str, jobs: int = 1) -> str:
    return f"--endpoint={name}={kind}+{url},jobs={jobs}"


def inspect(client: list[str], ref: str) -> dict[str, object] | None:
    done = subprocess.run([*client, "image", "inspect", ref], capture_output=True, text=True)
    if done.returncode != 0:
        return None
    document: dict[str, object] = json.loads(done.stdout)[0]
    return document


def image_id(client: list[str], ref: str) -> str | None:
    found = inspect(client, ref)
    return None if found is None else "sha256:" + str(found["Id"]).removeprefix("sha256:")


def layers(client: list[str], ref: str) -> list[str]:
    found = inspect(client, ref)
    assert found is not None, ref
    return list(found["RootFS"]["Layers"])  # type: ignore[index]


def records(done: subprocess.CompletedProcess[str]) -> dict[str, dict[str, object]]:
    assert done.returncode == 0, done.stderr[-3000:]
    return {r["image"]: r for r in conforming("build", done.stdout)}


@pytest.fixture
def two_podman(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[PodmanService]]:
    with (
        podman_service(tmp_path_factory.mktemp("pa")) as a,
        podman_service(tmp_path_factory.mktemp("pb")) as b,
    ):
        for service in (a, b):
            load_image(service.client, BASE_IMAGE)
        yield [a, b]


def test_a_family_split_over_two_podman_services(
    tmp_path: Path, two_podman: list[PodmanService], registry: Registry
) -> None:
    family = chain_family(tmp_path / "split")
    a, b = two_podman
    where = [endpoint_arg("a", "podman", a.url), endpoint_arg("b", "podman", b.url)]
    handover = f"--cache-to={registry.host}/split"
    done = family.lowbuild("build", *where, handover, "--no-tls-verify", "--test", "--json")
    built = records(done)
    assert {r["state"] for r in built.values()} == {"built"}
    assert built["leafa"]["test"]["passed"] is True  # type: ignore[index]  # HTTP, on its endpoint
    assert built["leafb"]["test"]["passed"] is True  # type: ignore[index]
    # One job each: the two leaves were ready together, so they went apart.
    assert {built["leafa"]["endpoint"], built["leafb"]["endpoint"]} == {"a", "b"}
    clients = {"a": a.client, "b": b.client}
    for name, record in built.items():
        ref = f"hosts/{name}:latest"
        # Built once: wherever the image is, it is the one its endpoint built.
        held = {e: image_id(c, ref) for e, c in clients.items()}
        assert held[str(record["endpoint"])] == record["image_id"]
        assert {i for i in held.values() if i is not None} == {record["image_id"]}
        # The by-digest reference reported is what the registry serves.
        by_digest = str(record["handover_ref"])
        repository, _, digest = by_digest.removeprefix(f"{registry.host}/").partition("@")
        answer = httpx.head(
            f"{registry.url}/v2/{repository}/manifests/{digest}",
            headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"},
        )
        assert answer.status_code == 200 and answer.headers["Docker-Content-Digest"] == digest
    for child, parent in (("mid", "base"), ("leafa", "mid"), ("leafb", "mid")):
        client = clients[str(built[child]["endpoint"])]
        ours, theirs = (
            layers(client, f"hosts/{child}:latest"),
            layers(clients[str(built[parent]["endpoint"])], f"hosts/{parent}:latest"),
        )
        assert ours[: len(theirs)] == theirs and len(ours) > len(theirs)
    # The run's trace: each image's span on a job slot of the endpoint that built it, its
    # handover to the registry nested in it.
    trace = json.loads((family.root / ".lowbuild/logs/latest/trace.json").read_text())
    tracks = {
        e["tid"]: e["args"]["name"] for e in trace["traceEvents"] if e["name"] == "thread_name"
    }
    spans = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    for span in (s for s in spans if s["cat"] == "image"):
        endpoint = built[span["name"]]["endpoint"]
        assert tracks[span["tid"]] == f"{endpoint} build 1", (span, tracks)
        handed = [s for s in spans if s["name"] == "hand over" and s["tid"] == span["tid"]]
        assert any(span["ts"] <= s["ts"] <= span["ts"] + span["dur"] for s in handed), span
    # Each endpoint on its own sees what it holds as up to date.
    for name, client in clients.items():
        alone = family.lowbuild("plan", endpoint_arg("x", "podman", client[-1]), "--json")
        assert alone.returncode == 0, alone.stderr
        actions = {r["image"]: r["action"] for r in json.loads(alone.stdout)["images"]}
        holds = {n for n, r in built.items() if image_id(client, f"hosts/{n}:latest")}
        assert holds and all(actions[n] == "up-to-date" for n in holds), (name, actions)
    # And together, nothing is left to build; --push publishes each image from the
    # endpoint that holds it.
    to = f"--to={registry.host}/published"
    again = records(
        family.lowbuild("build", *where, handover, "--no-tls-verify", "--push", to, "--json")
    )
    assert {r["state"] for r in again.values()} == {"up-to-date"}
    for name, record in again.items():
        [push] = record["push"]  # type: ignore[misc]
        assert push["pushed"] is True, push
        repository, _, digest = str(push["ref"]).removeprefix(f"{registry.host}/").partition("@")
        assert repository == f"published/{name}"
        answer = httpx.head(
            f"{registry.url}/v2/{repository}/manifests/{digest}",
            headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"},
        )
        assert answer.status_code == 200, (name, answer.status_code)
    trace = json.loads((family.root / ".lowbuild/logs/latest/trace.json").read_text())
    pushed = [e["name"] for e in trace["traceEvents"] if e.get("cat") == "push"]
    assert sorted(pushed) == sorted(again)  # one push span per image, in the run's trace
    plan = family.lowbuild("plan", *where, "--json")
    document = conforming("plan", plan.stdout)
    assert {r["endpoint"] for r in document["images"]} <= {"a", "b"}


def test_a_parent_built_by_podman_serves_a_docker_endpoint(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, registry: Registry
) -> None:
    family = write_family(
        tmp_path / "mixed",
        {
            "base": (None, "RUN echo base > /base\n", ""),
            "one": ("base", "RUN echo one > /one\n", "test:\n  command: [cat, /base, /one]\n"),
            "two": ("base", "RUN echo two > /two\n", "test:\n  command: [cat, /base, /two]\n"),
        },
    )
    with (
        podman_service(tmp_path_factory.mktemp("pm")) as podman,
        dockerd_service(
            tmp_path_factory.mktemp("dk"), insecure_registries=[registry.host]
        ) as dockerd,
    ):
        load_image(podman.client, BASE_IMAGE)
        load_image(dockerd.client, BASE_IMAGE)
        # The base first, on podman alone; then the children over both.
        first = family.lowbuild("build", "base", endpoint_arg("p", "podman", podman.url), "--json")
        assert records(first)["base"]["endpoint"] == "p"
        where = [endpoint_arg("p", "podman", podman.url), endpoint_arg("d", "docker", dockerd.url)]
        done = family.lowbuild(
            "build",
            *where,
            f"--cache-to={registry.host}/mixed",
            "--no-tls-verify",
            "--test",
            "--json",
        )
        built = records(done)
        assert built["base"]["state"] == "up-to-date"
        assert {built["one"]["endpoint"], built["two"]["endpoint"]} == {"p", "d"}
        assert all(built[n]["test"]["passed"] for n in ("one", "two"))  # type: ignore[index]
        # The docker endpoint holds podman's base under the family's name, same ID.
        assert image_id(dockerd.client, "hosts/base:latest") == built["base"]["image_id"]
        on_docker = next(n for n in ("one", "two") if built[n]["endpoint"] == "d")
        assert (
            layers(dockerd.client, f"hosts/{on_docker}:latest")[:1]
            == layers(podman.client, "hosts/base:latest")[:1]
        )
        # The engine is not in the fingerprint: docker's own plan agrees.
        alone = family.lowbuild("plan", endpoint_arg("x", "docker", dockerd.url), "--json")
        actions = {r["image"]: r["action"] for r in json.loads(alone.stdout)["images"]}
        assert actions["base"] == "up-to-date" and actions[on_docker] == "up-to-date"


SLOW_FAMILY = {
    "slow": (None, "RUN echo start && sleep 8 && echo done > /done\n", ""),
    "quick": (None, "RUN echo quick > /quick\n", ""),
    "quickchild": ("quick", "RUN echo child > /child\n", ""),
}


def endpoint_of_running(family: Family, image: str, marker: str = "start") -> str:
    """The endpoint `image` is being built on, once its build log shows `marker`."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        logs = list((family.root / ".lowbuild" / "logs").glob(f"*/{image}.log"))
        text = logs[0].read_text() if logs else ""
        if marker in text:
            return text.split("on endpoint ", 1)[1].split()[0]
        time.sleep(0.1)
    pytest.fail(f"{image} never started")


@pytest.mark.parametrize("how", ["killed", "hung"])
def test_an_endpoint_lost_mid_build_costs_a_retry_elsewhere(
    tmp_path: Path, two_podman: list[PodmanService], registry: Registry, how: str
) -> None:
    """Killed: its socket refuses at once. Hung (SIGSTOP): it keeps the connection and
    says nothing; the watchdog gives it up after two unanswered questions."""
    family = write_family(tmp_path / how, SLOW_FAMILY)
    services = dict(zip("ab", two_podman, strict=True))
    where = [endpoint_arg(n, "podman", s.url) for n, s in services.items()]
    run = family.popen(
        "build", *where, f"--cache-to={registry.host}/{how}", "--no-tls-verify", "--json"
    )
    first = ""
    try:
        first = endpoint_of_running(family, "slow")  # its `sleep 8` has begun
        started = time.monotonic()
        if how == "killed":
            services[first].kill()
        else:
            os.kill(services[first].pid, signal.SIGSTOP)
        stdout, stderr = run.communicate(timeout=180)
    finally:
        if how == "hung" and first:
            os.kill(services[first].pid, signal.SIGCONT)  # for its cleanup
        if run.poll() is None:
            run.kill()
            run.wait()
    assert run.returncode == 0, stderr[-3000:]
    built = {r["image"]: r for r in conforming("build", stdout)}
    assert {r["state"] for r in built.values()} == {"built"}
    other = "b" if first == "a" else "a"
    assert built["slow"]["endpoint"] == other
    detail = str(built["slow"]["detail"])
    assert f"endpoint {first} lost" in detail and f"retried on {other}" in detail
    if how == "hung":
        assert "does not answer a version query within 10 s" in detail
    assert image_id(services[other].client, "hosts/slow:latest") == built["slow"]["image_id"]
    # Killed: noticed at once. Hung: two questions of 10 s, then the retry's 8 s sleep.
    assert time.monotonic() - started < (30 if how == "killed" else 90)


def test_a_registry_that_takes_nothing_blocks_what_needs_a_handover(
    tmp_path: Path, two_podman: list[PodmanService]
) -> None:
    family = chain_family(tmp_path / "refused")
    a, b = two_podman
    where = [endpoint_arg("a", "podman", a.url), endpoint_arg("b", "podman", b.url)]
    nowhere = f"127.0.0.1:{free_port()}/refused"  # nothing listens there
    done = family.lowbuild("build", *where, f"--cache-to={nowhere}", "--no-tls-verify", "--json")
    assert done.returncode == 1
    built = {r["image"]: r for r in conforming("build", done.stdout)}
    assert built["base"]["state"] == "failed"
    assert f"handover registry {nowhere} did not take it" in str(built["base"]["detail"])
    assert all(built[n]["state"] == "blocked" for n in ("mid", "leafa", "leafb"))
    assert all(built[n]["blocked_by"] in ("base", "mid") for n in ("mid", "leafa", "leafb"))


def test_doctor_examines_every_endpoint(
    tmp_path: Path, two_podman: list[PodmanService], registry: Registry
) -> None:
    a, _ = two_podman
    # Inside a project whose second base the endpoint lacks: its own finding, not exit 3.
    write_family(
        tmp_path / "project",
        {"base": (None, "RUN true\n", ""), "other": (None, "RUN true\n", "")},
    )
    other = tmp_path / "project" / "contexts" / "other" / "Dockerfile"
    other.write_text("FROM localhost/lowbuild/not-loaded:1\nRUN true\n")
    hosts = tmp_path / "lowbuild-hosts.yaml"
    hosts.write_text(
        f"registry: {registry.host}/doctor\ntls-verify: false\nendpoints:\n"
        f"  - {{name: live, engine: podman, url: '{a.url}'}}\n"
        f"  - {{name: dead, engine: podman, url: 'unix://{tmp_path}/nothing.sock'}}\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "lowbuild", "doctor", "--hosts", str(hosts), "--json"],
        cwd=tmp_path / "project",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 3, done.stderr
    reports = {r["endpoint"]: r for r in conforming("doctor", done.stdout)}
    assert reports["live"]["ok"] is True
    assert {c["name"] for c in reports["live"]["checks"]} >= {
        "reachable",
        "build",
        "run",
        "registry",
    }
    bases = {c["name"]: c["ok"] for c in reports["live"]["family_bases"]}
    assert bases == {BASE_IMAGE: True, "localhost/lowbuild/not-loaded:1": False}
    assert reports["dead"]["ok"] is False
    assert reports["dead"]["checks"][0]["name"] == "reachable"
    assert "dead" in done.stderr and "1 of 2 endpoint(s)" in done.stderr
    # Without the dead one, every endpoint works.
    hosts.write_text(hosts.read_text().rsplit("  - {name: dead", 1)[0])
    done = subprocess.run(
        [sys.executable, "-m", "lowbuild", "doctor", "--hosts", str(hosts)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "live" in done.stdout and "works" in done.stdout and "BROKEN" not in done.stdout


def test_a_dockerd_endpoint_used_alone_by_docker_and_by_buildx(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, registry: Registry
) -> None:
    """One dockerd endpoint, driven by the classic builder then by buildx: no registry
    needed, smoke tests over HTTP on it, nothing on the host's own daemon."""
    family = chain_family(tmp_path / "alone")
    with dockerd_service(tmp_path_factory.mktemp("dk1"), insecure_registries=[registry.host]) as d:
        load_image(d.client, BASE_IMAGE)
        done = family.lowbuild(
            "build", endpoint_arg("d", "docker", d.url, jobs=2), "--test", "--json"
        )
        built = records(done)
        assert {r["endpoint"] for r in built.values()} == {"d"}
        assert all(r["handover_ref"] is None for r in built.values())
        assert built["leafa"]["test"]["passed"] is True  # type: ignore[index]
        assert image_id(["docker"], "hosts/leafa:latest") != built["leafa"]["image_id"]
        # buildx on the same daemon: the family is up to date there (one image store) ...
        x = endpoint_arg("x", "buildx", d.url, jobs=2)
        again = records(family.lowbuild("build", x, "--json"))
        assert {r["state"] for r in again.values()} == {"up-to-date"}
        # ... and a change is built by BuildKit on that daemon, tested there.
        dockerfile = family.root / "contexts" / "leafa" / "Dockerfile"
        text = dockerfile.read_text()
        dockerfile.write_text(text.replace("/www/index.html", "/www/index.html && touch /x"))
        changed = records(family.lowbuild("build", x, "--test", "--json"))
        assert changed["leafa"]["state"] == "built" and changed["leafa"]["endpoint"] == "x"
        assert changed["leafa"]["test"]["passed"] is True  # type: ignore[index]
        assert image_id(d.client, "hosts/leafa:latest") == changed["leafa"]["image_id"]


def test_lowbuild_hosts_applies_to_plan_and_build_only(tmp_path: Path) -> None:
    """$LOWBUILD_HOSTS points plan and build at the endpoints; `images` (one engine) is
    not sent there, and an --endpoint option wins over the variable."""
    family = chain_family(tmp_path / "envvar")
    hosts = tmp_path / "hosts.yaml"
    hosts.write_text(
        f"endpoints:\n  - {{name: gone, engine: podman, url: 'unix://{tmp_path}/gone.sock'}}\n"
    )
    env = {**family.env, "LOWBUILD_HOSTS": str(hosts)}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "lowbuild", *args]
        return subprocess.run(
            argv, cwd=family.root, env=env, capture_output=True, text=True, timeout=120
        )

    plan = run("plan")
    assert plan.returncode == 3, plan.stderr
    assert (
        "endpoint gone (podman at unix://" in plan.stderr and "no endpoint answers" in plan.stderr
    )
    images = run("images", "-e", "podman", "--json")
    assert images.returncode == 0, images.stderr
    bad = run("plan", "--endpoint", "x=podmn")
    assert bad.returncode == 2 and "did you mean 'podman'" in bad.stderr


def test_a_multi_platform_family_split_over_two_podman_services(
    tmp_path: Path, two_podman: list[PodmanService], registry: Registry
) -> None:
    if any(not check.ok for check in emulation_checks(["linux/amd64", "linux/arm64"])):
        pytest.skip("no arm64 emulation here (lowbuild doctor says why)")
    family = chain_family(tmp_path / "arches")
    lowbuild_yaml = family.root / "lowbuild.yaml"
    lowbuild_yaml.write_text(lowbuild_yaml.read_text() + "platforms: [linux/amd64, linux/arm64]\n")
    a, b = two_podman
    for service in (a, b):
        load_image(service.client, f"{BASE_IMAGE}-linux-arm64")
    where = [endpoint_arg("a", "podman", a.url), endpoint_arg("b", "podman", b.url)]
    handover = f"--cache-to={registry.host}/arches"
    done = family.lowbuild("build", *where, handover, "--no-tls-verify", "--test", "--json")
    built = records(done)
    assert len(built) == 8 and {r["state"] for r in built.values()} == {"built"}
    tested = {key: r["test"]["passed"] for key, r in built.items() if "test" in r}  # type: ignore[index]
    assert sorted(tested) == [f"leaf{x}@linux-{a}" for x in "ab" for a in ("amd64", "arm64")]
    assert all(tested.values()), tested  # the leaves' HTTP and command tests, on their endpoint
    assert {str(r["endpoint"]) for r in built.values()} == {"a", "b"}
    clients = {"a": a.client, "b": b.client}
    for key, record in built.items():
        arch = key.rpartition("-")[2]
        client = clients[str(record["endpoint"])]
        found = inspect(client, f"hosts/{key.partition('@')[0]}:latest-linux-{arch}")
        assert found is not None and found["Architecture"] == arch, key
        # Handed over by its image's name, the variant's digest.
        assert str(record["handover_ref"]).startswith(
            f"{registry.host}/arches/{key.partition('@')[0]}@sha256:"
        )
