"""The air gap for real: a small family is fetched and built on this host's podman,
exported as one bundle, then imported into a FRESH podman storage and an EMPTY cache
inside a network namespace with no route anywhere (`unshare --net`), where
`build --offline --test` must succeed. A tampered bundle must be refused whole.

The fresh storage is a vfs store under tmp_path, selected for every podman the test
starts through CONTAINERS_STORAGE_CONF (the variable podman itself honours).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from json_outputs import conforming
from live_services import in_network_namespace, network_namespace, running_registry

BASE = "localhost/lowbuild/busybox:latest"
PAYLOAD = b"payload carried across the air gap\n" * 100
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()

needs_root_and_unshare = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None, reason="needs root and unshare(1)"
)


@dataclass
class Exported:
    """A built family and the bundle exported from it (`--with-built base`)."""

    root: Path
    namespace: str
    bundle: Path
    env: dict[str, str]
    seconds: float

    def lowbuild(
        self,
        *args: str,
        env: dict[str, str] | None = None,
        no_net: bool = False,
        netns: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        prefix = ["unshare", "--net"] if no_net else []
        if netns is not None:
            prefix = in_network_namespace(netns)
        return subprocess.run(
            [*prefix, sys.executable, "-m", "lowbuild", *args],
            cwd=self.root,
            env=env or self.env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )


def _write_family(root: Path, namespace: str, served: Path) -> None:
    """base (FROM busybox) and app (FROM base; an artifact from a file:// URL, a pack,
    network: none, a command smoke test)."""
    (root / "lowbuild.yaml").write_text(
        f'name: bundletest\nnamespace: {namespace}\ncontexts: ["contexts/*"]\n'
    )
    base = root / "contexts" / "base"
    base.mkdir(parents=True)
    (base / "image.yaml").write_text(
        'name: base\ntest:\n  command: ["cat", "/base.txt"]\n  expect: "base"\n'
    )
    (base / "base.txt").write_text("base\n")
    (base / "Dockerfile").write_text(f"FROM {BASE}\nCOPY base.txt /base.txt\n")
    app = root / "contexts" / "app"
    (app / "site").mkdir(parents=True)
    (app / "site" / "index.html").write_text("hello from the pack\n")
    (app / "image.yaml").write_text(
        "name: app\n"
        "parent: base\n"
        "network: none\n"
        "artifacts:\n"
        f'  - file: payload.txt\n    urls: ["file://{served}"]\n    sha256: {PAYLOAD_SHA}\n'
        "packs:\n"
        "  - into: site.tar\n    from: site/\n    format: tar\n"
        "test:\n"
        '  command: ["sh", "-c", "cat /payload.txt /site/index.html"]\n'
        '  expect: "hello from the pack"\n'
    )
    (app / "Dockerfile").write_text(
        f"FROM {namespace}/base:latest\n"
        "COPY payload.txt /payload.txt\n"
        "ADD site.tar /site/\n"
        "RUN test -s /payload.txt\n"
    )


def _podman_refs(env: dict[str, str] | None = None) -> list[str]:
    """`ref ID` lines of the images in podman's storage (the host's, or `env`'s)."""
    for _ in range(3):
        listed = subprocess.run(
            ["podman", "images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}"],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        # Other tests removing images at the same moment can make a listing fail; retry.
        if listed.returncode == 0:
            return listed.stdout.splitlines()
        time.sleep(1)
    raise AssertionError(f"podman images failed: {listed.stderr}")


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Exported]:
    if shutil.which("podman") is None:
        pytest.fail("podman is not installed: run `bash scripts/provision.sh`")
    top = tmp_path_factory.mktemp("bundle")
    namespace = f"lowbuild-bundletest-{uuid.uuid4().hex[:8]}"
    served = top / "served" / "payload.txt"
    served.parent.mkdir()
    served.write_bytes(PAYLOAD)
    root = top / "project"
    root.mkdir()
    _write_family(root, namespace, served)
    env = {**os.environ, "LOWBUILD_CACHE": str(top / "cache"), "COLUMNS": "200"}
    family = Exported(
        root=root, namespace=namespace, bundle=top / "family.bundle", env=env, seconds=0
    )
    try:
        fetched = family.lowbuild("fetch")
        assert fetched.returncode == 0, fetched.stderr
        built = family.lowbuild("build", "--engine", "podman", "base")
        assert built.returncode == 0, built.stdout + built.stderr
        started = time.monotonic()
        done = family.lowbuild(
            "bundle", "export", str(family.bundle), "--with-built", "base", "--engine", "podman"
        )
        family.seconds = time.monotonic() - started
        assert done.returncode == 0, done.stderr
        # Only the bundle may bring the artifact from now on.
        served.unlink()
        yield family
    finally:
        ours = [line.split()[0] for line in _podman_refs() if namespace in line]
        if ours:
            subprocess.run(["podman", "rmi", "-f", *ours], capture_output=True, check=False)


