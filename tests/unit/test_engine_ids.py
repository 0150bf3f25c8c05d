"""Engines print image IDs in different shapes; lowbuild always hands out "sha256:<hex>"."""

from __future__ import annotations

import pytest

from lowbuild.engines.base import normalise_image_id

HEX = "a3f253dfd441e928162d2f6d91299dc282c7e7f28e07d4b524e2a4aa0954f109"


@pytest.mark.parametrize(
    ("printed", "expected"),
    [
        (f"sha256:{HEX}", f"sha256:{HEX}"),  # docker/buildah --iidfile, buildx metadata
        (HEX, f"sha256:{HEX}"),  # podman commit/build stdout: bare hex
        (f"{HEX}\n", f"sha256:{HEX}"),  # a trailing newline from stdout
        (f"  sha256:{HEX.upper()}  ", f"sha256:{HEX}"),  # case and blanks do not matter
    ],
)
def test_full_ids_are_normalised(printed: str, expected: str) -> None:
    assert normalise_image_id(printed) == expected


@pytest.mark.parametrize(
    "printed",
    [
        HEX[:12],  # `docker images` short ID: must be resolved by the engine, not guessed
        f"sha256:{HEX[:12]}",
        f"sha512:{HEX}",
        HEX[:-1] + "g",
        "",
        "Successfully built 790a3eff2787",
    ],
)
def test_anything_but_a_full_id_is_refused(printed: str) -> None:
    with pytest.raises(ValueError, match="not a full image ID"):
        normalise_image_id(printed)
