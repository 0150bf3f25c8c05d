"""`lowbuild fetch` as real processes: sharing one cache, being killed, running
with no network at all, and `lowbuild cache add|ls|verify` from the command line."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fault_server import FaultServer

PAYLOAD = os.urandom(400_000)
SHA = hashlib.sha256(PAYLOAD).hexdigest()


def write_project(
    root: Path, urls: list[str], *, sha256: str = SHA, mirror: Path | None = None
) -> Path:
    """A one-image project: lowbuild.yaml + contexts/app/{image.yaml,Dockerfile}."""
    context = root / "contexts" / "app"
    context.mkdir(parents=True)
    mirrors = (
        f'mirrors:\n  - {{prefix: "http://mirror.invalid/", replacement: "file://{mirror}/"}}\n'
        if mirror
        else ""
    )
    (root / "lowbuild.yaml").write_text(
        f'name: demo\nnamespace: lbtest\ntag: latest\ncontexts: ["contexts/*"]\n{mirrors}'
    )
    url_list = ", ".join(f'"{u}"' for u in urls)
    (context / "image.yaml").write_text(
        "name: app\n"
        "artifacts:\n"
        f"  - file: src.tar.gz\n    urls: [{url_list}]\n    sha256: {sha256}\n"
    )
    (context / "Dockerfile").write_text("FROM scratch\nCOPY src.tar.gz /\n")
    return root / "lowbuild.yaml"


def lowbuild(*args: str, prefix: tuple[str, ...] = ()) -> list[str]:
    return [*prefix, sys.executable, "-m", "lowbuild", *args]


def run(*args: str, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        lowbuild(*args, prefix=prefix), capture_output=True, text=True, timeout=120, check=False
    )


def flat(text: str) -> str:
    """Console output with line wrapping undone, for substring checks."""
    return " ".join(text.split())


def entry_dir_listing(cache: Path) -> list[str]:
    directory = cache / "sha256"
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


@pytest.fixture
def server() -> Iterator[FaultServer]:
    with FaultServer() as srv:
        srv.add("src.tar.gz", PAYLOAD)
        yield srv


def test_two_processes_fetching_the_same_artifact_download_it_once(
    server: FaultServer, tmp_path: Path
) -> None:
    server.state.slow_delay = 0.03  # ~3 s per download: the two runs surely overlap
    project = write_project(tmp_path / "p", [server.url("slow", "src.tar.gz")])
    cache = tmp_path / "cache"
    cmd = lowbuild("fetch", "-f", str(project), "--cache", str(cache))
    procs = [
        subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    results = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    assert server.state.count("/slow/src.tar.gz") == 1
    assert entry_dir_listing(cache) == [SHA]
    assert (cache / "sha256" / SHA).read_bytes() == PAYLOAD


def test_fetch_killed_mid_download_leaves_no_entry_and_next_fetch_succeeds(
    server: FaultServer, tmp_path: Path
) -> None:
    server.state.slow_delay = 0.05  # ~5 s: plenty of time to kill it half way
    project = write_project(tmp_path / "p", [server.url("slow", "src.tar.gz")])
    cache = tmp_path / "cache"
    proc = subprocess.Popen(
        lowbuild("fetch", "-f", str(project), "--cache", str(cache)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    partial = cache / "sha256" / f".{SHA}.partial"
    deadline = time.monotonic() + 30
    while not (partial.exists() and partial.stat().st_size > 50_000):
        assert time.monotonic() < deadline, "download never started"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)

    assert SHA not in entry_dir_listing(cache)
    listed = run("cache", "ls", "--cache", str(cache), "-f", str(project))
    assert listed.returncode == 0 and listed.stdout == ""
    assert run("cache", "verify", "--cache", str(cache)).returncode == 0
    assert not partial.exists()  # verify cleans what a killed writer left

    server.state.slow_delay = 0.0
    again = run("fetch", "-f", str(project), "--cache", str(cache))
    assert again.returncode == 0, again.stderr
    assert entry_dir_listing(cache) == [SHA]  # the stale partial is gone too
    assert (cache / "sha256" / SHA).read_bytes() == PAYLOAD


@pytest.mark.parametrize("sent", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_fetch_stops_at_once_and_leaves_no_partial(
    server: FaultServer, tmp_path: Path, sent: signal.Signals
) -> None:
    """Ctrl-C (or a CI cancelling the job) does not wait for the downloads to finish:
    they stop at their next chunk, their partial files are removed, exit 130."""
    server.state.slow_delay = 0.2  # 4 KiB every 0.2 s: the whole file would take 20 s
    project = write_project(tmp_path / "p", [server.url("slow", "src.tar.gz")])
    cache = tmp_path / "cache"
    proc = subprocess.Popen(
        lowbuild("fetch", "-f", str(project), "--cache", str(cache)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    partial = cache / "sha256" / f".{SHA}.partial"
    deadline = time.monotonic() + 30
    while not (partial.exists() and partial.stat().st_size > 8_000):
        assert time.monotonic() < deadline, "download never started"
        time.sleep(0.05)

    sent_at = time.monotonic()
    proc.send_signal(sent)
    _, stderr = proc.communicate(timeout=15)
    took = time.monotonic() - sent_at

    assert proc.returncode == 130, stderr
    assert took < 3.0, f"took {took:.1f} s to stop"
    assert "interrupted" in stderr and "Traceback" not in stderr
    assert not partial.exists()
    assert entry_dir_listing(cache) == []


needs_root_and_unshare = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None, reason="needs root and unshare(1)"
)


@pytest.mark.root
@needs_root_and_unshare
def test_offline_fetch_and_assembly_work_without_any_network(tmp_path: Path) -> None:
    # Declared URLs point at a host that cannot resolve: only the cache can help.
    project = write_project(tmp_path / "p", ["https://mirror.invalid/src.tar.gz"])
    cache = tmp_path / "cache"
    no_net = ("unshare", "--net")

    missing = run("fetch", "--offline", "-f", str(project), "--cache", str(cache), prefix=no_net)
    assert missing.returncode == 2, missing.stderr
    message = flat(missing.stderr)
    assert f"src.tar.gz sha256:{SHA}" in message
    assert "lowbuild fetch app" in message and "lowbuild cache add src.tar.gz" in message

    brought = tmp_path / "src.tar.gz"
    brought.write_bytes(PAYLOAD)
    added = run(
        "cache", "add", str(brought), "-f", str(project), "--cache", str(cache), prefix=no_net
    )
    assert added.returncode == 0, added.stderr

    done = run("fetch", "--offline", "-f", str(project), "--cache", str(cache), prefix=no_net)
    assert done.returncode == 0, done.stderr

    # Assembly needs no network either.
    script = (
        "import sys; from pathlib import Path\n"
        "from lowbuild.spec.load import load_project\n"
        "from lowbuild.sources.cache import Cache\n"
        "from lowbuild.context.assemble import assemble_context\n"
        f"p = load_project(Path({str(project)!r}))\n"
        f"s = assemble_context(p.image('app'), cache=Cache(Path({str(cache)!r})), "
        f"stage_root=Path({str(tmp_path / 'stage')!r}))\n"
        "print(s.digest)\n"
    )
    staged = subprocess.run(
        [*no_net, sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert staged.returncode == 0, staged.stderr
    assert staged.stdout.startswith("sha256:")
    assert (tmp_path / "stage" / "app" / "src.tar.gz").read_bytes() == PAYLOAD


@pytest.mark.root
@needs_root_and_unshare
def test_offline_fetch_uses_a_file_mirror_without_network(tmp_path: Path) -> None:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "src.tar.gz").write_bytes(PAYLOAD)
    project = write_project(tmp_path / "p", ["http://mirror.invalid/src.tar.gz"], mirror=mirror)
    cache = tmp_path / "cache"
    done = run(
        "fetch", "--offline", "-f", str(project), "--cache", str(cache), prefix=("unshare", "--net")
    )
    assert done.returncode == 0, done.stderr
    assert entry_dir_listing(cache) == [SHA]


def test_cache_add_admits_only_declared_files(tmp_path: Path) -> None:
    project = write_project(tmp_path / "p", ["https://mirror.invalid/src.tar.gz"])
    cache = tmp_path / "cache"
    good = tmp_path / "src.tar.gz"
    good.write_bytes(PAYLOAD)
    stranger = tmp_path / "other" / "src.tar.gz"
    stranger.parent.mkdir()
    stranger.write_bytes(b"not what the spec pins")

    refused = run(
        "cache", "add", str(good), str(stranger), "-f", str(project), "--cache", str(cache)
    )
    assert refused.returncode == 4
    message = flat(refused.stderr)
    assert "nothing was admitted" in message
    assert str(stranger) in message and f"expects sha256 {SHA}" in message
    assert entry_dir_listing(cache) == []  # not even the good one

    admitted = run("cache", "add", str(good), "-f", str(project), "--cache", str(cache))
    assert admitted.returncode == 0, admitted.stderr
    listed = run("cache", "ls", "-f", str(project), "--cache", str(cache))
    assert listed.stdout.split() == [SHA, str(len(PAYLOAD)), "src.tar.gz"]


def test_cache_verify_quarantines_corrupt_entries(tmp_path: Path) -> None:
    project = write_project(tmp_path / "p", ["https://mirror.invalid/src.tar.gz"])
    cache = tmp_path / "cache"
    good = tmp_path / "src.tar.gz"
    good.write_bytes(PAYLOAD)
    assert run("cache", "add", str(good), "-f", str(project), "--cache", str(cache)).returncode == 0
    assert run("cache", "verify", "--cache", str(cache)).returncode == 0

    entry = cache / "sha256" / SHA
    entry.chmod(0o644)
    with entry.open("r+b") as f:  # a bit flip on disk
        f.seek(1000)
        f.write(b"\x00" if PAYLOAD[1000] else b"\x01")
    checked = run("cache", "verify", "--cache", str(cache))
    assert checked.returncode == 4
    assert SHA in flat(checked.stderr) and "quarantine" in flat(checked.stderr)
    assert entry_dir_listing(cache) == []
    assert [p.name for p in (cache / "quarantine").iterdir()] == [f"{SHA}.0"]


def test_print_digests_prints_sha_file_url_and_caches_nothing(
    server: FaultServer, tmp_path: Path
) -> None:
    project = write_project(tmp_path / "p", [server.url("ok", "src.tar.gz")], sha256="0" * 64)
    cache = tmp_path / "cache"
    result = run("fetch", "--print-digests", "-f", str(project), "--cache", str(cache))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [SHA, "src.tar.gz", server.url("ok", "src.tar.gz")]
    assert not cache.exists()
