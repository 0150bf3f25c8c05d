"""Multi-platform families without an engine: `platforms:` read and checked, each image
expanded into one variant per platform (its own needs, bases, tags and fingerprint), a
variant's Dockerfile pointed at its platform's images, and doctor's emulation checks."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from pathlib import Path

import pytest
from test_graph import write_family

from lowbuild.context.dockerfile import retarget_dockerfile
from lowbuild.doctor.checks import emulation_checks
from lowbuild.errors import SpecError, UsageError
from lowbuild.plan.fingerprint import fingerprint, inputs_for
from lowbuild.plan.graph import FamilyGraph, build_graph, select
from lowbuild.spec.load import load_project
from lowbuild.spec.platforms import native_platform, platform_problem, split_key, variant_ref

BUSYBOX = "localhost/lowbuild/busybox:latest"
ARM = "linux/arm64"
AMD = "linux/amd64"


def write(root: Path, project: str, images: Mapping[str, tuple[str, str | None]]) -> Path:
    """test_graph's family on disk, with `project` as its lowbuild.yaml."""
    path = write_family(root, images)
    path.write_text(textwrap.dedent(project))
    return path


FAMILY = {
    "base": ("name: base\n", f"FROM {BUSYBOX}\nRUN true\n"),
    "app": (
        "name: app\nparent: base\n",
        "ARG BASE=lb/base:latest\nFROM ${BASE} AS run\nCOPY --from=lb/util:latest /t /t\n",
    ),
    "util": ("name: util\nparent: base\n", "FROM lb/base:latest\n"),
    "tool": ("name: tool\nparent: base\nplatforms: [linux/arm64]\n", "FROM lb/base:latest\n"),
    "tools": (
        "name: tools\nkind: commit\ncommit:\n  base: base\n  steps: [{run: 'true'}]\n",
        None,
    ),
}
PROJECT = "name: fam\nnamespace: lb\nplatforms: [linux/amd64, linux/arm64]\n"


def graph_of(
    root: Path, project: str = PROJECT, images: Mapping[str, tuple[str, str | None]] = FAMILY
) -> FamilyGraph:
    return build_graph(load_project(write(root, project, images)))


def spec_error(root: Path, project: str, images: Mapping[str, tuple[str, str | None]]) -> str:
    with pytest.raises(SpecError) as caught:
        graph_of(root, project, images)
    return str(caught.value)


def test_platform_strings() -> None:
    assert platform_problem("linux/arm64") is None
    assert platform_problem("linux/arm/v7") is None
    assert "OS/ARCH" in (platform_problem("arm64") or "")
    assert "unknown architecture 'aarch64'" in (platform_problem("linux/aarch64") or "")
    assert "only linux" in (platform_problem("windows/amd64") or "")
    assert "unknown variant 'v9'" in (platform_problem("linux/arm/v9") or "")
    assert split_key("web@linux-arm-v7") == ("web", "linux/arm/v7")
    assert split_key("web") == ("web", None)
    assert variant_ref("x/web:1", ARM) == "x/web:1-linux-arm64"
    assert variant_ref("localhost:5000/web", ARM) == "localhost:5000/web:latest-linux-arm64"


def test_each_image_becomes_one_variant_per_platform(tmp_path: Path) -> None:
    graph = graph_of(tmp_path)
    native = native_platform()
    # tool asks for arm64 only; the others take the project's two platforms.
    assert sorted(graph.nodes) == sorted(
        [f"{n}@linux-{a}" for n in ("app", "base", "tools", "util") for a in ("amd64", "arm64")]
        + ["tool@linux-arm64"]
    )
    app = graph.nodes["app@linux-arm64"]
    assert app.platform == ARM
    assert app.parent == "base@linux-arm64"
    assert app.needs == ("base@linux-arm64", "util@linux-arm64")
    # The Dockerfile's own words (ARG substituted) → the arm64 variants' tags.
    assert dict(app.retarget) == {
        "lb/base:latest": "lb/base:latest-linux-arm64",
        "lb/util:latest": "lb/util:latest-linux-arm64",
    }
    base = graph.nodes["base@linux-arm64"]
    assert base.external == (f"{BUSYBOX}-linux-arm64",)  # by convention: no `bases:` entry
    assert graph.nodes[f"base@{native.replace('/', '-')}"].external == (BUSYBOX,)
    assert dict(graph.nodes["tools@linux-arm64"].retarget) == {"base": "lb/base:latest-linux-arm64"}
    project = graph.project
    assert project.ref("app@linux-arm64") == "lb/app:latest-linux-arm64"
    # The native variant also carries the image's own tag; a foreign one only its own.
    assert project.refs_for(f"app@{native.replace('/', '-')}")[-1] == "lb/app:latest"
    assert project.refs_for("app@linux-arm64") == ("lb/app:latest-linux-arm64",)


