"""`lowbuild export bake`: the family as a `docker buildx bake` file (pure parts, no engine)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from lowbuild.export.bake import bake_file
from lowbuild.plan.graph import build_graph
from lowbuild.spec.load import load_project
from lowbuild.spec.model import ImageSpec


def write_family(root: Path) -> None:
    """base → (web, api → worker), plus a commit-recipe image: bake cannot express it."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "lowbuild.yaml").write_text("name: shop\nnamespace: shop\ntag: '2'\n")
    images = {
        "base": ("name: base\nargs: {TZ: UTC}\n", "FROM localhost/lowbuild/busybox:latest\n"),
        "web": ("name: web\nparent: base\ntags: ['1.0']\n", "FROM shop/base:2\n"),
        "api": ("name: api\nparent: base\nlabels: {team: core}\n", "FROM shop/base:2\n"),
        "worker": ("name: worker\nparent: api\nnetwork: none\n", "FROM shop/api:2\n"),
    }
    for name, (image_yaml, dockerfile) in images.items():
        directory = root / "contexts" / name
        directory.mkdir(parents=True)
        (directory / "image.yaml").write_text(image_yaml)
        (directory / "Dockerfile").write_text(dockerfile)
    manual = root / "contexts" / "manual"
    manual.mkdir(parents=True)
    (manual / "image.yaml").write_text(
        "name: manual\nkind: commit\ncommit:\n  base: localhost/lowbuild/busybox:latest\n"
        "  steps:\n    - run: echo hi\n"
    )


def staged_in(root: Path) -> Callable[[ImageSpec], Path]:
    return lambda spec: root / "stage" / spec.name


def test_bake_targets_follow_the_family_in_waves(tmp_path: Path) -> None:
    write_family(tmp_path)
    project = load_project(tmp_path / "lowbuild.yaml")
    bake = bake_file(project, build_graph(project), context_for=staged_in(tmp_path))

    assert bake.waves == (("base",), ("api", "web"), ("worker",))
    assert [t.name for t in bake.targets] == ["base", "api", "web", "worker"]
    assert bake.skipped == ("manual",)
    web = bake.target("web")
    assert web.context == tmp_path / "stage" / "web"
    assert web.dockerfile == tmp_path / "stage" / "web" / "Dockerfile"  # the staged copy
    assert web.tags == ("shop/web:2", "shop/web:1.0")


def test_bake_file_carries_args_labels_network_and_groups(tmp_path: Path) -> None:
    write_family(tmp_path)
    project = load_project(tmp_path / "lowbuild.yaml")
    document = json.loads(
        bake_file(project, build_graph(project), context_for=staged_in(tmp_path)).render()
    )

    assert document["group"]["default"]["targets"] == ["base", "api", "web", "worker"]
    assert document["group"]["wave-1"]["targets"] == ["api", "web"]
    assert "manual" not in document["target"]
    assert document["target"]["base"]["args"] == {"TZ": "UTC"}
    assert document["target"]["api"]["labels"] == {"team": "core"}
    assert document["target"]["worker"]["network"] == "none"
    assert "network" not in document["target"]["web"]


def test_selecting_a_leaf_brings_its_ancestors_only(tmp_path: Path) -> None:
    write_family(tmp_path)
    project = load_project(tmp_path / "lowbuild.yaml")
    bake = bake_file(
        project, build_graph(project), names=["worker"], context_for=staged_in(tmp_path)
    )

    assert [t.name for t in bake.targets] == ["base", "api", "worker"]
    assert bake.waves == (("base",), ("api",), ("worker",))


def test_same_family_gives_the_same_bytes(tmp_path: Path) -> None:
    write_family(tmp_path)
    project = load_project(tmp_path / "lowbuild.yaml")
    graph = build_graph(project)
    seen: list[ImageSpec] = []

    def remember(spec: ImageSpec) -> Path:
        seen.append(spec)
        return tmp_path / "stage" / spec.name

    first = bake_file(project, graph, context_for=remember).render()
    assert first == bake_file(project, graph, context_for=staged_in(tmp_path)).render()
    assert sorted(spec.name for spec in seen) == ["api", "base", "web", "worker"]


def test_export_bake_command_stages_contexts_and_writes_the_file(tmp_path: Path) -> None:
    write_family(tmp_path)
    (tmp_path / "contexts" / "web" / "index.html").write_text("hello\n")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "lowbuild",
            "export",
            "bake",
            "-o",
            "bake.json",
            "--offline",
            "--cache",
            str(tmp_path / "cache"),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "left out (commit recipes, no bake equivalent): manual" in result.stderr
    document = json.loads((tmp_path / "bake.json").read_text())
    staged_web = Path(document["target"]["web"]["context"])
    assert (staged_web / "index.html").read_text() == "hello\n"
    assert not (staged_web / "image.yaml").exists()
