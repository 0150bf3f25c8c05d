"""`lowbuild doctor` against the real engines of this host, healthy and deliberately broken.

Each breakage is made for the doctor process only, through the variables the engines
themselves honour: CONTAINERS_CONF (podman reads only that file), CONTAINERS_STORAGE_CONF
(an empty image store) and DOCKER_HOST (a socket nobody listens on). doctor needs no base
image (its probe is FROM scratch); a project's missing base is reported on its own.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from json_outputs import conforming

from lowbuild.doctor.facts import cgroup_layout
from lowbuild.engines.base import ENGINE_NAMES

EXIT_ENVIRONMENT = 3
EXIT_BAD_INPUT = 2


def run_doctor(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lowbuild", "doctor", *args],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def reports_of(done: subprocess.CompletedProcess[str]) -> dict[str, dict[str, Any]]:
    return {report["engine"]: report for report in conforming("doctor", done.stdout)}


def checks_of(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {check["name"]: check for check in report["checks"]}


def requested_engines() -> list[str]:
    raw = os.environ.get("LOWBUILD_TEST_ENGINES", ",".join(ENGINE_NAMES))
    return [name.strip() for name in raw.split(",") if name.strip()]


def test_doctor_finds_every_engine_building_and_running() -> None:
    done = run_doctor("--json")
    reports = reports_of(done)
    assert list(reports) == list(ENGINE_NAMES)
    for name in requested_engines():
        report = reports[name]
        assert report["ok"], f"{name}: {report['checks']}"
        assert report["version"]
        checks = checks_of(report)
        assert checks["build"]["ok"] and checks["run"]["ok"]
    assert done.returncode == 0, done.stderr


def test_doctor_table_says_which_engines_work() -> None:
    done = run_doctor("--engine", "docker")
    assert done.returncode == 0, done.stderr
    assert "docker" in done.stdout
    assert "works" in done.stdout
    assert "BROKEN" not in done.stdout


def test_doctor_blames_crun_on_hybrid_cgroups_and_names_the_fix(tmp_path: Path) -> None:
    if cgroup_layout(Path("/sys/fs/cgroup")) == "unified":
        pytest.skip("crun works on a cgroup v2 host: nothing to diagnose here")
    conf = tmp_path / "containers.conf"
    conf.write_text('[engine]\nruntime = "crun"\n')

    done = run_doctor("--engine", "podman", "--json", env={"CONTAINERS_CONF": str(conf)})

    assert done.returncode == EXIT_ENVIRONMENT
    podman = reports_of(done)["podman"]
    assert not podman["ok"]
    crun = checks_of(podman)["crun on hybrid/v1 cgroups"]
    assert not crun["ok"]
    assert "hybrid" in crun["detail"] or "legacy" in crun["detail"]
    assert 'runtime = "runc"' in crun["fix"]
    assert str(conf) in crun["fix"]  # the file podman actually reads, not the system one
    assert "does not work" in done.stderr


def test_doctor_says_dockerd_is_not_running(tmp_path: Path) -> None:
    socket = tmp_path / "no-dockerd.sock"

    done = run_doctor("--engine", "docker", "--json", env={"DOCKER_HOST": f"unix://{socket}"})

    assert done.returncode == EXIT_ENVIRONMENT
    docker = reports_of(done)["docker"]
    assert not docker["ok"]
    dockerd = checks_of(docker)["dockerd"]
    assert str(socket) in dockerd["detail"]
    assert "does not exist" in dockerd["detail"]
    assert "dockerd" in dockerd["fix"]


def test_buildx_needs_a_running_dockerd_too(tmp_path: Path) -> None:
    done = run_doctor(
        "--engine", "buildx", "--json", env={"DOCKER_HOST": f"unix://{tmp_path}/gone.sock"}
    )
    assert done.returncode == EXIT_ENVIRONMENT
    buildx = reports_of(done)["buildx"]
    assert buildx["version"]  # the plugin itself answers without a daemon
    assert not checks_of(buildx)["dockerd"]["ok"]


def test_doctor_needs_no_base_image_an_empty_store_works(tmp_path: Path) -> None:
    storage_conf = tmp_path / "storage.conf"
    storage_conf.write_text(
        f'[storage]\ndriver = "vfs"\ngraphroot = "{tmp_path}/graph"\nrunroot = "{tmp_path}/run"\n'
    )
    env = {"CONTAINERS_STORAGE_CONF": str(storage_conf)}
    listed = subprocess.run(
        ["podman", "images", "--quiet"], env={**os.environ, **env}, capture_output=True, text=True
    )
    assert listed.returncode == 0 and listed.stdout == ""  # really empty: no base to build on

    done = run_doctor("--engine", "podman", "--json", env=env)

    assert done.returncode == 0, done.stderr
    podman = reports_of(done)["podman"]
    assert podman["ok"], podman["checks"]
    assert checks_of(podman)["build"]["detail"].startswith("FROM scratch")


def write_two_base_project(root: Path, missing: str) -> Path:
    """One image on the provisioned busybox, one on an image no engine here has."""
    root.mkdir()
    (root / "lowbuild.yaml").write_text('name: doctored\ncontexts: ["contexts/*"]\n')
    for name, base in (("present", "localhost/lowbuild/busybox:latest"), ("absent", missing)):
        context = root / "contexts" / name
        context.mkdir(parents=True)
        (context / "Dockerfile").write_text(f"FROM {base}\n")
        (context / "image.yaml").write_text(f"name: {name}\n")
    return root / "lowbuild.yaml"


def test_a_missing_family_base_is_its_own_finding_on_every_engine(tmp_path: Path) -> None:
    missing = f"localhost/lowbuild/never-imported:{tmp_path.name.lower()}"
    project = write_two_base_project(tmp_path / "family", missing)

    done = run_doctor("--json", "-f", str(project))

    assert done.returncode == 0, done.stderr  # every engine works: not exit 3
    reports = reports_of(done)
    for name in requested_engines():
        report = reports[name]
        assert report["ok"], f"{name}: {report['checks']}"
        bases = {check["name"]: check for check in report["family_bases"]}
        assert bases["localhost/lowbuild/busybox:latest"]["ok"]
        absent = bases[missing]
        assert not absent["ok"] and "absent cannot build" in absent["detail"], name
        assert "lowbuild bundle import" in absent["fix"] and "make" not in absent["fix"]


def test_doctor_table_lists_missing_bases_apart_from_the_engines(tmp_path: Path) -> None:
    missing = "localhost/lowbuild/never-imported:table"
    project = write_two_base_project(tmp_path / "family", missing)

    done = subprocess.run(
        [sys.executable, "-m", "lowbuild", "doctor", "--engine", "podman"],
        cwd=project.parent / "contexts" / "absent",  # found by walking up, like git
        env={**os.environ, "COLUMNS": "250"},  # one table row per line, whatever pytest set
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert done.returncode == 0, done.stderr
    engines, _, bases = done.stdout.partition("family base images")
    assert "works" in engines and "BROKEN" not in engines and missing not in engines
    assert missing in bases and "MISSING" in bases


def test_a_project_that_does_not_load_does_not_stop_doctor(tmp_path: Path) -> None:
    (tmp_path / "lowbuild.yaml").write_text("name: [broken\n")
    done = subprocess.run(
        [sys.executable, "-m", "lowbuild", "doctor", "--engine", "podman", "--json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert reports_of(done)["podman"]["ok"]
    assert "does not load" in done.stderr and "lowbuild.yaml:1" in done.stderr
    asked = run_doctor("--engine", "podman", "-f", str(tmp_path / "lowbuild.yaml"))
    assert asked.returncode == EXIT_BAD_INPUT  # named with -f: its mistakes are the answer


def test_unknown_engine_is_refused() -> None:
    done = run_doctor("--engine", "kaniko")
    assert done.returncode == EXIT_BAD_INPUT  # a name lowbuild does not know: bad input
    assert "kaniko" in done.stderr and "lowbuild knows podman" in done.stderr


def test_doctor_explains_rlimits_above_the_host_limit(tmp_path: Path) -> None:
    conf = tmp_path / "containers.conf"
    conf.write_text('[engine]\nruntime = "runc"\n')  # no default_ulimits: podman's own defaults

    done = run_doctor("--engine", "podman", "--json", env={"CONTAINERS_CONF": str(conf)})

    podman = reports_of(done)["podman"]
    if podman["ok"]:
        pytest.skip("this root may raise its rlimits (CAP_SYS_RESOURCE): podman's defaults work")
    assert done.returncode == EXIT_ENVIRONMENT
    rlimits = checks_of(podman)["rlimits above the host's hard limit"]
    assert "RLIMIT_NOFILE 1048576" in rlimits["detail"]
    assert "default_ulimits" in rlimits["fix"]
    assert str(conf) in rlimits["fix"]
