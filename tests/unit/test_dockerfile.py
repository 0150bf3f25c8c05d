"""Reading a Dockerfile's FROMs: ARG substitution, stages, COPY --from, with line numbers."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from lowbuild.context.dockerfile import (
    DockerfileImages,
    ImageUse,
    parse_dockerfile,
    parse_dockerfile_text,
)
from lowbuild.errors import SpecError

WHERE = Path("/ctx/Dockerfile")


def parse(text: str, **build_args: str) -> DockerfileImages:
    return parse_dockerfile_text(
        textwrap.dedent(text).lstrip("\n"), path=WHERE, build_args=build_args
    )


def final_ref(text: str, **build_args: str) -> str | None:
    final = parse(text, **build_args).final_base
    return final.ref if final is not None else None


@pytest.mark.parametrize(
    "text, build_args, expected",
    [
        ("ARG BASE=lowbuild/base:latest\nFROM ${BASE}\n", {}, "lowbuild/base:latest"),
        ("ARG BASE=lowbuild/base:latest\nFROM $BASE\n", {}, "lowbuild/base:latest"),
        ("ARG TAG\nFROM lowbuild/base:${TAG:-latest}\n", {}, "lowbuild/base:latest"),
        ("ARG TAG=\nFROM lowbuild/base:${TAG:-latest}\n", {}, "lowbuild/base:latest"),
        ("ARG TAG=\nFROM lowbuild/base${TAG-:set}\n", {}, "lowbuild/base"),
        ("ARG TAG=12\nFROM debian:${TAG:+bookworm}\n", {}, "debian:bookworm"),
        ("ARG TAG=12\nFROM debian:${TAG}\n", {"TAG": "13"}, "debian:13"),
        ("ARG V=1.22 FLAVOR=alpine\nFROM nginx:${V}-${FLAVOR}\n", {}, "nginx:1.22-alpine"),
        ("ARG V=1.22\nARG IMAGE=nginx:${V}\nFROM $IMAGE\n", {"V": "1.24"}, "nginx:1.24"),
        # a build arg with no ARG declaring it is not visible to FROM (engines ignore it too)
        ("FROM base${SUFFIX}\n", {"SUFFIX": "-dev"}, "base"),
    ],
)
def test_global_args_substituted_into_from(
    text: str, build_args: dict[str, str], expected: str
) -> None:
    assert final_ref(text, **build_args) == expected


def test_unset_arg_leaving_from_empty_is_an_error_at_its_line() -> None:
    with pytest.raises(SpecError) as caught:
        parse("# base image\nARG BASE\nFROM ${BASE}\n")
    assert str(caught.value).startswith(f"{WHERE}:3: ")
    assert "names no image" in str(caught.value)


def test_required_arg_message() -> None:
    with pytest.raises(SpecError, match=r"Dockerfile:2: BASE: required"):
        parse("ARG BASE\nFROM ${BASE:?required}\n")


def test_continuations_comments_and_directives_keep_line_numbers() -> None:
    parsed = parse(
        """
        # syntax=docker/dockerfile:1
        # escape=\\

        # the base
        FROM \\
          # a comment inside the continuation
          --platform=$BUILDPLATFORM \\
          lowbuild/base:latest \\
          AS build
        RUN make
        """
    )
    assert parsed.stages[0].name == "build"
    assert parsed.final_base == ImageUse("lowbuild/base:latest", 5, "FROM")


def test_backtick_escape_directive() -> None:
    parsed = parse("# escape=`\nFROM `\n  lowbuild/base:latest\nRUN dir C:\\\n")
    assert parsed.final_base == ImageUse("lowbuild/base:latest", 2, "FROM")


def test_multi_stage_internal_and_external_inputs() -> None:
    parsed = parse(
        """
        ARG JDK=lowbuild/jdk:latest
        FROM ${JDK} AS Build
        RUN make
        FROM busybox:1.36 AS tools
        FROM lowbuild/base:latest
        COPY --from=build /out /app
        COPY --from=tools /bin/sh /bin/sh
        COPY --from=localhost/lowbuild/certs:latest /etc/ssl /etc/ssl
        COPY --chown=0:0 --from=1 /bin/true /bin/true
        RUN --mount=type=bind,from=lowbuild/scripts:latest,target=/s sh /s/run.sh
        """
    )
    assert [stage.name for stage in parsed.stages] == ["build", "tools", None]
    assert parsed.images == (
        ImageUse("lowbuild/jdk:latest", 2, "FROM"),
        ImageUse("busybox:1.36", 4, "FROM"),
        ImageUse("lowbuild/base:latest", 5, "FROM"),
        ImageUse("localhost/lowbuild/certs:latest", 8, "COPY --from"),
        ImageUse("lowbuild/scripts:latest", 10, "RUN --mount"),
    )
    assert parsed.final_base == ImageUse("lowbuild/base:latest", 5, "FROM")


def test_final_stage_from_an_earlier_stage_stands_on_that_stages_image() -> None:
    parsed = parse(
        """
        FROM lowbuild/base:latest AS runtime
        RUN true
        FROM runtime AS with-tools
        FROM with-tools
        """
    )
    assert parsed.stages[2].base_stage == 1
    assert parsed.images == (ImageUse("lowbuild/base:latest", 1, "FROM"),)
    assert parsed.final_base == ImageUse("lowbuild/base:latest", 1, "FROM")


def test_scratch_is_no_image() -> None:
    parsed = parse("FROM lowbuild/build:latest AS b\nFROM scratch\nCOPY --from=b /x /x\n")
    assert parsed.final_base is None
    assert parsed.images == (ImageUse("lowbuild/build:latest", 1, "FROM"),)


def test_heredoc_bodies_are_not_instructions() -> None:
    parsed = parse(
        "FROM lowbuild/base:latest\n"
        "RUN <<EOF\n"
        "FROM evil:latest\n"
        "EOF\n"
        "COPY <<-'CONF' /etc/app.conf\n"
        "\tFROM also-not-an-image\n"
        "\tCONF\n"
        "FROM lowbuild/next:latest\n"
    )
    assert parsed.images == (
        ImageUse("lowbuild/base:latest", 1, "FROM"),
        ImageUse("lowbuild/next:latest", 8, "FROM"),
    )


@pytest.mark.parametrize(
    "text, line, words",
    [
        ("RUN true\nFROM base\n", 1, "RUN before the first FROM"),
        ("# nothing here\nARG X=1\n", 1, "no FROM instruction"),
        ("FROM a AS b c\n", 1, "expected `FROM image [AS name]`"),
        ("FROM --pull a\n", 1, "unknown flag --pull"),
        ("FROM a AS x\nFROM b AS X\n", 2, "stage name 'x' is used twice"),
        ("FROM a\nCOPY --from=3 /a /b\n", 2, "there is no earlier stage 3"),
        ("ARG V\nFROM a:${V\n", 2, "unclosed ${"),
    ],
)
def test_malformed_dockerfile_names_the_line(text: str, line: int, words: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse(text)
    assert str(caught.value).startswith(f"{WHERE}:{line}: ")
    assert words in str(caught.value)


def test_missing_dockerfile_is_a_spec_error(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="Dockerfile not found"):
        parse_dockerfile(tmp_path / "Dockerfile")
