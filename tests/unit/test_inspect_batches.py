"""Reading which refs a batched `image inspect` reported missing (podman and docker wording)."""

from __future__ import annotations

from lowbuild.engines.whales import named_missing


def test_podman_names_each_missing_ref() -> None:
    stderr = (
        "error inspecting object: shop/jdk:latest: image not known\n"
        "Error: inspecting object: nope/x:latest: image not known\n"
    )
    assert named_missing(stderr) == {"shop/jdk:latest", "nope/x:latest"}


def test_docker_names_each_missing_ref() -> None:
    stderr = "Error response from daemon: no such image: nope/x:latest: No such image: nope/x:latest\n"
    assert named_missing(stderr) == {"nope/x:latest"}


def test_other_errors_name_no_ref() -> None:
    assert named_missing("Error: database is locked\n") == set()
