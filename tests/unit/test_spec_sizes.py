"""`size:` per artifact and `max-download:` per project: read in bytes or binary units,
and every wrong value names its file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from lowbuild.errors import SpecError
from lowbuild.spec.load import load_project
from lowbuild.spec.model import DEFAULT_MAX_DOWNLOAD

SHA = "a" * 64


def write_project(root: Path, *, project_extra: str = "", artifact_extra: str = "") -> Path:
    (root / "contexts" / "app").mkdir(parents=True)
    (root / "lowbuild.yaml").write_text(f"name: demo\n{project_extra}")
    (root / "contexts" / "app" / "Dockerfile").write_text("FROM scratch\n")
    (root / "contexts" / "app" / "image.yaml").write_text(
        "name: app\n"
        "artifacts:\n"
        "  - file: src.tar.gz\n"
        "    urls: [https://example.invalid/src.tar.gz]\n"
        f"    sha256: {SHA}\n"
        f"{artifact_extra}"
    )
    return root / "lowbuild.yaml"


def test_sizes_are_read_in_bytes_or_binary_units(tmp_path: Path) -> None:
    project = load_project(
        write_project(
            tmp_path, project_extra="max-download: 4GiB\n", artifact_extra="    size: 1048576\n"
        )
    )
    assert project.max_download == 4 * 1024**3
    assert project.image("app").artifacts[0].size == 1024 * 1024


def test_without_sizes_the_default_ceiling_applies(tmp_path: Path) -> None:
    project = load_project(write_project(tmp_path))
    assert project.max_download == DEFAULT_MAX_DOWNLOAD == 1024**3
    assert project.image("app").artifacts[0].size is None


BAD_SIZES = ["-1", "0", "lots", "1.5GiB", "4GB", "[1]"]  # as `size:` or `max-download:`


@pytest.mark.parametrize("value", BAD_SIZES)
def test_a_bad_artifact_size_names_file_and_line(tmp_path: Path, value: str) -> None:
    spec = write_project(tmp_path, artifact_extra=f"    size: {value}\n")
    with pytest.raises(SpecError) as caught:
        load_project(spec)
    image_yaml = tmp_path / "contexts" / "app" / "image.yaml"
    assert str(caught.value).startswith(f"{image_yaml}:6: "), caught.value
    assert "size" in str(caught.value)


def test_a_bad_max_download_names_file_and_line(tmp_path: Path) -> None:
    spec = write_project(tmp_path, project_extra="max-download: plenty\n")
    with pytest.raises(SpecError) as caught:
        load_project(spec)
    assert str(caught.value).startswith(f"{spec}:2: "), caught.value
    assert "max-download" in str(caught.value) and "4GiB" in str(caught.value)
