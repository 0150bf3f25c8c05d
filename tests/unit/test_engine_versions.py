"""Version texts as the engines print them, and the minimums lowbuild needs."""

from __future__ import annotations

import pytest

from lowbuild.engines.base import EngineName
from lowbuild.engines.detect import check_version, parse_version


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("4.3.1", (4, 3, 1)),  # podman version --format {{.Client.Version}}
        ("20.10.24+dfsg1", (20, 10, 24)),  # Debian's dockerd
        ("28.2.2", (28, 2, 2)),
        ("0.13.1+ds1", (0, 13, 1)),  # Debian's buildx plugin
        ("github.com/docker/buildx v0.17.1 257815a", (0, 17, 1)),  # upstream buildx
        ("Version:         1.28.2", (1, 28, 2)),  # buildah version
        ("5.0", (5, 0, 0)),  # no patch number
        ("podman version 4.9.3-dev", (4, 9, 3)),
    ],
)
def test_engine_version_texts_parse(text: str, expected: tuple[int, int, int]) -> None:
    assert parse_version(text) == expected


@pytest.mark.parametrize("text", ["", "unknown", "v", "dev-build"])
def test_text_without_a_version_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="no version number"):
        parse_version(text)


@pytest.mark.parametrize(
    ("name", "text", "usable"),
    [
        ("podman", "4.3.1", True),
        ("podman", "3.4.0", True),
        ("podman", "3.0.1", False),
        ("docker", "20.10.24+dfsg1", True),
        ("docker", "19.03.15", False),
        ("buildx", "0.13.1+ds1", True),
        ("buildx", "0.5.1", False),
        ("buildah", "1.28.2", True),
        ("buildah", "1.19.6", False),
        ("buildah", "garbage", False),
    ],
)
def test_old_engines_are_refused_with_the_version_needed(
    name: EngineName, text: str, usable: bool
) -> None:
    reason = check_version(name, text)
    assert (reason == "") is usable
    if not usable:
        assert text in reason
