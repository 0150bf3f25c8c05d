"""`bump`'s pure parts: versions read, compared and replaced; image.yaml edited in place
(every byte but the changed values kept); upstream's checksum files and release pages
read; the spec keys `sha256-url:` and `releases:` checked with file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from lowbuild.errors import SpecError
from lowbuild.sources.upstream import listed_versions, newer_versions, published_sha256
from lowbuild.spec.edit import Edit, apply_edits
from lowbuild.spec.load import load_project
from lowbuild.spec.versions import replace_version, version_key

IMAGE_YAML = """\
# haproxy, pinned (a comment that must survive)
name: haproxy
tags: ["2.6.12", latest]   # quoted and plain
args: {HAPROXY_VERSION: "2.6.12", OTHER: '2.6.120'}
artifacts:
  - file: haproxy-2.6.12.tar.gz
    urls:
      - https://downloads.example/2.6/src/haproxy-2.6.12.tar.gz   # mirror first
      - 'https://other.example/haproxy-2.6.12.tar.gz'
    sha256: 58f9edb26bf3288f4b502658399281cc5d6478468bd178eafe579c8f41895854
    sha256-url: https://downloads.example/2.6/src/haproxy-2.6.12.tar.gz.sha256
"""


def test_versions_compare_numerically_and_pre_releases_come_first() -> None:
    ordered = ["2.6.9", "2.6.10", "2.7-rc1", "2.7", "2.7.1", "10.0"]
    assert (
        sorted(["2.7.1", "10.0", "2.6.10", "2.7", "2.6.9", "2.7-rc1"], key=version_key) == ordered
    )


def test_a_version_is_replaced_only_where_it_stands_whole() -> None:
    assert replace_version("haproxy-2.6.12.tar.gz", "2.6.12", "2.6.13") == "haproxy-2.6.13.tar.gz"
    assert replace_version("2.6.120", "2.6.12", "2.6.13") == "2.6.120"
    assert replace_version("x-12.6.12", "2.6.12", "2.6.13") == "x-12.6.12"
    assert (
        replace_version("/2.6/src/haproxy-2.6.1.tgz", "2.6", "2.8") == "/2.8/src/haproxy-2.6.1.tgz"
    )


def test_edits_change_only_the_values_and_keep_every_other_byte() -> None:
    old_sha = "58f9edb26bf3288f4b502658399281cc5d6478468bd178eafe579c8f41895854"
    edits = [
        Edit(("tags", 0), "2.6.12", "2.6.13"),
        Edit(("args", "HAPROXY_VERSION"), "2.6.12", "2.6.13"),
        Edit(("artifacts", 0, "file"), "haproxy-2.6.12.tar.gz", "haproxy-2.6.13.tar.gz"),
        Edit(
            ("artifacts", 0, "urls", 0),
            "https://downloads.example/2.6/src/haproxy-2.6.12.tar.gz",
            "https://downloads.example/2.6/src/haproxy-2.6.13.tar.gz",
        ),
        Edit(
            ("artifacts", 0, "urls", 1),
            "https://other.example/haproxy-2.6.12.tar.gz",
            "https://other.example/haproxy-2.6.13.tar.gz",
        ),
        Edit(("artifacts", 0, "sha256"), old_sha, "a" * 64),
    ]
    after = apply_edits(IMAGE_YAML, edits, origin=Path("image.yaml"))
    expected = (
        IMAGE_YAML.replace('["2.6.12", latest]', '["2.6.13", latest]')
        .replace('HAPROXY_VERSION: "2.6.12"', 'HAPROXY_VERSION: "2.6.13"')
        .replace("haproxy-2.6.12.tar.gz\n", "haproxy-2.6.13.tar.gz\n", 1)
        .replace("src/haproxy-2.6.12.tar.gz   #", "src/haproxy-2.6.13.tar.gz   #")
        .replace(
            "'https://other.example/haproxy-2.6.12.tar.gz'",
            "'https://other.example/haproxy-2.6.13.tar.gz'",
        )
        .replace(old_sha, "a" * 64)
    )
    assert after == expected
    assert "2.6.120" in after and "(a comment that must survive)" in after


def test_an_edit_of_a_value_not_written_as_expected_names_the_line() -> None:
    with pytest.raises(SpecError) as caught:
        apply_edits(IMAGE_YAML, [Edit(("tags", 0), "9.9", "10.0")], origin=Path("image.yaml"))
    assert caught.value.location is not None and caught.value.location.line == 3


def test_checksum_files_in_their_usual_formats() -> None:
    sha = "b" * 64
    assert published_sha256(f"{sha}  haproxy-2.6.13.tar.gz\n", "haproxy-2.6.13.tar.gz") == sha
    assert published_sha256(f"{sha} *haproxy-2.6.13.tar.gz\n", "haproxy-2.6.13.tar.gz") == sha
    bsd = f"SHA256 (haproxy-2.6.13.tar.gz) = {sha.upper()}\n"
    assert published_sha256(bsd, "haproxy-2.6.13.tar.gz") == sha
    assert published_sha256(f"{sha}\n", "x.tar.gz") == sha  # a file with just the digest
    several = f"{'c' * 64}  a.tar.gz\n{sha}  b.tar.gz\n"
    assert published_sha256(several, "b.tar.gz") == sha
    assert published_sha256(several, "z.tar.gz") is None
    assert published_sha256("<html>not found</html>", "a.tar.gz") is None


def test_release_pages_list_versions_newer_first_without_pre_releases() -> None:
    page = (
        '<a href="haproxy-2.6.9.tar.gz">x</a> <a href="haproxy-2.6.12.tar.gz">'
        '<a href="haproxy-2.6.14.tar.gz"> <a href="haproxy-2.6.13.tar.gz"> '
        '<a href="haproxy-2.6.15-rc1.tar.gz">'
    )
    found = listed_versions(page, r"haproxy-(2\.6\.[0-9]+(?:-rc[0-9]+)?)\.tar\.gz")
    assert found == ["2.6.9", "2.6.12", "2.6.13", "2.6.14", "2.6.15-rc1"]
    assert newer_versions("2.6.12", found) == ["2.6.13", "2.6.14"]
    assert newer_versions("2.6.12", found, pre_releases=True)[-1] == "2.6.15-rc1"


@pytest.mark.parametrize(
    ("artifact", "message"),
    [
        ("    releases: {index: 'https://x.example/', pattern: 'no-group'}\n", "exactly one group"),
        (
            "    releases: {index: 'https://x.example/', pattern: '(('}\n",
            "not a regular expression",
        ),
        ("    releases: {index: 'ftp://x.example/', pattern: '(x)'}\n", "must start with http"),
        ("    sha256-url: 'ftp://x.example/a.sha256'\n", "must start with http"),
        ("    releases: {index: 'https://x.example/'}\n", "missing required key"),
    ],
)
def test_bad_upstream_keys_are_spec_errors_at_their_line(
    tmp_path: Path, artifact: str, message: str
) -> None:
    (tmp_path / "lowbuild.yaml").write_text("name: t\n")
    image = tmp_path / "contexts" / "a"
    image.mkdir(parents=True)
    (image / "Dockerfile").write_text("FROM scratch\n")
    (image / "image.yaml").write_text(
        "name: a\nartifacts:\n  - file: a-1.0.tar.gz\n    urls: [https://x.example/a-1.0.tar.gz]\n"
        f"    sha256: {'a' * 64}\n{artifact}"
    )
    with pytest.raises(SpecError) as caught:
        load_project(tmp_path / "lowbuild.yaml")
    assert message in str(caught.value)
    assert "image.yaml:6" in str(caught.value)
