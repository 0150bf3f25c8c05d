"""The Dockerfile comes from the context and nowhere else, and a file that is not a
Dockerfile is never quoted back (its first line could be a secret bound for a CI log)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from lowbuild.context.assemble import assemble_context, take_inventory
from lowbuild.context.dockerfile import parse_dockerfile_text
from lowbuild.errors import EXIT_BAD_INPUT, SpecError
from lowbuild.sources.cache import Cache
from lowbuild.spec.load import load_project

SECRET = "AWS_SECRET_ACCESS_KEY=hunter2-very-secret"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "lowbuild.yaml").write_text("name: p\n")
    context = tmp_path / "contexts" / "web"
    context.mkdir(parents=True)
    (context / "image.yaml").write_text("name: web\n")
    (context / "index.html").write_text("hi\n")
    return tmp_path


def context_of(project: Path) -> Path:
    return project / "contexts" / "web"


@pytest.mark.parametrize("ignored", [False, True], ids=["listed", "dockerignored"])
def test_dockerfile_linked_outside_the_context_is_refused_at_the_image_yaml(
    project: Path, ignored: bool
) -> None:
    outside = project / "elsewhere.txt"
    outside.write_text(f"FROM scratch\n# {SECRET}\n")  # would even parse
    (context_of(project) / "Dockerfile").symlink_to(outside)
    if ignored:
        (context_of(project) / ".dockerignore").write_text("Dockerfile\n")

    with pytest.raises(SpecError) as caught:
        load_project(project)

    message = str(caught.value)
    assert caught.value.exit_code == EXIT_BAD_INPUT
    assert message.startswith(f"{context_of(project) / 'image.yaml'}:1: "), message
    assert "outside the context" in message
    assert "hunter2" not in message


def test_dockerfile_named_in_image_yaml_is_checked_at_its_line(project: Path) -> None:
    (project / "secret.txt").write_text(SECRET + "\n")
    (context_of(project) / "build.Dockerfile").symlink_to("../../secret.txt")
    (context_of(project) / "image.yaml").write_text("name: web\ndockerfile: build.Dockerfile\n")

    with pytest.raises(SpecError) as caught:
        load_project(project)

    assert str(caught.value).startswith(f"{context_of(project) / 'image.yaml'}:2: ")


def test_a_file_that_is_not_a_dockerfile_is_not_quoted(project: Path) -> None:
    with pytest.raises(SpecError) as caught:
        parse_dockerfile_text(f"{SECRET}\nmore secrets\n", path=Path("/ctx/Dockerfile"))

    message = str(caught.value)
    assert message.startswith("/ctx/Dockerfile:1: "), message
    assert "hunter2" not in message and "AWS_SECRET" not in message


def test_dockerfile_linked_to_an_ignored_file_of_the_context_is_refused(project: Path) -> None:
    context = context_of(project)
    (context / ".env").write_text(SECRET + "\n")
    (context / ".dockerignore").write_text(".env\n")
    (context / "Dockerfile").symlink_to(".env")
    spec = load_project(project).image("web")

    with pytest.raises(SpecError) as caught:
        take_inventory(spec)

    message = str(caught.value)
    assert message.startswith(f"{context / 'image.yaml'}:1: "), message
    assert "not part of the context" in message and "hunter2" not in message


def test_staged_dockerfile_is_a_plain_file_even_when_ignored_or_linked(
    project: Path, tmp_path: Path
) -> None:
    context = context_of(project)
    (context / "docker").mkdir()
    (context / "docker" / "web.Dockerfile").write_text("FROM scratch\nCOPY index.html /\n")
    (context / "Dockerfile").symlink_to("docker/web.Dockerfile")
    (context / ".dockerignore").write_text("Dockerfile\n")
    spec = load_project(project).image("web")

    staged = assemble_context(spec, cache=Cache(tmp_path / "cache"), stage_root=tmp_path / "st")

    dockerfile = staged.path / "Dockerfile"
    assert dockerfile.is_file() and not dockerfile.is_symlink()
    assert dockerfile.read_text() == "FROM scratch\nCOPY index.html /\n"
    files = take_inventory(spec).files
    assert files["Dockerfile"] == hashlib.sha256(dockerfile.read_bytes()).hexdigest()