@dataclass
class FreshHost:
    """An empty cache and an empty podman storage, as an air-gapped host has them."""

    cache: Path
    storage: Path
    env: dict[str, str]

    def images(self) -> list[str]:
        return _podman_refs(self.env)


@pytest.fixture
def fresh_host(tmp_path: Path, exported: Exported) -> Iterator[FreshHost]:
    storage = tmp_path / "storage"
    conf = tmp_path / "storage.conf"
    conf.write_text(
        f'[storage]\ndriver = "vfs"\ngraphroot = "{storage}/graph"\nrunroot = "{storage}/run"\n'
    )
    cache = tmp_path / "empty-cache"
    cache.mkdir()
    env = {**exported.env, "CONTAINERS_STORAGE_CONF": str(conf), "LOWBUILD_CACHE": str(cache)}
    host = FreshHost(cache=cache, storage=storage, env=env)
    assert host.images() == []  # really a fresh store, not this host's
    yield host
    # vfs layers are plain directories: nothing is mounted, removing them is enough.
    # Not `podman system reset`: even with another storage.conf it deletes the host's
    # shared /run/libpod under every other podman running at the time.
    shutil.rmtree(storage, ignore_errors=True)


@pytest.mark.root
@needs_root_and_unshare
def test_offline_build_without_network_from_an_imported_bundle(
    exported: Exported, fresh_host: FreshHost
) -> None:
    started = time.monotonic()
    imported = exported.lowbuild(
        "bundle",
        "import",
        str(exported.bundle),
        "--engine",
        "podman",
        "--json",
        env=fresh_host.env,
        no_net=True,
    )
    print(f"bundle import: {time.monotonic() - started:.1f}s")
    assert imported.returncode == 0, imported.stderr
    assert (fresh_host.cache / "sha256" / PAYLOAD_SHA).read_bytes() == PAYLOAD
    refs = [line.split()[0] for line in fresh_host.images()]
    assert BASE in refs and f"localhost/{exported.namespace}/base:latest" in refs
    # What it says it did: the artifact admitted, each image loaded, nothing there before.
    said = conforming("bundle-import", imported.stdout)
    assert said["engine"] == "podman" and said["project"] == "bundletest"
    assert [(a["name"], a["sha256"], a["already_present"]) for a in said["artifacts"]] == [
        ("payload.txt", PAYLOAD_SHA, False)
    ]
    assert Path(said["artifacts"][0]["path"]).read_bytes() == PAYLOAD
    loaded = {image["ref"]: image for image in said["images"]}
    assert set(loaded) == {BASE, f"{exported.namespace}/base:latest"}
    assert loaded[f"{exported.namespace}/base:latest"]["built"] is True
    assert loaded[f"{exported.namespace}/base:latest"]["fingerprint"].startswith("sha256:")
    assert not any(image["already_present"] for image in said["images"])
    ids = dict(line.split() for line in fresh_host.images())
    assert ids[BASE].removeprefix("sha256:")[:12] in loaded[BASE]["id"]

    built = exported.lowbuild(
        "build",
        "--offline",
        "--test",
        "--engine",
        "podman",
        "--json",
        env=fresh_host.env,
        no_net=True,
    )

    assert built.returncode == 0, built.stdout + built.stderr
    records = {r["image"]: r for r in conforming("build", built.stdout)}
    # The bundled base carried its fingerprint: it is not rebuilt; app is built offline.
    assert records["base"]["state"] == "up-to-date"
    assert records["app"]["state"] == "built"
    assert records["app"]["test"]["passed"] and records["base"]["test"]["passed"]


