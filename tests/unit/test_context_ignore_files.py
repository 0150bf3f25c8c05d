"""Which ignore file applies (podman's order), that it applies like `.dockerignore`, and
that no ignore file is staged for an engine to apply a second time."""

from __future__ import annotations

from pathlib import Path

import pytest

from lowbuild.context.assemble import take_inventory
from lowbuild.errors import EXIT_BAD_INPUT, Location, SpecError
from lowbuild.spec.model import ImageSpec

IGNORE_FILES = ("Dockerfile.dockerignore", ".containerignore", ".dockerignore")


@pytest.fixture
def context(tmp_path: Path) -> Path:
    context = tmp_path / "web"
    context.mkdir()
    (context / "Dockerfile").write_text("FROM scratch\n")
    (context / "image.yaml").write_text("name: web\n")
    for name in ("a.txt", "b.txt", "c.txt", "d.txt"):
        (context / name).write_text(name)
    return context


def staged_names(context: Path) -> list[str]:
    image = ImageSpec(name="web", directory=context, location=Location(context / "image.yaml", 1))
    return sorted(take_inventory(image).files)


def test_containerignore_leaves_files_out_like_dockerignore(context: Path) -> None:
    (context / ".containerignore").write_text("# podman's name\n*.txt\n!d.txt\n")
    assert staged_names(context) == ["Dockerfile", "d.txt"]


@pytest.mark.parametrize("present", [IGNORE_FILES, IGNORE_FILES[1:], IGNORE_FILES[2:]])
def test_first_ignore_file_in_podmans_order_wins_and_none_is_staged(
    context: Path, present: tuple[str, ...]
) -> None:
    leaves_out = {"Dockerfile.dockerignore": "a.txt", ".containerignore": "b.txt"}
    for name in present:
        (context / name).write_text(leaves_out.get(name, "c.txt") + "\n")

    names = staged_names(context)

    assert leaves_out.get(present[0], "c.txt") not in names
    assert {"a.txt", "b.txt", "c.txt"} - {leaves_out.get(present[0], "c.txt")} <= set(names)
    assert not set(IGNORE_FILES) & set(names)  # the engine gets none to re-apply


def test_dockerignore_that_is_not_utf8_names_its_line(context: Path) -> None:
    (context / ".dockerignore").write_bytes(b"*.log\n# r\xe9sum\xe9\n")
    with pytest.raises(SpecError) as caught:
        staged_names(context)
    assert caught.value.exit_code == EXIT_BAD_INPUT
    assert str(caught.value).startswith(f"{context / '.dockerignore'}:2: not UTF-8")


def test_ignore_file_linked_outside_the_context_is_refused(context: Path, tmp_path: Path) -> None:
    (tmp_path / "rules").write_text("*.txt\n")
    (context / ".containerignore").symlink_to(tmp_path / "rules")
    with pytest.raises(SpecError, match="outside the context"):
        staged_names(context)
