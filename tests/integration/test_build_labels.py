"""Labels given to a build reach the image exactly, whatever characters they hold
(podman and buildah get them as one LABEL step appended to a copy of the Dockerfile)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from live_services import BASE_IMAGE

from lowbuild.engines.base import BuildRequest, Engine

TRICKY = {
    "lowbuild.inputs": json.dumps({"args": {"A": "1"}, "files": {"a b.txt": "x"}}),
    "org.example.price": "costs $HOME and ${PATH} \\ backslash 'single' \"double\"",
    "org.example.empty": "",
    "org.example.spaces": "  leading and trailing  ",
}


def test_tricky_labels_land_on_the_image_verbatim(
    engine: Engine, image_refs: Callable[[str], str], tmp_path: Path
) -> None:
    # Two stages, and no newline at the end: the label must go on the final stage.
    (tmp_path / "Dockerfile").write_text(
        f"FROM {BASE_IMAGE} AS first\nRUN echo one > /one\n"
        f"FROM {BASE_IMAGE}\nCOPY --from=first /one /one\nLABEL org.example.own=kept"
    )
    ref = image_refs("labels")

    engine.build(BuildRequest(context=tmp_path, tags=[ref], labels=TRICKY))

    info = engine.inspect_image(ref)
    assert info is not None
    for key, value in TRICKY.items():
        assert info.labels.get(key) == value, key
    assert info.labels.get("org.example.own") == "kept"
    # The user's Dockerfile is left as it was.
    assert (tmp_path / "Dockerfile").read_text().endswith("LABEL org.example.own=kept")
