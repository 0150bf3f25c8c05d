"""The pure parts of `lowbuild images` and `lowbuild prune`: which of the images carrying a
build's labels is the build, how engine times and sizes are read, and what a change between
two builds is called. (tests/integration/test_images_prune.py runs both commands on every
real engine, with two projects in one storage.)"""

from __future__ import annotations

import pytest
from test_fingerprint import FILES, digest, nginx_inputs
from test_fingerprint import family as family

from lowbuild.engines.base import ImageInfo
from lowbuild.engines.parse import human_size_bytes, store_bytes
from lowbuild.plan.fingerprint import FINGERPRINT_LABEL, fingerprint_labels, label_changes
from lowbuild.plan.graph import FamilyGraph
from lowbuild.run.images import REF_LABEL, builds, when
from lowbuild.run.report import human_bytes

A = {FINGERPRINT_LABEL: "f-a", REF_LABEL: "ns/a:latest"}
LAYERS = ("sha256:base", "sha256:a")


def image(
    ident: str,
    created: str,
    *,
    labels: dict[str, str] = A,
    layers: tuple[str, ...] = LAYERS,
    tags: tuple[str, ...] = (),
) -> ImageInfo:
    return ImageInfo(id=ident, labels=labels, created=created, layers=layers, tags=tags)


def test_docker_classic_label_steps_the_last_one_is_the_build() -> None:
    # One image per label step, same layers: the build is the last of them.
    steps = [image(f"step{i}", f"2026-12-04T08:52:46.{i}00Z") for i in range(1, 5)]
    assert [b.id for b in builds(steps)] == ["step4"]


def test_a_childs_layer_with_the_parents_labels_is_not_a_build_of_the_parent() -> None:
    build = image("a", "2026-12-04T08:52:46Z")
    child_layer = image("run-of-b", "2026-12-04T08:52:50Z", layers=(*LAYERS, "sha256:b"))
    by_hand = image("mine", "2026-12-04T09:00:00Z", layers=(*LAYERS, "x"), tags=("me/app:1",))
    assert [b.id for b in builds([child_layer, by_hand, build])] == ["a"]


def test_the_image_tagged_in_its_own_repository_wins() -> None:
    tagged = image("current", "2026-12-04T08:00:00Z", tags=("localhost/ns/a:1.2",))
    later = image("later", "2026-12-04T09:00:00Z")
    assert [b.id for b in builds([later, tagged])] == ["current"]


def test_each_fingerprint_gives_one_build() -> None:
    other = {**A, FINGERPRINT_LABEL: "f-a2"}
    found = builds(
        [image("old", "2026-12-04T08:00:00Z"), image("new", "2026-12-04T09:00:00Z", labels=other)]
    )
    assert sorted(b.id for b in found) == ["new", "old"]


def test_times_with_fewer_digits_sort_where_they_belong() -> None:
    assert when("2026-12-04T08:52:46.44Z") > when("2026-12-04T08:52:46.439999999Z")
    assert when("2026-12-04T08:52:46.44269767Z") == "2026-12-04T08:52:46.442697670Z"
    assert when("2026-12-04T08:52:46Z") == "2026-12-04T08:52:46Z"


@pytest.mark.parametrize(
    ("text", "count"),
    [
        ("169MB", 169_000_000),
        ("31.14kB", 31_140),
        ("1.234GB", 1_234_000_000),
        ("0B", 0),
        ("174000462", 174_000_462),
        ("2.14 MB", 2_140_000),
    ],
)
def test_engine_sizes_are_read_in_decimal_units(text: str, count: int) -> None:
    assert human_size_bytes(text) == count


def test_store_total_comes_from_the_images_line_and_nothing_else() -> None:
    out = "Images|169MB\nContainers|0B\nLocal Volumes|0B\nBuild Cache|31.14kB\n"
    assert store_bytes(out) == 169_000_000
    with pytest.raises(ValueError, match="no Images line"):
        store_bytes("Containers|0B\n")
    with pytest.raises(ValueError, match="not a size"):
        store_bytes("Images|lots\n")


@pytest.mark.parametrize(
    ("count", "signed", "text"),
    [
        (None, False, "-"),
        (999, False, "999 B"),
        (1_500, False, "1.5 kB"),
        (2_150_567, False, "2.15 MB"),
        (-3_080, True, "-3.08 kB"),
        (0, True, "±0 B"),
        (1_000_000, True, "+1 MB"),
    ],
)
def test_sizes_print_like_docker_images(count: int | None, signed: bool, text: str) -> None:
    assert human_bytes(count, signed=signed) == text


def test_the_change_between_two_builds_is_named_from_their_labels(
    request: pytest.FixtureRequest,
) -> None:
    graph: FamilyGraph = request.getfixturevalue("family")
    before = fingerprint_labels(nginx_inputs(graph))
    edited = {**FILES, "nginx.conf": digest("edited")}
    after = fingerprint_labels(
        nginx_inputs(graph, context_files=edited, context_digest="sha256:" + digest("edited"))
    )
    assert label_changes(before, after) == ("context changed: files nginx.conf",)
    assert label_changes(before, before) == ()
    unreadable = ("fingerprint changed (no readable record of the previous inputs)",)
    assert label_changes({FINGERPRINT_LABEL: "old"}, after) == unreadable
