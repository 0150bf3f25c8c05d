"""The family, built for real on podman through the `lowbuild` command.

A five-image family with two branches (a → b → c and a → d → e) is written into
tmp_path. The engine is reached through a recording shim on PATH: a script named
`podman` that appends its arguments to a file and then runs the real podman, so a
test can say exactly which engine commands a run sent.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cli_runs import remove_namespace_images, run_lowbuild
from json_outputs import conforming

BASE = "localhost/lowbuild/busybox:latest"
BRANCHES = {"a": None, "b": "a", "c": "b", "d": "a", "e": "d"}


@dataclass
class Family:
    root: Path
    namespace: str
    calls: Path
    env: dict[str, str]

    def lowbuild(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run_lowbuild(self.root, self.env, *args)

    def build_json(self, *args: str) -> tuple[int, dict[str, dict[str, object]], str]:
        result = self.lowbuild("build", "--engine", "podman", "--json", "--jobs", "2", *args)
        records = conforming("build", result.stdout) if result.stdout.strip() else []
        if isinstance(records, dict):  # {"error": …}: the run failed before any image
            assert set(records) == {"error"}, records
            records = []
        return result.returncode, {r["image"]: r for r in records}, result.stderr

    def engine_calls(self) -> list[list[str]]:
        if not self.calls.exists():
            return []
        return [json.loads(line) for line in self.calls.read_text().splitlines()]

    def forget_calls(self) -> None:
        self.calls.unlink(missing_ok=True)

    def image_file(self, name: str) -> Path:
        return self.root / "contexts" / name / "image.yaml"


def _write_image(root: Path, namespace: str, name: str, parent: str | None) -> None:
    context = root / "contexts" / name
    context.mkdir(parents=True)
    lines = [f"name: {name}"]
    if parent:
        lines.append(f"parent: {parent}")
    lines += ["test:", f'  command: ["cat", "/{name}.txt"]', f'  expect: "{name}"']
    (context / "image.yaml").write_text("\n".join(lines) + "\n")
    (context / f"{name}.txt").write_text(f"{name}\n")
    base = f"{namespace}/{parent}:latest" if parent else BASE
    # The sleep makes overlap measurable: two branches building at once overlap by seconds.
    (context / "Dockerfile").write_text(
        f"FROM {base}\nCOPY {name}.txt /{name}.txt\nRUN sleep 2 && cat /{name}.txt\n"
    )


@pytest.fixture
def family(tmp_path: Path) -> Iterator[Family]:
    podman = shutil.which("podman")
    if podman is None:
        pytest.fail("podman is not installed: run `make provision`")
    namespace = f"lowbuild-famtest-{uuid.uuid4().hex[:8]}"
    root = tmp_path / "project"
    root.mkdir()
    (root / "lowbuild.yaml").write_text(
        f'name: famtest\nnamespace: {namespace}\ncontexts: ["contexts/*"]\n'
    )
    for name, parent in BRANCHES.items():
        _write_image(root, namespace, name, parent)
    shim = tmp_path / "shim"
    shim.mkdir()
    calls = tmp_path / "engine-calls.jsonl"
    (shim / "podman").write_text(
        "#!/usr/bin/env python3\n"
        "import json, os, sys\n"
        f"with open({str(calls)!r}, 'a') as out:\n"
        "    out.write(json.dumps(sys.argv[1:]) + '\\n')\n"
        f"os.execv({podman!r}, [{podman!r}, *sys.argv[1:]])\n"
    )
    (shim / "podman").chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{shim}{os.pathsep}{os.environ['PATH']}",
        "LOWBUILD_CACHE": str(tmp_path / "cache"),
        "COLUMNS": "200",
    }
    yield Family(root=root, namespace=namespace, calls=calls, env=env)
    remove_namespace_images(podman, namespace)


def _builds(calls: list[list[str]], *, sbom: bool = False) -> list[list[str]]:
    """The image builds among the engine calls (`sbom`: the SBOM label steps instead,
    one per image built: a context of their own, run/build.py _attach_sbom)."""
    return [
        call
        for call in calls
        if call and call[0] == "build" and any("sbom-label-" in arg for arg in call) == sbom
    ]


def test_family_builds_in_dependency_order_with_branches_in_parallel(family: Family) -> None:
    code, records, stderr = family.build_json()
    assert code == 0, stderr
    assert {name: r["state"] for name, r in records.items()} == dict.fromkeys(BRANCHES, "built")
    for name, parent in BRANCHES.items():
        if parent:
            assert records[name]["started"] >= records[parent]["ended"], (name, parent)
    # b and d are independent children of a: with two jobs they ran at the same time.
    b, d = records["b"], records["d"]
    assert max(b["started"], d["started"]) < min(b["ended"], d["ended"])
    assert len(_builds(family.engine_calls())) == 5
    assert len(_builds(family.engine_calls(), sbom=True)) == 5  # each image labelled once


def test_each_smoke_test_runs_as_soon_as_its_image_is_ready(family: Family) -> None:
    """--test does not wait for the whole family: a's test has passed while the images
    built after it are still building (one at a time here, two seconds each at least)."""
    code, records, stderr = family.build_json("--test", "--jobs", "1")

    assert code == 0, stderr
    assert all(r["test"]["passed"] for r in records.values())
    lines = stderr.splitlines()
    tested_a = next(i for i, line in enumerate(lines) if line.startswith("✓ test a:"))
    last_built = max(i for i, line in enumerate(lines) if ": built in" in line)
    assert tested_a < last_built, stderr


def test_progress_plain_streams_each_log_line_and_quiet_prints_only_the_summary(
    family: Family,
) -> None:
    plain = family.lowbuild("build", "--engine", "podman", "--progress", "plain", "a")
    assert plain.returncode == 0, plain.stderr
    # Each line of a's build log as it came, prefixed: the engine's own STEP lines too.
    assert any(line.startswith("[a] ") and "STEP" in line for line in plain.stderr.splitlines())
    assert "→ a: started" in plain.stderr

    (family.root / "contexts" / "b" / "b.txt").write_text("b v2\n")
    del family.env["COLUMNS"]  # what a CI log gives: no terminal, no width
    quiet = family.lowbuild("build", "--engine", "podman", "--progress", "quiet", "b")
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr == ""
    summary = [line for line in quiet.stdout.splitlines() if line.startswith("│")]
    assert [line.split("│")[1].strip() for line in summary] == ["a", "b"]
    # Not a terminal: the summary table is not squeezed into 80 columns.
    assert all(len(line) > 80 for line in summary[:1]), quiet.stdout


def test_second_build_builds_nothing_and_sends_nothing_to_the_engine(family: Family) -> None:
    assert family.build_json()[0] == 0
    family.forget_calls()
    code, records, stderr = family.build_json()
    assert code == 0, stderr
    assert {r["state"] for r in records.values()} == {"up-to-date"}
    assert _builds(family.engine_calls()) == []
    # One engine query in all: the inspect of every image. podman passed its probe in
    # the first run and is the same binary, so its version is not asked again...
    assert [call[:2] for call in family.engine_calls()] == [["image", "inspect"]]
    plan = conforming("plan", family.lowbuild("plan", "--engine", "podman", "--json").stdout)
    assert {image["action"] for image in plan["images"]} == {"up-to-date"}
    # ... until the binary changes (an upgrade): then it is probed again.
    shim = Path(family.env["PATH"].split(os.pathsep)[0]) / "podman"
    shim.write_text(shim.read_text() + "# upgraded\n")
    family.forget_calls()
    assert family.build_json()[0] == 0
    assert [call[:1] for call in family.engine_calls()][:1] == [["version"]]


def test_changed_file_in_parent_rebuilds_it_and_descendants_only(family: Family) -> None:
    assert family.build_json()[0] == 0
    (family.root / "contexts" / "d" / "d.txt").write_text("d, changed\n")
    plan = conforming("plan", family.lowbuild("plan", "--engine", "podman", "--json").stdout)
    actions = {image["image"]: image for image in plan["images"]}
    assert actions["d"]["action"] == "build"
    assert any("d.txt" in reason for reason in actions["d"]["reasons"]), actions["d"]
    assert actions["e"]["reasons"] == ["parent rebuilt (d)"]
    assert {n for n, image in actions.items() if image["action"] == "build"} == {"d", "e"}

    family.forget_calls()
    code, records, _ = family.build_json()
    assert code == 0
    assert {n for n, r in records.items() if r["state"] == "built"} == {"d", "e"}
    assert len(_builds(family.engine_calls())) == 2


def test_failed_run_blocks_descendants_and_other_branch_still_builds(family: Family) -> None:
    dockerfile = family.root / "contexts" / "b" / "Dockerfile"
    good = dockerfile.read_text()
    dockerfile.write_text(good + "RUN echo about to fail && false\n")
    code, records, _ = family.build_json()
    assert code == 1
    assert records["b"]["state"] == "failed"
    assert records["c"]["state"] == "blocked"
    assert records["c"]["blocked_by"] == "b"
    assert {records[n]["state"] for n in ("a", "d", "e")} == {"built"}, records
    failed_log = Path(str(records["b"]["log"]))
    assert failed_log.name == "b.FAILED.log"
    assert "about to fail" in failed_log.read_text()

    dockerfile.write_text(good)
    family.forget_calls()
    code, records, _ = family.build_json()
    assert code == 0
    assert {n for n, r in records.items() if r["state"] == "built"} == {"b", "c"}
    assert len(_builds(family.engine_calls())) == 2


def test_build_test_runs_every_smoke_test(family: Family) -> None:
    code, records, stderr = family.build_json("--test")
    assert code == 0, stderr
    assert all(r["test"]["passed"] for r in records.values())  # type: ignore[index]


def _break_and_expect(family: Family, where: Path, line: int, words: str) -> None:
    family.forget_calls()
    result = family.lowbuild("build", "--engine", "podman")
    assert result.returncode == 2, result.stderr
    message = " ".join(result.stderr.split())
    assert f"{where}:{line}" in message, message
    assert words in message, message
    assert _builds(family.engine_calls()) == []


def test_cycle_is_an_error_naming_the_images(family: Family) -> None:
    image_yaml = family.image_file("a")
    image_yaml.write_text(image_yaml.read_text().replace("name: a\n", "name: a\nparent: c\n"))
    dockerfile = family.root / "contexts" / "a" / "Dockerfile"
    dockerfile.write_text(dockerfile.read_text().replace(BASE, f"{family.namespace}/c:latest"))
    family.forget_calls()
    result = family.lowbuild("build", "--engine", "podman")
    assert result.returncode == 2, result.stderr
    message = " ".join(result.stderr.split())
    assert "cycle" in message
    for name in ("a", "b", "c"):
        assert str(family.image_file(name)) in message, message
    assert _builds(family.engine_calls()) == []


def test_parent_that_disagrees_with_from_names_both_places(family: Family) -> None:
    image_yaml = family.image_file("e")
    image_yaml.write_text(image_yaml.read_text().replace("parent: d", "parent: b"))
    _break_and_expect(family, image_yaml, 2, "Dockerfile")


def test_unknown_key_is_an_error_with_file_and_line(family: Family) -> None:
    image_yaml = family.image_file("c")
    image_yaml.write_text(image_yaml.read_text() + "tagz: [x]\n")
    _break_and_expect(family, image_yaml, 6, "tagz")


def test_missing_dockerfile_is_an_error(family: Family) -> None:
    (family.root / "contexts" / "e" / "Dockerfile").unlink()
    _break_and_expect(family, family.image_file("e"), 1, "Dockerfile")


def test_duplicate_name_is_an_error_naming_both_files(family: Family) -> None:
    image_yaml = family.image_file("c")
    image_yaml.write_text(image_yaml.read_text().replace("name: c", "name: e"))
    family.forget_calls()
    result = family.lowbuild("build", "--engine", "podman")
    assert result.returncode == 2
    message = " ".join(result.stderr.split())
    assert str(family.image_file("e")) in message and str(image_yaml) in message, message
    assert _builds(family.engine_calls()) == []


def test_ctrl_c_stops_running_builds_and_leaves_no_containers(family: Family) -> None:
    podman = shutil.which("podman") or "podman"

    def build_containers() -> set[str]:
        out = subprocess.run(
            [podman, "ps", "--all", "--external", "--quiet", "--no-trunc"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return set(out.split())

    before = build_containers()
    dockerfile = family.root / "contexts" / "a" / "Dockerfile"
    dockerfile.write_text(dockerfile.read_text() + "RUN sleep 120\n")
    # A terminal delivers Ctrl-C to the whole foreground process group.
    process = subprocess.Popen(
        [sys.executable, "-m", "lowbuild", "build", "--engine", "podman"],
        cwd=family.root,
        env=family.env,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not any(
            "sleep 120" in str(call) or call[:1] == ["build"] for call in family.engine_calls()
        ):
            assert time.monotonic() < deadline, "the build never started"
            time.sleep(0.2)
        time.sleep(3)  # inside the RUN step now
        started = time.monotonic()
        os.killpg(process.pid, signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 130, stderr
    assert "interrupted" in stderr
    assert time.monotonic() - started < 30  # it did not wait for the 120 s step
    assert build_containers() - before == set()
    owned = subprocess.run(
        [podman, "ps", "--all", "--quiet", "--filter", "label=lowbuild.owned"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert owned == []
    stage = family.root / ".lowbuild" / "stage"
    half_staged = list(stage.glob("*.tmp")) if stage.exists() else []
    assert half_staged == []


def _pin_base(family: Family, image_id: str) -> None:
    project = family.root / "lowbuild.yaml"
    project.write_text(project.read_text() + f'bases:\n  - {{ref: "{BASE}", id: "{image_id}"}}\n')


def test_base_pinned_to_another_id_is_refused_naming_both_ids(family: Family) -> None:
    present = subprocess.run(
        ["podman", "image", "inspect", "--format", "{{.Id}}", BASE],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    expected = "sha256:" + "0" * 64
    _pin_base(family, expected)

    code, records, stderr = family.build_json()

    assert code == 4, stderr
    assert records == {}
    message = " ".join(stderr.split())
    assert expected in message and present in message, message
    assert "lowbuild.yaml:" in message  # where the pin is written
    assert _builds(family.engine_calls()) == []


def test_base_pinned_to_its_own_id_builds(family: Family) -> None:
    present = subprocess.run(
        ["podman", "image", "inspect", "--format", "{{.Id}}", BASE],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    _pin_base(family, f"sha256:{present.removeprefix('sha256:')}")

    code, records, stderr = family.build_json("a")

    assert code == 0, stderr
    assert records["a"]["state"] == "built"
