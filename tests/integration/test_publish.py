"""`lowbuild build --test --push` and `lowbuild push` against a real registry, on podman.

A four-image family: base → app (its smoke test passes) and base → bad (its smoke test
fails) → badchild. What reaches the registry, what the run prints and records, and what
happens when the registry is down. Each engine's own push: test_engines.py.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from json_outputs import conforming
from live_services import (
    BASE_IMAGE,
    Registry,
    Secured,
    free_port,
    running_registry,
    secure_registry_files,
)

IMAGES = {
    "base": (None, "true"),
    "app": ("base", "cat /etc/app"),
    "bad": ("base", "false"),
    "badchild": ("bad", "true"),
}


@dataclass
class Family:
    root: Path
    namespace: str
    env: dict[str, str]

    def lowbuild(self, *args: str, engine: str = "podman") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "lowbuild", *args, "--engine", engine],
            cwd=self.root,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=600,
        )

    def published(self) -> dict[str, dict[str, object]]:
        document = json.loads((self.root / ".lowbuild" / "published.json").read_text())
        return document["images"]


@pytest.fixture
def family(tmp_path: Path) -> Iterator[Family]:
    namespace = f"lbpush{uuid.uuid4().hex[:8]}"
    root = tmp_path / "family"
    root.mkdir()
    (root / "lowbuild.yaml").write_text(f"name: pushed\nnamespace: {namespace}\ntag: '1'\n")
    for name, (parent, command) in IMAGES.items():
        context = root / "contexts" / name
        context.mkdir(parents=True)
        base = f"{namespace}/{parent}:1" if parent else BASE_IMAGE
        (context / "Dockerfile").write_text(f"FROM {base}\nRUN echo {name} > /etc/{name}\n")
        words = json.dumps(["sh", "-c", command])
        (context / "image.yaml").write_text(
            f"name: {name}\n"
            + (f"parent: {parent}\n" if parent else "")
            + f"tags: ['1.0']\ntest:\n  command: {words}\n"
        )
    env = {**os.environ, "LOWBUILD_CACHE": str(tmp_path / "cache")}
    made = Family(root=root, namespace=namespace, env=env)
    yield made
    _forget_local_images(made)


def test_build_test_push_publishes_what_passed_by_digest_and_nothing_else(
    family: Family, registry: Registry
) -> None:
    prefix = f"{registry.host}/{family.namespace}"

    run = family.lowbuild("build", "--test", "--push", "--to", prefix, "--no-tls-verify")

    assert run.returncode == 1, run.stderr  # a smoke test failed, so not all was pushed
    for name in ("base", "app"):
        assert sorted(registry.tags(f"{family.namespace}/{name}")) == ["1", "1.0"]
    for name in ("bad", "badchild"):
        assert registry.tags(f"{family.namespace}/{name}") == []
    assert "not pushed bad" in run.stderr and "its smoke test failed" in run.stderr
    assert "its parent bad was not pushed" in run.stderr
    # stdout ends with the pullable by-digest references, one per pushed image.
    printed = [line for line in run.stdout.splitlines() if "@sha256:" in line]
    digests = {
        name: registry.manifest_digest(f"{family.namespace}/{name}", "1")
        for name in ("base", "app")
    }
    assert printed == [f"{prefix}/{name}@{digests[name]}" for name in ("base", "app")]
    published = family.published()
    assert set(published) == {"base", "app"}
    local = subprocess.run(
        ["podman", "image", "inspect", f"{family.namespace}/app:1"],
        capture_output=True,
        text=True,
        check=True,
    )
    label = json.loads(local.stdout)[0]["Labels"]["lowbuild.fingerprint"]
    assert published["app"]["fingerprint"] == label
    app_id = _podman("image", "inspect", "--format", "{{.Id}}", f"{family.namespace}/app:1")
    assert published["app"]["registries"] == {
        prefix: {
            "ref": f"{prefix}/app@{digests['app']}",
            "tags": [f"{prefix}/app:1", f"{prefix}/app:1.0"],
            "image_id": f"sha256:{app_id}",
        }
    }


def test_an_unchanged_image_is_not_pushed_again_until_the_registry_stops_serving_it(
    family: Family, registry: Registry
) -> None:
    prefix = f"{registry.host}/{family.namespace}"
    push = ("push", "app", "--to", prefix, "--no-tls-verify")
    assert family.lowbuild("build", "app").returncode == 0
    first = family.lowbuild(*push)
    assert first.returncode == 0, first.stderr
    writes = registry.writes()
    assert writes > 0

    again = family.lowbuild(*push)

    assert again.returncode == 0, again.stderr
    assert again.stdout == first.stdout  # the same by-digest references
    assert f"= already in {prefix}: base" in again.stderr
    assert f"= already in {prefix}: app" in again.stderr
    assert registry.writes() == writes  # not a blob, not a manifest

    # The registry loses app (its repository removed behind lowbuild's back): the record
    # alone must not stop the push, which the registry's own answer decides.
    storage = registry.log.parent / "storage" / "docker" / "registry" / "v2"
    shutil.rmtree(storage / "repositories" / family.namespace / "app")
    lost = family.lowbuild(*push)
    assert lost.returncode == 0, lost.stderr
    assert f"= already in {prefix}: base" in lost.stderr
    assert f"↑ pushed app to {prefix}" in lost.stderr
    assert sorted(registry.tags(f"{family.namespace}/app")) == ["1", "1.0"]

    # A tag app was never pushed under: pushed. --force: everything pushed.
    spec = family.root / "contexts" / "app" / "image.yaml"
    spec.write_text(spec.read_text().replace("tags: ['1.0']", "tags: ['1.0', '1.1']"))
    tagged = family.lowbuild(*push)
    assert tagged.returncode == 0, tagged.stderr
    assert f"↑ pushed app to {prefix}" in tagged.stderr
    assert sorted(registry.tags(f"{family.namespace}/app")) == ["1", "1.0", "1.1"]
    forced = family.lowbuild(*push, "--force")
    assert forced.returncode == 0, forced.stderr
    assert "already in" not in forced.stderr
    assert f"↑ pushed base to {prefix}" in forced.stderr

    # A rebuilt app (another image, the same tags) is pushed again.
    (family.root / "contexts" / "app" / "Dockerfile").write_text(
        f"FROM {family.namespace}/base:1\nRUN echo app v2 > /etc/app\n"
    )
    assert family.lowbuild("build", "app").returncode == 0
    rebuilt = family.lowbuild(*push, "--json")
    assert rebuilt.returncode == 0, rebuilt.stderr
    unchanged = {r["image"]: r["unchanged"] for r in json.loads(rebuilt.stdout)}
    assert unchanged == {"base": True, "app": False}
    new_id = _podman("image", "inspect", "--format", "{{.Id}}", f"{family.namespace}/app:1")
    assert family.published()["app"]["registries"][prefix]["image_id"] == f"sha256:{new_id}"


def test_pulled_by_digest_the_image_is_the_one_built(family: Family, registry: Registry) -> None:
    prefix = f"{registry.host}/{family.namespace}"
    assert family.lowbuild("build", "base").returncode == 0
    pushed = family.lowbuild("push", "base", "--to", prefix, "--no-tls-verify", "--json")
    assert pushed.returncode == 0, pushed.stderr
    [record] = conforming("push", pushed.stdout)
    assert record["pushed"] and record["ref"].startswith(f"{prefix}/base@sha256:")
    local_id = _podman("image", "inspect", "--format", "{{.Id}}", f"{family.namespace}/base:1")
    _podman("rmi", f"{family.namespace}/base:1", f"{family.namespace}/base:1.0")
    try:
        _podman("pull", "--tls-verify=false", "--quiet", record["ref"])
        pulled = _podman("image", "inspect", "--format", "{{.Id}}", record["ref"])
        assert pulled == local_id  # same config: the same image
    finally:
        subprocess.run(["podman", "rmi", "--force", "--ignore", record["ref"]], capture_output=True)


def test_a_registry_that_is_down_is_one_line_per_image_and_the_next_run_pushes(
    family: Family, tmp_path: Path
) -> None:
    assert family.lowbuild("build", "base", "app").returncode == 0
    port = free_port()
    prefix = f"127.0.0.1:{port}/{family.namespace}"

    down = family.lowbuild("push", "app", "--to", prefix, "--no-tls-verify")

    assert down.returncode == 1
    assert "Traceback" not in down.stderr
    assert f"not pushed base to {prefix}: push to {prefix}/base:1 failed" in down.stderr
    assert "its parent base was not pushed" in down.stderr
    assert "trying again" in _latest_log(family, "base")  # retried before giving up
    with running_registry(tmp_path / "late-registry", port=port) as registry:
        again = family.lowbuild("push", "app", "--to", prefix, "--no-tls-verify")
        assert again.returncode == 0, again.stderr
        assert sorted(registry.tags(f"{family.namespace}/app")) == ["1", "1.0"]


def test_a_registry_killed_mid_push_leaves_each_image_said_and_the_next_run_completes(
    family: Family, tmp_path: Path
) -> None:
    """The registry dies while a big layer is being uploaded: the push is retried, then
    said not pushed (and its child held back), exit 1; with the registry back, the next
    run pushes what is missing and the registry serves exactly the local image."""
    big = family.root / "contexts" / "big"
    big.mkdir()
    (big / "image.yaml").write_text("name: big\nparent: base\n")
    (big / "Dockerfile").write_text(
        f"FROM {family.namespace}/base:1\nRUN head -c 48000000 /dev/urandom > /big\n"
    )
    assert family.lowbuild("build", "big").returncode == 0
    port = free_port()
    prefix = f"127.0.0.1:{port}/{family.namespace}"
    storage = tmp_path / "killed-registry"
    with running_registry(storage, port=port) as registry:

        def kill_when_big_uploads() -> None:
            deadline = time.monotonic() + 120
            upload = f"/v2/{family.namespace}/big/blobs/uploads/"
            while time.monotonic() < deadline:
                if upload in registry.log.read_text(errors="replace"):
                    os.kill(registry.pid, signal.SIGKILL)
                    return
                time.sleep(0.01)

        killer = threading.Thread(target=kill_when_big_uploads)
        killer.start()
        cut = family.lowbuild("push", "big", "--to", prefix, "--no-tls-verify", "--json")
        killer.join()

    assert cut.returncode == 1, cut.stderr
    records = {r["image"]: r for r in json.loads(cut.stdout)}
    assert records["base"]["pushed"] and not records["big"]["pushed"]
    assert "push to" in records["big"]["error"]
    assert "trying again" in _latest_log(family, "big")
    assert "Traceback" not in cut.stderr
    with running_registry(storage, port=port) as registry:
        again = family.lowbuild("push", "big", "--to", prefix, "--no-tls-verify", "--json")
        assert again.returncode == 0, again.stderr
        states = {r["image"]: r["unchanged"] for r in json.loads(again.stdout)}
        assert states == {"base": True, "big": False}  # only what was missing is pushed
        local = _podman("image", "inspect", "--format", "{{.Id}}", f"{family.namespace}/big:1")
        ref = next(r["ref"] for r in json.loads(again.stdout) if r["image"] == "big")
        _podman("rmi", f"{family.namespace}/big:1")
        _podman("pull", "--tls-verify=false", "--quiet", ref)
        assert _podman("image", "inspect", "--format", "{{.Id}}", ref) == local


def test_a_fresh_runner_pulls_from_the_registry_cache_and_builds_only_what_changed(
    family: Family, registry: Registry
) -> None:
    cache = f"{registry.host}/{family.namespace}-cache"
    flags = ("--no-tls-verify", "--json")
    first = family.lowbuild("build", "app", "--test", "--cache-to", cache, *flags)
    assert first.returncode == 0, first.stderr
    tags = {name: _cache_tag(family, name) for name in ("base", "app")}
    for name, tag in tags.items():
        assert registry.tags(f"{family.namespace}-cache/{name}") == [tag]

    _forget_local_images(family)  # a fresh runner: none of the family's images
    planned = family.lowbuild("plan", "app", "--cache-from", cache, *flags)
    assert planned.returncode == 0, planned.stderr
    actions = {r["image"]: r["action"] for r in json.loads(planned.stdout)["images"]}
    assert actions == {"base": "pull", "app": "pull"}  # app's parent is not even here yet
    fresh = family.lowbuild("build", "app", "--test", "--cache-from", cache, *flags)

    assert fresh.returncode == 0, fresh.stderr
    records = {r["image"]: r for r in json.loads(fresh.stdout)}
    assert {name: r["state"] for name, r in records.items()} == {"base": "pulled", "app": "pulled"}
    assert all(r["test"]["passed"] for r in records.values())
    assert _cache_tag(family, "app") == tags["app"]  # the same inputs, the same image

    _forget_local_images(family)
    (family.root / "contexts" / "app" / "Dockerfile").write_text(
        f"FROM {family.namespace}/base:1\nRUN echo app v2 > /etc/app\n"
    )
    changed = family.lowbuild("build", "app", "--cache-from", cache, "--cache-to", cache, *flags)
    assert changed.returncode == 0, changed.stderr
    states = {r["image"]: r["state"] for r in json.loads(changed.stdout)}
    assert states == {"base": "pulled", "app": "built"}
    assert sorted(registry.tags(f"{family.namespace}-cache/app")) == sorted(
        [tags["app"], _cache_tag(family, "app")]
    )


@pytest.mark.parametrize(
    ("first", "then"),
    [("podman", "docker"), ("docker", "podman"), ("buildah", "buildx"), ("buildx", "buildah")],
)
def test_a_registry_cache_filled_on_one_engine_serves_a_runner_on_another(
    family: Family, registry: Registry, first: str, then: str
) -> None:
    """Every engine writes the docker image format and gives a pulled image its config
    digest as ID, and the engine is not an input of the fingerprint: what one engine
    built and pushed is, for another, the same image under the same fingerprint."""
    cache = f"{registry.host}/{family.namespace}-cache"
    flags = ("--no-tls-verify", "--json")
    built = family.lowbuild("build", "app", "--test", "--cache-to", cache, *flags, engine=first)
    assert built.returncode == 0, built.stderr
    ids = {name: _image_id(first, f"{family.namespace}/{name}:1") for name in ("base", "app")}
    # podman and buildah share one storage, docker and buildx another: the other engine's
    # storage has none of the family.
    assert _image_id(then, f"{family.namespace}/base:1") is None

    pulled = family.lowbuild("build", "app", "--test", "--cache-from", cache, *flags, engine=then)

    assert pulled.returncode == 0, pulled.stderr
    records = {r["image"]: r for r in json.loads(pulled.stdout)}
    assert {name: r["state"] for name, r in records.items()} == {"base": "pulled", "app": "pulled"}
    assert all(r["test"]["passed"] for r in records.values())
    for name, image_id in ids.items():
        assert _image_id(then, f"{family.namespace}/{name}:1") == image_id


def _image_id(engine: str, ref: str) -> str | None:
    """The image ID (`sha256:…`) `engine`'s storage gives `ref`, or None."""
    cli = "docker" if engine in ("docker", "buildx") else "podman"
    done = subprocess.run(
        [cli, "image", "inspect", "--format", "{{.Id}}", ref], capture_output=True, text=True
    )
    if done.returncode != 0:
        return None
    return "sha256:" + done.stdout.strip().removeprefix("sha256:")


