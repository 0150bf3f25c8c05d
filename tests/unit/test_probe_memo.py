"""A passing probe of a daemonless engine is remembered, for the same binaries, user and
settings only (engines/detect.py ProbeMemo): pure logic on files made here."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lowbuild.engines.detect import ProbeMemo, probe_key, select_engine


@pytest.fixture
def fake_podman(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A `podman` on PATH that answers the version query and counts how often."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    script = bin_dir / "podman"
    script.write_text(f'#!/bin/sh\necho "$@" >> {calls}\necho 4.3.1\n')
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}/usr/bin:/bin")
    monkeypatch.delenv("CONTAINER_HOST", raising=False)
    return calls


def _calls(calls: Path) -> int:
    return len(calls.read_text().splitlines()) if calls.exists() else 0


def test_a_passing_probe_is_asked_once_until_the_binary_or_a_setting_changes(
    fake_podman: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    memo = ProbeMemo(tmp_path / "probes.json")
    assert select_engine("podman", memo=memo).name == "podman"
    assert select_engine("podman", memo=memo).name == "podman"
    assert _calls(fake_podman) == 1  # the second run trusted the memo
    script = tmp_path / "bin" / "podman"
    script.write_text(script.read_text() + "# a new version\n")
    select_engine("podman", memo=memo)
    assert _calls(fake_podman) == 2  # the binary changed: probed again
    monkeypatch.setenv("CONTAINER_HOST", "unix:///elsewhere.sock")
    select_engine("podman", memo=memo)
    assert _calls(fake_podman) == 3  # pointed elsewhere: probed again
    select_engine("podman")
    assert _calls(fake_podman) == 4  # no memo: always probed


def test_a_failing_probe_is_never_remembered(fake_podman: Path, tmp_path: Path) -> None:
    script = tmp_path / "bin" / "podman"
    script.write_text("#!/bin/sh\necho 'podman version 2.0.0'\n")  # too old
    memo = ProbeMemo(tmp_path / "probes.json")
    for _ in range(2):
        with pytest.raises(Exception, match="not usable"):
            select_engine("podman", memo=memo)
    assert not (tmp_path / "probes.json").exists()


def test_engines_behind_a_daemon_and_a_bad_memo_are_probed(
    fake_podman: Path, tmp_path: Path
) -> None:
    assert probe_key("docker") is None and probe_key("buildx") is None
    assert probe_key("podman") is not None
    broken = tmp_path / "probes.json"
    broken.write_text("{not json")
    select_engine("podman", memo=ProbeMemo(broken))
    assert _calls(fake_podman) == 1
    assert ProbeMemo(broken).passed("podman") == "4.3.1"  # rewritten whole
