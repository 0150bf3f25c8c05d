"""`.dockerignore` patterns behave as docker's: globs, `**`, directories, `!` exceptions."""

from __future__ import annotations

import pytest

from lowbuild.context.dockerignore import is_ignored, parse_dockerignore

CASES = [
    # (rules, path, ignored?)
    ("*.log", "app.log", True),
    ("*.log", "logs/app.log", False),  # `*` does not cross directories
    ("**/*.log", "logs/deep/app.log", True),
    ("**/*.log", "app.log", True),  # `**/` matches zero directories too
    ("node_modules", "node_modules/x/y.js", True),  # a directory takes its contents
    ("/build", "build/out.o", True),  # a leading slash is the context root
    ("./tmp/", "tmp/file", True),  # cleaned like a path
    ("doc?", "docs", True),
    ("doc?", "doc", False),
    ("[abc].txt", "b.txt", True),
    ("[!abc].txt", "b.txt", False),
    ("[!abc].txt", "d.txt", True),
    ("secret\\*", "secret*", True),
    ("secret\\*", "secrets", False),
    ("*\n!keep.md", "keep.md", False),
    ("*\n!keep.md", "other.md", True),
    ("*.md\n!README.md\nREADME.md", "README.md", True),  # the last match wins
    ("logs\n!logs/keep", "logs/keep", False),
    ("logs\n!logs/keep", "logs/drop", True),
    ("**\n!src/**", "src/a/b.py", False),
    ("# a comment\n\n  *.tmp  ", "x.tmp", True),
    ("# a comment", "# a comment", False),
    ("a/**/b", "a/b", True),
    ("a/**/b", "a/x/y/b", True),
    ("a/**/b", "a/x/y/c", False),
]


@pytest.mark.parametrize(("rules", "path", "ignored"), CASES)
def test_pattern(rules: str, path: str, ignored: bool) -> None:
    assert is_ignored(path, parse_dockerignore(rules)) is ignored
