"""podman/buildah builds: labels become one LABEL line on a copy of the Dockerfile, or stay
flags when that could change their meaning."""

from __future__ import annotations

from pathlib import Path

from lowbuild.engines.commands import labels_as_one_step


def test_labels_become_one_quoted_label_line_on_a_copy(tmp_path: Path) -> None:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM scratch")
    labels = {"a": 'say "$HI" \\ now', "b": ""}
    with labels_as_one_step(dockerfile, context=tmp_path, labels=labels) as (used, left):
        assert left is None
        assert used is not None and used != dockerfile
        assert used.read_text() == 'FROM scratch\nLABEL "a"="say \\"\\$HI\\" \\\\ now" "b"=""\n'
    assert dockerfile.read_text() == "FROM scratch"
    assert not used.exists()


def test_default_dockerfile_of_the_context_is_copied(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    with labels_as_one_step(None, context=tmp_path, labels={"k": "v"}) as (used, left):
        assert left is None and used is not None
        assert used.read_text() == 'FROM scratch\nLABEL "k"="v"\n'


def test_labels_stay_flags_with_a_line_break_or_own_escape_character(tmp_path: Path) -> None:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM scratch\n")
    with labels_as_one_step(dockerfile, context=tmp_path, labels={"k": "two\nlines"}) as got:
        assert got == (dockerfile, {"k": "two\nlines"})
    dockerfile.write_text("# escape=`\nFROM scratch\n")
    with labels_as_one_step(dockerfile, context=tmp_path, labels={"k": "v"}) as got:
        assert got == (dockerfile, {"k": "v"})
    with labels_as_one_step(dockerfile, context=tmp_path, labels={}) as got:
        assert got == (dockerfile, {})
