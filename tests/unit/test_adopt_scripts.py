"""Reading hand-written build scripts: the tags they build, and what else they do."""

from __future__ import annotations

from pathlib import Path

import pytest

from lowbuild.adopt.scripts import find_build_scripts, read_build_script
from lowbuild.errors import SpecError


def script(tmp_path: Path, text: str, name: str = "docker_build.sh") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "refs"),
    [
        ("docker build -t centos:base .\n", ("centos:base",)),
        (
            "#!/bin/sh\nsudo docker build --tag=nginx:v1 -t nginx:latest .\n",
            ("nginx:v1", "nginx:latest"),
        ),
        ("podman build -t web:1 -f Dockerfile .\n", ("web:1",)),
        ("buildah bud -t app:2 .\n", ("app:2",)),
        ("buildah build --tag app:3 .\n", ("app:3",)),
        ("docker image build -tweb:4 .\n", ("web:4",)),
        ('NAME=nginx\nexport TAG="1.17.1"\ndocker build -t ${NAME}:$TAG .\n', ("nginx:1.17.1",)),
        ("docker build \\\n  -t jdk-base:v8.202 \\\n  .\n", ("jdk-base:v8.202",)),
    ],
)
def test_the_tags_a_script_builds(tmp_path: Path, text: str, refs: tuple[str, ...]) -> None:
    [build] = read_build_script(script(tmp_path, text)).builds
    assert build.refs == refs and build.unresolved == ()


def test_a_tag_from_a_command_substitution_is_unresolved(tmp_path: Path) -> None:
    read = read_build_script(script(tmp_path, "TAG=$(date +%s)\ndocker build -t app:$TAG .\n"))
    [build] = read.builds
    assert build.unresolved == ("TAG",) and build.refs == ("app:$TAG",)


def test_other_commands_are_reported_not_run(tmp_path: Path) -> None:
    text = "set -e\ncd /opt\ndocker build -t a:1 .\ndocker push a:1\nrm -rf /tmp/x  # cleanup\n"
    read = read_build_script(script(tmp_path, text))
    assert read.other == ((4, "docker push a:1"), (5, "rm -rf /tmp/x  # cleanup"))
    assert not (tmp_path / "x").exists()


def test_an_unreadable_script_names_the_file(tmp_path: Path) -> None:
    path = script(tmp_path, "")
    path.write_bytes(b"\xff\xfe docker build")
    with pytest.raises(SpecError, match="cannot read build script") as raised:
        read_build_script(path)
    assert raised.value.location is not None and raised.value.location.path == path


def test_the_usual_names_come_first(tmp_path: Path) -> None:
    for name in ("zz.sh", "docker-build.sh", "build.sh", "docker_build.sh"):
        script(tmp_path, "true\n", name)
    assert [p.name for p in find_build_scripts(tmp_path)] == [
        "docker_build.sh",
        "docker-build.sh",
        "build.sh",
        "zz.sh",
    ]