def test_a_cache_entry_that_is_not_what_its_tag_says_is_refused(
    family: Family, registry: Registry
) -> None:
    cache = f"{registry.host}/{family.namespace}-cache"
    assert family.lowbuild("build", "app", "--cache-to", cache, "--no-tls-verify").returncode == 0
    tag = _cache_tag(family, "app")
    # Someone overwrites app's cache entry with the base image.
    _podman(
        "push", "--tls-verify=false", f"{family.namespace}/base:1",
        f"docker://{cache}/app:{tag}",
    )  # fmt: skip
    _forget_local_images(family)

    run = family.lowbuild("build", "app", "--cache-from", cache, "--no-tls-verify")

    assert run.returncode == 4, run.stderr
    assert "refused" in run.stderr and "nothing tagged" in run.stderr
    assert "expected sha256:" in _latest_log(family, "app")
    missing = subprocess.run(
        ["podman", "image", "exists", f"{family.namespace}/app:1"], capture_output=True
    )
    assert missing.returncode == 1
    # base, pulled by the same run, is the image the bad entry held: it keeps its tags.
    _podman("image", "exists", f"{family.namespace}/base:1")


PASSWORD = "s3cret-hunter2"


@pytest.fixture
def secure_registry(tmp_path: Path) -> Iterator[tuple[Registry, Secured]]:
    """A TLS registry with logins, its CA trusted the way podman trusts a registry."""
    files = secure_registry_files(tmp_path / "tls", user="builder", password=PASSWORD)
    with _trusted_registry(tmp_path, files) as registry:
        yield registry, files


