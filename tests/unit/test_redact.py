"""One redaction for every URL lowbuild shows or logs: passwords become `***`."""

from __future__ import annotations

from pathlib import Path

import pytest

from lowbuild.errors import SpecError
from lowbuild.redact import redact
from lowbuild.spec.load import load_project

CASES = {
    "password": ("https://user:s3cret@host/x.tgz", "https://user:***@host/x.tgz"),
    "port_and_path": ("http://u:s3cret@h:8080/a/b", "http://u:***@h:8080/a/b"),
    "password_with_at": ("https://u:s3@cret@host/p", "https://u:***@host/p"),
    "token_as_user": ("https://s3cret@host/x", "https://***@host/x"),
    "in_a_message": (
        "tried http://a:s3cret@h/x: HTTP 500; then https://b:s3cret@g/y",
        "tried http://a:***@h/x: HTTP 500; then https://b:***@g/y",
    ),
    "no_credentials": ("https://host/path@v1", "https://host/path@v1"),
    "file_url": ("file:///srv/mirror/x.tgz", "file:///srv/mirror/x.tgz"),
}


@pytest.mark.parametrize("text, shown", CASES.values(), ids=CASES.keys())
def test_credentials_in_urls_are_hidden(text: str, shown: str) -> None:
    assert redact(text) == shown
    assert "s3cret" not in redact(text)


def test_a_spec_error_about_a_url_does_not_print_its_password(tmp_path: Path) -> None:
    (tmp_path / "contexts" / "app").mkdir(parents=True)
    (tmp_path / "lowbuild.yaml").write_text("name: demo\n")
    (tmp_path / "contexts" / "app" / "Dockerfile").write_text("FROM scratch\n")
    (tmp_path / "contexts" / "app" / "image.yaml").write_text(
        "name: app\nartifacts:\n  - file: a.tgz\n    urls: [ftp://user:s3cret@host/a.tgz]\n"
        f"    sha256: {'a' * 64}\n"
    )
    with pytest.raises(SpecError) as caught:
        load_project(tmp_path / "lowbuild.yaml")
    assert "user:***@host" in str(caught.value) and "s3cret" not in str(caught.value)
