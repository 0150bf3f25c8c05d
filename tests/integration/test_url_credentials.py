"""A password in an artifact URL is used, never shown: not in fetch errors, the
progress lines, `fetch --print-digests`, nor the run logs under .lowbuild/logs/.
Real processes against the real loopback fault server."""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fault_server import FaultServer
from live_services import BASE_IMAGE

SECRET = "s3cret-Pa55"
PAYLOAD = os.urandom(50_000)
SHA = hashlib.sha256(PAYLOAD).hexdigest()


@pytest.fixture
def server() -> Iterator[FaultServer]:
    with FaultServer() as srv:
        srv.add("src.tar.gz", PAYLOAD)
        srv.add("other.tar.gz", PAYLOAD[::-1])
        yield srv


def with_password(server: FaultServer, mode: str, name: str) -> str:
    return server.url(mode, name).replace("http://", f"http://builder:{SECRET}@")


def write_project(
    root: Path, artifacts: list[tuple[str, str, str]], *, digests: bool = True
) -> Path:
    """One image FROM the busybox base; artifacts as (file, url, sha256)."""
    context = root / "contexts" / "app"
    context.mkdir(parents=True)
    (root / "lowbuild.yaml").write_text(
        f"name: creds\nnamespace: lowbuild-credtest-{os.getpid()}\n"
    )
    (context / "Dockerfile").write_text(f"FROM {BASE_IMAGE}\nCOPY . /in/\n")
    lines = ["name: app", "artifacts:"]
    for file, url, sha in artifacts:
        lines += [f"  - file: {file}", f'    urls: ["{url}"]']
        if digests:
            lines.append(f"    sha256: {sha}")
    (context / "image.yaml").write_text("\n".join(lines) + "\n")
    return root / "lowbuild.yaml"


def lowbuild(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lowbuild", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def test_fetch_error_and_progress_lines_hide_the_password(
    server: FaultServer, tmp_path: Path
) -> None:
    good = with_password(server, "ok", "src.tar.gz")
    project = write_project(tmp_path, [("src.tar.gz", good, SHA)])
    done = lowbuild("fetch", "-f", str(project), "--cache", str(tmp_path / "cache"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"from http://builder:***@127.0.0.1:{server.port}/ok/src.tar.gz" in done.stderr
    assert SECRET not in done.stdout + done.stderr
    # The credentials were still used, sent to their own origin only.
    [request] = [r for r in server.state.requests if r.path == "/ok/src.tar.gz"]
    token = base64.b64encode(f"builder:{SECRET}".encode()).decode()
    assert request.headers.get("authorization") == f"Basic {token}"

    bad = with_password(server, "missing", "src.tar.gz")
    project = write_project(tmp_path / "bad", [("src.tar.gz", bad, SHA)])
    failed = lowbuild(
        "fetch", "-f", str(project), "--cache", str(tmp_path / "cache2"), cwd=tmp_path
    )
    assert failed.returncode == 1
    assert "http://builder:***@" in failed.stderr and "HTTP 404" in failed.stderr
    assert SECRET not in failed.stdout + failed.stderr


def test_print_digests_hides_the_password(server: FaultServer, tmp_path: Path) -> None:
    project = write_project(
        tmp_path,
        [
            ("src.tar.gz", with_password(server, "ok", "src.tar.gz"), ""),
            ("gone.tar.gz", with_password(server, "missing", "gone.tar.gz"), ""),
        ],
        digests=False,
    )
    done = lowbuild("fetch", "-f", str(project), "--print-digests", cwd=tmp_path)
    assert (
        f"{SHA}  src.tar.gz  http://builder:***@127.0.0.1:{server.port}/ok/src.tar.gz"
        in done.stdout
    )
    assert "gone.tar.gz  http://builder:***@" in done.stderr
    assert SECRET not in done.stdout + done.stderr


def test_build_logs_hide_the_password(server: FaultServer, tmp_path: Path) -> None:
    """`build` fetches first; the run's _fetch.log records where each input came from
    and why one could not be had, with every URL redacted. Nothing gets built."""
    project = write_project(
        tmp_path,
        [
            ("src.tar.gz", with_password(server, "ok", "src.tar.gz"), SHA),
            ("other.tar.gz", with_password(server, "missing", "other.tar.gz"), "0" * 64),
        ],
    )
    done = lowbuild(
        "build",
        "-f",
        str(project),
        "--engine",
        "podman",
        "--cache",
        str(tmp_path / "cache"),
        cwd=tmp_path,
    )
    assert done.returncode == 1, done.stderr
    assert SECRET not in done.stdout + done.stderr
    logs = tmp_path / ".lowbuild" / "logs"
    fetch_log = (logs / "latest" / "_fetch.log").read_text()
    assert "fetched src.tar.gz" in fetch_log and "from http://builder:***@" in fetch_log
    assert "other.tar.gz" in fetch_log and "HTTP 404" in fetch_log
    for path in logs.rglob("*"):
        if path.is_file():
            assert SECRET not in path.read_text(errors="replace"), path