@pytest.fixture
def tls_registry(tmp_path: Path) -> Iterator[Registry]:
    """A TLS registry anyone may use, its CA trusted the way podman trusts a registry."""
    with _trusted_registry(tmp_path, secure_registry_files(tmp_path / "tls")) as registry:
        yield registry


@contextmanager
def _trusted_registry(tmp_path: Path, files: Secured) -> Iterator[Registry]:
    """A TLS registry whose CA is in the engines' certs directory for its host:port
    (removed afterwards): trusted without turning verification off."""
    host = f"127.0.0.1:{free_port()}"
    if os.geteuid() == 0:
        certs = Path("/etc/containers/certs.d") / host
    else:
        certs = Path.home() / ".config" / "containers" / "certs.d" / host
    certs.mkdir(parents=True)
    try:
        shutil.copy(files.ca, certs / "ca.crt")
        port = int(host.rpartition(":")[2])
        with running_registry(tmp_path / "registry", port=port, secured=files) as registry:
            yield registry
    finally:
        shutil.rmtree(certs, ignore_errors=True)


def _declare(family: Family, registry: Registry) -> str:
    """Declare the registry in lowbuild.yaml, TLS verified (the default); its prefix."""
    prefix = f"{registry.host}/{family.namespace}"
    with (family.root / "lowbuild.yaml").open("a") as out:
        out.write(f"registries:\n  - name: secure\n    prefix: {prefix}\n")
    return prefix


