"""`lowbuild images` and `lowbuild prune` on each real engine, with two projects sharing one
image storage (and one namespace), and an image somebody tagged by hand.

Each image's RUN writes 1 MB of random bytes, so every build adds a layer of its own that
the engine's storage total must show going away.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from json_outputs import conforming
from live_services import BASE_IMAGE

from lowbuild.engines.base import Engine
from lowbuild.errors import EngineError

pytestmark = pytest.mark.root

RANDOM_BYTES = 1_000_000


def lowbuild(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lowbuild", *args],
        cwd=root,
        env={**os.environ, "COLUMNS": "250"},
        capture_output=True,
        text=True,
        timeout=600,
    )


def as_json(root: Path, *args: str) -> Any:
    """The command's --json document, held against its schema (`lowbuild schema NAME`)."""
    done = lowbuild(root, *args, "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    return conforming(args[0], done.stdout)


def write_image(root: Path, name: str, base: str, text: str, parent: str | None = None) -> None:
    context = root / "contexts" / name
    context.mkdir(parents=True, exist_ok=True)
    (context / "Dockerfile").write_text(
        f"FROM {base}\n"
        f"RUN echo {text} > /{name} && head -c {RANDOM_BYTES} /dev/urandom > /{name}.bin\n"
    )
    (context / "image.yaml").write_text(
        f"name: {name}\n" + (f"parent: {parent}\n" if parent else "")
    )


def write_project(root: Path, name: str, namespace: str) -> None:
    root.mkdir(parents=True)
    (root / "lowbuild.yaml").write_text(
        f'name: {name}\nnamespace: {namespace}\ncontexts: ["contexts/*"]\n'
    )


@pytest.fixture
def projects(engine: Engine, base_image: str, tmp_path: Path) -> Iterator[tuple[Path, Path, str]]:
    """alpha (a, and b on a) and beta (c), in one namespace; every image of both removed
    afterwards, with the hand-made tag."""
    token = secrets.token_hex(3)
    namespace = f"lowbuild-prune-{token}"
    alpha, beta = tmp_path / "alpha", tmp_path / "beta"
    write_project(alpha, f"alpha-{token}", namespace)
    write_image(alpha, "a", BASE_IMAGE, "one")
    write_image(alpha, "b", f"{namespace}/a:latest", "b", parent="a")
    write_project(beta, f"beta-{token}", namespace)
    write_image(beta, "c", BASE_IMAGE, "one")
    yield alpha, beta, namespace
    for project in (f"alpha-{token}", f"beta-{token}"):
        for image in engine.labelled_images(f"lowbuild.project={project}"):
            for ref in (*image.tags, image.id):
                with contextlib.suppress(EngineError):  # gone with a tag removed before
                    engine.remove_image(ref, force=True)


def build(root: Path, engine: Engine) -> None:
    done = lowbuild(root, "build", "--engine", engine.name, "--progress", "quiet")
    assert done.returncode == 0, done.stderr[-3000:]


def test_images_shows_each_change_and_prune_removes_only_this_familys_earlier_builds(
    engine: Engine, projects: tuple[Path, Path, str]
) -> None:
    alpha, beta, namespace = projects
    build(alpha, engine)
    build(beta, engine)
    first = {row["image"]: row for row in as_json(alpha, "images", "-e", engine.name)["images"]}
    assert all(row["built"] and row["previous"] is None for row in first.values()), first

    write_image(alpha, "a", BASE_IMAGE, "two")  # a changes; b is rebuilt on it
    write_image(beta, "c", BASE_IMAGE, "two")
    build(alpha, engine)
    build(beta, engine)

    shown = as_json(alpha, "images", "-e", engine.name)
    assert shown["engine"] == engine.name
    rows = {row["image"]: row for row in shown["images"]}
    a, b = rows["a"], rows["b"]
    assert a["previous"]["id"] == first["a"]["id"] and b["previous"]["id"] == first["b"]["id"]
    assert any("Dockerfile" in change for change in a["changes"]), a["changes"]
    assert b["changes"] == ["parent rebuilt (a)"], b["changes"]
    assert b["parent"] == "a" and RANDOM_BYTES <= b["adds"] < 2 * RANDOM_BYTES
    base_size = engine.inspect_sized([BASE_IMAGE])[BASE_IMAGE].size  # type: ignore[union-attr]
    assert a["adds"] == a["size"] - base_size
    table = lowbuild(alpha, "images", "-e", engine.name)
    assert table.returncode == 0 and "parent rebuilt (a)" in table.stdout

    # Somebody tags alpha's first `a` by hand: it is theirs now.
    kept_by_hand = f"localhost/someone-{namespace}/keep:1"
    engine.tag(first["a"]["id"], kept_by_hand)

    dry = as_json(alpha, "prune", "--dry-run", "-e", engine.name)
    assert dry["dry_run"] and dry["freed"] is None
    would = {item["id"] for item in dry["removed"]}
    assert would == {first["b"]["id"]}, dry
    assert engine.inspect_image(first["b"]["id"]) is not None  # a dry run removes nothing
    kept = {item["id"]: item["kept"] for item in dry["kept"]}
    assert kept[first["a"]["id"]].startswith("also tagged outside the family")
    assert kept[a["id"]].startswith("current") and kept[b["id"]].startswith("current")

    pruned = as_json(alpha, "prune", "-e", engine.name)
    assert {item["id"] for item in pruned["removed"]} == would
    assert engine.inspect_image(first["b"]["id"]) is None
    assert pruned["freed"] >= RANDOM_BYTES // 2, pruned  # as the engine's storage says
    for ref in (f"{namespace}/a:latest", f"{namespace}/b:latest", kept_by_hand):
        assert engine.inspect_image(ref) is not None, ref
    # beta shares the storage and the namespace: its current and earlier builds are all there.
    beta_rows = {row["image"]: row for row in as_json(beta, "images", "-e", engine.name)["images"]}
    c = beta_rows["c"]
    assert c["built"] and c["previous"] is not None
    assert engine.inspect_image(c["previous"]["id"]) is not None

    again = as_json(alpha, "prune", "-e", engine.name)
    assert again["removed"] == [] and again["freed"] is None


def test_an_earlier_build_a_container_uses_is_kept_with_the_engines_words(
    engine: Engine, projects: tuple[Path, Path, str]
) -> None:
    alpha, _, namespace = projects
    build(alpha, engine)
    first = {row["image"]: row for row in as_json(alpha, "images", "-e", engine.name)["images"]}
    write_image(alpha, "b", f"{namespace}/a:latest", "b2", parent="a")  # only b changes
    build(alpha, engine)

    with engine.run(image=first["b"]["id"], command=["sleep", "300"], timeout=60):
        held = lowbuild(alpha, "prune", "-e", engine.name, "--json")
        assert held.returncode == 1, held.stderr  # something could not be removed
        report = conforming("prune", held.stdout)
        assert report["removed"] == []
        [kept] = [item for item in report["kept"] if item["id"] == first["b"]["id"]]
        assert kept["kept"].startswith("engine: ")
        assert engine.inspect_image(first["b"]["id"]) is not None
    # The container is gone: the next prune removes it.
    again = as_json(alpha, "prune", "-e", engine.name)
    assert [item["id"] for item in again["removed"]] == [first["b"]["id"]]