def test_a_child_asking_for_a_platform_its_parent_lacks_is_a_spec_error(tmp_path: Path) -> None:
    images = {
        "base": ("name: base\nplatforms: [linux/amd64]\n", f"FROM {BUSYBOX}\n"),
        # widening is allowed only the other way: base narrower than the project is fine
        "app": ("name: app\nparent: base\n", "FROM lb/base:latest\n"),
    }
    message = spec_error(tmp_path, PROJECT, images)
    assert f"{tmp_path}/contexts/app/image.yaml:1:" in message  # its name line: no platforms:
    assert "'app' is built for linux/arm64, which its parent 'base'" in message
    images["app"] = ("name: app\nparent: base\nplatforms:\n  - linux/arm64\n", images["app"][1])
    message = spec_error(tmp_path / "again", PROJECT, images)
    assert f"{tmp_path}/again/contexts/app/image.yaml:4:" in message  # its platforms list


def test_unknown_or_repeated_platforms_are_spec_errors_at_their_line(tmp_path: Path) -> None:
    project = "name: fam\nnamespace: lb\nplatforms:\n  - linux/amd64\n  - linux/arm65\n"
    message = spec_error(tmp_path, project, {"base": FAMILY["base"]})
    assert f"{tmp_path}/lowbuild.yaml:5:" in message
    assert "unknown architecture 'arm65'" in message
    images = {"base": ("name: base\nplatforms: [linux/arm64, linux/arm64]\n", "FROM x\n")}
    message = spec_error(tmp_path / "b", "name: fam\n", images)
    assert "image.yaml:2:" in message and "'linux/arm64' is given twice" in message
    message = spec_error(tmp_path / "c", "name: fam\nplatforms: []\n", {"base": FAMILY["base"]})
    assert "lowbuild.yaml:2:" in message and "at least one platform" in message


def test_bases_name_a_platforms_image_and_pin_it(tmp_path: Path) -> None:
    pin = "sha256:" + "a" * 64
    project = PROJECT + textwrap.dedent(f"""\
        bases:
          - ref: {BUSYBOX}
            platforms:
              linux/arm64: {{ref: example.org/busybox-arm, id: "{pin}"}}
        """)
    graph = graph_of(tmp_path, project, {"base": FAMILY["base"]})
    assert graph.nodes["base@linux-arm64"].external == ("example.org/busybox-arm",)
    assert graph.project.base_for(BUSYBOX, ARM) == ("example.org/busybox-arm", pin)
    bad = PROJECT + "bases:\n  - ref: x\n    platforms: {linux/sparc: y}\n"
    assert "unknown architecture 'sparc'" in spec_error(tmp_path / "b", bad, {})
    assert "give its `id:`, its `platforms:`" in spec_error(
        tmp_path / "c", PROJECT + "bases:\n  - ref: x\n", {}
    )


def test_select_narrows_to_a_platform_and_names_stand_for_all_variants(tmp_path: Path) -> None:
    graph = graph_of(tmp_path)
    assert select(graph, ["app"], platforms=[ARM]) == (
        "base@linux-arm64",
        "util@linux-arm64",
        "app@linux-arm64",
    )
    assert set(select(graph, ["tool"])) == {"base@linux-arm64", "tool@linux-arm64"}
    assert select(graph, ["app@linux-amd64"], with_deps=False) == ("app@linux-amd64",)
    with pytest.raises(UsageError, match="not built for it"):
        select(graph, [], platforms=["linux/s390x"])
    with pytest.raises(UsageError, match="none of the selected images is built for linux/amd64"):
        select(graph, ["tool"], platforms=[AMD])