@pytest.mark.root
@needs_root_and_unshare
def test_offline_build_without_the_bundle_names_bundle_import(
    exported: Exported, fresh_host: FreshHost
) -> None:
    # The base images are there (loaded by hand), the artifact is not.
    with tarfile.open(exported.bundle) as tar:
        names = tar.getnames()
        busybox = next(n for n in names if "busybox" in n)
        tar.extract(busybox, fresh_host.storage.parent / "x", filter="data")
    loaded = subprocess.run(
        ["podman", "load", "--input", str(fresh_host.storage.parent / "x" / busybox)],
        env=fresh_host.env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert loaded.returncode == 0, loaded.stderr

    built = exported.lowbuild(
        "build", "--offline", "app", "--engine", "podman", env=fresh_host.env, no_net=True
    )

    assert built.returncode == 2, built.stderr
    message = " ".join(built.stderr.split())
    assert "payload.txt" in message and PAYLOAD_SHA in message
    assert "lowbuild bundle import FILE" in message


@pytest.mark.root
@needs_root_and_unshare
def test_an_air_gapped_farm_imports_builds_and_publishes_to_its_own_registry(
    exported: Exported, fresh_host: FreshHost, tmp_path: Path
) -> None:
    """The farm's side of the gap: a network namespace whose only interface is its
    loopback, with the farm's registry on it. Import, build offline, test, push."""
    with (
        network_namespace() as farm,
        running_registry(tmp_path / "farm-registry", port=5000, netns=farm) as registry,
    ):

        def lowbuild(*args: str) -> subprocess.CompletedProcess[str]:
            return exported.lowbuild(*args, "--engine", "podman", env=fresh_host.env, netns=farm)

        prefix = f"{registry.host}/farm"
        assert lowbuild("bundle", "import", str(exported.bundle)).returncode == 0
        built = lowbuild(
            "build", "--offline", "--test", "--push", "--to", prefix, "--no-tls-verify", "--json"
        )
        assert built.returncode == 0, built.stdout + built.stderr
        for record in conforming("build", built.stdout):  # with its test and its push
            assert record["test"]["passed"] and record["push"][0]["pushed"], record
        pushed = lowbuild("push", "--to", prefix, "--no-tls-verify", "--json")

        assert pushed.returncode == 0, pushed.stderr
        records = {r["image"]: r for r in conforming("push", pushed.stdout)}
        assert set(records) == {"base", "app"}
        assert all(r["pushed"] and r["unchanged"] for r in records.values())  # --push did it
        # Pulled back by digest inside the gap (the local copy removed first): the same image.
        ref = records["app"]["ref"]
        local = f"{exported.namespace}/app:latest"
        image_id = _in(farm, fresh_host.env, "podman", "image", "inspect", "-f", "{{.Id}}", local)
        _in(farm, fresh_host.env, "podman", "rmi", local)
        _in(farm, fresh_host.env, "podman", "pull", "--tls-verify=false", "-q", ref)
        assert _in(farm, fresh_host.env, "podman", "image", "inspect", "-f", "{{.Id}}", ref) == (
            image_id
        )


def _in(netns: str, env: dict[str, str], *argv: str) -> str:
    """`argv` run in network namespace `netns`; its stdout, stripped."""
    done = subprocess.run(
        [*in_network_namespace(netns), *argv], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def _flip_member_byte(bundle: Path, copy: Path, member: str) -> None:
    """Copy `bundle` to `copy` with one byte inverted in the middle of `member`'s data."""
    with tarfile.open(bundle) as tar:
        info = tar.getmember(member)
        offset = info.offset_data + info.size // 2
    data = bytearray(bundle.read_bytes())
    data[offset] ^= 0xFF
    copy.write_bytes(bytes(data))


@pytest.mark.parametrize("kind", ["artifact", "image", "manifest"])
def test_bundle_with_one_flipped_byte_is_refused_whole(
    exported: Exported, fresh_host: FreshHost, tmp_path: Path, kind: str
) -> None:
    with tarfile.open(exported.bundle) as tar:
        names = [n for n in tar.getnames() if tar.getmember(n).isfile()]
    member = {
        "artifact": f"artifacts/sha256/{PAYLOAD_SHA}",
        "image": next(n for n in names if n.startswith("images/") and "busybox" in n),
        "manifest": "manifest.json",
    }[kind]
    tampered = tmp_path / "tampered.bundle"
    _flip_member_byte(exported.bundle, tampered, member)

    refused = exported.lowbuild(
        "bundle", "import", str(tampered), "--engine", "podman", env=fresh_host.env
    )

    assert refused.returncode == 4, refused.stderr
    message = " ".join(refused.stderr.split())
    assert f"member {member}" in message and "nothing was imported" in message
    assert list(fresh_host.cache.iterdir()) == []
    assert fresh_host.images() == []


def test_export_twice_gives_identical_bytes(exported: Exported, tmp_path: Path) -> None:
    again = tmp_path / "again.bundle"
    done = exported.lowbuild(
        "bundle", "export", str(again), "--with-built", "base", "--engine", "podman"
    )
    assert done.returncode == 0, done.stderr
    assert (
        hashlib.sha256(again.read_bytes()).hexdigest()
        == hashlib.sha256(exported.bundle.read_bytes()).hexdigest()
    )


def test_bundle_ls_lists_every_member(exported: Exported) -> None:
    listed = exported.lowbuild("bundle", "ls", str(exported.bundle), "--json")
    assert listed.returncode == 0, listed.stderr
    members = json.loads(listed.stdout)
    by_kind: dict[str, list[str]] = {}
    for m in members:
        by_kind.setdefault(m["kind"], []).append(m["name"])
    assert by_kind["artifact"] == ["payload.txt"]
    assert sorted(by_kind["image"]) == sorted([BASE, f"{exported.namespace}/base:latest"])
    assert by_kind["manifest"] == ["manifest.json", "manifest.json.sha256"]
    with tarfile.open(exported.bundle) as tar:
        files = {i.name: i.size for i in tar.getmembers() if i.isfile()}
    assert {m["path"]: m["size"] for m in members} == files

    text = exported.lowbuild("bundle", "ls", str(exported.bundle))
    assert text.returncode == 0
    assert PAYLOAD_SHA in text.stdout and "payload.txt" in text.stdout and BASE in text.stdout
    print(f"bundle: {exported.bundle.stat().st_size} bytes, exported in {exported.seconds:.1f}s")


@pytest.mark.parametrize("engine", ["podman", "docker", "buildah"])
def test_each_engine_exports_the_same_bytes_twice(
    exported: Exported, tmp_path: Path, engine: str
) -> None:
    # Only the base images and the artifact (no --with-built): the family was built with
    # podman. buildx saves through the same `docker save` as docker.
    digests = []
    for n in range(2):
        out = tmp_path / f"{engine}-{n}.bundle"
        done = exported.lowbuild("bundle", "export", str(out), "--engine", engine)
        assert done.returncode == 0, done.stderr
        digests.append(hashlib.sha256(out.read_bytes()).hexdigest())
    assert digests[0] == digests[1]
