"""The family graph: parents checked against FROM, cycles, selection, build order, drawing."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from pathlib import Path

import pytest

from lowbuild.errors import SpecError, UsageError
from lowbuild.plan.graph import FamilyGraph, build_graph, render_graph, select
from lowbuild.spec.load import load_project

BOOKWORM = "localhost/lowbuild/bookworm:latest"

SEED = {
    "base": ("name: base\n", f"FROM {BOOKWORM}\nRUN true\n"),
    "jdk": ("name: jdk\nparent: base\n", "FROM lowbuild/base:latest\n"),
    "tomcat": (
        "name: tomcat\nparent: jdk\n",
        "ARG JDK=lowbuild/jdk:latest\nFROM ${JDK}\n",
    ),
    # podman names local images localhost/...; no tag means :latest
    "nginx": ("name: nginx\nparent: base\n", "FROM localhost/lowbuild/base\n"),
    "tools": (
        "name: tools\nkind: commit\ncommit:\n  base: base\n  steps: [{run: 'true'}]\n",
        None,
    ),
}


def write_family(root: Path, images: Mapping[str, tuple[str, str | None]]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "lowbuild.yaml").write_text("name: seed\nnamespace: lowbuild\ntag: latest\n")
    for name, (image_yaml, dockerfile) in images.items():
        directory = root / "contexts" / name
        directory.mkdir(parents=True)
        (directory / "image.yaml").write_text(textwrap.dedent(image_yaml))
        if dockerfile is not None:
            (directory / "Dockerfile").write_text(textwrap.dedent(dockerfile))
    return root / "lowbuild.yaml"


def graph_of(root: Path, images: Mapping[str, tuple[str, str | None]]) -> FamilyGraph:
    return build_graph(load_project(write_family(root, images)))


def graph_error(root: Path, images: Mapping[str, tuple[str, str | None]]) -> str:
    with pytest.raises(SpecError) as caught:
        graph_of(root, images)
    return str(caught.value)


def test_seed_family_parents_and_external_base(tmp_path: Path) -> None:
    graph = graph_of(tmp_path, SEED)

    assert graph.nodes["base"].parent is None
    assert graph.nodes["base"].base == BOOKWORM
    assert graph.nodes["tomcat"].parent == "jdk"
    assert graph.nodes["nginx"].parent == "base"
    assert graph.nodes["tools"].parent == "base"  # from commit.base
    assert graph.external_images() == {BOOKWORM: ("base",)}


def test_build_order_is_topological_and_stable(tmp_path: Path) -> None:
    graph = graph_of(tmp_path, SEED)

    assert graph.order() == ("base", "jdk", "nginx", "tools", "tomcat")
    assert graph.levels() == (("base",), ("jdk", "nginx", "tools"), ("tomcat",))
    assert graph.children("base") == ("jdk", "nginx", "tools")
    assert graph.descendants("base") == ("jdk", "nginx", "tools", "tomcat")
    assert graph.ancestors("tomcat") == ("base", "jdk")


def test_select_with_and_without_dependencies(tmp_path: Path) -> None:
    graph = graph_of(tmp_path, SEED)

    assert select(graph, ["tomcat"]) == ("base", "jdk", "tomcat")
    assert select(graph, ["tomcat", "nginx"]) == ("base", "jdk", "nginx", "tomcat")
    assert select(graph, ["tomcat"], with_deps=False) == ("tomcat",)
    assert select(graph, []) == graph.order()


def test_select_unknown_name_lists_known_images(tmp_path: Path) -> None:
    graph = graph_of(tmp_path, SEED)
    with pytest.raises(UsageError) as caught:
        select(graph, ["ngnix"])
    message = str(caught.value)
    assert "unknown image 'ngnix' (did you mean 'nginx'?)" in message
    assert "base, jdk, nginx, tomcat, tools" in message


def test_from_family_image_without_parent_names_both_places(tmp_path: Path) -> None:
    images = dict(SEED, jdk=("# jdk\nname: jdk\n", "# jdk\n\nFROM lowbuild/base:latest\n"))
    message = graph_error(tmp_path, images)
    jdk = tmp_path / "contexts" / "jdk"
    assert f"{jdk / 'image.yaml'}:2: image 'jdk' declares no parent" in message
    assert (
        f"{jdk / 'Dockerfile'}:3: FROM lowbuild/base:latest builds on family image 'base'"
        in message
    )
    assert "add `parent: base`" in message


def test_parent_disagreeing_with_from_names_both_places(tmp_path: Path) -> None:
    images = dict(SEED, tomcat=("name: tomcat\n\nparent: base\n", "FROM lowbuild/jdk:latest\n"))
    message = graph_error(tmp_path, images)
    tomcat = tmp_path / "contexts" / "tomcat"
    assert message.startswith(f"{tomcat / 'image.yaml'}:3: image 'tomcat' declares parent: base")
    assert (
        f"{tomcat / 'Dockerfile'}:1: FROM lowbuild/jdk:latest builds on family image 'jdk'"
        in message
    )
    assert "build FROM lowbuild/base:latest (the tags lowbuild gives it)" in message


def test_parent_named_by_a_tag_lowbuild_does_not_build(tmp_path: Path) -> None:
    images = dict(
        SEED,
        base=('name: base\ntags: ["12"]\n', f"FROM {BOOKWORM}\n"),
        nginx=("name: nginx\nparent: base\n", "FROM lowbuild/base:11\n"),
    )
    message = graph_error(tmp_path, images)
    assert "FROM lowbuild/base:11 builds on no family image" in message
    assert "build FROM lowbuild/base:latest or lowbuild/base:12" in message
    images["nginx"] = ("name: nginx\nparent: base\n", "FROM lowbuild/base:12\n")
    assert graph_of(tmp_path / "ok", images).nodes["nginx"].parent == "base"


def test_parent_declared_but_from_outside_family(tmp_path: Path) -> None:
    images = dict(SEED, nginx=("name: nginx\nparent: base\n", f"FROM {BOOKWORM}\n"))
    message = graph_error(tmp_path, images)
    assert "declares parent: base" in message
    assert f"Dockerfile:1: FROM {BOOKWORM} builds on no family image" in message


def test_image_args_decide_the_from(tmp_path: Path) -> None:
    # tomcat's Dockerfile defaults to jdk; its image.yaml args point it at base instead
    images = dict(
        SEED,
        tomcat=(
            "name: tomcat\nparent: jdk\nargs: {JDK: lowbuild/base:latest}\n",
            "ARG JDK=lowbuild/jdk:latest\nFROM ${JDK}\n",
        ),
    )
    message = graph_error(tmp_path, images)
    assert "FROM lowbuild/base:latest builds on family image 'base'" in message


def test_unknown_parent_suggests_close_name(tmp_path: Path) -> None:
    images = dict(SEED, jdk=("name: jdk\nparent: bsae\n", "FROM lowbuild/base:latest\n"))
    message = graph_error(tmp_path, images)
    assert message.startswith(f"{tmp_path / 'contexts' / 'jdk' / 'image.yaml'}:2: ")
    assert "parent 'bsae' is not an image of the family (did you mean 'base'?)" in message


def test_two_image_cycle_names_both_images(tmp_path: Path) -> None:
    images = {
        "a": ("name: a\nparent: b\n", "FROM lowbuild/b:latest\n"),
        "b": ("name: b\nparent: a\n", "FROM lowbuild/a:latest\n"),
    }
    message = graph_error(tmp_path, images)
    assert "dependency cycle: a → b → a" in message
    assert f"a ({tmp_path / 'contexts' / 'a' / 'image.yaml'}:1) needs b (parent)" in message
    assert f"b ({tmp_path / 'contexts' / 'b' / 'image.yaml'}:1) needs a (parent)" in message


def test_three_image_cycle_through_copy_from(tmp_path: Path) -> None:
    images = {
        "a": ("name: a\nparent: b\n", "FROM lowbuild/b:latest\n"),
        "b": ("name: b\nparent: c\n", "FROM lowbuild/c:latest\n"),
        "c": ("name: c\n", f"FROM {BOOKWORM}\nCOPY --from=lowbuild/a:latest /x /x\n"),
    }
    message = graph_error(tmp_path, images)
    assert "dependency cycle: a → b → c → a" in message
    assert "c (" in message and "needs a (COPY --from or a build stage)" in message


def test_from_itself_is_an_error(tmp_path: Path) -> None:
    images = {"a": ("name: a\n", "FROM lowbuild/a:latest\n")}
    assert "image 'a' cannot build on itself" in graph_error(tmp_path, images)


def test_copy_from_family_image_is_a_dependency(tmp_path: Path) -> None:
    images = dict(
        SEED,
        app=(
            "name: app\nparent: base\n",
            "FROM lowbuild/tomcat:latest AS war\n"
            "FROM lowbuild/base:latest\n"
            "COPY --from=war /usr/local/tomcat /opt/tomcat\n"
            "COPY --from=docker.io/library/busybox:1.36 /bin/busybox /bin/\n",
        ),
    )
    graph = graph_of(tmp_path, images)
    assert graph.nodes["app"].needs == ("base", "tomcat")
    assert graph.nodes["app"].external == ("docker.io/library/busybox:1.36",)
    assert graph.order().index("app") > graph.order().index("tomcat")
    assert select(graph, ["app"]) == ("base", "jdk", "tomcat", "app")


def test_commit_base_disagreeing_with_parent_names_both_places(tmp_path: Path) -> None:
    images = dict(
        SEED,
        tools=(
            "name: tools\nparent: jdk\nkind: commit\ncommit:\n  base: base\n",
            None,
        ),
    )
    message = graph_error(tmp_path, images)
    image_yaml = tmp_path / "contexts" / "tools" / "image.yaml"
    assert f"{image_yaml}:2: image 'tools' declares parent: jdk" in message
    assert f"{image_yaml}:5: commit.base base builds on family image 'base'" in message


def test_commit_on_external_base(tmp_path: Path) -> None:
    images = {"tools": (f"name: tools\nkind: commit\ncommit:\n  base: {BOOKWORM}\n", None)}
    node = graph_of(tmp_path, images).nodes["tools"]
    assert node.parent is None
    assert node.base == BOOKWORM
    assert node.external == (BOOKWORM,)


def test_render_dot_and_mermaid(tmp_path: Path) -> None:
    graph = graph_of(tmp_path, SEED)

    dot = render_graph(graph, graph_format="dot")
    assert dot.startswith('digraph "seed" {')
    assert f'"{BOOKWORM}" [shape=ellipse, style=dashed];' in dot
    assert f'"{BOOKWORM}" -> "base";' in dot
    assert '"jdk" -> "tomcat";' in dot

    mermaid = render_graph(graph, graph_format="mermaid")
    assert mermaid.splitlines()[0] == "graph LR"
    assert f'ext0(["{BOOKWORM}"])' in mermaid
    assert "ext0 --> img0" in mermaid  # bookworm → base

    with pytest.raises(UsageError, match="--format must be one of dot, mermaid"):
        render_graph(graph, graph_format="svg")
