"""Reading which refs a batched `image inspect` reported missing (podman and docker wording)."""

from __future__ import annotations

import json

from lowbuild.engines.commands import CommandOutput
from lowbuild.engines.parse import inspected_batch, named_missing


def test_podman_names_each_missing_ref() -> None:
    stderr = (
        "error inspecting object: shop/jdk:latest: image not known\n"
        "Error: inspecting object: nope/x:latest: image not known\n"
    )
    assert named_missing(stderr) == {"shop/jdk:latest", "nope/x:latest"}


def test_docker_names_each_missing_ref() -> None:
    stderr = (
        "Error response from daemon: no such image: nope/x:latest: No such image: nope/x:latest\n"
    )
    assert named_missing(stderr) == {"nope/x:latest"}


def test_other_errors_name_no_ref() -> None:
    assert named_missing("Error: database is locked\n") == set()


def _document(ref: str) -> dict[str, object]:
    return {"Id": "sha256:" + ref.encode().hex().ljust(64, "0")[:64], "RepoTags": [ref]}


def test_a_batch_pairs_documents_with_the_refs_not_named_missing() -> None:
    batch = ["a:1", "gone:1", "b:1"]
    output = CommandOutput(
        stdout=json.dumps([_document("a:1"), _document("b:1")]),
        stderr="Error: inspecting object: gone:1: image not known\n",
        returncode=125,
    )
    found = inspected_batch(batch, output)
    assert found is not None
    assert found["gone:1"] is None
    assert [found[r].tags for r in ("a:1", "b:1")] == [("a:1",), ("b:1",)]  # type: ignore[union-attr]


def test_a_batch_that_does_not_add_up_is_not_guessed() -> None:
    # One document for two refs and no ref named missing: which one is it? Ask per ref.
    output = CommandOutput(
        stdout=json.dumps([_document("a:1")]), stderr="Error: database is locked\n", returncode=1
    )
    assert inspected_batch(["a:1", "b:1"], output) is None
    assert inspected_batch(["a:1"], CommandOutput(stdout="not json", stderr="")) is None
