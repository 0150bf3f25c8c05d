"""Reading what engines print: inspect documents, load output, published ports."""

from __future__ import annotations

from typing import Any

import pytest

from lowbuild.engines.parse import (
    image_info_from_config,
    image_info_from_inspect,
    loaded_refs,
)

HEX = "790a3eff2787fa4699405c88ca5065b83c09dc68726310cff4c5cbb870e5d0b7"

DOCKER_INSPECT: dict[str, Any] = {
    "Id": f"sha256:{HEX}",
    "RepoTags": ["localhost/site:1"],
    "Author": "A <a@example.invalid>",
    "Comment": "",
    "Config": {
        "Env": ["PATH=/bin", "GREETING=hello"],
        "Cmd": ["busybox", "httpd"],
        "Entrypoint": None,
        "ExposedPorts": {"8080/tcp": {}, "53/udp": {}},
        "Labels": {"a": "b"},
        "User": "",
        "WorkingDir": "/www",
    },
}


def test_docker_and_podman_inspect_becomes_image_info() -> None:
    info = image_info_from_inspect(DOCKER_INSPECT)
    assert info.id == f"sha256:{HEX}"
    assert info.tags == ("localhost/site:1",)
    assert info.author == "A <a@example.invalid>"
    assert info.cmd == ("busybox", "httpd")
    assert info.entrypoint is None
    assert info.env == ("PATH=/bin", "GREETING=hello")
    assert info.exposed_ports == ("53/udp", "8080/tcp")
    assert info.labels == {"a": "b"}
    assert info.workdir == "/www"


def test_podman_bare_id_and_buildah_empty_lists_read_like_docker() -> None:
    # podman's "Id" has no sha256: prefix; buildah writes [] where docker writes null.
    info = image_info_from_config(
        image_id=HEX,
        tags=[],
        author="",
        comment="msg",
        config={"Cmd": [], "Entrypoint": [], "Labels": None, "ExposedPorts": None},
    )
    assert info.id == f"sha256:{HEX}"
    assert info.cmd is None
    assert info.entrypoint is None
    assert info.labels == {}
    assert info.exposed_ports == ()
    assert info.comment == "msg"


@pytest.mark.parametrize(
    ("output", "refs"),
    [
        ("Loaded image: localhost/site:1\n", ["localhost/site:1"]),  # docker, podman 4
        (f"Loaded image ID: sha256:{HEX}\n", [f"sha256:{HEX}"]),  # docker, untagged image
        ("Loaded image(s): localhost/a:1,localhost/b:2\n", ["localhost/a:1", "localhost/b:2"]),
        (
            "Getting image source signatures\nCopying blob 1a2b\nLoaded image: localhost/a:1\n",
            ["localhost/a:1"],
        ),
        ("", []),
    ],
)
def test_load_output_names_every_loaded_image(output: str, refs: list[str]) -> None:
    assert loaded_refs(output) == refs
