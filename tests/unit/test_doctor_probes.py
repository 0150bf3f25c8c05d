"""How `lowbuild doctor` walks an engine step by step (version, dockerd, build, run), with a
fake engine: where it stops, which fix a failed step carries, and how a project's missing
base image is reported apart from the engine's health. (tests/integration/test_doctor.py
runs the same walk on the real engines.)"""

from __future__ import annotations

from typing import Any

import pytest

from lowbuild.doctor.facts import ContainersConf, HostFacts
from lowbuild.doctor.probes import PROBE_MARKER, PROBE_PROGRAM, examine_engine
from lowbuild.engines.base import BuildRequest, Engine, ImageInfo
from lowbuild.engines.docker import DockerEngine
from lowbuild.errors import EngineError

# Root on a cgroup v2 host whose limits podman's defaults fit under: no cause from facts alone.
HEALTHY = HostFacts(
    euid=0,
    user="root",
    cgroup_layout="unified",
    nofile_hard=None,
    nproc_hard=None,
    pid_max=None,
    containers_conf=ContainersConf(runtime="runc"),
)
CRUN_RLIMIT = "Error: crun: setrlimit `RLIMIT_NOFILE`: Operation not permitted"


class FakeEngine:
    """Answers like a working engine, except that the step named `fails` raises."""

    name = "podman"

    def __init__(
        self, *, fails: str = "", message: str = "Error: broken", images: tuple[str, ...] = ()
    ) -> None:
        self.fails = fails
        self.message = message
        self.images = images
        self.removed: list[str] = []
        self.contexts: list[dict[str, tuple[str, int]]] = []

    def _step(self, name: str) -> None:
        if self.fails == name:
            raise EngineError(["fake", name], 1, self.message)

    def version(self) -> str:
        self._step("version")
        return "99.0.0"

    def inspect_images(self, refs: list[str]) -> dict[str, ImageInfo | None]:
        return {
            ref: ImageInfo(id="sha256:" + "a" * 64) if ref in self.images else None for ref in refs
        }

    def build(self, request: BuildRequest, **_: Any) -> str:
        self._step("build")
        self.contexts.append(
            {
                f.name: (f.read_bytes()[:4].decode("latin-1"), f.stat().st_mode & 0o777)
                for f in request.context.iterdir()
            }
        )
        return "sha256:" + "b" * 64

    def run_once(self, **_: Any) -> tuple[int, str]:
        self._step("run")
        return 0, PROBE_MARKER + "\n"

    def remove_image(self, ref: str, *, force: bool = False) -> None:
        self.removed.append(ref)


@pytest.fixture(autouse=True)
def every_binary_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("lowbuild.doctor.probes.shutil.which", lambda b: f"/usr/bin/{b}")


def examine(name: str, fake: FakeEngine) -> dict[str, tuple[bool, str, str]]:
    def make(_: str) -> Engine:
        return fake  # type: ignore[return-value]

    report = examine_engine(name, facts=HEALTHY, make_engine=make)  # type: ignore[arg-type]
    return {c.name: (c.ok, c.detail, c.fix) for c in report.checks} | {
        "ok": (report.ok, report.version or "", "")
    }


def test_a_working_engine_builds_runs_and_removes_its_probe_image() -> None:
    fake = FakeEngine()
    checks = examine("podman", fake)
    assert checks["ok"] == (True, "99.0.0", "")
    assert checks["build"][0] and checks["run"][0]
    assert len(fake.removed) == 1 and fake.removed[0].startswith("localhost/lowbuild/doctor-probe:")


def test_the_probe_context_needs_no_base_image() -> None:
    fake = FakeEngine()
    examine("docker", fake)
    [context] = fake.contexts
    dockerfile = context.pop("Dockerfile")
    assert dockerfile[0] == "FROM"  # FROM scratch: nothing to find in the store
    assert context == {PROBE_PROGRAM: ("\x7fELF", 0o755)}


def test_a_missing_family_base_is_its_own_finding_not_the_engines_failure() -> None:
    fake = FakeEngine(images=("localhost/team/debian:12",))
    bases = {"localhost/team/debian:12": ("app",), "localhost/team/alpine:3": ("tool", "cli")}
    report = examine_engine("podman", facts=HEALTHY, make_engine=lambda _: fake, bases=bases)  # type: ignore[arg-type,return-value]
    assert report.ok
    assert [c.name for c in report.checks] == ["installed", "version", "build", "run"]
    found = {c.name: c for c in report.family_bases}
    assert found["localhost/team/debian:12"].ok
    missing = found["localhost/team/alpine:3"]
    assert not missing.ok and "tool, cli cannot build" in missing.detail
    assert "lowbuild bundle import" in missing.fix and "make provision" not in missing.fix


def test_no_fix_sends_a_wheel_user_to_the_repository() -> None:
    fake = FakeEngine(fails="version", message="Error: something odd")
    checks = examine("buildah", fake)
    assert not checks["version"][0]
    assert all("make" not in fix and "scripts/" not in fix for _, _, fix in checks.values())


def test_a_failed_build_carries_the_fix_of_the_first_known_cause() -> None:
    checks = examine("podman", FakeEngine(fails="build", message=CRUN_RLIMIT))
    ok, detail, fix = checks["build"]
    assert not ok and detail == CRUN_RLIMIT
    assert fix == checks["rlimits above the host's hard limit"][2]
    assert "run" not in checks and not checks["ok"][0]


def test_an_unknown_failure_points_at_the_engine_message() -> None:
    checks = examine("docker", FakeEngine(fails="run", message="Error: nobody has seen this"))
    assert checks["run"][2].startswith("no known cause matched")
    assert "dockerd's log" in checks["run"][2]


def test_buildx_asks_whether_dockerd_answers_before_building(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def daemon_down(self: DockerEngine) -> str:
        raise EngineError(["docker", "version"], 1, "Cannot connect to the Docker daemon")

    monkeypatch.setattr(DockerEngine, "version", daemon_down)
    fake = FakeEngine()
    checks = examine("buildx", fake)
    assert not checks["dockerd"][0]
    assert "systemctl start docker" in checks["dockerd"][2]
    assert "base image" not in checks and fake.removed == []
