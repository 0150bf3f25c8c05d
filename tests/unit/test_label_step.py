"""podman/buildah builds: labels become one LABEL line on a copy of the Dockerfile, or stay
flags when that could change their meaning."""

from __future__ import annotations

from pathlib import Path

from lowbuild.engines.base import BuildRequest
from lowbuild.engines.commands import labels_as_one_step


def test_labels_become_one_quoted_label_line_on_a_copy(tmp_path: Path) -> None:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM scratch")
    labels = {"a": 'say "$HI" \\ now', "b": ""}
    request = BuildRequest(context=tmp_path, dockerfile=dockerfile, tags=["t"], labels=labels)
    with labels_as_one_step(request) as used:
        assert used.labels == {}
        assert used.dockerfile is not None and used.dockerfile != dockerfile
        assert (used.context, used.tags) == (tmp_path, ["t"])
        copy = used.dockerfile
        assert copy.read_text() == 'FROM scratch\nLABEL "a"="say \\"\\$HI\\" \\\\ now" "b"=""\n'
    assert dockerfile.read_text() == "FROM scratch"
    assert not copy.exists()


def test_default_dockerfile_of_the_context_is_copied(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    with labels_as_one_step(BuildRequest(context=tmp_path, labels={"k": "v"})) as used:
        assert used.labels == {} and used.dockerfile is not None
        assert used.dockerfile.read_text() == 'FROM scratch\nLABEL "k"="v"\n'


def test_labels_stay_flags_with_a_line_break_or_own_escape_character(tmp_path: Path) -> None:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM scratch\n")
    broken = BuildRequest(context=tmp_path, dockerfile=dockerfile, labels={"k": "two\nlines"})
    with labels_as_one_step(broken) as got:
        assert got == broken
    dockerfile.write_text("# escape=`\nFROM scratch\n")
    escaped = BuildRequest(context=tmp_path, dockerfile=dockerfile, labels={"k": "v"})
    with labels_as_one_step(escaped) as got:
        assert got == escaped
    bare = BuildRequest(context=tmp_path, dockerfile=dockerfile)
    with labels_as_one_step(bare) as got:
        assert got == bare


def test_build_flags_name_every_input_in_order(tmp_path: Path) -> None:
    request = BuildRequest(
        context=tmp_path,
        dockerfile=tmp_path / "Dockerfile",
        tags=["a:1", "b:2"],
        build_args={"V": "x y"},
        labels={"k": "v=w"},
        network="none",
    )
    assert request.flags() == [
        "--file", tmp_path / "Dockerfile",
        "--tag", "a:1", "--tag", "b:2",
        "--build-arg", "V=x y",
        "--label", "k=v=w",
        "--network", "none",
    ]  # fmt: skip
    assert request.flags(dockerfile=Path("sub/Dockerfile"))[:2] == [
        "--file",
        Path("sub/Dockerfile"),
    ]
    assert BuildRequest(context=tmp_path).flags() == []