def test_a_tls_registry_is_asked_with_the_ca_the_engines_trust_for_it(
    family: Family, tls_registry: Registry
) -> None:
    """The cache lookup and the check before a re-push are lowbuild's own requests: they
    trust the registry's CA through the same certs directory as the engine, with
    verification on (no --no-tls-verify anywhere)."""
    prefix = _declare(family, tls_registry)
    with (family.root / "lowbuild.yaml").open("a") as out:
        out.write("cache: {registry: secure}\n")
    built = family.lowbuild("build", "app", "--push")
    assert built.returncode == 0, built.stderr
    assert f"↑ pushed app to secure: {prefix}/app@sha256:" in built.stderr

    again = family.lowbuild("push", "app")
    assert again.returncode == 0, again.stderr
    assert "= already in secure: app" in again.stderr

    _forget_local_images(family)
    planned = family.lowbuild("plan", "app", "--json")
    assert planned.returncode == 0, planned.stderr
    actions = {r["image"]: r["action"] for r in json.loads(planned.stdout)["images"]}
    assert actions == {"base": "pull", "app": "pull"}
    assert "not reachable" not in planned.stderr


def test_an_unreachable_cache_is_said_once_and_the_family_is_built(family: Family) -> None:
    cache = f"127.0.0.1:{free_port()}/{family.namespace}-cache"  # nothing listens there

    run = family.lowbuild("build", "app", "--cache-from", cache, "--no-tls-verify", "--json")

    assert run.returncode == 0, run.stderr
    assert run.stderr.count(f"registry cache {cache} not reachable") == 1
    states = {r["image"]: r["state"] for r in json.loads(run.stdout)}
    assert states == {"base": "built", "app": "built"}