def test_the_platform_is_an_input_of_the_fingerprint(tmp_path: Path) -> None:
    graph = graph_of(tmp_path)
    found = set()
    for key in ("base@linux-amd64", "base@linux-arm64"):
        node = graph.nodes[key]
        inputs = inputs_for(
            node,
            engine="podman",
            context_digest="c",
            context_files={},
            family_ids={},
            external_ids=dict.fromkeys(node.external, "sha256:1"),
            options={"platform": node.platform or ""},
        )
        found.add(fingerprint(inputs))
    assert len(found) == 2


def test_a_variants_dockerfile_names_its_platforms_images_and_nothing_else_changes() -> None:
    text = textwrap.dedent("""\
        # syntax=docker/dockerfile:1
        ARG BASE=lb/base:latest
        FROM ${BASE} AS build
        RUN --mount=type=bind,from=lb/tool:latest,target=/t cp /t/x /x
        FROM   lb/base:latest
        COPY --from=build /x /x
        COPY --from=lb/tool:latest /t /t
        CMD ["lb/base:latest"]
        """)
    targets = {"lb/base:latest": "lb/base:latest-linux-arm64", "lb/tool:latest": "T-arm"}
    out = retarget_dockerfile(text, path=Path("Dockerfile"), targets=targets)
    assert out.splitlines() == [
        "# syntax=docker/dockerfile:1",
        "ARG BASE=lb/base:latest",
        "FROM lb/base:latest-linux-arm64 AS build",
        "RUN --mount=type=bind,from=T-arm,target=/t cp /t/x /x",
        "FROM   lb/base:latest-linux-arm64",
        "COPY --from=build /x /x",  # a stage, not an image
        "COPY --from=T-arm /t /t",
        'CMD ["lb/base:latest"]',  # not an image use
    ]
    split = "FROM \\\n  lb/base:latest\n"
    with pytest.raises(SpecError, match="split over lines"):
        retarget_dockerfile(split, path=Path("Dockerfile"), targets=targets)


def handler(directory: Path, name: str, *, enabled: bool = True, flags: str = "POF") -> None:
    (directory / name).write_text(
        f"{'enabled' if enabled else 'disabled'}\ninterpreter /usr/libexec/qemu-binfmt/x\n"
        f"flags: {flags}\noffset 0\n"
    )


def test_emulation_checks_read_binfmt_misc(tmp_path: Path) -> None:
    both = [AMD, ARM, "linux/s390x"]
    assert emulation_checks([AMD], binfmt_dir=tmp_path, native=AMD) == []
    [unmounted] = emulation_checks(both, binfmt_dir=tmp_path, native=AMD, rootless=True)
    assert not unmounted.ok and "mount -t binfmt_misc" in unmounted.fix
    assert unmounted.fix.startswith("as root: ")
    (tmp_path / "register").touch()
    handler(tmp_path, "qemu-aarch64")
    handler(tmp_path, "qemu-s390x", flags="P")
    checks = {c.name: c for c in emulation_checks(both, binfmt_dir=tmp_path, native=AMD)}
    assert checks["binfmt_misc"].ok
    assert checks["emulation linux/arm64"].ok
    assert not checks["emulation linux/s390x"].ok
    assert "no F flag" in checks["emulation linux/s390x"].detail
    handler(tmp_path, "qemu-aarch64", enabled=False)
    (tmp_path / "qemu-s390x").unlink()
    checks = {c.name: c for c in emulation_checks(both, binfmt_dir=tmp_path, native=AMD)}
    assert "disabled" in checks["emulation linux/arm64"].detail
    assert "exec format error" in checks["emulation linux/s390x"].detail
    assert "update-binfmts --enable qemu-s390x" in checks["emulation linux/s390x"].fix
