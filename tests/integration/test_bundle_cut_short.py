"""A bundle cut short inside a member (a copy that stopped early) is refused with exit 4
and one line, and nothing of it reaches the cache or the engine."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tarfile
from pathlib import Path

from live_services import BASE_IMAGE

PAYLOAD = os.urandom(300_000)
SHA = hashlib.sha256(PAYLOAD).hexdigest()


def lowbuild(*args: str, cwd: Path, cache: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lowbuild", *args, "--cache", str(cache)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_bundle_cut_short_inside_a_member_is_refused_whole(tmp_path: Path) -> None:
    source = tmp_path / "payload.bin"
    source.write_bytes(PAYLOAD)
    root = tmp_path / "project"
    context = root / "contexts" / "app"
    context.mkdir(parents=True)
    (root / "lowbuild.yaml").write_text("name: cut\nnamespace: lowbuild-cuttest\n")
    (context / "Dockerfile").write_text(f"FROM {BASE_IMAGE}\nCOPY payload.bin /\n")
    (context / "image.yaml").write_text(
        "name: app\nartifacts:\n  - file: payload.bin\n"
        f"    urls: [file://{source}]\n    sha256: {SHA}\n"
    )
    sent_cache = tmp_path / "connected-cache"
    assert lowbuild("fetch", cwd=root, cache=sent_cache).returncode == 0
    bundle = tmp_path / "family.bundle"
    exported = lowbuild(
        "bundle", "export", str(bundle), "--engine", "podman", cwd=root, cache=sent_cache
    )
    assert exported.returncode == 0, exported.stderr

    with tarfile.open(bundle) as tar:
        member = tar.getmember(f"artifacts/sha256/{SHA}")
        cut_at = member.offset_data + member.size // 2
    with bundle.open("r+b") as f:
        f.truncate(cut_at)

    received_cache = tmp_path / "air-gapped-cache"
    refused = lowbuild(
        "bundle", "import", str(bundle), "--engine", "podman", cwd=tmp_path, cache=received_cache
    )
    assert refused.returncode == 4, refused.stderr
    assert "Traceback" not in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert f"artifacts/sha256/{SHA}" in refused.stderr and "cut short" in refused.stderr
    assert "nothing was imported" in refused.stderr
    entries = received_cache / "sha256"
    assert not entries.exists() or list(entries.iterdir()) == []
    # no scratch dir left in the cache root either
    assert [p.name for p in received_cache.iterdir() if p.name.startswith(".bundle-import-")] == []
