"""YAML mistakes reported the way a compiler reports them: FILE:LINE:COLUMN, what is
wrong in plain words, then the line with a caret under the place (not PyYAML's own
words, and for an unclosed bracket the line where it opened, not the next one)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lowbuild.errors import SpecError
from lowbuild.spec.load import load_project

CASES = {
    "tab": ("name: web\ntags:\n\t- '1'\n", 3, 1, "a tab: YAML indents with spaces only"),
    "colon in a value": ("name: web\nparent: base: x\n", 2, 13, "quote a value that contains"),
    "unclosed bracket": ("name: web\ntags: ['1', '2'\nparent: base\n", 2, 7, "`[` is not closed"),
    "indent": (
        "name: web\ntest:\n  command: [true]\n expect: x\n",
        4,
        2,
        "not indented like the keys of its block",
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_a_yaml_mistake_is_shown_with_line_column_and_caret(tmp_path: Path, case: str) -> None:
    text, line, column, words = CASES[case]
    (tmp_path / "lowbuild.yaml").write_text("name: p\n")
    context = tmp_path / "contexts" / "web"
    context.mkdir(parents=True)
    (context / "Dockerfile").write_text("FROM scratch\n")
    (context / "image.yaml").write_text(text)

    with pytest.raises(SpecError) as caught:
        load_project(tmp_path)

    first, shown, caret = str(caught.value).split("\n")
    assert first.startswith(f"{context / 'image.yaml'}:{line}:{column}: YAML syntax error: ")
    assert words in first
    assert shown.strip() == text.splitlines()[line - 1].expandtabs(4).strip()
    # The caret stands under the column named (the excerpt is indented like the caret).
    assert caret.index("^") - 4 == len(text.splitlines()[line - 1][: column - 1].expandtabs(4))


def test_a_password_on_the_line_shown_is_redacted(tmp_path: Path) -> None:
    (tmp_path / "lowbuild.yaml").write_text(
        "name: p\nmirrors: [{prefix: 'https://a/', replacement: 'https://u:hunter2@b/'}\n"
    )
    with pytest.raises(SpecError) as caught:
        load_project(tmp_path)
    assert "hunter2" not in str(caught.value)
    assert ":2:10:" in str(caught.value)


def test_every_broken_image_yaml_is_named_in_one_run(tmp_path: Path) -> None:
    (tmp_path / "lowbuild.yaml").write_text("name: p\n")
    for name, text in {
        "a": "name: a\n",
        "b": "name: b\ntags:\n\t- x\n",  # a tab
        "c": "name: c\nparent: [x\n",  # unclosed
        "d": "name: d\nbogus: 1\n",  # an unknown key
    }.items():
        context = tmp_path / "contexts" / name
        context.mkdir(parents=True)
        (context / "Dockerfile").write_text("FROM scratch\n")
        (context / "image.yaml").write_text(text)

    with pytest.raises(SpecError) as caught:
        load_project(tmp_path)

    message = str(caught.value)
    for name, line in (("b", 3), ("c", 2), ("d", 2)):
        assert f"{tmp_path / 'contexts' / name / 'image.yaml'}:{line}:" in message, message
    assert message.endswith("3 mistakes in 3 files")
    assert str(tmp_path / "contexts" / "a") not in message
