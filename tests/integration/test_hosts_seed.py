"""The seed family (nobody tuned the hosts feature for it: a compiled nginx and haproxy,
a JDK and Tomcat chain, a commit recipe, HTTP and command smoke tests) split over two
`podman system service` endpoints started here, parents handed over through a loopback
registry."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from cli_runs import run_lowbuild
from endpoint_services import load_image, podman_service
from json_outputs import conforming
from live_services import Registry

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="starts engine services as root"),
]

REPO = Path(__file__).resolve().parents[2]
BOOKWORM = "localhost/lowbuild/bookworm:latest"


def test_the_seed_family_split_over_two_podman_services(
    tmp_path_factory: pytest.TempPathFactory, registry: Registry
) -> None:
    tmp = tmp_path_factory.mktemp("seedhosts")
    root = tmp / "project"
    root.mkdir()
    shutil.copy2(REPO / "lowbuild.yaml", root / "lowbuild.yaml")
    shutil.copytree(REPO / "contexts", root / "contexts", symlinks=True)
    env = {k: v for k, v in os.environ.items() if k != "LOWBUILD_HOSTS"}
    env.update(LOWBUILD_CACHE=str(tmp / "cache"), COLUMNS="200")
    fetched = subprocess.run(
        ["bash", str(REPO / "scripts" / "fetch_seed_sources.sh"), str(tmp / "sources")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert fetched.returncode == 0, fetched.stderr

    def lowbuild(*args: str) -> subprocess.CompletedProcess[str]:
        return run_lowbuild(root, env, *args, timeout=1800)

    with (
        podman_service(tmp_path_factory.mktemp("sa")) as a,
        podman_service(tmp_path_factory.mktemp("sb")) as b,
    ):
        for service in (a, b):
            load_image(service.client, BOOKWORM)
        where = [f"--endpoint=a=podman+{a.url},jobs=1", f"--endpoint=b=podman+{b.url},jobs=1"]
        done = lowbuild(
            "build",
            *where,
            f"--cache-to={registry.host}/seed",
            "--no-tls-verify",
            "--test",
            "--json",
        )
        assert done.returncode == 0, done.stderr[-4000:]
        built = {r["image"]: r for r in conforming("build", done.stdout)}
        assert {r["state"] for r in built.values()} == {"built"}
        assert all(r["test"]["passed"] for r in built.values() if "test" in r), built
        assert {r["endpoint"] for r in built.values()} == {"a", "b"}  # really split
        clients = {"a": a.client, "b": b.client}
        for name, record in built.items():
            ref = f"lowbuild/{name}:latest"
            ids = set()
            for client in clients.values():
                shown = subprocess.run(
                    [*client, "image", "inspect", ref], capture_output=True, text=True
                )
                if shown.returncode == 0:
                    ids.add("sha256:" + json.loads(shown.stdout)[0]["Id"].removeprefix("sha256:"))
            assert ids == {record["image_id"]}, name  # built once, handed over as is
        for client in clients.values():
            alone = lowbuild("plan", f"--endpoint=x=podman+{client[-1]}", "--json")
            assert alone.returncode == 0, alone.stderr
            actions = {r["image"]: r["action"] for r in json.loads(alone.stdout)["images"]}
            for name in built:
                held = subprocess.run(
                    [*client, "image", "exists", f"lowbuild/{name}:latest"], capture_output=True
                )
                if held.returncode == 0:
                    assert actions[name] == "up-to-date", (client, name, actions)
