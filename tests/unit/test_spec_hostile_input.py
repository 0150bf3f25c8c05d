"""Specs nobody should write, read as a user would see them: one line naming the file
and line, never a traceback, and quickly. Each case is read with libyaml and with the
pure-Python loader PyYAML falls back to where libyaml is missing."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from lowbuild.errors import EXIT_BAD_INPUT, SpecError
from lowbuild.spec import load
from lowbuild.spec.load import MAX_SPEC_BYTES, load_project


@pytest.fixture(params=["libyaml", "pure-python"])
def loader(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    if request.param == "pure-python":
        monkeypatch.setattr(load, "_Loader", yaml.SafeLoader)
    else:
        assert load._Loader is yaml.CSafeLoader  # the wheel ships libyaml: test what runs
    yield request.param


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "lowbuild.yaml").write_text("name: p\n")
    context = tmp_path / "contexts" / "web"
    context.mkdir(parents=True)
    (context / "Dockerfile").write_text("FROM scratch\n")
    (context / "image.yaml").write_text("name: web\n")
    return tmp_path


def spec_error(project: Path) -> SpecError:
    with pytest.raises(SpecError) as caught:
        load_project(project / "lowbuild.yaml")
    assert caught.value.exit_code == EXIT_BAD_INPUT
    # One line; a syntax error adds the offending line (cut short) and a caret under it.
    _, *excerpt = str(caught.value).split("\n")
    assert len(excerpt) in (0, 2) and all(len(line) <= 210 for line in excerpt), excerpt
    return caught.value


@pytest.mark.parametrize("char", ["\x00", "\x07", "\x1b"])
def test_control_character_in_image_yaml_names_its_line(
    project: Path, loader: str, char: str
) -> None:
    image_yaml = project / "contexts" / "web" / "image.yaml"
    image_yaml.write_text(f"name: web\nlabels:\n  secret: 'abc{char}hunter2'\n")
    message = str(spec_error(project))
    assert message.startswith(f"{image_yaml}:3: "), message
    assert f"U+{ord(char):04X}" in message
    assert "hunter2" not in message  # the content is not echoed


def test_five_thousand_levels_of_nesting_are_refused_with_a_line(
    project: Path, loader: str
) -> None:
    image_yaml = project / "contexts" / "web" / "image.yaml"
    image_yaml.write_text("name: web\nlabels: " + "[" * 5000 + "]" * 5000 + "\n")
    message = str(spec_error(project))
    assert message.startswith(f"{image_yaml}:2:"), message


def test_deep_block_nesting_is_refused_with_a_line(project: Path, loader: str) -> None:
    (project / "lowbuild.yaml").write_text("name: p\nmirrors:\n" + "- " * 5000 + "x\n")
    message = str(spec_error(project))
    assert message.startswith(f"{project / 'lowbuild.yaml'}:3:"), message


@pytest.mark.parametrize("which", ["lowbuild.yaml", "contexts/web/image.yaml"])
def test_spec_that_is_not_utf8_names_the_line(project: Path, which: str) -> None:
    spec = project / which
    spec.write_bytes(spec.read_bytes() + b"# caf\xe9 in Latin-1\nlabels: {}\n")
    message = str(spec_error(project))
    assert message.startswith(f"{spec}:2: "), message
    assert "not UTF-8" in message and "0xe9" in message


def test_giant_spec_is_refused_at_once(project: Path) -> None:
    entries = "".join(f"  - contexts/web{index:07d}/more/words/here\n" for index in range(150_000))
    (project / "lowbuild.yaml").write_text("name: p\ncontexts:\n" + entries)
    assert (project / "lowbuild.yaml").stat().st_size > MAX_SPEC_BYTES
    started = time.monotonic()
    message = str(spec_error(project))
    assert time.monotonic() - started < 1.0  # it took ~10 s to get to an error before
    assert message.startswith(f"{project / 'lowbuild.yaml'}: "), message
    assert "MiB" in message


def test_big_spec_under_the_cap_is_read_with_line_marks(project: Path) -> None:
    """Just under the cap, the libyaml reader still finds the line of a mistake."""
    entries = "".join(f"  - {{prefix: p{index:07d}, replacement: r}}\n" for index in range(100_000))
    (project / "lowbuild.yaml").write_text("name: p\nmirrors:\n" + entries + "  - [not, a, map]\n")
    assert (project / "lowbuild.yaml").stat().st_size < MAX_SPEC_BYTES
    message = str(spec_error(project))
    assert message.startswith(f"{project / 'lowbuild.yaml'}:100003: "), message