def _auth_file(path: Path, host: str, user: str, password: str) -> Path:
    """An auth file as `podman login` writes it (base64 of user:password)."""
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    path.write_text(json.dumps({"auths": {host: {"auth": token}}}))
    return path


def test_a_tls_registry_with_a_login_gets_the_family_with_verification_on(
    family: Family, secure_registry: tuple[Registry, Secured], tmp_path: Path
) -> None:
    registry, files = secure_registry
    prefix = _declare(family, registry)
    auth = tmp_path / "auth.json"
    login = subprocess.run(
        ["podman", "login", "--authfile", str(auth), "--username", "builder",
         "--password-stdin", registry.host],
        input=PASSWORD, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert login.returncode == 0, login.stderr
    family.env["REGISTRY_AUTH_FILE"] = str(auth)
    assert family.lowbuild("build", "app").returncode == 0

    pushed = family.lowbuild("push", "app", "--to", "secure")

    assert pushed.returncode == 0, pushed.stderr
    tags = httpx.get(
        f"https://{registry.host}/v2/{family.namespace}/app/tags/list",
        auth=("builder", PASSWORD),
        verify=ssl.create_default_context(cafile=str(files.ca)),
        timeout=10,
    ).json()["tags"]
    assert sorted(tags) == ["1", "1.0"]
    assert f"{prefix}/app@sha256:" in pushed.stdout


def test_a_wrong_password_is_refused_once_and_never_shown(
    family: Family, secure_registry: tuple[Registry, Secured], tmp_path: Path
) -> None:
    registry, _ = secure_registry
    _declare(family, registry)
    wrong = "wrong-Pa55-hunter2"
    auth = _auth_file(tmp_path / "auth.json", registry.host, "builder", wrong)
    family.env["REGISTRY_AUTH_FILE"] = str(auth)
    assert family.lowbuild("build", "base").returncode == 0

    pushed = family.lowbuild("push", "base", "--to", "secure")

    assert pushed.returncode == 1
    assert "not pushed base" in pushed.stderr
    assert "unauthorized" in pushed.stderr.lower() or "authentication" in pushed.stderr.lower()
    shown = [pushed.stdout, pushed.stderr]
    shown += [p.read_text() for p in (family.root / ".lowbuild").rglob("*") if p.is_file()]
    for text in shown:
        assert wrong not in text
        assert base64.b64encode(f"builder:{wrong}".encode()).decode() not in text
    assert "trying again" not in _latest_log(family, "base")  # a refusal is not retried


def _cache_tag(family: Family, name: str) -> str:
    labels = _podman(
        "image", "inspect", "--format", "{{json .Labels}}", f"{family.namespace}/{name}:1"
    )
    return "lb-" + json.loads(labels)["lowbuild.fingerprint"].removeprefix("sha256:")[:20]


def _forget_local_images(family: Family) -> None:
    """Remove the family's images, under every name (registry cache tags included), from
    podman's storage and from dockerd's."""
    for cli in ("podman", "docker"):
        listed = subprocess.run(
            [cli, "images", "--format", "{{.ID}} {{.Repository}} {{.Tag}}"],
            capture_output=True,
            text=True,
            timeout=300,
        )
        # By name where there is one: dockerd refuses to remove, by ID, an image its
        # classic builder made the parent of another (removing a name leaves it to go
        # with its child), so the order would matter.
        names = {
            words[0] if words[2] == "<none>" else f"{words[1]}:{words[2]}"
            for words in (line.split() for line in listed.stdout.splitlines())
            if len(words) == 3 and family.namespace in words[1]
        }
        if names:
            removed = subprocess.run(
                [cli, "rmi", "--force", *sorted(names)], capture_output=True, text=True, timeout=300
            )
            assert removed.returncode == 0, removed.stderr


def _podman(*args: str) -> str:
    done = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def _latest_log(family: Family, name: str) -> str:
    latest = family.root / ".lowbuild" / "logs" / "latest"
    failed = latest / f"{name}.FAILED.log"
    return (failed if failed.exists() else latest / f"{name}.log").read_text()
